"""Embed images and texts with a ClipModel: batched, cached on disk, honest about what failed.

Both functions return `Embeddings`, a float32 numpy array of L2-normalised rows (one per input
kept, in input order) that also carries `.sources`, `.failures` and `.truncated`.

Strictness: an explicit list of images is strict by default (a bad file raises BadImageError),
because its rows are expected to line up with the list; a folder is not (bad files are skipped,
listed in `.failures` and in a warning, and `.sources` says which file each row is).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .cache import VectorCache, describe_transform, digest, file_digest
from .images import IMAGE_EXTENSIONS, WHITE, BadImageError, describe, list_images, load_image


class Embeddings(np.ndarray):
    """Rows of embeddings plus what happened on the way:
    `.sources` the inputs kept, one per row; `.failures` a list of (source, reason) for inputs
    skipped; `.truncated` indices (into the input list) of texts cut at the context length.
    Arrays derived from it (slices, arithmetic) are plain arrays, metadata-free."""

    def __new__(cls, rows, sources=(), failures=(), truncated=()):
        obj = np.asarray(rows, dtype=np.float32).view(cls)
        obj.sources, obj.failures, obj.truncated = list(sources), list(failures), list(truncated)
        return obj

    def __array_finalize__(self, obj):
        self.sources, self.failures, self.truncated = None, [], []  # a slice no longer knows its rows

    def __array_wrap__(self, out, context=None, return_scalar=False):
        out = out.view(np.ndarray)  # ufunc results (emb @ x.T, emb.mean(0)) are plain arrays
        return out[()] if return_scalar else out


def encode_images(clip, images, *, batch_size: int = 64, strict: bool | None = None, cache: bool | None = None,
                  progress: bool | None = None, background=WHITE, max_pixels: int | None = None) -> Embeddings:
    """Embed `images`: a folder (recursive, sorted), or a list of file paths, PIL images and numpy
    arrays (a single one, or a 4-d array, also works).

    strict: raise on the first bad image (default for lists) or skip it (default for folders).
    cache: None caches file inputs only (keyed on file bytes); True also in-memory images (keyed on
      pixels); False never. Location: `clipspace.cache.cache_dir()`.
    progress: a tqdm bar; None shows one when there are more than two batches to compute.
    background, max_pixels: passed to `clipspace.images.load_image`.
    """
    sources, from_folder = _image_list(images)
    strict = (not from_folder) if strict is None else strict
    store = None
    if cache is not False and clip.weights_id:
        space = digest("image", clip.name, clip.weights_id, _dtype(clip), describe_transform(clip.preprocess),
                       tuple(background))
        store = VectorCache(space, clip.embed_dim)
    rows, keys, failures, loaded = {}, {}, {}, {}

    def fail(i, err: BadImageError):
        if strict:
            raise err
        failures[i] = err.reason

    for i, src in enumerate(sources if store else []):  # look up the cache first
        if isinstance(src, (str, os.PathLike)):
            try:
                keys[i] = digest("file", file_digest(src))
            except OSError:
                continue  # missing or unreadable: load_image below says why
        elif cache:
            try:
                loaded[i] = load_image(src, background, max_pixels=max_pixels)
            except BadImageError as e:
                fail(i, e)
                continue
            keys[i] = digest("pixels", loaded[i].size, loaded[i].tobytes())
        if i in keys and (hit := store.get(keys[i])) is not None:
            rows[i] = hit

    todo = [i for i in range(len(sources)) if i not in rows and i not in failures]
    show = len(todo) > 2 * batch_size if progress is None else progress
    with tqdm(total=len(todo), desc="embedding images", unit="img", disable=not show) as bar, torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            pixels, ok = [], []
            for i in todo[start:start + batch_size]:
                try:
                    img = loaded.pop(i) if i in loaded else load_image(sources[i], background, max_pixels=max_pixels)
                except BadImageError as e:
                    fail(i, e)
                    continue
                pixels.append(clip.preprocess(img))
                ok.append(i)
            if ok:
                for i, v in zip(ok, clip.encode_tensors(torch.stack(pixels))):
                    rows[i] = v
                    if i in keys:
                        _put(store, keys[i], v)
            bar.update(len(todo[start:start + batch_size]))

    kept = sorted(rows)
    failed = [(sources[i], failures[i]) for i in sorted(failures)]
    if failed:
        lines = "\n".join(f"  {describe(s)}: {r}" for s, r in failed[:20])
        more = f"\n  ... and {len(failed) - 20} more (see .failures)" if len(failed) > 20 else ""
        _warn(f"{len(failed)} of {len(sources)} images could not be read and were skipped:\n{lines}{more}")
    out = np.stack([rows[i] for i in kept]) if kept else np.zeros((0, clip.embed_dim), np.float32)
    return Embeddings(out, [sources[i] for i in kept], failed)


def encode_texts(clip, texts, *, batch_size: int = 256, cache: bool = False,
                 progress: bool | None = None) -> Embeddings:
    """Embed texts (a list, or one string). Texts longer than the model's context are truncated by
    its tokenizer, as open_clip does; their indices are in `.truncated` and in a warning.
    cache: True stores text embeddings on disk too (off by default: texts are quick to embed)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str")
    ctx = clip.context_length
    truncated = [i for i, t in enumerate(texts) if (token_count(clip.tokenizer, t) or 0) > ctx]
    if truncated:
        shown = ", ".join(map(str, truncated[:20])) + (", ..." if len(truncated) > 20 else "")
        _warn(f"{len(truncated)} of {len(texts)} texts are longer than the model's context of {ctx} "
              f"tokens and were truncated: indices {shown} (see .truncated)")
    store = None
    if cache and clip.weights_id:
        space = digest("text", clip.name, clip.weights_id, _dtype(clip), type(clip.tokenizer).__name__, ctx)
        store = VectorCache(space, clip.embed_dim)
    rows = {i: v for i, t in enumerate(texts) if store and (v := store.get(digest(t))) is not None}
    todo = [i for i in range(len(texts)) if i not in rows]
    show = len(todo) > 2 * batch_size if progress is None else progress
    with tqdm(total=len(todo), desc="embedding texts", unit="text", disable=not show) as bar, torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            tokens = clip.tokenizer([texts[i] for i in batch]).to(clip.device)
            z = clip.model.encode_text(tokens, normalize=True).float().cpu().numpy()
            for i, v in zip(batch, z):
                rows[i] = v
                if store:
                    _put(store, digest(texts[i]), v)
            bar.update(len(batch))
    out = np.stack([rows[i] for i in range(len(texts))]) if texts else np.zeros((0, clip.embed_dim), np.float32)
    return Embeddings(out, texts, (), truncated)


def token_count(tokenizer, text: str) -> int | None:
    """Tokens `text` needs, start and end tokens included; None when the tokenizer is unknown."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip's BPE tokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer / SigLipTokenizer wrap one
    if callable(inner):
        clean = getattr(tokenizer, "clean_fn", lambda s: s)
        return len(inner(clean(text))["input_ids"])
    return None


def _image_list(images) -> tuple[list, bool]:
    """(sources, from_folder) for any accepted `images` argument."""
    if isinstance(images, (str, os.PathLike)) and Path(images).expanduser().is_dir():
        files = list_images(Path(images).expanduser())
        if not files:
            raise BadImageError(images, f"no image files in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return files, True
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images], False
    if isinstance(images, np.ndarray):
        return (list(images) if images.ndim == 4 else [images]), False
    return list(images), False


def _dtype(clip) -> str:
    return str(next(clip.model.parameters()).dtype)


def _put(store: VectorCache, key: str, v: np.ndarray) -> None:
    try:
        store.put(key, v)
    except OSError as e:  # a full or read-only disk must not cost the user their embeddings
        _warn(f"could not write the embedding cache in {store.dir}: {e}")


def _warn(message: str) -> None:
    """warnings.warn, pointing at the user's line rather than at a clipspace frame."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("clipspace."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)
