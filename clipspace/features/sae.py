"""A TopK sparse autoencoder over CLIP embeddings: a dictionary of directions, k active per embedding.

TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): encode with a linear map
and keep the k largest pre-activations (ReLU'd), decode with unit-norm rows. Sparsity is set by k
directly, so there is no L1 coefficient to tune and no shrinkage of the kept activations.

    sae = SparseAutoencoder(n_features=512, k=8, seed=0).fit(z_images)   # seconds for 128-d on CPU
    a = sae.transform(z_images)            # (N, n_features) non-negative, k non-zero per row
    sae.components_                        # (n_features, d) the dictionary, unit-norm rows

Shortcuts, frankly: the decoder bias starts at the data mean (vit-prisma uses the geometric median);
no auxiliary loss for dead features (Gao et al.'s AuxK): they are counted in `dead_` and skipped
by the scoring, and a planted-dictionary test shows what this SAE recovers.
"""
from __future__ import annotations

import numpy as np
import torch

from clipspace.errors import InvalidArgumentError


def _as_matrix(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise InvalidArgumentError(f"{name} must be a non-empty (n_samples, dim) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InvalidArgumentError(f"{name} holds NaN or infinite values; drop or re-embed those rows")
    return X


class SparseAutoencoder:
    """TopK SAE: a = TopK(ReLU(W_enc (x - b_dec) + b_enc)), x_hat = a @ components_ + b_dec.

    Fitted attributes: `components_` (n_features, d, unit-norm rows), `encoder_` (d, n_features),
    `encoder_bias_`, `decoder_bias_` (d,), `loss_curve_` (mean squared error per logged step, on the
    data's scale), `dead_` (bool per feature: never active on the training data), `n_iter_`.
    """

    def __init__(self, n_features: int = 512, k: int = 8, steps: int = 1500, batch_size: int = 256,
                 lr: float = 2e-3, seed: int = 0):
        self.n_features = n_features
        self.k = k
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def _check_params(self, d: int) -> None:
        for name in ("n_features", "k", "steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgumentError(f"{name}={v!r} must be a positive integer")
        if self.k > self.n_features:
            raise InvalidArgumentError(f"k={self.k} active features cannot exceed n_features={self.n_features}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise InvalidArgumentError(f"lr={self.lr!r} must be a positive number")

    # --- the model ------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, W_enc, b_enc, b_dec) -> torch.Tensor:
        pre = torch.relu((x - b_dec) @ W_enc + b_enc)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)

    def fit(self, X, y=None) -> "SparseAutoencoder":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thousands of small matmuls: more threads only add synchronisation
        try:
            return self._fit(X)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X) -> "SparseAutoencoder":
        X = _as_matrix(X)
        n, d = X.shape
        self._check_params(d)
        g = torch.Generator().manual_seed(int(self.seed))
        data = torch.from_numpy(X)
        W_dec = torch.randn(self.n_features, d, generator=g)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        # Encoder starts as the decoder's transpose (Gao et al.): every feature begins aligned with its direction.
        W_enc = W_dec.T.clone().requires_grad_(True)
        W_dec.requires_grad_(True)
        b_enc = torch.zeros(self.n_features, requires_grad=True)
        b_dec = data.mean(0).clone().requires_grad_(True)
        opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=self.lr)
        scale = float(((data - data.mean(0)) ** 2).sum(1).mean())  # normalised MSE: 1 = predicting the mean
        curve = []
        for step in range(self.steps):
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=g)
            x = data[idx]
            a = self._encode(x, W_enc, b_enc, b_dec)
            loss = ((a @ W_dec + b_dec - x) ** 2).sum(1).mean() / scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # remove the gradient along each row, so the step does not just grow norms
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True)
            if step % 50 == 0 or step == self.steps - 1:
                curve.append(float(loss.detach()))
        self.components_ = W_dec.detach().numpy().copy()
        self.encoder_ = W_enc.detach().numpy().copy()
        self.encoder_bias_ = b_enc.detach().numpy().copy()
        self.decoder_bias_ = b_dec.detach().numpy().copy()
        self.loss_curve_ = np.asarray(curve)
        self.n_iter_ = self.steps
        self.dead_ = self.transform(X).max(0) <= 0
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise InvalidArgumentError("this SparseAutoencoder is not fitted yet; call .fit(embeddings) first")

    def transform(self, X) -> np.ndarray:
        """Feature activations (N, n_features): non-negative, at most k non-zero per row."""
        self._fitted()
        X = _as_matrix(X)
        if X.shape[1] != self.components_.shape[1]:
            raise InvalidArgumentError(f"X has {X.shape[1]} dims but the SAE was fitted on {self.components_.shape[1]}")
        t = torch.from_numpy
        with torch.no_grad():
            a = self._encode(t(X), t(self.encoder_), t(self.encoder_bias_), t(self.decoder_bias_))
        return a.numpy()

    def decision_function(self, X) -> np.ndarray:
        """Each feature's pre-activation W_enc (x - b_dec) + b_enc (N, n_features), before ReLU and TopK:
        a continuous detector score, what AUROC is computed on (sparse activations are mostly zero, so
        a feature that shares a concept with its neighbours would cap at AUROC 0.5 + its share / 2)."""
        self._fitted()
        X = _as_matrix(X)
        return (X - self.decoder_bias_) @ self.encoder_ + self.encoder_bias_

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, A) -> np.ndarray:
        """Embeddings rebuilt from activations: A @ components_ + decoder_bias_ (not renormalised)."""
        self._fitted()
        return np.asarray(A, dtype=np.float32) @ self.components_ + self.decoder_bias_

    def explained_variance(self, X) -> float:
        """1 - (reconstruction error / variance around the mean), on X."""
        X = _as_matrix(X)
        err = ((self.inverse_transform(self.transform(X)) - X) ** 2).sum()
        return float(1 - err / ((X - X.mean(0)) ** 2).sum())
