"""The image source every notebook that takes images shares: world presets, a folder, an upload, bundled photos.

`ImageSourcePanel` is the selector and a status line; the images come from one call of
`clipspace.image_sources.load_source`, so every file goes through clipspace's one loader and a bad
file is listed in the status line with the reason `clip.encode_images` gives it, nothing else lost.
Other panels take it as `source=` and re-run when it changes (`on_change`).

    source = ImageSourcePanel(clip, presets=world.single_objects(12))     # display(source)
    source.controls.kind.value = "photos"            # what the selector does; source.images changed
    source.controls.folder.value = "~/Pictures"      # with kind "folder"; then source.value.failures
    source.on_change(lambda s: print(len(s.images)))

With the offline default CLIP (trained on the shapes world only), any source but the world's
presets is out of its world: the status line says so in one line (`OUT_OF_WORLD`).
"""
from __future__ import annotations

import html
from types import SimpleNamespace
from typing import Callable

import ipywidgets as W
import numpy as np

from clipspace.errors import ClipspaceError, describe_source
from clipspace.figures import image_grid, png_bytes
from clipspace.image_sources import DEFAULT_PHOTOS, ImageSet, is_world_clip, load_source, thumbnail
from clipspace.notebook.widgets import Panel, error_output, guarded

KIND_LABELS = {"world": "world presets", "folder": "a folder", "upload": "upload", "photos": "bundled photos"}
OUT_OF_WORLD = ("The offline default CLIP was trained on the shapes world only: these images are out of its "
                "world, so what it reads from them says little about CLIP. Load a real CLIP in the first cell "
                "for them.")
NO_IMAGES = "no images from the source yet: pick a folder, upload files or choose photos above"
MAX_LISTED = 20  # failures listed in the status line; the rest are counted


class ImageSourcePanel(Panel):
    """Choose where the images come from; `value` (an `ImageSet`) and `images` hold the last read.

    `controls`: kind ('world', 'folder', 'upload', 'photos'), folder (a path: read on Enter or
    when the box loses focus), reload (re-read the folder), limit (at most this many files of a
    folder), upload (an ipywidgets FileUpload), photos (which bundled photos; their licences show).
    `status`: counts, the per-file failures and (offline default CLIP, not the world) the
    out-of-world note. `embeddings()`: the images' CLIP embeddings, computed once per read.
    `on_change(callback)`: callback(panel) after every read that gave images. A source that cannot be
    read at all (no such folder, no image files in it) says why in `status` and `output`, and the
    last images read stay in `value`; an empty one (no folder typed, nothing uploaded) empties
    `value` and tells no consumer, so they keep what they show. Without `presets` there is no
    'world' choice and the panel opens on the bundled photos.
    """

    def __init__(self, clip, presets=None, kind: str = "world", limit: int = 100, preview: int = 12):
        from clipspace.photos import PHOTOS, TEXTURES

        self.clip, self.presets, self.preview = clip, list(presets or ()), preview
        self.value: ImageSet | None = None
        self._callbacks, self._embeddings = [], None
        kinds = [k for k in KIND_LABELS if k != "world" or self.presets]
        kind = kind if kind in kinds else "photos"
        c = self.controls = SimpleNamespace(
            kind=W.ToggleButtons(options=[(KIND_LABELS[k], k) for k in kinds], value=kind, description="images"),
            folder=W.Text(value="", description="folder", placeholder="path of a folder of images",
                          continuous_update=False, layout=W.Layout(width="420px")),
            reload=W.Button(description="reload", icon="refresh", tooltip="read the folder again"),
            limit=W.BoundedIntText(value=limit, min=1, max=100_000, description="at most",
                                   layout=W.Layout(width="160px")),
            upload=W.FileUpload(accept="image/*", multiple=True, description="upload"),
            photos=W.SelectMultiple(options=[(f"{n}: {w}", n) for n, (w, _) in {**PHOTOS, **TEXTURES}.items()],
                                    value=DEFAULT_PHOTOS, description="photos", rows=5,
                                    layout=W.Layout(width="420px")),
        )
        self.status = W.HTML()
        self.picture = W.Image(format="png")
        self.output = error_output()
        self._rows = {"world": W.HTML(f"<i>{len(self.presets)} of the world's scenes (their factors are known; "
                                      "the offline default's own world)</i>"),
                      "folder": W.HBox([c.folder, c.limit, c.reload]), "upload": c.upload, "photos": c.photos}
        self._read = guarded(self.output)(self._read_source)
        c.kind.observe(lambda _: self.refresh(), names="value")
        for control in (c.folder, c.limit, c.upload, c.photos):
            control.observe(lambda _: self.refresh(), names="value")
        c.reload.on_click(lambda _: self.refresh())
        self.refresh()
        self.widget = W.VBox([c.kind, *self._rows.values(), self.status, self.picture, self.output])
        self._show_rows()

    # --- what consumers use ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The kind of the images held ('world', 'folder', 'upload', 'photos'): the selected one,
        unless its read failed and the last images stayed."""
        return self.value.kind if self.value is not None else self.controls.kind.value

    @property
    def images(self) -> list:
        return self.value.images if self.value is not None else []

    @property
    def names(self) -> list:
        return self.value.names if self.value is not None else []

    @property
    def in_world(self) -> bool:
        """True where the CLIP knows these images' world: the presets, or any CLIP but the offline default."""
        return self.kind == "world" or not is_world_clip(self.clip)

    def embeddings(self) -> np.ndarray:
        """(N, D) image embeddings of `images` (`clip.encode_images`), computed once per read."""
        if self._embeddings is None:
            imgs = self.images
            self._embeddings = (np.asarray(self.clip.encode_images(imgs, progress=False), np.float32) if imgs
                                else np.zeros((0, self.clip.embed_dim), np.float32))
        return self._embeddings

    def on_change(self, callback: Callable) -> None:
        """Call `callback(self)` after every read that gave images (a new kind, folder, upload or photo
        choice); a read with none (an empty upload, no folder typed yet) leaves the consumers as they were."""
        self._callbacks.append(callback)

    def refresh(self) -> None:
        """Read the selected source again, update the status line, and tell the consumers."""
        self._show_rows()
        self._read()
        if self._read.last_error is None and self.images:
            for callback in list(self._callbacks):
                callback(self)  # each consumer's own draw is guarded: its error shows in its panel

    # --- drawing -----------------------------------------------------------------------------
    def _show_rows(self):
        for k, row in getattr(self, "_rows", {}).items():
            row.layout.display = None if k == self.controls.kind.value else "none"

    def _read_source(self):
        c, kind = self.controls, self.controls.kind.value
        if kind == "folder" and not c.folder.value.strip():
            self.value, self._embeddings = ImageSet("folder"), None
            self.status.value, self.picture.value = "<i>type the path of a folder of images, then Enter</i>", b""
            return
        try:
            value = load_source(kind, scenes=self.presets, size=self.clip.image_size, folder=c.folder.value.strip(),
                                upload=c.upload.value, photos=list(c.photos.value), limit=c.limit.value)
        except ClipspaceError as e:  # a wrong path, an empty folder, no photo picked: say so, keep the last images
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            raise
        self.value = value
        self._embeddings = None
        self.status.value = status_html(self.value, None if self.in_world else OUT_OF_WORLD)
        shown = self.value.images[:self.preview]
        self.picture.value = png_bytes(image_grid([thumbnail(im, 64) for im in shown], ncols=min(len(shown), 12),
                                                  titles=self.value.names[:self.preview], font_size=9)) \
            if shown else b""


def status_html(images: ImageSet, note: str | None = None) -> str:
    """The status line: how many images were read from how many entries, each failure with its
    reason (as `encode_images` gives it), the photos' licences, and `note` when given."""
    n, bad = len(images.images), len(images.failures)
    what = KIND_LABELS[images.kind]
    head = f"<b>{n} image{'s' if n != 1 else ''}</b> from {what}"
    if bad:
        head += f"; <b>{bad} could not be read</b> and {'was' if bad == 1 else 'were'} skipped"
    if images.total > n + bad:
        head += f" (the first {n + bad} of {images.total} files: raise 'at most' for more)"
    if images.kind == "upload" and not images.total:
        head = "<i>no files uploaded yet: press upload</i>"
    lines = [head]
    lines += [f"&nbsp;&nbsp;{html.escape(describe_source(s))}: {html.escape(r)}"
              for s, r in images.failures[:MAX_LISTED]]
    if bad > MAX_LISTED:
        lines.append(f"&nbsp;&nbsp;... and {bad - MAX_LISTED} more")
    if images.kind == "photos":
        lines += [f"&nbsp;&nbsp;{html.escape(name)}: {html.escape(lic)}" for name, lic in
                  zip(images.names, images.licences)]
    if note:
        lines.append(f"<i>{html.escape(note)}</i>")
    return "<br>".join(lines)
