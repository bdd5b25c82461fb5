"""PCA of CLIP embeddings: how many directions does the embedding really use?

unCLIP's autoregressive prior works on PCA-reduced CLIP image embeddings and reports that 319 of
1,024 principal components keep more than 99% of the information (reconstruction error under 1%).
`EmbeddingPCA` is scikit-learn's PCA with the two things the experiments need on top: transform and
reconstruct from the first k components only, and optionally put reconstructions back on the unit
sphere (the decoder was trained on normalised embeddings). `pca_curves` tabulates, for every k,
the cumulative explained variance and the reconstruction error; `k_for_mse` reads off the k that
gets under a target error; `k_sweep` asks what the truncated embeddings still do (cosine to
the original, zero-shot predictions).

Reconstruction error, stated precisely (both are reported):
- `relative_mse` = ||X - X_k||^2 / ||X - mean||^2: the share of variance about the mean that the first
  k components miss; on the fitted data it is exactly 1 - cumulative explained variance.
- `relative_mse_norm` = ||X - X_k||^2 / ||X||^2: the error relative to the embeddings' own squared
  length (N for unit rows); smaller, since the mean is reconstructed for free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_array, check_is_fitted

PAPER_K, PAPER_DIM = 319, 1024  # unCLIP: 319 of 1,024 components keep > 99% of the information


class EmbeddingPCA(TransformerMixin, BaseEstimator):
    """PCA with truncation to the first k components and optional unit-sphere reconstructions.

    Parameters
    ----------
    n_components : int or None, components to fit (None: min(n_samples, n_features)).
    renormalize : bool, put reconstructions (`inverse_transform`, `reconstruct`) back on the unit sphere.
    """

    def __init__(self, n_components: int | None = None, renormalize: bool = False):
        self.n_components = n_components
        self.renormalize = renormalize

    def fit(self, X, y=None):
        X = check_array(X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        # svd_solver="full": exact and deterministic (the randomized solver would need a seed)
        self.pca_ = PCA(n_components=self.n_components, svd_solver="full").fit(X)
        self.components_ = self.pca_.components_
        self.mean_ = self.pca_.mean_
        self.explained_variance_ = self.pca_.explained_variance_
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        self.n_components_ = int(self.pca_.n_components_)
        self.n_features_in_ = X.shape[1]
        return self

    def _k(self, k) -> int:
        check_is_fitted(self, "pca_")
        if k is None:
            return self.n_components_
        if not 0 <= int(k) <= self.n_components_:
            raise ValueError(f"k={k} must be between 0 and the {self.n_components_} fitted components")
        return int(k)

    def transform(self, X, k: int | None = None) -> np.ndarray:
        """Coordinates (N, k) on the first k principal components (all fitted ones by default)."""
        k = self._k(k)
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features; this PCA was fitted on {self.n_features_in_}")
        return (X - self.mean_) @ self.components_[:k].T

    def inverse_transform(self, Z) -> np.ndarray:
        """Embeddings (N, D) from coordinates on the first Z.shape[1] components (+ the mean)."""
        Z = check_array(Z, dtype=[np.float64, np.float32], ensure_min_features=0)
        k = self._k(Z.shape[1])
        X = Z @ self.components_[:k] + self.mean_
        if self.renormalize:
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return X

    def reconstruct(self, X, k: int | None = None) -> np.ndarray:
        """X rebuilt from its first k principal components (on the unit sphere if `renormalize`)."""
        return self.inverse_transform(self.transform(X, k))


def pca_curves(pca: EmbeddingPCA, X, ks=None) -> pd.DataFrame:
    """For each k: cumulative explained variance (of the fit) and the linear reconstruction error of X.

    The errors are of the plain linear reconstruction (not renormalised), so they never increase with k.
    Computed from the projections (components are orthonormal), so all k cost one matrix product.
    """
    check_is_fitted(pca, "pca_")
    X = check_array(X, dtype=np.float64)
    Xc = X - pca.mean_
    Z = Xc @ pca.components_.T  # (N, K)
    centred = float((Xc ** 2).sum())
    # residual energy after k components = total - energy captured by the first k (Pythagoras)
    captured = np.concatenate([[0.0], np.cumsum((Z ** 2).sum(axis=0))])
    ks = np.arange(pca.n_components_ + 1) if ks is None else np.asarray([pca._k(k) for k in ks])
    residual = np.maximum(centred - captured[ks], 0.0)
    evr = np.concatenate([[0.0], np.cumsum(pca.explained_variance_ratio_)])
    return pd.DataFrame({"k": ks, "explained_variance": evr[ks],
                         "relative_mse": residual / centred,
                         "relative_mse_norm": residual / float((X ** 2).sum())})


def k_for_mse(curves: pd.DataFrame, target: float = 0.01, column: str = "relative_mse") -> int | None:
    """The smallest k whose reconstruction error is below `target` (None if no k gets there)."""
    hit = curves.loc[curves[column] < target, "k"]
    return int(hit.min()) if len(hit) else None


def pca_figure(curves: pd.DataFrame, target: float = 0.01, title: str = "PCA of image embeddings",
               dim: int | None = None):
    """Cumulative explained variance and relative MSE against k; the target error and the paper's
    319-of-1,024 mark (scaled to `dim`, the embedding dimension; default the largest k) as reference lines."""
    import plotly.graph_objects as go

    fig = go.Figure([
        go.Scatter(x=curves["k"], y=curves["explained_variance"], name="cumulative explained variance"),
        go.Scatter(x=curves["k"], y=curves["relative_mse"], name="relative reconstruction MSE"),
    ])
    k = k_for_mse(curves, target)
    fig.add_hline(y=target, line_dash="dot", annotation_text=f"{target:.0%} MSE")
    if k is not None:
        fig.add_vline(x=k, line_dash="dot", annotation_text=f"this model: k={k}", annotation_position="top left")
    dim = int(curves["k"].max()) if dim is None else int(dim)
    fig.add_vline(x=PAPER_K / PAPER_DIM * dim, line_dash="dash", line_color="gray",
                  annotation_text=f"unCLIP: {PAPER_K}/{PAPER_DIM} = {PAPER_K / PAPER_DIM:.0%} of components",
                  annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="k (principal components kept)", yaxis=dict(range=[0, 1.02]),
                      height=420, legend=dict(x=0.45, y=0.5))
    return fig


def k_sweep(pca: EmbeddingPCA, X, ks=None, weights: dict | None = None, labels: dict | None = None) -> pd.DataFrame:
    """What survives truncation to the first k components, for each k: the cosine between each row of
    X and its reconstruction (mean and minimum over rows) and, for each zero-shot classifier in
    `weights` ({name: (D, C) class embeddings, e.g. ZeroShotClassifier.weights}), the share of rows
    whose reconstruction gets the same class as the full embedding (`{name}_agreement`) and, with
    `labels` ({name: class indices}), the share classified correctly (`{name}_accuracy`).

    Cosines and argmax ignore length, so renormalising the reconstructions would change nothing.
    At k = 0 every row is reconstructed as the mean embedding.
    """
    check_is_fitted(pca, "pca_")
    X = check_array(X, dtype=np.float64)
    ks = np.arange(pca.n_components_ + 1) if ks is None else np.asarray([pca._k(k) for k in ks])
    weights = {name: np.asarray(W, dtype=np.float64) for name, W in (weights or {}).items()}
    labels = {name: np.asarray(y) for name, y in (labels or {}).items()}
    for name, W in weights.items():
        if W.ndim != 2 or W.shape[0] != X.shape[1]:
            raise ValueError(f"weights[{name!r}] must be (D={X.shape[1]}, n_classes), got shape {W.shape}")
        if name in labels and labels[name].shape != (len(X),):
            raise ValueError(f"labels[{name!r}] has shape {labels[name].shape}; give one class index per row of X")
    unknown = sorted(set(labels) - set(weights))
    if unknown:
        raise ValueError(f"labels for {unknown} have no classifier in weights")
    full = {name: (X @ W).argmax(axis=1) for name, W in weights.items()}
    Z = (X - pca.mean_) @ pca.components_.T
    norms = np.linalg.norm(X, axis=1)
    rows = []
    for k in ks:
        R = pca.mean_ + Z[:, :k] @ pca.components_[:k]
        cos = np.sum(R * X, axis=1) / np.maximum(np.linalg.norm(R, axis=1) * norms, 1e-12)
        row = {"k": int(k), "cosine": float(cos.mean()), "cosine_min": float(cos.min())}
        for name, W in weights.items():
            pred = (R @ W).argmax(axis=1)
            row[f"{name}_agreement"] = float(np.mean(pred == full[name]))
            if name in labels:
                row[f"{name}_accuracy"] = float(np.mean(pred == labels[name]))
        rows.append(row)
    return pd.DataFrame(rows)
