"""Nearest neighbours over a corpus through faiss (faiss-cpu): inner product on unit rows, i.e. cosine.

Which index (`choose_kind`, kind="auto"):
- up to EXACT_LIMIT rows, `IndexFlatIP`: exact brute force, no training. A query costs N*D
  multiply-adds (100k x 512: ~5e7, some ms on one core), and the index is the rows themselves.
- above, `IndexIVFFlat` (inner product): the rows are split by k-means into nlist = 4*sqrt(N)
  lists (trained on a sample of at most 256 per list, faiss's guidance), and a query scans the
  `nprobe` nearest lists only. Approximate: recall@10 rises with nprobe (default 32, ~0.95 on
  typical CLIP embeddings; nprobe = nlist is exact again). Chosen over HNSW because it builds in a
  k-means plus one pass (HNSW's graph build at 1M x 512 takes many minutes on 2 cores) and takes no
  memory beyond the vectors; HNSW ("hnsw", M=32) is there for query-heavy use.
The index is kept next to the shards as `_index-<kind>-<key>.faiss`, keyed by the shard set.
"""
from __future__ import annotations

import math

import numpy as np

EXACT_LIMIT = 100_000
KINDS = ("auto", "flat", "ivf", "hnsw")


def choose_kind(n: int, kind: str = "auto") -> str:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {KINDS}")
    return ("flat" if n <= EXACT_LIMIT else "ivf") if kind == "auto" else kind


def build_index(x: np.ndarray, kind: str = "auto", *, nlist: int | None = None, nprobe: int = 32,
                chunk: int = 65536, seed: int = 0):
    """A faiss index over the rows of `x` (N, D) float32 (a memmap is added `chunk` rows at a time)."""
    import faiss

    n, d = x.shape
    kind = choose_kind(n, kind)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        nlist = nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))  # faiss wants >= 39 training points a list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, 256 * nlist), replace=False))
        index.cp.seed = seed
        index.train(np.ascontiguousarray(x[sample], dtype=np.float32))
        index.nprobe = min(nprobe, nlist)
    for s in range(0, n, chunk):
        index.add(np.ascontiguousarray(x[s:s + chunk], dtype=np.float32))
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), both (Q, k): inner products, best first; rows -1 where fewer than k exist."""
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
    if q.shape[1] != index.d:
        raise ValueError(f"queries must be (Q, {index.d}); got shape {q.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    scores, rows = index.search(q, int(k))
    return scores, rows
