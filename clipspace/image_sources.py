"""Where a notebook's images come from: the world's presets, a folder, uploaded files, or bundled photos.

`load_source(kind, ...)` turns a source spec into an `ImageSet`: the images (8-bit RGB PIL, as
`clipspace.images.load_image` gives them), one name per image, and the inputs that could not be
read as (source, reason). Every file goes through the loader `clip.encode_images` uses
(`read_image_file` then `decode_image`, the folder listed by the same code), so a folder's
`.failures` here are exactly `encode_images(clip, folder, strict=False).failures`, and an
uploaded file gets the message the same bytes would get on disk. One bad file loses nothing else.

    load_source("folder", folder="~/Pictures/cats")         # every image file under it, sorted
    load_source("upload", upload=file_upload.value)          # ipywidgets 8 FileUpload.value
    load_source("photos", photos=["chelsea", "coffee"])      # skimage.data, licences in .licences
    load_source("world", scenes=world.single_objects(12), size=clip.image_size)

Shortcut, said plainly: the images are held in memory at full size (a folder read is capped by
`limit`); the consumers (zero-shot, PCA, inversion) resize them as their models need.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Mapping, Sequence

from PIL import Image

from clipspace.errors import BadImageError, InvalidArgumentError
from clipspace.images import WHITE, decode_image, load_image, read_image_file

SOURCE_KINDS = ("world", "folder", "upload", "photos")
DEFAULT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")  # colour or grey photos of single things


@dataclass
class ImageSet:
    """What a source gave: `images` (RGB PIL) with `names` (one each), and `failures`.

    `labels`: a class per image where the source knows one (a folder's first-level subfolder,
    ImageNet style: root/cat/1.jpg -> 'cat'; None for files at the root), else None per image.
    `licences`: per image, for the bundled photos ('' elsewhere). `scenes`: the world Scenes
    behind the images for the 'world' kind (their factors are known), else None.
    `total`: entries the source listed before `limit` cut it (a folder), else len(images) + failures.
    """

    kind: str
    images: list = field(default_factory=list)
    names: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # (source, reason), as Embeddings.failures
    labels: list = field(default_factory=list)
    licences: list = field(default_factory=list)
    scenes: list | None = None
    total: int = 0

    def __len__(self) -> int:
        return len(self.images)


def load_source(kind: str, *, scenes: Sequence | None = None, size: int | None = None, folder=None,
                upload=None, photos: Sequence[str] | None = None, limit: int | None = None,
                background=WHITE, max_pixels: int | None = None) -> ImageSet:
    """An `ImageSet` from one source. kind: 'world' (render `scenes` at `size`, default each
    scene's own), 'folder' (every image file under `folder`, recursively, sorted; at most `limit`),
    'upload' (the value of an ipywidgets FileUpload), 'photos' (names from `clipspace.photos`,
    default `DEFAULT_PHOTOS`). background, max_pixels: as `clipspace.images.load_image`."""
    if kind == "world":
        return world_images(scenes, size)
    if kind == "folder":
        return folder_images(folder, limit=limit, background=background, max_pixels=max_pixels)
    if kind == "upload":
        return uploaded_images(upload, background=background, max_pixels=max_pixels)
    if kind == "photos":
        return bundled_photos(photos, background=background)
    raise InvalidArgumentError(f"kind={kind!r}; use one of {', '.join(SOURCE_KINDS)}")


def world_images(scenes, size: int | None = None) -> ImageSet:
    """World scenes rendered at `size`, named by their first caption."""
    scenes = list(scenes or ())
    if not scenes:
        raise InvalidArgumentError("scenes is empty: give world scenes, e.g. world.single_objects(12)")
    images = [s.render(size) if size else s.render() for s in scenes]
    return ImageSet("world", images, [s.caption(0) for s in scenes], [], [None] * len(scenes), [""] * len(scenes),
                    scenes, len(scenes))


def folder_images(folder, limit: int | None = None, background=WHITE, max_pixels: int | None = None) -> ImageSet:
    """Every image file under `folder` as `encode_images(clip, folder)` lists and reads it; the
    first `limit` entries only (sorted by relative path) when given."""
    from clipspace.embedding import _image_list  # the listing encode_images uses: same order, same failures

    if folder is None or os.fspath(folder) in ("", b""):
        raise InvalidArgumentError("folder is empty: type the path of a folder of images")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BadImageError(root, "file not found: not a folder" if not root.exists() else "is a file, not a folder")
    if limit is not None and int(limit) < 1:
        raise InvalidArgumentError(f"limit={limit!r}: read at least one file (or None for all)")
    sources, _, unlisted = _image_list(root)
    total = len(sources)
    if limit is not None:
        sources = sources[:int(limit)]
    out = ImageSet("folder", total=total)
    for i, src in enumerate(sources):
        try:
            if i in unlisted:
                raise BadImageError(src, unlisted[i])
            image = decode_image(read_image_file(src), Path(src).expanduser(), background, max_pixels=max_pixels)
        except BadImageError as e:
            out.failures.append((src, e.reason))
            continue
        rel = PurePath(src).relative_to(root)
        out.images.append(image)
        out.names.append(rel.as_posix())
        out.labels.append(rel.parts[0] if len(rel.parts) > 1 else None)
        out.licences.append("")
    return out


def uploaded_images(value, background=WHITE, max_pixels: int | None = None) -> ImageSet:
    """The files of an ipywidgets FileUpload: its `value`, in ipywidgets 8 a tuple of dicts with
    'name' and 'content' (a memoryview); ipywidgets 7's {name: {'content': ...}} works too. Each is
    decoded by `decode_image`, so a bad upload gets the message the same file would get on disk."""
    if isinstance(value, Mapping):  # ipywidgets 7
        value = [{"name": name, **dict(v)} for name, v in value.items()]
    out = ImageSet("upload")
    for i, item in enumerate(value or ()):
        if not isinstance(item, Mapping) or "content" not in item:
            raise InvalidArgumentError(f"upload[{i}] is a {type(item).__name__}; expected a FileUpload value: "
                                       "a tuple of dicts with 'name' and 'content'")
        name = str(item.get("name") or f"upload {i}")
        out.total += 1
        try:
            data = bytes(item["content"])
            if not data:
                raise BadImageError(name, "empty file (0 bytes)")  # read_image_file's words for the same file
            image = decode_image(data, name, background, max_pixels=max_pixels)
        except BadImageError as e:
            out.failures.append((name, e.reason))
            continue
        out.images.append(image)
        out.names.append(name)
        out.labels.append(None)
        out.licences.append("")
    return out


def bundled_photos(names: Sequence[str] | None = None, background=WHITE) -> ImageSet:
    """Photos (and textures) bundled with scikit-image, `clipspace.photos`, each with its licence."""
    from clipspace.photos import PHOTOS, TEXTURES, photo

    names = list(DEFAULT_PHOTOS if names is None else names)
    if not names:
        raise InvalidArgumentError("photos is empty: pick at least one bundled photo")
    known = {**PHOTOS, **TEXTURES}
    out = ImageSet("photos", total=len(names))
    for name in names:
        what, licence = known.get(name, ("", ""))
        out.images.append(load_image(photo(name), background))  # photo() names the choices for an unknown one
        out.names.append(name)
        out.labels.append(None)
        out.licences.append(f"{what}: {licence}")
    return out


def is_world_clip(clip) -> bool:
    """Whether `clip` is the offline default's architecture, trained on the shapes world only: for
    it, anything but world scenes is out of its world."""
    from clipspace.factory import DEFAULT_MODEL

    return getattr(clip, "name", None) == DEFAULT_MODEL


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """`image` fitted into size x size (aspect kept), for a grid of mixed shapes."""
    im = image.copy()
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return im
