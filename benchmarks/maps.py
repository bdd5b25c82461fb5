"""Maps: fitting the 2-D projections (PCA, UMAP, t-SNE) at 1k and 10k points, and fetching a fit
again from the ProjectionCache (what a notebook's second run or a re-executed cell costs).

Points are random unit vectors of the offline model's width (128): the fitting cost depends on
n and the dimension, not on where the points lie (t-SNE and UMAP converge a little differently on
clustered data; the iteration counts are fixed, so the difference is small). UMAP's first fit in a
process includes numba's compilation and is reported on its own row.
"""
from __future__ import annotations

import tempfile
import time
import warnings

import numpy as np

from .harness import summarize


def unit_vectors(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fit_times(method: str, X: np.ndarray, repeat: int) -> list[float]:
    from clipspace.maps.projections import make_projection

    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_projection(method, random_state=0).fit(X)
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool = False) -> dict:
    from clipspace.maps.projections import ProjectionCache, make_projection

    sizes = [500] if quick else [1000, 10000]
    repeats = {"pca": 5, "umap": 2, "tsne": 1} if not quick else {"pca": 2, "umap": 1, "tsne": 1}
    rows, data = [], {}
    # UMAP's first fit compiles numba kernels (cached on disk by umap-learn where it can): time it alone
    t = _fit_times("umap", unit_vectors(200), 1)
    rows.append({"method": "umap", "points": 200, "what": "first fit in the process (numba compile)",
                 "seconds": summarize(t)})
    for n in sizes:
        X = unit_vectors(n)
        for method in ("pca", "umap", "tsne"):
            r = 1 if n >= 10000 and method != "pca" else repeats[method]
            t = _fit_times(method, X, r)
            data[f"{method}-{n}"] = t
            rows.append({"method": method, "points": n, "what": "fit" + (" (measured once)" if r == 1 else ""),
                         "seconds": summarize(t)})
    # the cache: a second build of the same map costs a lookup, from memory or from disk
    X = unit_vectors(sizes[0])
    with tempfile.TemporaryDirectory() as d:
        disk = ProjectionCache(directory=d)
        disk.fit(make_projection("tsne", random_state=0), X)
        for where, cache in (("memory", disk), ("disk (new process)", ProjectionCache(directory=d))):
            t = []
            for _ in range(5):
                cache.clear() if where.startswith("disk") else None
                t0 = time.perf_counter()
                cache.fit(make_projection("tsne", random_state=0), X)
                t.append(time.perf_counter() - t0)
            rows.append({"method": "tsne", "points": sizes[0], "what": f"cached fit, from {where}", "seconds": summarize(t)})
    # issue 6's budget: a map of 2,000 world scenes, embedding plus PCA, with the offline default
    from clipspace import load_clip, world

    clip, n_scenes = load_clip(), 200 if quick else 2000
    pictures = [s.render(clip.image_size) for s in world.mixed_scenes(n_scenes)]
    t = []
    for _ in range(1 if quick else 3):
        t0 = time.perf_counter()
        make_projection("pca", random_state=0).fit(clip.encode_images(pictures, progress=False, cache=False))
        t.append(time.perf_counter() - t0)
    data[f"world-map-{n_scenes}"] = t
    rows.append({"method": "pca", "points": n_scenes, "what": "world scenes: embed (offline default) + fit, budget < 10 s",
                 "seconds": summarize(t)})
    return {"title": "Maps: projection fitting", "status": "ok",
            "notes": ["random unit vectors of dimension 128; scikit-learn PCA (randomized solver off: exact SVD), "
                      "umap-learn with a seed (single-threaded by design) and the exact kNN graph, scikit-learn "
                      "TSNE (Barnes-Hut, 1000 iterations, cosine)."],
            "tables": [{"caption": "", "columns": [["method", "method"], ["points", "points"], ["what", "what"],
                                                   ["seconds", "seconds"]], "rows": rows}],
            "data": data}
