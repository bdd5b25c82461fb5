"""save_figure and image_grid: files written, pixels round-trip, and the no-Chrome fallback says so."""
import base64
import re
import xml.etree.ElementTree as ET

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from clipspace import world
from clipspace.figures import (FIGURE_DIR_ENV, StaticExportUnavailable, StaticExportWarning, find_chrome,
                               image_grid, png_bytes, save_figure, tour_export)


@pytest.fixture
def scenes():
    return [s.render(32) for s in world.single_objects(5)]


def test_image_grid_places_every_image_unchanged(scenes):
    grid = image_grid(scenes, ncols=3, pad=2, scale=2)
    assert grid.size == (2 + 3 * (64 + 2), 2 + 2 * (64 + 2))
    g = np.asarray(grid)
    for i, im in enumerate(scenes):
        r, c = divmod(i, 3)
        x0, y0 = 2 + c * 66, 2 + r * 66
        big = np.asarray(im.resize((64, 64), Image.NEAREST))
        assert np.array_equal(g[y0:y0 + 64, x0:x0 + 64], big), f"cell {i} differs from its image"
    assert (g[2 + 66:2 + 66 + 64, 2 + 2 * 66:2 + 2 * 66 + 64] == 255).all(), "the unused cell stays background"


def test_image_grid_titles_add_a_band_of_text_under_each_row(scenes):
    plain = image_grid(scenes, ncols=5, pad=0)
    titled = image_grid(scenes, ncols=5, pad=0, titles=[f"scene {i}" for i in range(5)])
    assert titled.width == plain.width and titled.height > plain.height
    band = np.asarray(titled)[32:]
    assert (band < 128).any(), "title text should draw dark pixels under the images"


@pytest.mark.parametrize("kwargs, err", [
    (dict(images=[]), "empty"),
    (dict(images=["not an image"]), "images\\[0\\]"),
    (dict(images=None, titles=["a"]), "titles"),
    (dict(images=None, scale=0), "scale"),
])
def test_image_grid_bad_input_names_the_argument(scenes, kwargs, err):
    if kwargs["images"] is None:
        kwargs["images"] = scenes
    with pytest.raises((ValueError, TypeError), match=err):
        image_grid(**kwargs)


def _data_uri_png(text: str) -> Image.Image:
    b64 = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text).group(1)
    import io
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_save_pil_image_round_trips_in_all_formats(tmp_path, scenes):
    img = scenes[0]
    paths = save_figure(img, tmp_path / "scene")
    assert [p.name for p in paths] == ["scene.png", "scene.svg", "scene.html"]
    assert np.array_equal(np.asarray(Image.open(paths[0]).convert("RGB")), np.asarray(img))
    svg = paths[1].read_text()
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("width") == "32" and root.get("height") == "32"
    assert np.array_equal(np.asarray(_data_uri_png(svg).convert("RGB")), np.asarray(img))
    assert np.array_equal(np.asarray(_data_uri_png(paths[2].read_text()).convert("RGB")), np.asarray(img))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.html", "scene.png", "scene.svg"], \
        "no temp files left behind"


def test_a_list_of_images_is_saved_as_a_grid(tmp_path, scenes):
    (png,) = save_figure(scenes, tmp_path / "grid.png", formats=["png"])  # known suffix is dropped
    assert png.name == "grid.png"
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(image_grid(scenes)))


def test_relative_paths_go_under_the_figure_dir(tmp_path, monkeypatch, scenes):
    monkeypatch.setenv(FIGURE_DIR_ENV, str(tmp_path / "figs"))
    (p,) = save_figure(scenes[0], "sub/one", formats="png")
    assert p == tmp_path / "figs" / "sub" / "one.png" and p.exists()
    monkeypatch.delenv(FIGURE_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    (p,) = save_figure(scenes[0], "two", formats="png")
    assert p.resolve() == (tmp_path / "figures" / "two.png").resolve()


def test_bad_formats_and_types_are_refused(tmp_path, scenes):
    with pytest.raises(ValueError, match="formats"):
        save_figure(scenes[0], tmp_path / "x", formats=("png", "gif"))
    with pytest.raises(TypeError, match="plotly Figure"):
        save_figure(np.zeros((4, 4)), tmp_path / "x")


def _bars(n):
    return go.FigureWidget(go.Bar(x=[f"c{i}" for i in range(n)], y=list(range(1, n + 1))),
                           layout=dict(width=320, height=240))


@pytest.mark.skipif(find_chrome() is None, reason="no Chrome/Chromium: plotly static export needs one "
                    "(apt-get install chromium)")
def test_plotly_static_export_draws_the_figure(tmp_path):
    paths = save_figure(_bars(4), tmp_path / "bars")
    assert [p.suffix for p in paths] == [".png", ".svg", ".html"]
    assert Image.open(paths[0]).size == (320, 240)
    svg = paths[1].read_text()
    assert len(re.findall(r'<g class="point">', svg)) == 4, "one SVG bar per data point"
    assert len(re.findall(r'<g class="point">', save_figure(_bars(7), tmp_path / "b7", "svg")[0].read_text())) == 7


def test_plotly_html_is_offline_and_holds_the_data(tmp_path):
    (p,) = save_figure(_bars(3), tmp_path / "bars", formats=["html"])
    text = p.read_text()
    assert 'src="plotly.min.js"' in text and (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert '"x":["c0","c1","c2"]' in text


def test_without_chrome_html_is_written_and_the_warning_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    assert find_chrome() is None
    with pytest.warns(StaticExportWarning, match=r"skipped PNG, SVG.*apt-get install chromium"):
        paths = save_figure(_bars(2), tmp_path / "bars")
    assert [p.name for p in paths] == ["bars.html"]
    with pytest.raises(StaticExportUnavailable, match="BROWSER_PATH"):
        save_figure(_bars(2), tmp_path / "strict", formats=["png"], strict=True)
    assert (tmp_path / "strict.html").exists(), "the HTML fallback is written even when strict"


def test_tour_export_saves_only_when_the_tour_asks(tmp_path, monkeypatch, scenes):
    monkeypatch.delenv(FIGURE_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert tour_export(grid=scenes) == [] and not (tmp_path / "figures").exists()
    monkeypatch.setenv(FIGURE_DIR_ENV, str(tmp_path / "tour"))
    paths = tour_export(grid=scenes, one=scenes[0])
    assert sorted(p.name for p in paths) == ["grid.html", "grid.png", "grid.svg", "one.html", "one.png", "one.svg"]
    assert all(p.parent == tmp_path / "tour" for p in paths)


def test_png_bytes_round_trip(scenes):
    import io
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(scenes[1])))), np.asarray(scenes[1]))
