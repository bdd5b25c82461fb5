"""A real browser on a big map: JupyterLab + headless Chromium draw a 200,000-point EmbeddingMap
(the jupyter-scatter backend), a lasso drawn with the mouse selects points, and the selection
comes back to the kernel.

What is checked, end to end:
- the notebook (written by the test: random unit vectors, a PCA map, so the kernel work is seconds)
  builds a map above SCATTER_THRESHOLD, so `backend == "scatter"`;
- the jscatter canvas is in the page and a screenshot of it has points on it (non-background pixels);
- hovering the map fills the Python-side hover panel ("image N" comes back from the kernel);
- a freeform lasso dragged with the mouse (the map's mouse_mode is "lasso": a plain drag draws it)
  reaches the kernel: the map's on_select callback updates a label in the page, and a cell run
  afterwards prints `len(emap.selected())`, the same number;
- the kernel's selection is the set of points inside the lasso polygon the browser sent
  (jscatter's `lasso_selection_polygon`, in map coordinates) as matplotlib's Path.contains_points
  finds them: the browser tests points in float32, so only points on the lasso's edge may differ.

JupyterLab, the chromium lookup and the skip when it is missing come from test_browser.py (the
same private server, the same Debian chromium through Playwright's executable_path). WebGL runs on
Chromium's software renderer (SwiftShader) with --disable-gpu, so no GPU is needed.
"""
from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest

from tests.acceptance.test_browser import CHROME_ARGS, Lab, chrome, open_and_run_all  # noqa: F401 (chrome: a fixture)

N_POINTS = 200_000
STEP_TIMEOUT_S = 60  # each wait; the whole test is ~30-60 s on 2 busy cores
MIN_INK = 0.02  # at least this fraction of the canvas's pixels are not background once points are drawn

CELLS = [
    # 1: the map, above the scatter threshold
    f"""import json
import numpy as np
import ipywidgets as W
from clipspace.maps.embedding_map import SCATTER_THRESHOLD, EmbeddingMap

rng = np.random.default_rng(0)
emb = rng.normal(size=({N_POINTS}, 32)).astype(np.float32)
emb /= np.linalg.norm(emb, axis=1, keepdims=True)
emap = EmbeddingMap.build(emb, projection="pca")
assert emap.backend == "scatter" and len(emap.points) > SCATTER_THRESHOLD
print("BUILT", len(emap.points), emap.backend)""",
    # 2: the widget, and a label the kernel's selection callback writes
    """seen = W.HTML("kernel selection: none", layout=W.Layout(width="400px"))
emap.on_select(lambda idx: setattr(seen, "value", f"kernel selection: {len(idx)} points"))
W.VBox([emap.widget(), seen])""",
    # 3: what the kernel holds, against the lasso polygon the browser sent
    """from matplotlib.path import Path

sel = emap.selected()
poly = emap.scatter.widget.lasso_selection_polygon
xy = emap.points[["x", "y"]].to_numpy(np.float64)
poly = np.zeros((0, 2)) if poly is None or len(poly) < 3 else np.asarray(poly, dtype=np.float64)
inside = np.flatnonzero(Path(poly).contains_points(xy)) if len(poly) else np.zeros(0, int)
differ = np.setxor1d(sel, inside)
# distance of each differing point to the polygon's nearest edge, relative to the map's extent
a, b = poly, np.roll(poly, -1, axis=0)
edge_dist = 0.0
if len(differ) and len(poly):
    p = xy[differ][:, None, :]
    t = np.clip(((p - a) * (b - a)).sum(-1) / np.maximum(((b - a) ** 2).sum(-1), 1e-300), 0, 1)
    d = np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1).min(1)
    edge_dist = float(d.max() / np.ptp(xy, axis=0).max())
print("KERNEL " + json.dumps({"selected": int(len(sel)), "inside": int(len(inside)), "differ": int(len(differ)),
                              "edge_dist": edge_dist, "polygon": int(len(poly))}))""",
]


def _notebook(path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def big_lab(tmp_path, chrome):  # noqa: F811 (the chrome fixture imported above)
    root = tmp_path / "notebooks"
    root.mkdir()
    _notebook(root / "big_map.ipynb")
    server = Lab(root, tmp_path / "jupyter-home")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _kernel_report(page) -> dict | None:
    text = page.locator(".jp-CodeCell").nth(2).locator(".jp-OutputArea").text_content() or ""
    m = re.search(r"KERNEL (\{.*?\})", text)
    return json.loads(m.group(1)) if m else None


def _ink(png: bytes) -> float:
    """Fraction of pixels that differ from the image's most common colour (the background)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(rgb - background).max(1) > 24).mean())


def test_a_200k_point_map_draws_and_a_lasso_selection_reaches_the_kernel(big_lab, chrome, tmp_path):  # noqa: F811
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    lab = big_lab
    start = time.monotonic()
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_S * 1000)
            open_and_run_all(page, lab, "big_map.ipynb")
            page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                                   ".some(e => e.textContent.includes('KERNEL '))")
            timings["run all"] = time.monotonic() - start
            text = page.text_content(".jp-NotebookPanel .jp-Notebook")
            assert "Traceback" not in text and "Error displaying widget" not in text, text[-3000:]
            assert f"BUILT {N_POINTS} scatter" in text
            assert _kernel_report(page)["selected"] == 0

            # the jscatter canvas: the first canvas in the map cell's output (regl's; its labels overlay is next)
            out = page.locator(".jp-CodeCell").nth(1).locator(".jp-OutputArea")
            out.locator("canvas").first.wait_for()
            out.scroll_into_view_if_needed()
            wrapper = out.locator("canvas").first.locator("xpath=..")
            # laid out at a real size (a 1 px canvas is what an HBox gave it before ScatterView set its flex)
            page.wait_for_function("el => { const r = el.getBoundingClientRect();"
                                   " return r.width > 300 && r.height > 300; }", arg=wrapper.element_handle())
            deadline, ink = time.monotonic() + STEP_TIMEOUT_S, 0.0
            while time.monotonic() < deadline:  # until regl has drawn the points (SwiftShader: a second or so)
                ink = _ink(wrapper.screenshot())
                if ink >= MIN_INK:
                    break
                page.wait_for_timeout(250)
            assert ink >= MIN_INK, f"the map's canvas stayed blank: {ink:.4f} of its pixels are not background"
            timings["drawn"] = time.monotonic() - start

            # hovering: the kernel fills the hover panel. Each mouse move redraws 200k points in
            # software WebGL (a fraction of a second on 2 busy cores), so moves are few.
            box = wrapper.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            hovered = "() => [...document.querySelectorAll('.widget-html')].some(e => /image \\d+/.test(e.textContent))"
            for attempt in range(6):  # the dense middle: a point is under the mouse at once, or a few px on
                page.mouse.move(cx + 5 * attempt, cy)
                try:
                    page.wait_for_function(hovered, timeout=5_000 if attempt < 5 else STEP_TIMEOUT_S * 1000)
                    break
                except PlaywrightTimeout:
                    if attempt == 5:
                        raise
            timings["hovered"] = time.monotonic() - start

            # a freeform lasso around the middle of the map: mouse down, round an ellipse, mouse up
            r = 0.12 * min(box["width"], box["height"])
            ring = [(cx + r * np.cos(t), cy + 0.7 * r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 13)]
            page.mouse.move(*ring[0])
            page.mouse.down()
            for x, y in ring[1:]:
                page.mouse.move(x, y)
            page.mouse.up()
            timings["lasso drawn"] = time.monotonic() - start
            page.wait_for_function("() => [...document.querySelectorAll('.widget-html')]"
                                   ".some(e => /kernel selection: [1-9]\\d* points/.test(e.textContent))")
            label = next(t for t in page.locator(".widget-html").all_text_contents() if "kernel selection:" in t)
            from_callback = int(re.search(r"kernel selection: (\d+)", label).group(1))
            timings["selected"] = time.monotonic() - start
            out.screenshot(path=str(tmp_path / "big_map_selected.png"))  # the map, its hover panel, the label

            # a cell run now sees the same selection, and it is what lies inside the lasso
            cell = page.locator(".jp-CodeCell").nth(2)
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            page.wait_for_function("() => { const o = document.querySelectorAll('.jp-CodeCell')[2]"
                                   ".querySelector('.jp-OutputArea');"
                                   " return o && /\"selected\": [1-9]/.test(o.textContent); }")
            report = _kernel_report(page)
            page.screenshot(path=str(tmp_path / "big_map.png"))
        except PlaywrightTimeout as e:  # say where it stopped, with a picture and the server's log
            page.screenshot(path=str(tmp_path / "big_map_failed.png"))
            raise AssertionError(f"{e}\nreached: {timings}\nscreenshot {tmp_path / 'big_map_failed.png'}\n"
                                 f"jupyter log:\n{lab.tail()}") from None
        finally:
            browser.close()
    timings["total"] = time.monotonic() - start
    assert report["selected"] == from_callback, (report, from_callback)
    assert 0 < report["selected"] < N_POINTS, report
    assert report["polygon"] >= 3, report
    # every point the browser picked is inside the lasso, and every point inside was picked, up to
    # points on the edge itself (float32 in the browser, float64 here)
    assert report["differ"] <= max(3, report["selected"] // 1000), report
    assert report["edge_dist"] < 1e-4, report
    print("big-map browser test: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
          + f"; {report['selected']} of {N_POINTS} points lassoed; screenshots in {tmp_path}")
