"""A feature atlas: an SAE fitted on one set of image embeddings, every feature named and, where the
images are world scenes, scored. What notebook 08's panel shows and the measure script reports.

With a real CLIP and a user's images there are no known factors: names come from ImageNet's class
names and the scores are left out (`scores` holds only firing statistics), rather than pretending.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clipspace.errors import InvalidArgumentError
from clipspace.features import naming, scoring
from clipspace.features.sae import SparseAutoencoder
from clipspace.probes.factors import factor_labels, factor_scenes

WORLD_CLIP = "clipspace-tiny"


@dataclass
class FeatureAtlas:
    sae: SparseAutoencoder
    embeddings: np.ndarray  # (N, d) the images' unit embeddings
    activations: np.ndarray  # (N, F)
    vocabulary: pd.DataFrame
    names: pd.DataFrame  # gap-corrected names (`naming.name_directions(..., centre=True)`)
    raw_names: pd.DataFrame  # the same without the correction
    scores: pd.DataFrame  # one row per feature
    coverage: pd.DataFrame | None  # one row per concept; None without known factors
    images: list = field(default_factory=list)  # what was embedded (scenes, paths or PIL images), for thumbnails
    skipped: list = field(default_factory=list)  # (source, reason) of user images that could not be read

    def summary(self) -> dict:
        if self.coverage is None:
            live = self.scores["fire_rate"] > 0
            return {"features": len(self.scores), "live_features": int(live.sum())}
        out = scoring.summary(self.scores, self.coverage)
        raw = self.scores.assign(named_right=self.scores["raw_name"] == self.scores["best_concept"])
        out["naming_accuracy_uncorrected"] = scoring.summary(raw, self.coverage)["naming_accuracy"]
        out["explained_variance"] = self.sae.explained_variance(self.embeddings)
        return out

    def ranked(self) -> pd.DataFrame:
        """Live features, best first (AUROC where scored, else how often they fire)."""
        live = self.scores[self.scores["fire_rate"] > 0]
        key = "auroc" if self.coverage is not None else "fire_rate"
        return live.sort_values(key, ascending=False, kind="stable")

    def top_images(self, feature: int, k: int = 6) -> list[int]:
        """Indices of the k images the feature fires on most (fewer if it fires on fewer)."""
        a = self.activations[:, feature]
        order = np.argsort(-a, kind="stable")[:k]
        return [int(i) for i in order if a[i] > 0]


def fit_atlas(clip, images=None, n: int = 1200, n_features: int = 64, k: int = 8, steps: int = 1500,
              seed: int = 0, vocabulary: pd.DataFrame | None = None, embeddings=None) -> FeatureAtlas:
    """Fit an SAE on the images' embeddings (world `factor_scenes(n)` when `images` is None) and
    name and score its features. `embeddings` skips embedding when already computed."""
    world_scenes, skipped = images is None, []
    if world_scenes:
        scenes = factor_scenes(n)
        if embeddings is None:
            embeddings = clip.encode_images([s.render(clip.image_size) for s in scenes])
    elif embeddings is None:
        # a folder, paths or PIL images, through the one image loader: a bad file is skipped and listed, not fatal
        embeddings = clip.encode_images(images if isinstance(images, (str, os.PathLike)) else list(images), strict=False)
        scenes, skipped = list(embeddings.sources), list(embeddings.failures)
    else:
        scenes = list(images)
    Z = np.asarray(embeddings, dtype=np.float32)
    if len(Z) != len(scenes) or len(Z) < 2:
        raise InvalidArgumentError(f"{len(Z)} embeddings for {len(scenes)} images: an atlas needs one per image, "
                                   "and at least two")
    sae = SparseAutoencoder(n_features=n_features, k=k, steps=steps, seed=seed).fit(Z)
    if vocabulary is None:
        vocabulary = naming.world_vocabulary() if world_scenes else naming.imagenet_vocabulary()
    T = clip.encode_texts(list(vocabulary["text"]))
    names = naming.name_directions(sae.components_, T, vocabulary, centre=True)
    raw = naming.name_directions(sae.components_, T, vocabulary, centre=False)
    A = sae.transform(Z)
    if world_scenes:
        concepts = scoring.concept_matrix(factor_labels(scenes))
        scores = scoring.feature_scores(A, concepts, names, detector=sae.decision_function(Z))
        cov = scoring.coverage(sae.decision_function(Z), concepts)
    else:
        scores = pd.DataFrame({"feature": np.arange(n_features), "fire_rate": (A > 0).mean(0),
                               "mean_activation": A.mean(0),
                               "name": (names["value"]).to_numpy(), "name_cosine": names["cosine"].to_numpy()})
        cov = None
    scores["raw_name"] = (raw["factor"].astype(str) + "=" + raw["value"].astype(str)).to_numpy()
    return FeatureAtlas(sae, Z, A, vocabulary, names, raw, scores, cov, scenes, skipped)
