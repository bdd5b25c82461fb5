"""pca.k_sweep (what notebook 03's k slider shows) against a direct computation with scikit-learn's
PCA: per-k cosines of reconstructions, zero-shot agreement with the full embedding, and accuracy."""
import numpy as np
import pytest
from sklearn.decomposition import PCA

from clipspace.maps.pca import EmbeddingPCA, k_sweep


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data(rng):
    # unit "embeddings" with a decaying spectrum, classes along the leading directions
    X = _unit(rng.normal(size=(200, 16)) * np.geomspace(3, 0.05, 16) + 0.3)
    W = _unit(rng.normal(size=(4, 16))).T  # (D, C) unit class columns
    y = (X @ W).argmax(axis=1)
    y[:20] = (y[:20] + 1) % 4  # some wrong labels: accuracy at full k is 0.9, not 1
    return X, W, y


def test_k_sweep_equals_direct_computation(data):
    X, W, y = data
    pca = EmbeddingPCA().fit(X)
    sweep = k_sweep(pca, X, weights={"shape": W}, labels={"shape": y})
    assert sweep["k"].tolist() == list(range(17))
    ref = PCA(svd_solver="full").fit(X)
    Z = ref.transform(X)
    full = (X @ W).argmax(axis=1)
    for k in (0, 1, 3, 8, 16):
        R = ref.mean_ + Z[:, :k] @ ref.components_[:k]
        cos = np.array([r @ x / np.linalg.norm(r) / np.linalg.norm(x) for r, x in zip(R, X)])
        pred = np.array([int(np.argmax(r @ W)) for r in R])
        row = sweep.set_index("k").loc[k]
        assert row["cosine"] == pytest.approx(cos.mean(), abs=1e-10)
        assert row["cosine_min"] == pytest.approx(cos.min(), abs=1e-10)
        assert row["shape_agreement"] == pytest.approx(np.mean(pred == full))
        assert row["shape_accuracy"] == pytest.approx(np.mean(pred == y))
    last = sweep.iloc[-1]  # all components: the embeddings themselves
    assert last["cosine"] == pytest.approx(1.0) and last["shape_agreement"] == 1.0
    assert last["shape_accuracy"] == pytest.approx(0.9)
    # k = 0: every row is the mean, so all get the mean's class
    assert sweep.iloc[0]["shape_agreement"] == pytest.approx(np.mean(full == int(np.argmax(ref.mean_ @ W))))


def test_k_sweep_selected_ks_and_no_classifiers(data):
    X, _, _ = data
    pca = EmbeddingPCA(n_components=6).fit(X)
    sweep = k_sweep(pca, X[:50], ks=[0, 2, 6])
    assert list(sweep.columns) == ["k", "cosine", "cosine_min"] and sweep["k"].tolist() == [0, 2, 6]
    assert sweep["cosine"].is_monotonic_increasing


def test_k_sweep_errors(data):
    X, W, y = data
    pca = EmbeddingPCA(n_components=6).fit(X)
    with pytest.raises(ValueError, match="between 0 and the 6 fitted"):
        k_sweep(pca, X, ks=[7])
    with pytest.raises(ValueError, match=r"weights\['shape'\] must be \(D=16"):
        k_sweep(pca, X, weights={"shape": W.T})
    with pytest.raises(ValueError, match="one class index per row"):
        k_sweep(pca, X, weights={"shape": W}, labels={"shape": y[:5]})
    with pytest.raises(ValueError, match=r"labels for \['colour'\] have no classifier"):
        k_sweep(pca, X, weights={"shape": W}, labels={"colour": y})
