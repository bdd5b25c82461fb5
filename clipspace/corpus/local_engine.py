"""The local engine (the default): shards embedded one after another by `encode_images`, the
batched path with its reading threads, on this machine, with no Ray import.

Each shard's paths go to `encode_images(clip, paths, strict=False, cache=...)` in one call, so a
shard's good rows are exactly that call's rows and a bad file is its `.failures` reason. (Rows can
differ from a call over a different list in the last bits, ~1e-7: a CPU matmul's rounding depends
on how many rows share a batch.)
"""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np

from clipspace.embedding import encode_images

_FAILED_WARNING = r"\d+ of \d+ images could not be read"  # encode_images' per-call warning; embed() counts them


def embed_paths(clip, paths: list[str], *, batch_size: int = 64, cache: bool = False,
                workers: int | None = None) -> tuple[np.ndarray, list[str | None]]:
    """(embeddings (N, D) with zero rows where a file failed, error per path or None)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FAILED_WARNING)
        z = encode_images(clip, paths, strict=False, cache=cache, batch_size=batch_size, progress=False,
                          workers=workers)
    out = np.zeros((len(paths), clip.embed_dim), np.float32)
    row = {str(s): i for i, s in enumerate(z.sources)}
    reasons = {str(s): r for s, r in z.failures}
    errors: list[str | None] = []
    for i, p in enumerate(paths):
        if p in row:
            out[i] = z[row[p]]
            errors.append(None)
        else:
            errors.append(reasons.get(p, "not embedded (no reason given)"))
    return out, errors


def run_local(clip, chunks: list[list[str]], *, batch_size: int = 64, cache: bool = False,
              workers: int | None = None) -> Iterator[tuple[list[str], np.ndarray, list[str | None]]]:
    """Yield (paths, embeddings, errors) per chunk, in order."""
    for chunk in chunks:
        emb, errors = embed_paths(clip, chunk, batch_size=batch_size, cache=cache, workers=workers)
        yield chunk, emb, errors
