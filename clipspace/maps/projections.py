"""2-D projections of embeddings as scikit-learn transformers: PCA, UMAP and t-SNE behind one interface.

    >>> proj = make_projection("tsne", perplexity=20, random_state=0)
    >>> xy = proj.fit_transform(image_emb)          # (n, 2), also proj.embedding_
    >>> text_xy = proj.transform(text_emb)          # new points placed on the same map

`fit(X)` learns the map, `embedding_` holds the fitted points' coordinates, `transform(X)` places new
points. PCA's transform is the linear projection. t-SNE has no transform (scikit-learn's TSNE only
has fit_transform), so new points are placed by a k-nearest-neighbour rule (`knn_place`): the
inverse-distance weighted average of the map positions of their k nearest fitted points in the
input space. That rule is exact at fitted points (an embedding equal to a fitted one lands on its
point) and says where a new point sits *among the fitted ones*: a text query lands next to the
images it is most similar to. UMAP uses the same rule rather than umap-learn's own transform, so both
nonlinear maps place new points the same way, fast, and from arrays alone (see ProjectionCache).
The frank consequence: a text placed among images this way cannot show the modality gap (it is
pulled onto its nearest images). To see the gap in a t-SNE/UMAP map, fit on images and texts
together; PCA's linear transform shows it either way.

At scale (`SampledProjection`, method "sampled"): UMAP or t-SNE (openTSNE's, method "opentsne") is
fitted on a seeded sample in a PCA-reduced space and every other point is placed by that same
knn_place rule, with faiss's exact search once the sizes make scikit-learn's slow.

`ProjectionCache.fit(projection, X)` returns a fitted copy, refitting only when the method, its
parameters or the input array changed: in memory, and optionally on disk (one .npz per fit, keyed
on everything that changes the result, written atomically, checked on load and refit if corrupt
or if any stored array holds NaN/inf). A cache that cannot write (read-only folder, full disk, a
path that is not a folder) warns once and keeps working from memory: a finished fit is never lost.

How few points: PCA works from 2; t-SNE from 2 (perplexity must be below the number of points);
UMAP from 3 with init="random" or "pca", and from n_components + 2 (4 for a 2-D map) with its
default spectral init (its eigen-solver needs more points than eigenvectors). Below that they raise
a ValueError that says so and suggests PCA.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from clipspace.cache import cache_dir, write_atomic

CACHE_FORMAT = 2  # 2: PCA stores whiten_scale_. Bump when the .npz layout or a fitting recipe changes: old files then miss


def _as_matrix(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_points, dim), got shape {X.shape}; "
                         f"for a single embedding pass x[None, :]")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf; embeddings must be finite")
    return X


# ---------------------------------------------------------------------------------------------
# New points on a nonlinear map
# ---------------------------------------------------------------------------------------------
FAISS_MIN_PAIRS = 50_000_000  # knn_place's search="auto" uses faiss above this many (new x fitted) pairs


def _shepard(d: np.ndarray, exact_tol: float) -> np.ndarray:
    # ours, not weights="distance": that is 1/d, 0.19 off on a N(0, 1) map (coincident points: ties share)
    exact = d <= exact_tol
    return np.where(exact.any(1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(d, 1e-9) ** 2)


def _faiss_neighbours(X_fit: np.ndarray, X_new: np.ndarray, k: int, metric: str, chunk: int):
    """(distances, indices) of the k nearest rows of X_fit for each row of X_new, exact (faiss's flat
    index, float32), in the metric's own distance: 1 - cos for "cosine", |x - y| for "euclidean"."""
    import faiss

    def rows(A):
        A = np.ascontiguousarray(A, dtype=np.float32)
        return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12) if metric == "cosine" else A

    index = faiss.IndexFlatIP(X_fit.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(X_fit.shape[1])
    index.add(rows(X_fit))
    D = np.empty((len(X_new), k), dtype=np.float64)
    I = np.empty((len(X_new), k), dtype=np.int64)
    for s in range(0, len(X_new), chunk):
        d, i = index.search(rows(X_new[s:s + chunk]), k)
        D[s:s + chunk] = 1.0 - d if metric == "cosine" else np.sqrt(np.maximum(d, 0.0))
        I[s:s + chunk] = i
    return np.maximum(D, 0.0), I


def knn_place(X_fit: np.ndarray, Y_fit: np.ndarray, X_new: np.ndarray, k: int = 10,
              metric: str = "cosine", chunk: int = 1024, search: str = "auto") -> np.ndarray:
    """Place new points on a fitted map: the inverse-distance weighted mean of the map positions
    `Y_fit` of their `k` nearest fitted points `X_fit` (Shepard interpolation).

    Weights are 1 / distance**2 over the k nearest, so a new point equal to a fitted point (distance
    0) lands exactly on it, and a point about equally far from its neighbours lands at their mean.
    `metric`: "cosine" (CLIP's geometry) or "euclidean". `chunk` rows of X_new are placed at a time.
    `search`: how the neighbours are found, both exact: "sklearn" (KNeighborsRegressor, brute force,
    float64), "faiss" (faiss's flat index, float32: what makes placing a million points take seconds,
    not minutes; a point within float32 rounding of a fitted one, distance <= 1e-4, counts as on it),
    or "auto": faiss above FAISS_MIN_PAIRS (new x fitted) pairs, else scikit-learn.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"knn_place: metric={metric!r}; use 'cosine' or 'euclidean'")
    if search not in ("auto", "sklearn", "faiss"):
        raise ValueError(f"knn_place: search={search!r}; use 'auto', 'sklearn' or 'faiss'")
    k = int(min(k, len(X_fit)))
    if k < 1:
        raise ValueError("knn_place: k must be at least 1")
    Y_fit = np.asarray(Y_fit, dtype=np.float64)
    if search == "auto":
        search = "faiss" if len(X_new) * len(X_fit) > FAISS_MIN_PAIRS else "sklearn"
    if search == "faiss":
        d, idx = _faiss_neighbours(X_fit, X_new, k, metric, chunk=max(chunk, 16384))
        w = _shepard(d, exact_tol=1e-4)
        out = np.einsum("nk,nkc->nc", w, Y_fit[idx]) / w.sum(1, keepdims=True)
        return out.astype(np.float32)

    from sklearn.neighbors import KNeighborsRegressor

    reg = KNeighborsRegressor(n_neighbors=k, weights=lambda d: _shepard(d, 1e-9), algorithm="brute", metric=metric)
    reg.fit(np.asarray(X_fit, dtype=np.float64), Y_fit)
    X_new = np.asarray(X_new, dtype=np.float64)
    out = np.empty((len(X_new), Y_fit.shape[1]), dtype=np.float64)
    for s in range(0, len(X_new), chunk):
        out[s:s + chunk] = reg.predict(X_new[s:s + chunk]).reshape(-1, Y_fit.shape[1])
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The transformers
# ---------------------------------------------------------------------------------------------
class Projection(TransformerMixin, BaseEstimator):
    """Base of the 2-D projections. Subclasses define `method`, `__init__` (parameters only),
    `_fit(X)` (sets `embedding_` and what transform needs) and `_transform(X)`.

    Fitted attributes: `embedding_` (n, n_components) float32, `n_features_in_`, and per method the
    arrays listed in `_state_names` (all of them plain arrays, so the disk cache needs no pickle).
    """

    method = ""
    _state_names: tuple[str, ...] = ("embedding_",)

    def fit(self, X, y=None):
        X = _as_matrix(X)
        if len(X) < 2:
            raise ValueError(f"{type(self).__name__}.fit: need at least 2 points, got {len(X)}")
        self.n_features_in_ = X.shape[1]
        self._fit(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "embedding_")
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__}.transform: X has {X.shape[1]} features, the projection "
                             f"was fitted on {self.n_features_in_}; embed with the same model")
        return self._transform(X)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X).embedding_.copy()

    # --- state as plain arrays, for the disk cache ---------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name)) for name in self._state_names}

    def _set_state(self, state: dict[str, np.ndarray], X: np.ndarray) -> None:
        for name in self._state_names:
            setattr(self, name, state[name])
        self.n_features_in_ = X.shape[1]
        self._restore(X)

    def _restore(self, X: np.ndarray) -> None:
        """Rebuild what transform needs beyond the stored arrays (the fitted input, for kNN)."""


def whitening_scale(explained_variance: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The divisor of each principal coordinate when whitening: its standard deviation, except for
    components with numerically zero variance (duplicate points, fewer distinct points than
    components), which are left UNSCALED (divisor 1): their coordinates are rounding noise around 0,
    and dividing by a ~0 deviation would give 0/0 = NaN or blow the noise up to unit size.

    "Numerically zero", as in numpy.linalg.matrix_rank: deviation <= max(n, d) * eps(float32) * a
    reference, here the largest deviation or the largest |entry| of X, whichever is bigger (so that
    all-identical points, whose every deviation is noise, count as zero too). Elsewhere this equals
    scikit-learn's PCA(whiten=True)."""
    std = np.sqrt(np.maximum(np.asarray(explained_variance, dtype=np.float64), 0.0))
    ref = max(float(std.max(initial=0.0)), float(np.abs(X).max(initial=0.0)))
    tol = max(X.shape) * float(np.finfo(np.float32).eps) * ref
    return np.where(std > tol, std, 1.0).astype(np.float32)


class PCAProjection(Projection):
    """Principal components (scikit-learn's PCA); transform is the linear map (x - mean_) @ components_.T,
    divided by `whiten_scale_` when `whiten` (see `whitening_scale`: zero-variance components stay unscaled)."""

    method = "pca"
    _state_names = ("embedding_", "mean_", "components_", "explained_variance_", "explained_variance_ratio_",
                    "whiten_scale_")

    def __init__(self, n_components: int = 2, whiten: bool = False, random_state: int | None = 0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def _fit(self, X):
        from sklearn.decomposition import PCA

        with np.errstate(invalid="ignore", divide="ignore"):  # identical points: 0/0 ratio, handled below
            pca = PCA(n_components=self.n_components, whiten=self.whiten, random_state=self.random_state).fit(X)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.explained_variance_ = pca.explained_variance_.astype(np.float32)
        # all points identical: scikit-learn's ratio is 0/0 = NaN; no component explains anything
        self.explained_variance_ratio_ = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0).astype(np.float32)
        self.whiten_scale_ = whitening_scale(pca.explained_variance_, X)
        self.embedding_ = self._transform(X)

    def _transform(self, X):
        Z = (X - self.mean_) @ self.components_.T
        if self.whiten:
            Z = Z / self.whiten_scale_
        return Z.astype(np.float32)


class _KNNTransformMixin:
    """transform = knn_place on the fitted input (kept as X_fit_)."""

    def _transform(self, X):
        return knn_place(self.X_fit_, self.embedding_, X, k=self.transform_neighbors, metric=self._knn_metric())

    def _knn_metric(self) -> str:
        return "cosine" if self.metric == "cosine" else "euclidean"

    def _restore(self, X):
        self.X_fit_ = X

    def _check_metric(self):
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"{type(self).__name__}: metric={self.metric!r}; use 'cosine' or 'euclidean' "
                             "(transform places new points with the same metric)")


class TSNEProjection(_KNNTransformMixin, Projection):
    """t-SNE (scikit-learn's TSNE). transform places new points with `knn_place` (TSNE has none)."""

    method = "tsne"

    def __init__(self, n_components: int = 2, perplexity: float = 30.0, early_exaggeration: float = 12.0,
                 learning_rate="auto", max_iter: int = 1000, metric: str = "cosine", init: str = "pca",
                 transform_neighbors: int = 10, random_state: int | None = 0):
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.metric = metric
        self.init = init
        self.transform_neighbors = transform_neighbors
        self.random_state = random_state

    def _fit(self, X):
        from sklearn.manifold import TSNE

        self._check_metric()
        if not self.perplexity < len(X):
            raise ValueError(f"TSNEProjection: perplexity={self.perplexity} must be below the number of points "
                             f"({len(X)}): t-SNE needs at least {int(self.perplexity) + 1} points for it. Lower "
                             "perplexity (5-50 is usual, about n/3 at most; t-SNE works from 2 points with "
                             "perplexity=1), or use PCA (make_projection('pca')), which works from 2 points")
        tsne = TSNE(n_components=self.n_components, perplexity=self.perplexity,
                    early_exaggeration=self.early_exaggeration, learning_rate=self.learning_rate,
                    max_iter=self.max_iter, metric=self.metric, init=self.init, random_state=self.random_state)
        self.embedding_ = tsne.fit_transform(X).astype(np.float32)
        self.X_fit_ = X


class UMAPProjection(_KNNTransformMixin, Projection):
    """UMAP (umap-learn). transform places new points with `knn_place`, like t-SNE (module docstring).

    Up to `EXACT_KNN_MAX` points, the neighbour graph is computed exactly with scikit-learn and handed
    to UMAP: the same neighbours UMAP finds itself for small data, without ~8 s of numba compilation
    of its approximate search per process. A seed makes umap-learn single-threaded and deterministic.
    """

    method = "umap"
    EXACT_KNN_MAX = 20_000

    def __init__(self, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
                 metric: str = "cosine", n_epochs: int | None = None, init: str = "spectral",
                 transform_neighbors: int = 10, random_state: int | None = 0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.n_epochs = n_epochs
        self.init = init
        self.transform_neighbors = transform_neighbors
        self.random_state = random_state

    def min_points(self) -> int:
        """The fewest points UMAP can map with these parameters: n_components + 2 with the spectral
        init (its eigen-solver needs more points than eigenvectors; umap-learn dies with a TypeError
        from scipy below that), else 3 (n_neighbors >= 2 must stay below the number of points)."""
        spectral = isinstance(self.init, str) and self.init == "spectral"
        return max(3, self.n_components + 2) if spectral else 3

    def _fit(self, X):
        self._check_metric()
        need = self.min_points()
        if len(X) < need:
            how = (f"n_components + 2 = {need} with init='spectral', 3 with init='random'"
                   if need > 3 else "n_neighbors >= 2 must be below the number of points")
            raise ValueError(f"UMAPProjection: UMAP needs at least {need} points ({how}); got {len(X)}. "
                             "For so few points use PCA (make_projection('pca')), which works from 2 points")
        if not 2 <= self.n_neighbors < len(X):
            raise ValueError(f"UMAPProjection: n_neighbors={self.n_neighbors} must be in [2, n_points) "
                             f"with {len(X)} points; lower it (or use PCA for so few points)")
        _quiet_numba_threads()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(n_jobs value|precomputed_knn|search index|"
                                                      "tbb|Graph is not fully connected).*")
            import umap  # slow import (numba): only when a UMAP is fitted

            knn = (None, None, None)
            if len(X) <= self.EXACT_KNN_MAX:
                from sklearn.neighbors import NearestNeighbors

                nn = NearestNeighbors(n_neighbors=self.n_neighbors, metric=self.metric, algorithm="brute").fit(X)
                dist, ind = nn.kneighbors(X)
                knn = (ind, dist.astype(np.float32), None)
            reducer = umap.UMAP(n_components=self.n_components, n_neighbors=self.n_neighbors,
                                min_dist=self.min_dist, metric=self.metric, n_epochs=self.n_epochs, init=self.init,
                                random_state=self.random_state, precomputed_knn=knn)
            self.embedding_ = reducer.fit_transform(X).astype(np.float32)
        self.X_fit_ = X


def _quiet_numba_threads() -> None:
    """Use numba's "workqueue" threads unless the user chose a layer. The default OpenMP layer's
    threads spin-wait after each parallel region and starve scikit-learn's own OpenMP code: on
    2 cores a t-SNE fit ran 10x slower after one UMAP fit. Only takes effect before numba's first
    parallel call in the process."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        import numba

        numba.config.THREADING_LAYER = "workqueue"


class OpenTSNEProjection(_KNNTransformMixin, Projection):
    """t-SNE by openTSNE (FFT-interpolated gradients: far faster than scikit-learn's Barnes-Hut past a
    few thousand points). Parameters keep openTSNE's names; `early_exaggeration_iter` + `n_iter`
    iterations in all (openTSNE's 250 + 500). `n_jobs=1` by default: seeded runs are then exactly
    reproducible (openTSNE was also reproducible at n_jobs=2 here, and not faster on 2 busy cores).

    transform places new points with `knn_place`, like the other nonlinear maps. openTSNE has its own
    `TSNEEmbedding.transform` (it optimises each new point against the fitted ones); on held-out
    points it was slower and no more trustworthy than knn_place (benchmarks/maps.py measures both).
    """

    method = "opentsne"

    def __init__(self, n_components: int = 2, perplexity: float = 30.0, early_exaggeration_iter: int = 250,
                 n_iter: int = 500, learning_rate="auto", metric: str = "cosine", init: str = "pca",
                 transform_neighbors: int = 10, n_jobs: int = 1, random_state: int | None = 0):
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration_iter = early_exaggeration_iter
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.metric = metric
        self.init = init
        self.transform_neighbors = transform_neighbors
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit(self, X):
        import openTSNE

        self._check_metric()
        if not 3 * self.perplexity < len(X):
            raise ValueError(f"OpenTSNEProjection: perplexity={self.perplexity} needs more than 3 * perplexity "
                             f"= {int(3 * self.perplexity)} points (openTSNE's neighbour count), got {len(X)}. "
                             "Lower perplexity, or use PCA (make_projection('pca')) for so few points")
        tsne = openTSNE.TSNE(n_components=self.n_components, perplexity=self.perplexity,
                             early_exaggeration_iter=self.early_exaggeration_iter, n_iter=self.n_iter,
                             learning_rate=self.learning_rate, metric=self.metric, initialization=self.init,
                             n_jobs=self.n_jobs, random_state=self.random_state, verbose=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.embedding_ = np.asarray(tsne.fit(X), dtype=np.float32)
        self.X_fit_ = X


def unit_rows(X, chunk: int = 65536) -> np.ndarray:
    """float32 copy of X with L2-normalised rows, `chunk` rows at a time (a memmap is read once)."""
    out = np.empty(X.shape, dtype=np.float32)
    for s in range(0, len(X), chunk):
        a = np.asarray(X[s:s + chunk], dtype=np.float32)
        out[s:s + chunk] = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return out


class SampledProjection(Projection):
    """UMAP or t-SNE for maps too big to fit whole: fitted on a seeded sample, the rest placed by
    `knn_place` (the rule every nonlinear map here uses for new points).

    1. `sample_size` rows drawn without replacement by numpy's default_rng(random_state)
       (`sample_indices_`, sorted; every row when there are no more; `sample_size_` says how many).
    2. Rows L2-normalised (CLIP's cosine geometry), then PCA to `pca_components` dimensions, fitted
       on the sample (as t-SNE and UMAP pipelines usually do; None keeps every dimension). Between
       unit vectors Euclidean distance is a function of cosine, so the reduced space is Euclidean.
    3. `base` ("umap", "opentsne" or "tsne", with `base_params`) fitted on the reduced sample.
    4. Every other row placed by knn_place on its `transform_neighbors` nearest sample rows in the
       reduced space (exact; faiss past a few million pairs). transform(X) does the same for new rows.

    The frank cost: only the sample is embedded by t-SNE/UMAP; the rest inherit positions from their
    neighbours, so structure finer than the sample's spacing is smoothed. tests/unit/test_projections.py
    measures it against a full fit (trustworthiness). Fitted attributes: `embedding_` (all rows),
    `sample_indices_`, `sample_size_`, `pca_mean_`, `pca_components_`, `base_` (the fitted base map).
    """

    method = "sampled"
    BASES = ("umap", "opentsne", "tsne")
    _state_names = ("embedding_", "sample_indices_", "pca_mean_", "pca_components_")

    def __init__(self, base: str = "umap", sample_size: int = 10_000, pca_components: int | None = 50,
                 n_components: int = 2, transform_neighbors: int = 10, base_params: dict | None = None,
                 random_state: int | None = 0):
        self.base = base
        self.sample_size = sample_size
        self.pca_components = pca_components
        self.n_components = n_components
        self.transform_neighbors = transform_neighbors
        self.base_params = base_params
        self.random_state = random_state

    @property
    def sample_size_(self) -> int:
        check_is_fitted(self, "sample_indices_")
        return int(len(self.sample_indices_))

    def _reduce(self, X, chunk: int = 65536) -> np.ndarray:
        out = np.empty((len(X), self.pca_components_.shape[0]), dtype=np.float32)
        for s in range(0, len(X), chunk):
            rows = unit_rows(X[s:s + chunk])
            if not np.isfinite(rows).all():
                bad = s + int(np.flatnonzero(~np.isfinite(rows).all(1))[0])
                raise ValueError(f"SampledProjection: row {bad} of X contains NaN or inf; embeddings must be finite")
            out[s:s + chunk] = (rows - self.pca_mean_) @ self.pca_components_.T
        return out

    def fit(self, X, y=None):
        # not Projection.fit: X may be a memmap of millions of rows, read in chunks, never copied whole
        X = X if isinstance(X, np.ndarray) and X.ndim == 2 else _as_matrix(X)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"SampledProjection.fit: need a 2-D array of at least 2 points, got shape {X.shape}")
        if self.base not in self.BASES:
            raise ValueError(f"SampledProjection: base={self.base!r}; choose from {self.BASES}")
        if int(self.sample_size) < 3:
            raise ValueError(f"SampledProjection: sample_size={self.sample_size} must be at least 3")
        self.n_features_in_ = X.shape[1]
        n, m = len(X), min(int(self.sample_size), len(X))
        rng = np.random.default_rng(self.random_state)
        self.sample_indices_ = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        sample = _as_matrix(X[self.sample_indices_], "X (the sample)")  # finite check on the sample only
        U = unit_rows(sample)
        dims = self.pca_components
        if dims is None or dims >= min(U.shape):
            self.pca_mean_ = np.zeros(U.shape[1], dtype=np.float32)
            self.pca_components_ = np.eye(U.shape[1], dtype=np.float32)
        else:
            pca = PCAProjection(n_components=int(dims), random_state=self.random_state).fit(U)
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_
        Z = self._reduce(sample)
        params = {"metric": "euclidean", "n_components": self.n_components, "random_state": self.random_state,
                  "transform_neighbors": self.transform_neighbors, **(self.base_params or {})}
        self.base_ = make_projection(self.base, **params).fit(Z)
        self.embedding_ = np.empty((n, self.n_components), dtype=np.float32)
        self.embedding_[self.sample_indices_] = self.base_.embedding_
        rest = np.setdiff1d(np.arange(n), self.sample_indices_, assume_unique=True)
        chunk = 262_144  # rows reduced and placed at a time: 50 MB of reduced rows, not all of X
        for s in range(0, len(rest), chunk):
            rows = rest[s:s + chunk]
            self.embedding_[rows] = knn_place(Z, self.base_.embedding_, self._reduce(X[rows]),
                                              k=self.transform_neighbors, metric="euclidean")
        self.Z_fit_ = Z
        return self

    def _transform(self, X):
        return knn_place(self.Z_fit_, self.embedding_[self.sample_indices_], self._reduce(X),
                         k=self.transform_neighbors, metric="euclidean")

    def _restore(self, X):
        self.Z_fit_ = self._reduce(X[self.sample_indices_])


PROJECTIONS: dict[str, type[Projection]] = {"pca": PCAProjection, "umap": UMAPProjection, "tsne": TSNEProjection,
                                      "opentsne": OpenTSNEProjection, "sampled": SampledProjection}


def make_projection(method: str, **params) -> Projection:
    """A projection by name: "pca", "umap", "tsne" (scikit-learn), "opentsne", or "sampled" (UMAP or
    t-SNE fitted on a sample, for big maps), with its parameters (see each class)."""
    key = str(method).lower().replace("-", "")
    if key not in PROJECTIONS:
        raise ValueError(f"make_projection: unknown method {method!r}; choose from {tuple(PROJECTIONS)}")
    cls = PROJECTIONS[key]
    valid = cls().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(f"make_projection({method!r}): unknown parameter(s) {unknown}; "
                        f"{cls.__name__} takes {sorted(valid)}")
    return cls(**params)


# ---------------------------------------------------------------------------------------------
# Fitting once
# ---------------------------------------------------------------------------------------------
def array_digest(X: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256(f"{X.dtype.str}{X.shape}".encode())
    h.update(X.data)
    return h.hexdigest()


def _params_json(projection: Projection) -> str:
    return json.dumps(projection.get_params(), sort_keys=True, default=repr)


class ProjectionCache:
    """Fitted projections by (method, parameters, input digest): in memory (the last `max_items`),
    and on disk under `directory` when given. `fits` counts real fits, `hits` answers from memory or disk.

    Disk keys also hold the library versions and CACHE_FORMAT (a new scikit-learn may fit differently).
    A file that cannot be read, or whose stored key or array shapes do not match, is refit and replaced.
    Returned projections are shared between callers: treat them as read-only.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 8):
        self.directory = directory
        self.max_items = max_items
        self.fits = 0
        self.hits = 0
        self._memory: OrderedDict[tuple, Projection] = OrderedDict()
        self._write_warned = False  # a cache that cannot write says so once, not once per fit

    def key(self, projection: Projection, X: np.ndarray) -> tuple[str, str, str]:
        return (projection.method, _params_json(projection), array_digest(X))

    def fit(self, projection: Projection, X) -> Projection:
        """A fitted clone of `projection` on `X` (the argument itself is left unfitted)."""
        if not isinstance(projection, Projection):
            raise TypeError(f"ProjectionCache.fit: expected a Projection (make_projection(...)), "
                            f"got {type(projection).__name__}")
        X = _as_matrix(X)
        key = self.key(projection, X)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        fitted = self._load(projection, X, key) if self.directory is not None else None
        if fitted is not None:
            self.hits += 1
        else:
            fitted = clone(projection).fit(X)
            self.fits += 1
            if not _finite_state(fitted._state()):
                return fitted  # never served from a cache: the next call fits again
            if self.directory is not None:
                self._save(fitted, key)
        self._memory[key] = fitted
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)
        return fitted

    def clear(self) -> None:
        """Forget the in-memory fits (files on disk stay)."""
        self._memory.clear()

    # --- disk -------------------------------------------------------------------------------------
    def _disk_key(self, key: tuple) -> str:
        # the version from package metadata: importing umap takes seconds
        umap_version = importlib.metadata.version("umap-learn") if key[0] == "umap" else ""
        return json.dumps({"format": CACHE_FORMAT, "method": key[0], "params": key[1], "input": key[2],
                           "sklearn": sklearn.__version__, "numpy": np.__version__, "umap": umap_version},
                          sort_keys=True)

    def path(self, projection: Projection, X) -> Path:
        """Where the fit of `projection` on `X` is (or would be) stored."""
        return self._file(self.key(projection, _as_matrix(X)))

    def _file(self, key: tuple) -> Path:
        name = hashlib.sha256(self._disk_key(key).encode()).hexdigest()[:32]
        return Path(self.directory) / f"{key[0]}-{name}.npz"

    def _load(self, projection: Projection, X: np.ndarray, key: tuple) -> Projection | None:
        path = self._file(key)
        try:
            if not path.is_file():
                return None
        except OSError:  # e.g. a folder we may not look into: a miss, and _save will say why
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["__key__"]) != self._disk_key(key):
                    raise ValueError("stored key differs")
                state = {name: f[name] for name in type(projection)._state_names}
            n_comp = projection.get_params()["n_components"]
            if state["embedding_"].shape != (len(X), n_comp):
                raise ValueError(f"embedding_ has shape {state['embedding_'].shape}, expected {(len(X), n_comp)}")
            if not _finite_state(state):
                bad = [name for name, a in state.items() if not _finite_state({name: a})]
                raise ValueError(f"stored {', '.join(bad)} hold NaN or inf")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"projection cache file {path} is unreadable ({e}); refitting and replacing it",
                          stacklevel=3)
            return None
        fitted = clone(projection)
        fitted._set_state(state, X)
        return fitted

    def _save(self, fitted: Projection, key: tuple) -> None:
        """Write the fit; if that fails (read-only folder, full disk, not a folder), warn once and go on."""
        buf = io.BytesIO()
        np.savez(buf, __key__=np.array(self._disk_key(key)), **fitted._state())
        path = self._file(key)
        try:
            write_atomic(path, buf.getvalue())
        except OSError as e:
            if not self._write_warned:
                self._write_warned = True
                warnings.warn(f"projection cache cannot write {path} ({type(e).__name__}: {e.strerror or e}); "
                              "fits are kept in memory only (this warning is shown once per cache)",
                              RuntimeWarning, stacklevel=4)


def _finite_state(state: dict[str, np.ndarray]) -> bool:
    """True when every floating array of a fitted state is free of NaN and inf."""
    return all(np.isfinite(a).all() for a in map(np.asarray, state.values()) if a.dtype.kind in "fc")


_DEFAULT_CACHE = ProjectionCache()  # fits of this process, when the caller passes no cache


def fit_projection(projection: Projection | str, X, cache: ProjectionCache | None = None, **params) -> Projection:
    """Fit (or fetch the earlier fit of) a projection on X. `projection` is a Projection or a method
    name with `params`; `cache` defaults to one in-memory cache per process."""
    if isinstance(projection, str):
        projection = make_projection(projection, **params)
    elif params:
        projection = clone(projection).set_params(**params)
    return (cache if cache is not None else _DEFAULT_CACHE).fit(projection, X)
