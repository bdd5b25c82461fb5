"""Projections: PCA equals scikit-learn's, t-SNE/UMAP are seeded and place new points by kNN
(exactly on a fitted point they equal), and the cache refits only when an input changes."""
import os
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier

from clipspace.maps.projections import (PCAProjection, Projection, ProjectionCache, TSNEProjection, UMAPProjection,
                                   fit_projection, knn_place, make_projection)


def unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    """Two well-separated clusters of unit vectors (100 each, 32-d) and their labels."""
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(2, 32)))
    labels = np.repeat([0, 1], 100)
    return unit(centres[labels] + 0.15 * rng.normal(size=(200, 32))), labels


def separated_in_2d(xy, labels) -> float:
    """Leave-one-out 5-NN accuracy of the cluster labels in the 2-D map."""
    knn = KNeighborsClassifier(n_neighbors=6).fit(xy, labels)
    nbrs = knn.kneighbors(xy, return_distance=False)[:, 1:]
    return float((np.array([np.bincount(labels[n]).argmax() for n in nbrs]) == labels).mean())


# --- the factory and the estimator contract -------------------------------------------------------
def test_make_projection_classes_params_and_errors():
    assert type(make_projection("pca")) is PCAProjection
    assert type(make_projection("t-SNE", perplexity=7)) is TSNEProjection
    assert make_projection("umap", n_neighbors=5).get_params()["n_neighbors"] == 5
    with pytest.raises(ValueError, match="unknown method 'isomap'.*pca"):
        make_projection("isomap")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['perplexty'\].*perplexity"):
        make_projection("tsne", perplexty=5)
    p = make_projection("tsne", perplexity=12, random_state=3)
    assert clone(p).get_params() == p.get_params()  # __init__ only stores its parameters
    assert not hasattr(p, "embedding_")
    with pytest.raises(NotFittedError):
        p.transform(np.zeros((1, 4)))


def test_bad_inputs_are_named(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="2-D array"):
        PCAProjection().fit(X[0])
    with pytest.raises(ValueError, match="NaN or inf"):
        PCAProjection().fit(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X))
    p = PCAProjection().fit(X)
    with pytest.raises(ValueError, match="X has 16 features, the projection was fitted on 32"):
        p.transform(X[:, :16])
    with pytest.raises(ValueError, match="perplexity=300 must be below the number of points"):
        TSNEProjection(perplexity=300).fit(X)
    with pytest.raises(ValueError, match="metric='manhattan'"):
        TSNEProjection(metric="manhattan").fit(X)


# --- PCA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_sklearn(blobs, whiten):
    X, _ = blobs
    new = unit(np.random.default_rng(2).normal(size=(7, 32)))
    ref = PCA(n_components=2, whiten=whiten, random_state=0).fit(X)
    p = PCAProjection(whiten=whiten).fit(X)
    assert p.embedding_.shape == (200, 2) and p.embedding_.dtype == np.float32
    np.testing.assert_allclose(p.embedding_, ref.transform(X), atol=1e-5)
    np.testing.assert_allclose(p.transform(new), ref.transform(new), atol=1e-5)
    np.testing.assert_allclose(p.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_array_equal(p.fit_transform(X), p.embedding_)


# --- kNN placement --------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_place_matches_a_plain_loop(metric):
    rng = np.random.default_rng(3)
    X_fit, Y_fit, X_new = rng.normal(size=(50, 8)), rng.normal(size=(50, 2)), rng.normal(size=(6, 8))
    got = knn_place(X_fit, Y_fit, X_new, k=5, metric=metric, chunk=4)  # chunked: 2 chunks
    for x, g in zip(X_new, got):
        if metric == "cosine":
            d = np.array([1 - x @ f / np.linalg.norm(x) / np.linalg.norm(f) for f in X_fit])
        else:
            d = np.array([np.linalg.norm(x - f) for f in X_fit])
        near = np.argsort(d)[:5]
        w = 1 / d[near] ** 2
        np.testing.assert_allclose(g, (w[:, None] * Y_fit[near]).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)


def test_knn_place_is_exact_at_fitted_points():
    rng = np.random.default_rng(4)
    X_fit, Y_fit = rng.normal(size=(30, 8)), rng.normal(size=(30, 2))
    np.testing.assert_allclose(knn_place(X_fit, Y_fit, X_fit[[3, 17]] * 2.5, k=10), Y_fit[[3, 17]], atol=1e-6)
    # euclidean too, though the distance of a point to itself comes out ~1e-7, not 0
    np.testing.assert_allclose(knn_place(X_fit, Y_fit, X_fit[[3, 17]], k=10, metric="euclidean"), Y_fit[[3, 17]],
                               atol=1e-6)
    # two fitted points at one place: a query there lands at their mean, whatever the other neighbours
    X_dup, Y_dup = np.vstack([X_fit, X_fit[5]]), np.vstack([Y_fit, Y_fit[5] + 1.0])
    np.testing.assert_allclose(knn_place(X_dup, Y_dup, X_fit[[5]], k=10), Y_fit[[5]] + 0.5, atol=1e-6)


# --- t-SNE ------------------------------------------------------------------------------------------
def test_tsne_seeded_separates_and_places_an_equal_text_on_its_image(blobs):
    X, labels = blobs
    a = TSNEProjection(perplexity=15, max_iter=300, random_state=0).fit(X)
    b = TSNEProjection(perplexity=15, max_iter=300, random_state=0).fit(X)
    assert a.embedding_.shape == (200, 2)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    # init="pca" (the default) is deterministic by itself; with a random init the seed decides
    r1, r1_again, r2 = (TSNEProjection(perplexity=15, max_iter=250, init="random", random_state=s).fit(X)
                        for s in (1, 1, 2))
    np.testing.assert_array_equal(r1.embedding_, r1_again.embedding_)
    assert not np.allclose(r1.embedding_, r2.embedding_)
    assert separated_in_2d(a.embedding_, labels) > 0.97
    # "a text embedding equal to a fitted image embedding lands on that image's point"
    np.testing.assert_allclose(a.transform(X[[0, 42, 199]]), a.embedding_[[0, 42, 199]], atol=1e-6)
    # a new point from cluster 1 lands among cluster 1's points
    new = unit(X[labels == 1].mean(0, keepdims=True))
    xy = a.transform(new)[0]
    centres = np.array([a.embedding_[labels == k].mean(0) for k in (0, 1)])
    assert np.linalg.norm(xy - centres[1]) < np.linalg.norm(xy - centres[0])


# --- UMAP (one fit: the first fit of a process compiles umap's numba code, several seconds) ---------
def test_umap_shape_seed_transform_and_separation(blobs):
    X, labels = blobs
    cache = ProjectionCache()
    a = cache.fit(make_projection("umap", n_neighbors=10, n_epochs=30, random_state=0), X)
    b = make_projection("umap", n_neighbors=10, n_epochs=30, random_state=0).fit(X)  # fresh object, same seed
    assert a.embedding_.shape == (200, 2) and a.embedding_.dtype == np.float32
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert separated_in_2d(a.embedding_, labels) > 0.97
    np.testing.assert_allclose(a.transform(X[[5, 150]]), a.embedding_[[5, 150]], atol=1e-6)
    with pytest.raises(ValueError, match="n_neighbors=500 must be in"):
        UMAPProjection(n_neighbors=500).fit(X)


# --- the cache --------------------------------------------------------------------------------------
@pytest.fixture
def count_fits(monkeypatch):
    """Count the real fits of every projection class (wrapping _fit, which does the work)."""
    calls = []
    for cls in (PCAProjection, TSNEProjection):
        original = cls._fit

        def counted(self, X, _original=original):
            calls.append(type(self).__name__)
            return _original(self, X)

        monkeypatch.setattr(cls, "_fit", counted)
    return calls


def test_memory_cache_refits_only_when_inputs_change(blobs, count_fits):
    X, _ = blobs
    cache = ProjectionCache()
    proj = make_projection("tsne", perplexity=10, max_iter=250)
    first = cache.fit(proj, X)
    assert not hasattr(proj, "embedding_")  # the argument stays unfitted; a fitted clone comes back
    again = cache.fit(make_projection("tsne", perplexity=10, max_iter=250), X.copy())  # equal, not identical
    assert again is first and len(count_fits) == 1 and (cache.fits, cache.hits) == (1, 1)

    changed = X.copy()
    changed[3, 3] += 1e-3
    cache.fit(proj, changed)  # changed input
    cache.fit(make_projection("tsne", perplexity=11, max_iter=250), X)  # changed parameter
    cache.fit(make_projection("pca"), X)  # changed method
    assert len(count_fits) == 4 and cache.fits == 4


def test_fit_projection_default_cache(blobs, count_fits):
    X, _ = blobs
    a = fit_projection("pca", X, n_components=3)
    b = fit_projection(PCAProjection(), X, n_components=3)
    assert a is b and a.embedding_.shape == (200, 3) and count_fits.count("PCAProjection") <= 1


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_disk_cache_survives_a_new_process_and_detects_corruption(tmp_path, blobs, count_fits, method):
    X, _ = blobs
    params = dict(perplexity=10, max_iter=250) if method == "tsne" else {}
    new = unit(np.random.default_rng(5).normal(size=(4, 32)))
    first = ProjectionCache(tmp_path).fit(make_projection(method, **params), X)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].endswith(".npz")  # no temp files left behind

    rerun = ProjectionCache(tmp_path)  # a new kernel: empty memory, same folder
    loaded = rerun.fit(make_projection(method, **params), X)
    assert len(count_fits) == 1 and (rerun.fits, rerun.hits) == (0, 1)
    np.testing.assert_array_equal(loaded.embedding_, first.embedding_)
    np.testing.assert_array_equal(loaded.transform(new), first.transform(new))

    path = rerun.path(make_projection(method, **params), X)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn file
    with pytest.warns(UserWarning, match="unreadable.*refitting"):
        refit = ProjectionCache(tmp_path).fit(make_projection(method, **params), X)
    assert len(count_fits) == 2
    np.testing.assert_array_equal(refit.embedding_, first.embedding_)

    garbled = bytearray(path.read_bytes())  # the replaced file is whole again; now flip payload bytes
    garbled[len(garbled) // 2] ^= 0xFF
    path.write_bytes(bytes(garbled))
    with pytest.warns(UserWarning, match="unreadable"):
        ProjectionCache(tmp_path).fit(make_projection(method, **params), X)
    assert len(count_fits) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the rewritten file loads cleanly
        ProjectionCache(tmp_path).fit(make_projection(method, **params), X)
    assert len(count_fits) == 3


def test_disk_cache_rejects_a_file_with_another_key(tmp_path, blobs, count_fits):
    X, _ = blobs
    cache = ProjectionCache(tmp_path)
    a, b = make_projection("pca", n_components=2), make_projection("pca", n_components=2, whiten=True)
    cache.fit(a, X), cache.fit(b, X)
    cache.path(b, X).write_bytes(cache.path(a, X).read_bytes())  # a valid file in the wrong place
    with pytest.warns(UserWarning, match="stored key differs"):
        got = ProjectionCache(tmp_path).fit(b, X)
    np.testing.assert_allclose(got.embedding_, PCA(2, whiten=True).fit_transform(X), atol=1e-4)
    assert len(count_fits) == 3


def test_every_projection_is_a_projection():
    assert all(isinstance(make_projection(m), Projection) for m in ("pca", "umap", "tsne"))


# --- a cache that cannot write, and cached NaN -----------------------------------------------------
@pytest.mark.parametrize("where", ["a regular file", "below a regular file"])
def test_a_cache_that_cannot_write_warns_once_and_returns_the_fit(tmp_path, blobs, where):
    X, _ = blobs
    (tmp_path / "file").write_text("not a folder")  # fails for root too, unlike a read-only folder
    root = tmp_path / "file" if where == "a regular file" else tmp_path / "file" / "projections"
    cache = ProjectionCache(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = cache.fit(make_projection("pca"), X)
        b = cache.fit(make_projection("pca", n_components=3), X)
        again = cache.fit(make_projection("pca"), X)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "cannot write" in msgs[0] and "once" in msgs[0], msgs
    assert issubclass(caught[0].category, RuntimeWarning)
    np.testing.assert_allclose(a.embedding_, PCA(2, random_state=0).fit_transform(X), atol=1e-5)
    assert b.embedding_.shape == (200, 3) and again is a and (cache.fits, cache.hits) == (2, 1)
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize("array", ["components_", "mean_", "explained_variance_", "embedding_"])
def test_a_cached_fit_holding_nan_is_a_miss_and_is_refit(tmp_path, blobs, array):
    X, _ = blobs
    first = ProjectionCache(tmp_path).fit(make_projection("pca"), X)
    path = ProjectionCache(tmp_path).path(make_projection("pca"), X)
    with np.load(path, allow_pickle=False) as f:
        stored = {name: f[name].copy() for name in f.files}
    stored[array].flat[0] = np.nan  # same key, same shapes: only the NaN is wrong
    np.savez(path, **stored)
    cache = ProjectionCache(tmp_path)
    with pytest.warns(UserWarning, match=f"{array}.*NaN"):
        got = cache.fit(make_projection("pca"), X)
    assert (cache.fits, cache.hits) == (1, 0)
    new = unit(np.random.default_rng(3).normal(size=(3, 32)))
    assert np.isfinite(got.transform(new)).all()
    np.testing.assert_array_equal(got.embedding_, first.embedding_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was replaced by the finite refit
        rerun = ProjectionCache(tmp_path)
        rerun.fit(make_projection("pca"), X)
    assert (rerun.fits, rerun.hits) == (0, 1)


# --- how few points -------------------------------------------------------------------------------
def test_umap_and_tsne_say_how_many_points_they_need_and_suggest_pca():
    rng = np.random.default_rng(0)
    X2, X3, X4 = (rng.normal(size=(n, 8)).astype(np.float32) for n in (2, 3, 4))
    for proj in (UMAPProjection(n_neighbors=2), UMAPProjection()):  # was a raw TypeError from scipy's eigh
        with pytest.raises(ValueError, match=r"UMAP needs at least 4 points.*got 3.*PCA"):
            proj.fit(X3)
    with pytest.raises(ValueError, match=r"UMAP needs at least 5 points"):
        UMAPProjection(n_components=3, n_neighbors=2).fit(X4)
    with pytest.raises(ValueError, match=r"UMAP needs at least 3 points.*got 2.*PCA"):
        UMAPProjection(n_neighbors=2, init="random").fit(X2)
    # the minimums are real: one point more and umap-learn maps them
    assert UMAPProjection(n_neighbors=2).fit(X4).embedding_.shape == (4, 2)
    assert np.isfinite(UMAPProjection(n_neighbors=2, init="random").fit(X3).embedding_).all()
    with pytest.raises(ValueError, match=r"t-SNE needs at least 31 points.*PCA"):
        TSNEProjection().fit(X3)
    assert np.isfinite(TSNEProjection(perplexity=1, max_iter=250).fit(X2).embedding_).all()
    assert PCAProjection().fit(X2).embedding_.shape == (2, 2)


# --- whitening with zero-variance components -------------------------------------------------------
def test_whitening_duplicate_points_is_finite_and_equals_sklearn_where_defined():
    rng = np.random.default_rng(4)
    two = np.repeat(np.array([[0, 0, 0, 0], [2, 0, 0, 0]], np.float32), 3, axis=0)  # rank 1, exact zeros
    p = PCAProjection(whiten=True).fit(two)
    assert np.isfinite(p.embedding_).all()  # was 0/0 = NaN in the second column
    np.testing.assert_allclose(p.embedding_[:, 0], PCA(1, whiten=True).fit_transform(two)[:, 0], atol=1e-6)
    np.testing.assert_allclose(p.embedding_[:, 1], 0.0, atol=1e-6)  # zero-variance component: left unscaled
    assert np.isfinite(p.transform(rng.normal(size=(5, 4)).astype(np.float32))).all()

    same = np.repeat(rng.normal(size=(1, 16)).astype(np.float32) + 10, 6, axis=0)  # every component is noise
    q = PCAProjection(whiten=True).fit(same)
    np.testing.assert_allclose(q.embedding_, 0.0, atol=1e-4)
    assert np.isfinite(q.explained_variance_ratio_).all()

    # 3 distinct points, each 4 times: 2 real components (well defined: equals sklearn) and a third of noise
    tri = np.repeat(unit(rng.normal(size=(3, 64))), 4, axis=0)
    ref = PCA(2, whiten=True, random_state=0).fit(tri)
    two_d = PCAProjection(whiten=True).fit(tri)
    np.testing.assert_allclose(two_d.embedding_, ref.transform(tri), atol=1e-5)
    np.testing.assert_allclose(two_d.embedding_.var(axis=0, ddof=1), 1.0, rtol=1e-4)
    three_d = PCAProjection(n_components=3, whiten=True).fit(tri)
    np.testing.assert_allclose(three_d.embedding_[:, :2], ref.transform(tri), atol=1e-5)
    assert np.abs(three_d.embedding_[:, 2]).max() < 1e-5, "noise is not blown up to unit variance"

    full = rng.normal(size=(50, 8)).astype(np.float32) @ np.diag(np.arange(1, 9)).astype(np.float32)
    for k in (2, 5, 8):
        np.testing.assert_allclose(PCAProjection(n_components=k, whiten=True).fit(full).embedding_,
                                   PCA(k, whiten=True, random_state=0).fit_transform(full), atol=1e-4)


# --- at scale: openTSNE, faiss placement, a sampled fit ---------------------------------------------
@pytest.fixture(scope="module")
def clusters():
    """1,200 unit vectors in 8 clusters (48-d) and their labels: big enough for a sample to matter."""
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(8, 48)))
    labels = rng.integers(0, 8, 1200)
    return unit(centres[labels] + 0.25 * rng.normal(size=(1200, 48))).astype(np.float32), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_place_faiss_equals_sklearn(clusters, metric):
    X, _ = clusters
    Y = np.random.default_rng(0).normal(size=(300, 2))
    a = knn_place(X[:300], Y, X[300:], k=7, metric=metric, search="sklearn")
    b = knn_place(X[:300], Y, X[300:], k=7, metric=metric, search="faiss")
    np.testing.assert_allclose(b, a, atol=1e-4)
    np.testing.assert_allclose(knn_place(X[:300], Y, X[:300], search="faiss"), Y, atol=1e-5)  # exact at fitted
    with pytest.raises(ValueError, match="search='annoy'"):
        knn_place(X[:300], Y, X[300:], search="annoy")


def test_opentsne_is_as_trustworthy_as_sklearn_tsne(clusters):
    from sklearn.manifold import trustworthiness

    X, labels = clusters
    X, labels = X[:300], labels[:300]
    ours = make_projection("opentsne", random_state=0).fit(X)
    ref = TSNEProjection(random_state=0).fit(X)
    t_ours = trustworthiness(X, ours.embedding_, n_neighbors=10, metric="cosine")
    t_ref = trustworthiness(X, ref.embedding_, n_neighbors=10, metric="cosine")
    assert t_ours >= t_ref - 0.02, (t_ours, t_ref)
    assert separated_in_2d(ours.embedding_, labels) > 0.85  # 8 overlapping clusters: chance 0.125
    again = make_projection("opentsne", random_state=0).fit(X)
    np.testing.assert_array_equal(again.embedding_, ours.embedding_)  # seeded: reproducible for CI
    with pytest.raises(ValueError, match="perplexity=30.0 needs more than"):
        make_projection("opentsne").fit(X[:50])


QUICK_TSNE = {"early_exaggeration_iter": 100, "n_iter": 200}  # seconds, not tens of seconds, per fit


def test_sampled_projection_is_seeded_and_reports_its_sample(clusters):
    X, _ = clusters
    p = make_projection("sampled", base="opentsne", sample_size=400, pca_components=20, random_state=0, base_params=QUICK_TSNE).fit(X)
    assert p.sample_size_ == 400 and p.embedding_.shape == (1200, 2)
    assert np.array_equal(p.sample_indices_, np.sort(np.random.default_rng(0).choice(1200, 400, replace=False)))
    np.testing.assert_array_equal(p.embedding_[p.sample_indices_], p.base_.embedding_)
    q = make_projection("sampled", base="opentsne", sample_size=400, pca_components=20, random_state=0, base_params=QUICK_TSNE).fit(X)
    np.testing.assert_array_equal(q.embedding_, p.embedding_)
    other = make_projection("sampled", base="opentsne", sample_size=400, pca_components=20, random_state=1, base_params=QUICK_TSNE).fit(X)
    assert not np.array_equal(other.sample_indices_, p.sample_indices_)
    # transform of a training row that was not sampled is where the fit put it (the same rule)
    rest = np.setdiff1d(np.arange(1200), p.sample_indices_)[:50]
    np.testing.assert_allclose(p.transform(X[rest]), p.embedding_[rest], atol=1e-5)
    small = make_projection("sampled", base="opentsne", sample_size=5000, pca_components=20, base_params=QUICK_TSNE).fit(X[:300])
    assert small.sample_size_ == 300  # fewer rows than the sample: every row is fitted
    with pytest.raises(ValueError, match="base='isomap'"):
        make_projection("sampled", base="isomap").fit(X)


def test_sampled_fit_places_held_out_points_in_their_own_cluster(clusters):
    """With 8 noisy clusters and a third of the rows fitted, every held-out row lands among its
    cluster's rows. (Within a cluster this data holds only isotropic noise, so trustworthiness
    there says little: a placement knowing only the cluster scores 0.85 of the full fit's 0.92.)"""
    from sklearn.manifold import trustworthiness

    X, labels = clusters
    p = make_projection("sampled", base="opentsne", sample_size=400, pca_components=20, random_state=0, base_params=QUICK_TSNE).fit(X)
    held = np.setdiff1d(np.arange(1200), p.sample_indices_)
    assert separated_in_2d(p.embedding_[held], labels[held]) > 0.85  # chance 0.125
    shuffled = trustworthiness(X, np.random.default_rng(0).permutation(p.embedding_), n_neighbors=10, metric="cosine")
    assert trustworthiness(X, p.embedding_, n_neighbors=10, metric="cosine") > shuffled + 0.3


def test_sampled_fit_keeps_held_out_neighbourhoods_as_a_full_fit_does():
    """Trustworthiness (scikit-learn) on a smooth 2-d sheet in 48-d, where every row has true
    neighbours: the held-out two thirds, placed from their fitted neighbours, keep their
    neighbourhoods within 0.01 of a full fit of the same method (measured: 0.998 vs 0.999-1.0;
    a shuffled map scores 0.5, placing each row at its nearest fitted row 0.996)."""
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(3)
    sheet = rng.uniform(size=(1200, 2)) @ rng.normal(scale=3.0, size=(2, 48)) + rng.uniform(0, 2 * np.pi, 48)
    X = unit(np.cos(sheet) + 0.02 * rng.normal(size=(1200, 48))).astype(np.float32)
    p = make_projection("sampled", base="opentsne", sample_size=400, pca_components=20, random_state=0, base_params=QUICK_TSNE).fit(X)
    full = make_projection("opentsne", metric="cosine", random_state=0, **QUICK_TSNE).fit(X)
    held = np.setdiff1d(np.arange(1200), p.sample_indices_)
    t_held = trustworthiness(X[held], p.embedding_[held], n_neighbors=10, metric="cosine")
    t_full = trustworthiness(X[held], full.embedding_[held], n_neighbors=10, metric="cosine")
    shuffled = trustworthiness(X[held], rng.permutation(p.embedding_[held]), n_neighbors=10, metric="cosine")
    assert t_held >= t_full - 0.01 and t_held > shuffled + 0.4, (t_held, t_full, shuffled)


def test_sampled_fit_round_trips_through_the_disk_cache(tmp_path, clusters):
    X, _ = clusters
    proj = make_projection("sampled", base="opentsne", sample_size=300, pca_components=16, base_params=QUICK_TSNE)
    first = ProjectionCache(tmp_path).fit(proj, X)
    again = ProjectionCache(tmp_path).fit(proj, X)  # a new process: from the file
    assert not hasattr(again, "base_")  # what the docstring says: not stored
    np.testing.assert_array_equal(again.embedding_, first.embedding_)
    assert again.sample_size_ == 300
    np.testing.assert_allclose(again.transform(X[:20]), first.transform(X[:20]), atol=1e-6)
