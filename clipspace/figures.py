"""Save any figure the notebooks make (plotly figures, PIL images, grids of images) with one call.

    >>> save_figure(fig, "zero_shot_bars")            # -> figures/zero_shot_bars.{png,svg,html}
    >>> save_figure(image_grid(images, ncols=4, titles=captions), "scenes")

Relative paths land in `figure_dir()`: `$CLIPSPACE_FIGURE_DIR` when set (`clipspace tour` sets it),
else `./figures` (in JupyterLab, next to the notebook). Every file is written atomically
(temp file + os.replace), so an interrupted save never leaves half a PNG behind.

Static export of plotly figures (PNG, SVG) goes through kaleido, which drives a Chrome/Chromium.
Without one, the HTML copy is still written and a `StaticExportWarning` says what was skipped and
how to fix it (or `StaticExportUnavailable` is raised with `strict=True`). The browser is started
once per process and kept (first export ~3 s, later ones ~0.3 s).
"""
from __future__ import annotations

import atexit
import base64
import html
import io
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

from clipspace.cache import write_atomic

FIGURE_DIR_ENV = "CLIPSPACE_FIGURE_DIR"
BROWSER_ENV = "BROWSER_PATH"  # choreographer (kaleido's browser driver) reads this to find Chrome
FORMATS = ("png", "svg", "html")
CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
HOW_TO_GET_CHROME = (
    "install a Chrome/Chromium (Debian/Ubuntu: `sudo apt-get install chromium`; "
    "or `plotly_get_chrome` / `kaleido.get_chrome_sync()` where downloads are allowed), "
    f"or point ${BROWSER_ENV} at an existing chrome binary"
)


class StaticExportUnavailable(RuntimeError):
    """PNG/SVG export of a plotly figure is impossible here (no Chrome for kaleido)."""


class StaticExportWarning(UserWarning):
    """Some requested formats were skipped; the message says which and how to fix it."""


# --- where figures go ----------------------------------------------------------------------------
def figure_dir() -> Path:
    """$CLIPSPACE_FIGURE_DIR when set, else ./figures (relative to the working directory)."""
    env = os.environ.get(FIGURE_DIR_ENV)
    return Path(env) if env else Path.cwd() / "figures"


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower().lstrip(".") in FORMATS + ("jpg", "jpeg"):
        p = p.with_suffix("")  # "bars.png" means the stem "bars"
    return p if p.is_absolute() else figure_dir() / p


# --- grids of images -----------------------------------------------------------------------------
def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int = 3) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    if len(lines) > max_lines:  # say that it was cut rather than silently dropping words
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".") + "…"
    return lines


def image_grid(images: Sequence[Image.Image], ncols: int | None = None, titles: Sequence[str] | None = None,
               pad: int = 4, scale: int = 1, font_size: int = 11, background: str = "white") -> Image.Image:
    """Tile images (row-major) into one RGB image, with an optional wrapped title under each.

    `scale` enlarges each image by an integer factor with nearest-neighbour (the world's 64 px scenes
    are small on screen). Images of different sizes are centred in cells of the largest size.
    """
    images = list(images)
    if not images:
        raise ValueError("image_grid: `images` is empty; pass at least one PIL image")
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise TypeError(f"image_grid: images[{i}] is a {type(im).__name__}, not a PIL image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"image_grid: {len(titles)} titles for {len(images)} images; give one title per image")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"image_grid: scale={scale!r} must be a positive integer")
    ncols = max(1, min(ncols or min(len(images), 8), len(images)))
    nrows = -(-len(images) // ncols)
    images = [im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    cw, ch = max(im.width for im in images), max(im.height for im in images)

    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(measure, str(t), font, cw) for t in titles] if titles is not None else None
    line_h = font_size + 3
    title_h = max(len(w) for w in wrapped) * line_h + 2 if wrapped else 0

    grid = Image.new("RGB", (pad + ncols * (cw + pad), pad + nrows * (ch + title_h + pad)), background)
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * (cw + pad), pad + r * (ch + title_h + pad)
        grid.paste(im, (x0 + (cw - im.width) // 2, y0 + (ch - im.height) // 2))
        for k, line in enumerate(wrapped[i] if wrapped else ()):
            tw = draw.textlength(line, font=font)
            draw.text((x0 + (cw - tw) / 2, y0 + ch + 2 + k * line_h), line, fill="black", font=font)
    return grid


# --- plotly through kaleido ----------------------------------------------------------------------
def find_chrome() -> str | None:
    """The Chrome/Chromium kaleido will use, or None. ${BROWSER_PATH} wins when it names a binary."""
    env = os.environ.get(BROWSER_ENV)
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CHROME_NAMES:
        if found := shutil.which(name):
            return found
    try:  # choreographer also knows a downloaded copy and the usual install paths
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 (no choreographer, or a platform it cannot search)
        return None


_browser_started = False


def _plotly_static(fig, fmt: str) -> bytes:
    """PNG/SVG bytes of a plotly figure, through one kaleido browser kept for the whole process."""
    global _browser_started
    import kaleido
    import plotly.io as pio

    if not _browser_started:
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _browser_started = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        return pio.to_image(fig, format=fmt)


def _plotly_html(fig, path: Path) -> str:
    """Standalone HTML that loads plotly.min.js from its own folder (written once): offline and small."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    js = path.parent / "plotly.min.js"
    if not js.exists():
        write_atomic(js, get_plotlyjs())
    return pio.to_html(fig, include_plotlyjs="directory", full_html=True)


def _is_plotly(fig) -> bool:
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError:
        return False
    return isinstance(fig, BaseFigure)


# --- PIL images ----------------------------------------------------------------------------------
def png_bytes(img: Image.Image) -> bytes:
    """PNG-encoded bytes of a PIL image (for ipywidgets.Image.value, data URIs)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image_svg(img: Image.Image, png: bytes) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{img.width}" height="{img.height}" viewBox="0 0 {img.width} {img.height}">'
            f'<image width="{img.width}" height="{img.height}" style="image-rendering:pixelated" '
            f'href="data:image/png;base64,{b64}" xlink:href="data:image/png;base64,{b64}"/></svg>\n')


def _image_html(img: Image.Image, png: bytes, title: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><img alt='{html.escape(title)}' width='{img.width}' height='{img.height}' "
            f"style='image-rendering:pixelated' src='data:image/png;base64,{b64}'></body></html>\n")


# --- the one call --------------------------------------------------------------------------------
def save_figure(fig, path: str | os.PathLike, formats: Iterable[str] = FORMATS,
                strict: bool = False) -> list[Path]:
    """Save `fig` as `<path>.<fmt>` for each format; return the paths written.

    `fig`: a plotly Figure/FigureWidget, a PIL image, or a list of PIL images (tiled with `image_grid`).
    `path`: a stem ("bars" or "out/bars"; a known suffix is dropped); relative stems go under `figure_dir()`.
    `formats`: any of "png", "svg", "html".
    Plotly PNG/SVG need Chrome (see module docstring): without it the HTML copy is written anyway,
    and a `StaticExportWarning` names what was skipped (`strict=True` raises `StaticExportUnavailable`
    after writing the HTML).
    """
    formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in ([formats] if isinstance(formats, str) else formats)))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"save_figure: formats={formats!r}; choose from {FORMATS}")
    stem = _stem(path)
    written: list[Path] = []

    if isinstance(fig, (list, tuple)) and fig and all(isinstance(im, Image.Image) for im in fig):
        fig = image_grid(fig)
    if isinstance(fig, Image.Image):
        img = fig.convert("RGB") if fig.mode not in ("RGB", "RGBA", "L") else fig
        png = png_bytes(img)
        for fmt in formats:
            data = {"png": lambda: png, "svg": lambda: _image_svg(img, png),
                    "html": lambda: _image_html(img, png, stem.name)}[fmt]()
            written.append(write_atomic(stem.with_suffix(f".{fmt}"), data))
        return written

    if not _is_plotly(fig):
        raise TypeError(f"save_figure: cannot save a {type(fig).__module__}.{type(fig).__name__}; "
                        "pass a plotly Figure/FigureWidget, a PIL image, or a list of PIL images")

    static = [f for f in formats if f in ("png", "svg")]
    skipped, reason = [], ""
    if static and find_chrome() is None:
        skipped, reason = static, "no Chrome/Chromium found for kaleido"
    for fmt in static:
        if skipped:
            break
        try:
            written.append(write_atomic(stem.with_suffix(f".{fmt}"), _plotly_static(fig, fmt)))
        except Exception as e:  # noqa: BLE001 (kaleido missing, or the browser failed to start)
            skipped, reason = static[static.index(fmt):], f"kaleido failed: {type(e).__name__}: {e}"
    if "html" in formats or skipped:  # the HTML copy is the fallback: always write it when PNG/SVG fail
        html_path = stem.with_suffix(".html")
        written.append(write_atomic(html_path, _plotly_html(fig, html_path)))
    if skipped:
        msg = (f"save_figure: skipped {', '.join(skipped).upper()} for {stem} ({reason}); "
               f"wrote {stem.with_suffix('.html').name} instead. To get static images, {HOW_TO_GET_CHROME}.")
        if strict:
            raise StaticExportUnavailable(msg)
        warnings.warn(msg, StaticExportWarning, stacklevel=2)
    return written


def tour_export(**figures) -> list[Path]:
    """Save each `name=figure` under $CLIPSPACE_FIGURE_DIR, only when it is set (`clipspace tour` sets it).

    A notebook's last cell calls this so the tour keeps its figures, while interactive and nbval runs
    skip the (Chrome-driven, seconds-long) export; in JupyterLab the Save buttons do the same job.
    """
    if not os.environ.get(FIGURE_DIR_ENV):
        return []
    return [p for name, fig in figures.items() for p in save_figure(fig, name)]
