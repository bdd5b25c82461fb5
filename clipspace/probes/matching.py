"""Does an image match its caption? Cosine similarities between images and captions, and the
hard negatives (captions of a minimally changed scene) that make the question interesting.

CLIP's whole training signal is "the right caption scores higher than the others in the batch";
these are the functions behind the tour notebook's first look at that.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipspace import world


def hard_negatives(scene: world.Scene, n: int = 4, seed: int = 0, template: int = 0) -> list[str]:
    """Up to `n` distinct captions of minimal changes of `scene` (another colour, shape, word, count,
    the mirrored relation, swapped colours), none equal to the scene's own caption. Deterministic."""
    rng = np.random.default_rng(seed)
    own = scene.caption(template)
    out: list[str] = []
    for _ in range(20 * n):  # perturbations repeat; a bounded number of draws keeps this finite
        if len(out) == n:
            break
        c = world.perturb(scene, rng).caption(template)
        if c != own and c not in out:
            out.append(c)
    return out


def caption_candidates(scene: world.Scene, n_negatives: int = 4, seed: int = 0, template: int = 0) -> list[str]:
    """The scene's caption first, then its hard negatives."""
    return [scene.caption(template)] + hard_negatives(scene, n_negatives, seed, template)


def similarity_matrix(clip, images, captions: Sequence[str]) -> np.ndarray:
    """Cosine similarity, images x captions (rows and columns in input order)."""
    return np.asarray(clip.encode_images(images)) @ np.asarray(clip.encode_texts(list(captions))).T


def caption_scores(clip, image, captions: Sequence[str]) -> np.ndarray:
    """Cosine similarity of one image with each caption."""
    return similarity_matrix(clip, [image], captions)[0]


def retrieval_accuracy(similarity: np.ndarray) -> float:
    """Share of rows whose highest column is the diagonal one (image i's own caption is caption i)."""
    s = np.asarray(similarity)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"retrieval_accuracy needs a square images x captions matrix, got shape {s.shape}")
    return float((s.argmax(axis=1) == np.arange(len(s))).mean())
