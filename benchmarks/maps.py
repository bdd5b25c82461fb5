"""Maps: fitting the 2-D projections (PCA, UMAP, t-SNE) at 1k and 10k points, and fetching a fit
again from the ProjectionCache (what a notebook's second run or a re-executed cell costs).

Points are random unit vectors of the offline model's width (128): the fitting cost depends on
n and the dimension, not on where the points lie (t-SNE and UMAP converge a little differently on
clustered data; the iteration counts are fixed, so the difference is small). UMAP's first fit in a
process includes numba's compilation and is reported on its own row.

A million points (issue 18, `big_map`): 1,000,000 synthetic 512-d unit embeddings (50 Gaussian
clusters) mapped by SampledProjection (UMAP on a seeded 10,000-row sample in 50 PCA dimensions,
the rest placed by knn_place through faiss) into the jupyter-scatter widget, timed from the array
to the widget; then the callbacks a user waits for, each including the widget's serialisation of
what it sends to the browser (a recording comm stands in for the kernel's): recolour by a column,
recolour by a text query (a precomputed text embedding, a new one each call), and a selection
coming back from the browser turned into the grid of its first 64 images. The peer is plotly's
FigureWidget at 100,000 points, the most it is still usable at, with the same calls, in the same run.
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
    big_rows, goals, big_data = big_map(quick)
    data.update(big_data)
    return {"title": "Maps: projection fitting", "status": "ok", "goals": goals,
            "notes": ["random unit vectors of dimension 128; scikit-learn PCA (randomized solver off: exact SVD), "
                      "umap-learn with a seed (single-threaded by design) and the exact kNN graph, scikit-learn "
                      "TSNE (Barnes-Hut, 1000 iterations, cosine)."],
            "tables": [{"caption": "", "columns": [["method", "method"], ["points", "points"], ["what", "what"],
                                                   ["seconds", "seconds"]], "rows": rows},
                       {"caption": "A million points: build and callbacks (ms for callbacks, p95 over 30 calls)",
                        "columns": [["backend", "backend"], ["points", "points"], ["what", "what"],
                                    ["value", "value"], ["p95", "p95"], ["unit", "unit"]], "rows": big_rows}],
            "data": data}


# ---------------------------------------------------------------------------------------------
# A million points on a map
# ---------------------------------------------------------------------------------------------
class RecordingComm:
    """Stands in for the kernel's comm so that ipywidgets serialises every update (it skips that
    without a kernel); counts the bytes that would go to the browser."""

    kernel = object()
    comm_id = "bench"

    def __init__(self):
        self.bytes = 0

    def send(self, data=None, metadata=None, buffers=None):
        self.bytes += sum(memoryview(b).nbytes for b in (buffers or []))

    def close(self, *a, **k):
        pass

    def on_msg(self, *a, **k):
        pass


class Tiles:
    """One 16 px tile per point in its cluster's colour: images for the grid without a million files."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        rgb = np.random.default_rng(int(self.labels[i])).integers(0, 256, 3, dtype=np.uint8)
        return np.broadcast_to(rgb, (16, 16, 3)).copy()


def clustered(n: int, d: int = 512, k: int = 50, seed: int = 0, chunk: int = 100_000):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        a = centres[labels[s:s + chunk]] + 0.9 * rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        X[s:s + chunk] = a / np.linalg.norm(a, axis=1, keepdims=True)
    return X, labels, centres


def _callbacks(emap, centres, rng, n_calls: int) -> dict:
    from clipspace.figures import png_bytes

    from .harness import latency

    if emap.scatter is not None:
        emap.scatter.widget.comm = RecordingComm()
    cols = ["cluster", "score"]
    out = {}
    out["recolour by column"] = latency(lambda i: emap.color_by(cols[i % 2]), n=n_calls)
    queries = [centres[i % len(centres)] + 0.3 * rng.standard_normal(centres.shape[1]).astype(np.float32)
               for i in range(n_calls + 2)]
    out["recolour by text query"] = latency(lambda i: emap.color_by_query(queries[i]), n=n_calls)
    n = len(emap.points)
    picks = [np.sort(rng.choice(n, size=int(rng.integers(100, 5000)), replace=False)) for _ in range(n_calls + 2)]

    def select(i):
        if emap.scatter is not None:
            emap.scatter.widget.selection = picks[i].astype(np.uint32)  # as the browser's lasso sends it
        else:
            emap._on_selection(None, type("P", (), {"point_inds": picks[i].tolist()})(), None)
        png_bytes(emap.selection_grid(max_images=64, ncols=16))

    out["selection -> grid"] = latency(select, n=n_calls)
    return out


def big_map(quick: bool = False):
    import pandas as pd

    from clipspace.maps.embedding_map import EmbeddingMap
    from clipspace.maps.projections import ProjectionCache

    from .harness import summarize

    n_big, n_peer = (60_000, 20_000) if quick else (1_000_000, 100_000)
    sample = 2_000 if quick else 10_000
    n_calls = 10 if quick else 30
    rows, goals, data = [], [], {}
    rng = np.random.default_rng(1)
    X, labels, centres = clustered(n_big)
    table = pd.DataFrame({"cluster": pd.Categorical(labels.astype(str)),
                          "score": rng.standard_normal(n_big).astype(np.float32)})
    params = dict(projection="sampled", base="umap", sample_size=sample)
    # numba compiles UMAP's kernels once per process: warm them on a small fit, untimed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        EmbeddingMap.build(X[:3000], projection="sampled", base="umap", sample_size=500, backend="scatter")
        t0 = time.perf_counter()
        emap = EmbeddingMap.build(X, images=Tiles(labels), table=table, cache=ProjectionCache(),
                                  backend="scatter", **params)
        build = time.perf_counter() - t0
    proj = emap.projection
    rows.append({"backend": "jupyter-scatter", "points": n_big, "what": f"build: projection at scale "
                 f"(UMAP on {proj.sample_size_:,} sampled, rest by knn_place) + widget", "value": build, "p95": None,
                 "unit": "s"})
    goals.append({"figure": f"map of {n_big:,} x 512-d built", "goal": "≤ 120 s", "value": build,
                  "met": build <= 120, "why": "issue 18"})
    data["big-build-s"] = [build]
    lat = _callbacks(emap, centres, rng, n_calls)
    for what, t in lat.items():
        ms = summarize([x * 1000 for x in t])
        rows.append({"backend": "jupyter-scatter", "points": n_big, "what": what, "value": ms, "p95": ms["p95"],
                     "unit": "ms"})
        goals.append({"figure": f"{what} at {n_big:,} points, p95", "goal": "≤ 100 ms", "value": ms["p95"],
                      "met": ms["p95"] <= 100, "why": "issue 18"})
        data[f"big-{what}"] = t
    sent = emap.scatter.widget.comm.bytes
    del emap

    # the peer: both backends at a size plotly still handles, the same projection (fitted once)
    Xp, tp = X[:n_peer], table.iloc[:n_peer].reset_index(drop=True)
    cache = ProjectionCache()
    peer = {}
    for backend in ("plotly", "jupyter-scatter"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            EmbeddingMap.build(Xp, table=tp, cache=cache, backend="scatter", **params)  # the fit, untimed
            t0 = time.perf_counter()
            m = EmbeddingMap.build(Xp, images=Tiles(labels[:n_peer]), table=tp, cache=cache,
                                   backend="plotly" if backend == "plotly" else "scatter", **params)
            widget_s = time.perf_counter() - t0
        rows.append({"backend": backend, "points": n_peer, "what": "build with the projection cached (widget, table)",
                     "value": widget_s, "p95": None, "unit": "s"})
        peer[backend] = _callbacks(m, centres, rng, n_calls)
        for what, t in peer[backend].items():
            ms = summarize([x * 1000 for x in t])
            rows.append({"backend": backend, "points": n_peer, "what": what, "value": ms, "p95": ms["p95"], "unit": "ms"})
            data[f"peer-{backend}-{what}"] = t
        del m
    for what in lat:
        ratio = np.percentile(peer["plotly"][what], 95) / np.percentile(peer["jupyter-scatter"][what], 95)
        rows.append({"backend": "plotly / jupyter-scatter", "points": n_peer, "what": f"{what}: p95 ratio (> 1: scatter faster)",
                     "value": float(ratio), "p95": None, "unit": "x"})
        ratio_big = np.percentile(peer["plotly"][what], 95) / np.percentile(lat[what], 95)
        rows.append({"backend": f"plotly {n_peer:,} / jupyter-scatter {n_big:,}", "points": None,
                     "what": f"{what}: p95 ratio", "value": float(ratio_big), "p95": None, "unit": "x"})
    rows.append({"backend": "jupyter-scatter", "points": n_big, "what": "bytes serialised for the browser by the callbacks, in all",
                 "value": float(sent), "p95": None, "unit": "B"})
    return rows, goals, data
