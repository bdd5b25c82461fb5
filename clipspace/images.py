"""Load one image, from any source, as the 8-bit RGB picture a person would see.

`load_image(source)` accepts a file path, a PIL image or a numpy array and applies, in order:
the EXIF orientation (before anything else, so width and height are the displayed ones), a pixel
limit against decompression bombs, and a conversion to RGB that keeps what is visible: transparency
is composited onto a stated background, 16-bit data is rescaled (not clipped) to 8 bits, CMYK and
palette images are converted. Anything that cannot be read raises `BadImageError` naming the source
and the true reason (missing, dangling symlink, permission denied, over the pixel limit, corrupt...).
A file is read once and decoded from those bytes (`read_image_file`, `decode_image`), so a caller
that hashes the bytes knows exactly which content it decoded. PIL's process-wide settings are as
they were after every call: warning filters are never touched, and Image.MAX_IMAGE_PIXELS is raised
(to a higher max_pixels) only while a header is parsed, never while decoding (`_open_header`).
"""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clipspace.errors import BadImageError, describe_source as describe

MAX_PIXELS = 89_478_485  # PIL's own default limit (a 0.25 GB RGB bitmap); raise it per call or here
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga"})
WHITE = (255, 255, 255)


def list_images(folder: str | os.PathLike, errors: list | None = None) -> list[Path]:
    """Image files under `folder`, recursively, sorted by relative path; hidden files and folders
    (names starting with '.', e.g. macOS '._x.jpg' resource forks) are skipped, and symlinked
    folders are not followed. Entries named like images are listed even when they cannot be read
    (dangling symlinks, loops, unreadable files): loading them says why. A subfolder that cannot be
    listed is appended to `errors` as (path, reason), or raises BadImageError without `errors`."""
    root = Path(folder)
    found, todo = [], [root]
    while todo:
        d = todo.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            if errors is None or d == root:
                raise BadImageError(d, f"{_os_reason(e)}: cannot list this folder") from None
            errors.append((d, f"{_os_reason(e)}: cannot list this folder"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                todo.append(d / entry.name)
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS and not os.path.isdir(entry.path):
                found.append(d / entry.name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_image(source, background=WHITE, *, max_pixels: int | None = None) -> Image.Image:
    """Return `source` (path, PIL image, or numpy array HW / HWC uint8, uint16 or float in [0, 1])
    as an 8-bit RGB PIL image. `max_pixels` defaults to `clipspace.images.MAX_PIXELS`."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(source, (str, os.PathLike)):
        data = read_image_file(source)
        return decode_image(data, Path(source).expanduser(), background, max_pixels=limit)
    if isinstance(source, Image.Image):
        _check_size(source, source.size, limit)
        return to_rgb(ImageOps.exif_transpose(source), background, source)
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source), background, source)
    raise BadImageError(source, f"unsupported input type {type(source).__name__}; "
                                "give a file path, a PIL image or a numpy array (HxW or HxWxC)")


# O_NONBLOCK: opening a FIFO must not wait for a writer (read_image_file's fstat refuses it)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of the file at `path` (~ expanded), or BadImageError saying truly why not.
    os-level calls on the happy path (no pathlib, no buffered reader): a cached rerun does nothing
    else per file, so this is its floor."""
    raw = os.fspath(path)
    if raw in ("", b""):  # Path("") would be ".", the current folder
        raise BadImageError(path, "empty path (no file name given)")
    name = os.path.expanduser(raw) if raw[:1] in ("~", b"~") else raw
    try:
        fd = os.open(name, _OPEN_FLAGS)
    except OSError as e:
        path = Path(name)
        if isinstance(e, PermissionError) and path.is_dir():  # Windows cannot open a folder
            raise BadImageError(path, "is a folder, not an image file") from None
        if isinstance(e, FileNotFoundError) and path.is_symlink():
            raise BadImageError(path, f"dangling symlink (points to {os.readlink(path)})") from None
        raise BadImageError(path, _os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadImageError(Path(name), "is a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
            raise BadImageError(Path(name), f"not a regular file ({what})")
        # one read of fstat's size plus a byte: exactly that size back means the whole file in one
        # call; anything else (it grew or shrank meanwhile, a short read) is read on to the end
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:
            chunks = [data]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
            data = b"".join(chunks)
    except OSError as e:
        raise BadImageError(Path(name), _os_reason(e)) from None
    finally:
        os.close(fd)
    if not data:
        raise BadImageError(Path(name), "empty file (0 bytes)")
    return data


def _os_reason(e: OSError) -> str:
    reasons = {errno.ENOENT: "file not found", errno.ENOTDIR: "file not found", errno.ELOOP: "symlink loop",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
    return reasons.get(e.errno) or f"cannot read it ({e.strerror or e})"


def decode_image(data: bytes, source, background=WHITE, *, max_pixels: int | None = None) -> Image.Image:
    """`data`, the bytes of image file `source` (named in errors), as `load_image(source)` returns it."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with _open_header(io.BytesIO(data), source, limit) as im:
            _check_size(source, im.size, limit)
            im.load()  # decode now: truncated and corrupt files fail here, not later
            return to_rgb(ImageOps.exif_transpose(im), background, source)
    except BadImageError:
        raise
    except Image.UnidentifiedImageError:
        raise BadImageError(source, "not an image file PIL can read") from None
    except Image.DecompressionBombError as e:  # a frame or tile checked while decoding, by PIL's own limit
        raise BadImageError(source, f"over PIL's own pixel limit, PIL.Image.MAX_IMAGE_PIXELS, while decoding ({e})") \
            from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise BadImageError(source, f"truncated or corrupt image ({type(e).__name__}: {e})") from None


_PIL_LIMIT = threading.Lock()  # held while PIL's process-wide Image.MAX_IMAGE_PIXELS is raised for one call


def _open_header(fp, source, limit: int) -> Image.Image:
    """Image.open (it parses the header only) with PIL's own size check no stricter than `limit`.

    PIL refuses images over 2x Image.MAX_IMAGE_PIXELS and warns above it, process-wide, from any
    thread. When our limit is higher, the global is raised for the header parse only and restored
    before decoding, so PIL never warns for a size we accept (no `warnings` filter needed, which is
    not thread-safe) and a bomb opened elsewhere in the process is still refused afterwards."""
    try:
        with _PIL_LIMIT:  # every open takes it: one that reads the global must not see another's raise
            pil = Image.MAX_IMAGE_PIXELS
            if pil is None or limit <= pil:
                return Image.open(fp)
            Image.MAX_IMAGE_PIXELS = limit
            try:
                return Image.open(fp)
            finally:
                Image.MAX_IMAGE_PIXELS = pil
    except Image.DecompressionBombError as e:  # over 2x a limit >= ours: over ours too
        size = re.search(r"(\d+) pixels", str(e))  # PIL's message holds the size; im.size is out of reach
        raise _too_big(source, f"{int(size[1]):,} pixels" if size else "the image", limit) from None


def _check_size(source, size, limit: int) -> None:
    if size[0] * size[1] > limit:
        raise _too_big(source, f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels", limit)


def _too_big(source, what: str, limit: int) -> BadImageError:
    return BadImageError(source, f"{what} is over the limit of {limit:,} pixels (a guard against decompression "
                                 "bombs); if you trust the file, pass max_pixels=N or set clipspace.images.MAX_PIXELS")


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        stack = "; for several images (N, H, W) is ambiguous: pass a list of HxW arrays or an (N, H, W, C) array" \
            if a.ndim == 3 else ""
        raise BadImageError(a, f"expected an HxW or HxWxC array with C in 1, 3, 4 (channels last), got shape "
                               f"{tuple(a.shape)}{stack}")
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
