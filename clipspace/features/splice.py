"""SpLiCE (Bhalla et al. 2024): an image embedding as a sparse non-negative mix of concept words.

Both sides are centred first, as SpLiCE does (the modality gap would otherwise make every image
need the text cone's mean): image embeddings minus the image mean, concept text embeddings minus
the concept mean, each renormalised. Then, per image z and concept matrix D (m concepts x d),

    w* = argmin_{w >= 0}  ||D^T w - z||^2 + lam * ||w||_1

solved here by cyclic coordinate descent on the m x m Gram matrix, vectorised over images (what
sklearn's `Lasso(alpha=lam / (2 d), positive=True, fit_intercept=False)` solves one image at a
time; the tests hold the two equal, and check the optimality (KKT) conditions directly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clipspace.errors import InvalidArgumentError
from clipspace.features.naming import centred, unit_rows


def _check_lam(lam) -> float:
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise InvalidArgumentError(f"lam={lam!r} must be a finite number >= 0 (0 is non-negative least squares)")
    return lam


def nonnegative_lasso(D, Z, lam: float, w0=None, max_sweeps: int = 5000, tol: float = 1e-10) -> np.ndarray:
    """argmin_{w >= 0} ||D^T w - z||^2 + lam ||w||_1 for every row z of Z: weights (N, m).

    Coordinate j's exact minimiser given the others is max(0, (b_j - sum_{k != j} G_jk w_k - lam/2) / G_jj)
    with G = D D^T and b = D z; sweeps stop when no weight moves by more than `tol`. `w0` warm-starts
    (a regularisation path)."""
    D = np.asarray(D, dtype=np.float64)
    Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    lam = _check_lam(lam)
    if D.ndim != 2 or Z.shape[1] != D.shape[1] or len(Z) == 0:
        raise InvalidArgumentError(f"concepts {D.shape} and embeddings {Z.shape} must share the embedding size, "
                                   "with at least one embedding")
    if not (np.isfinite(D).all() and np.isfinite(Z).all()):
        raise InvalidArgumentError("concepts and embeddings must be finite (no NaN)")
    G = D @ D.T
    if (np.diag(G) <= 0).any():
        raise InvalidArgumentError("a concept embedding is zero; drop it")
    B = Z @ D.T  # (N, m)
    W = np.zeros_like(B) if w0 is None else np.array(w0, dtype=np.float64)
    GW = W @ G  # (N, m), kept current as coordinates change
    for _ in range(max_sweeps):
        moved = 0.0
        for j in range(len(G)):
            old = W[:, j].copy()
            new = np.maximum(0.0, (B[:, j] - (GW[:, j] - G[j, j] * old) - lam / 2) / G[j, j])
            delta = new - old
            if delta.any():
                W[:, j] = new
                GW += np.outer(delta, G[j])
                moved = max(moved, float(np.abs(delta).max()))
        if moved <= tol:
            break
    return W


@dataclass
class Decomposition:
    """SpLiCE weights of N images over m concepts, with what they rebuild."""

    weights: np.ndarray  # (N, m) non-negative
    concepts: list  # m concept labels ("colour=red") or texts
    lam: float
    cosine: np.ndarray  # (N,) cosine of D^T w to the centred embedding (0 where w = 0)

    @property
    def n_concepts(self) -> np.ndarray:
        return (self.weights > 0).sum(1)

    def top(self, i: int, k: int = 8) -> list[tuple[str, float]]:
        """Image i's concepts with non-zero weight, largest first (at most k)."""
        order = np.argsort(-self.weights[i])[:k]
        return [(self.concepts[j], float(self.weights[i, j])) for j in order if self.weights[i, j] > 0]


class Splice:
    """Fit the two means on a sample of images and the concept texts, then decompose.

    `fit(image_embeddings, concept_embeddings, concepts)` stores `image_mean_`, `concept_mean_`, the
    centred concept matrix `dictionary_` and the labels `concepts_`; `decompose(z, lam)` solves."""

    def fit(self, image_embeddings, concept_embeddings, concepts: Sequence[str]) -> "Splice":
        I = unit_rows(image_embeddings, "image_embeddings")
        T = unit_rows(concept_embeddings, "concept_embeddings")
        if len(T) != len(concepts):
            raise InvalidArgumentError(f"{len(T)} concept embeddings for {len(concepts)} concept labels")
        self.image_mean_ = I.mean(0)
        self.concept_mean_ = T.mean(0)
        self.dictionary_ = centred(T, self.concept_mean_)
        self.concepts_ = list(concepts)
        return self

    def centre_images(self, z) -> np.ndarray:
        if not hasattr(self, "dictionary_"):
            raise InvalidArgumentError("Splice is not fitted; call .fit(image_embeddings, concept_embeddings, concepts)")
        return centred(z, self.image_mean_)

    def decompose(self, z, lam: float = 0.25, w0=None) -> Decomposition:
        Zc = self.centre_images(z)
        W = nonnegative_lasso(self.dictionary_, Zc, lam, w0)
        rebuilt = W @ self.dictionary_
        norms = np.linalg.norm(rebuilt, axis=1)
        cos = np.where(norms > 0, (rebuilt * Zc).sum(1) / np.maximum(norms, 1e-12), 0.0)
        return Decomposition(W, self.concepts_, float(lam), cos)

    def path(self, z, lams: Sequence[float]) -> list[Decomposition]:
        """Decompositions along a path of sparsity weights, each warm-started from the previous one."""
        out, w = [], None
        for lam in lams:
            out.append(self.decompose(z, lam, w))
            w = out[-1].weights
        return out


def concept_precision_recall(weights, truth) -> tuple[np.ndarray, np.ndarray]:
    """Per image, precision and recall of the concepts with non-zero weight against the true ones
    (boolean (N, m)). Precision is NaN where nothing is recovered, recall where nothing is true."""
    got = np.asarray(weights) > 0
    truth = np.asarray(truth, dtype=bool)
    hit = (got & truth).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hit / got.sum(1), hit / truth.sum(1)


def weighted_jaccard(a, b) -> np.ndarray:
    """Row-wise sum(min) / sum(max) of non-negative weights: 1 = the same decomposition, 0 = disjoint."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    top = np.maximum(a, b).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, np.minimum(a, b).sum(-1) / np.where(top > 0, top, 1), np.nan)
