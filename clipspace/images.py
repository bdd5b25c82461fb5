"""Load one image, from any source, as the 8-bit RGB picture a person would see.

`load_image(source)` accepts a file path, a PIL image or a numpy array and applies, in order:
the EXIF orientation (before anything else, so width and height are the displayed ones), a pixel
limit against decompression bombs, and a conversion to RGB that keeps what is visible: transparency
is composited onto a stated background, 16-bit data is rescaled (not clipped) to 8 bits, CMYK and
palette images are converted. Anything that cannot be read raises `BadImageError` naming the source.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .clip import ClipspaceError

MAX_PIXELS = 89_478_485  # PIL's own default limit (a 0.25 GB RGB bitmap); raise it per call or here
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga"})
WHITE = (255, 255, 255)


class BadImageError(ClipspaceError, ValueError):
    """An image that cannot be read; `.source` names it, `.reason` says why."""

    def __init__(self, source, reason: str):
        self.source, self.reason = source, reason
        super().__init__(f"{describe(source)}: {reason}")


def describe(source) -> str:
    """A short human name for an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {tuple(source.shape)}>"
    return f"<{type(source).__name__}>"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, sorted by relative path; hidden files and folders
    (names starting with '.', e.g. macOS '._x.jpg' resource forks) are skipped."""
    root = Path(folder)
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_image(source, background=WHITE, *, max_pixels: int | None = None) -> Image.Image:
    """Return `source` (path, PIL image, or numpy array HW / HWC uint8, uint16 or float in [0, 1])
    as an 8-bit RGB PIL image. `max_pixels` defaults to `clipspace.images.MAX_PIXELS`."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source).expanduser(), background, limit)
    if isinstance(source, Image.Image):
        _check_size(source, source.size, limit)
        return to_rgb(ImageOps.exif_transpose(source), background, source)
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source), background, source)
    raise BadImageError(source, f"unsupported input type {type(source).__name__}; "
                                "give a file path, a PIL image or a numpy array (HxW or HxWxC)")


def _from_file(path: Path, background, limit: int) -> Image.Image:
    if not path.exists():
        raise BadImageError(path, "file not found")
    if path.is_dir():
        raise BadImageError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    # PIL refuses images over 2x its own limit before we can look; raise it to ours when ours is higher.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as im:
                _check_size(path, im.size, limit)
                im.load()  # decode now: truncated and corrupt files fail here, not later
                return to_rgb(ImageOps.exif_transpose(im), background, path)
    except BadImageError:
        raise
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file PIL can read") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise BadImageError(path, f"truncated or corrupt image ({type(e).__name__}: {e})") from None


def _check_size(source, size, limit: int) -> None:
    if size[0] * size[1] > limit:
        raise BadImageError(source, f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels is over the limit of "
                                    f"{limit:,} (a guard against decompression bombs); if you trust the file, "
                                    "pass max_pixels=N or set clipspace.images.MAX_PIXELS")


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise BadImageError(a, "expected an HxW or HxWxC array with C in 1, 3, 4 (channels last)")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _rescale16(a)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise BadImageError(a, f"float arrays must hold values in [0, 1]; got min {np.nanmin(a):.4g}, "
                                   f"max {np.nanmax(a):.4g} (or NaN/inf)")
        a = np.round(a * 255).astype(np.uint8)
    else:
        raise BadImageError(a, f"unsupported dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(a))  # uint8 HW, HW3, HW4 -> L, RGB, RGBA


def _rescale16(a: np.ndarray) -> np.ndarray:
    return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)  # 65535 -> 255 exactly


def to_rgb(im: Image.Image, background, source=None) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency onto `background`."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = Image.fromarray(_wide_to_8bit(np.asarray(im), im.mode), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if im.mode == "RGB":
        return im.copy() if im is source else im
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    except ValueError as e:
        raise BadImageError(source if source is not None else im, f"cannot convert mode {im.mode} to RGB ({e})")


def _wide_to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float pixels to 8 bits by rescaling the range, never by clipping."""
    if mode.startswith("I;16") or (mode == "I" and a.size and 0 <= a.min() and a.max() <= 65535):
        return _rescale16(a)  # PIL stores 16-bit PNG/TIFF data in I;16 or I
    a = a.astype(np.float64)
    if mode == "F" and a.size and 0 <= a.min() and a.max() <= 1:
        return np.round(a * 255).astype(np.uint8)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    return np.round((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)  # unknown depth: stretch its range
