"""Steering: add a feature's direction to an embedding, decode it, and read what changed.

The unCLIP decoder turns a CLIP image embedding into pixels, so a dictionary direction can be
*shown*: z' = normalise(z + alpha * d) for growing alpha, every frame decoded from the same noise.
Shown is not scored, so each decoded frame is embedded again by the CLIP and read by factor probes
fitted on real scenes (`probes.factors.FactorProbes`): a clean feature moves its own factor to its
value and leaves the others alone. `leak` is the share of the other factors whose reading changed
from alpha = 0.

Frank limits: the probes read the re-embedded image, so a decoder that cannot draw a concept and a
feature that does not encode it look the same; the decoder card's numbers bound the first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from clipspace.errors import InvalidArgumentError
from clipspace.unclip.latents import decode, embed_images, random_noise

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def steered(z, direction, alphas: Sequence[float] = DEFAULT_ALPHAS) -> torch.Tensor:
    """(len(alphas) * N, d): each of the N embeddings moved by alpha * direction, renormalised,
    grouped by alpha (all of alpha 0 first)."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(-1, np.shape(direction)[-1])
    d = torch.as_tensor(np.asarray(direction, dtype=np.float32)).reshape(1, -1)
    alphas = np.asarray(alphas, dtype=np.float32)
    if len(alphas) == 0 or not np.isfinite(alphas).all() or not torch.isfinite(z).all() or not torch.isfinite(d).all():
        raise InvalidArgumentError("z, direction and alphas must be finite, with at least one alpha")
    out = torch.cat([z + float(a) * d / d.norm() for a in alphas])
    norms = out.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise InvalidArgumentError("an alpha cancels the embedding exactly; pick other alphas")
    return out / norms


def feature_embedding(sae, feature: int, strength: float = 1.0) -> torch.Tensor:
    """The feature shown alone: the SAE's decoder bias (about the data mean) plus `strength` times
    its direction, renormalised (1, d). The raw direction is far from any image embedding."""
    if not 0 <= feature < len(sae.components_):
        raise InvalidArgumentError(f"feature={feature} is out of range: the SAE has {len(sae.components_)} features")
    return steered(sae.decoder_bias_, sae.components_[feature], [strength])


def steer_images(decoder, z, direction, alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0,
                 steps: int = 25, guidance: float = 3.0) -> list:
    """Decoded frames (PIL), alpha-major, all from the same seeded noise per base embedding."""
    zs = steered(z, direction, alphas)
    n = len(zs) // len(alphas)
    x_T = random_noise(decoder, n, seed).repeat(len(alphas), 1, 1, 1)
    return decode(decoder, zs, x_T, steps=steps, guidance=guidance)


def steering_scores(decoder, clip, probes, z, direction, target: str,
                    alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0, steps: int = 25,
                    guidance: float = 3.0) -> pd.DataFrame:
    """Per alpha: the share of decoded frames whose re-embedding the probes read as `target`
    ("colour=red"), and the share of other factor readings that changed from alpha = 0 (leak)."""
    factor, _, value = str(target).partition("=")
    if factor not in probes.probes_ or not value:
        raise InvalidArgumentError(f"target={target!r} must be 'factor=value' for a fitted factor: {list(probes.probes_)}")
    images = steer_images(decoder, z, direction, alphas, seed, steps, guidance)
    read = probes.predict(embed_images(clip, images).numpy())
    n = len(images) // len(alphas)
    base = read.iloc[:n].reset_index(drop=True)
    others = [f for f in read.columns if f != factor]
    rows = []
    for i, a in enumerate(alphas):
        frame = read.iloc[i * n:(i + 1) * n].reset_index(drop=True)
        rows.append({"alpha": float(a), "target_rate": float((frame[factor] == value).mean()),
                     "leak": float((frame[others] != base[others]).to_numpy().mean()) if others else 0.0})
    return pd.DataFrame(rows)
