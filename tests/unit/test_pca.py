"""EmbeddingPCA against scikit-learn's PCA; reconstruction error curves against direct computation."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from clipspace.maps.pca import EmbeddingPCA, k_for_mse, pca_curves, pca_figure


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def X(rng):
    # unit vectors with a decaying spectrum, like embeddings
    return _unit(rng.normal(size=(300, 24)) * np.geomspace(3, 0.05, 24) + 0.5)


def test_matches_sklearn(X):
    ours = EmbeddingPCA(n_components=10).fit(X)
    ref = PCA(n_components=10, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-10)
    np.testing.assert_allclose(ours.mean_, ref.mean_)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=1e-10)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), ref.inverse_transform(ref.transform(X)),
                               atol=1e-10)
    np.testing.assert_allclose(ours.transform(X, k=3), ref.transform(X)[:, :3], atol=1e-10)
    np.testing.assert_allclose(ours.fit_transform(X), ref.transform(X), atol=1e-10)  # TransformerMixin
    assert clone(ours).get_params() == {"n_components": 10, "renormalize": False}


def test_reconstruction_is_exact_with_all_components_and_can_be_renormalised(X):
    pca = EmbeddingPCA().fit(X)
    assert pca.n_components_ == 24
    np.testing.assert_allclose(pca.reconstruct(X, 24), X, atol=1e-10)
    np.testing.assert_allclose(pca.reconstruct(X, 0), np.broadcast_to(pca.mean_, X.shape), atol=1e-12)
    unit = EmbeddingPCA(renormalize=True).fit(X).reconstruct(X, 3)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-12)
    # renormalising only rescales the linear reconstruction
    np.testing.assert_allclose(unit, _unit(pca.reconstruct(X, 3)), atol=1e-12)


def test_curves_equal_direct_errors_and_never_increase(X, rng):
    pca = EmbeddingPCA().fit(X)
    held_out = _unit(rng.normal(size=(50, 24)) * np.geomspace(3, 0.05, 24) + 0.5)
    for data in (X, held_out):
        curves = pca_curves(pca, data)
        assert list(curves["k"]) == list(range(25))
        assert np.all(np.diff(curves["relative_mse"]) <= 1e-12)
        for k in (0, 1, 5, 17, 24):
            err = ((data - pca.reconstruct(data, k)) ** 2).sum()
            row = curves.iloc[k]
            assert row["relative_mse"] == pytest.approx(err / ((data - pca.mean_) ** 2).sum(), abs=1e-10)
            assert row["relative_mse_norm"] == pytest.approx(err / (data ** 2).sum(), abs=1e-10)
    curves = pca_curves(pca, X)  # on the fitted data, error = unexplained variance
    np.testing.assert_allclose(curves["relative_mse"], 1 - curves["explained_variance"], atol=1e-10)
    assert curves["relative_mse"].iloc[0] == pytest.approx(1.0)


def test_k_for_mse_finds_the_rank(rng):
    rank = 6
    X = rng.normal(size=(200, rank)) @ rng.normal(size=(rank, 40)) + 1e-4 * rng.normal(size=(200, 40))
    pca = EmbeddingPCA().fit(X)
    curves = pca_curves(pca, X)
    assert k_for_mse(curves, 0.01) <= rank and k_for_mse(curves, 1e-6) == rank
    assert k_for_mse(curves, -1.0) is None
    fig = pca_figure(curves)
    assert len(fig.data) == 2 and len(fig.layout.shapes) == 3  # target line, this model's k, the paper's mark


def test_errors(X):
    with pytest.raises(NotFittedError):
        EmbeddingPCA().transform(X)
    pca = EmbeddingPCA(n_components=5).fit(X)
    with pytest.raises(ValueError, match="k=6"):
        pca.transform(X, k=6)
    with pytest.raises(ValueError, match="features"):
        pca.transform(X[:, :10])
