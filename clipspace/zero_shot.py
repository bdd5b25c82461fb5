"""Zero-shot classification with prompt ensembles.

A class's weight is the re-normalised mean of its normalised text embeddings over every template
(prompt ensembling, as in CLIP and open_clip's `build_zero_shot_classifier`). Classes change
without retraining: a new list of names is a new classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from . import world

Template = str | Callable[[str], str]

# The world model learned from captions such as "a red circle" and 'the word "star"', so a shape
# is best asked about across colours, and a colour across shapes: that is the prompt ensemble.
WORLD_TEMPLATES: dict[str, list[str]] = {
    "shape": [f"a {colour} {{}}" for colour in world.COLOURS],
    "colour": [f"a {{}} {shape}" for shape in world.SHAPES],
    "word": ['the word "{}"'],
}
WORLD_CLASSES: dict[str, list[str]] = {
    "shape": list(world.SHAPES), "colour": list(world.COLOURS), "word": list(world.WORDS),
}
OPENAI_TEMPLATES = list(OPENAI_IMAGENET_TEMPLATES)  # callables, as open_clip ships them
SIMPLE_TEMPLATES = list(SIMPLE_IMAGENET_TEMPLATES)


def _fill(template: Template, name: str) -> str:
    return template(name) if callable(template) else template.format(name)


def build_classifier(clip, classnames: Sequence[str], templates: Sequence[Template]) -> np.ndarray:
    """(D, C) class weights: per class, the mean of normalised template embeddings, re-normalised."""
    if not classnames:
        raise ValueError("classnames is empty: give at least two class names")
    if not templates:
        raise ValueError("templates is empty: give at least one template, e.g. ['a photo of a {}.']")
    texts = [_fill(t, c) for c in classnames for t in templates]
    emb = np.asarray(clip.encode_texts(texts), dtype=np.float32).reshape(len(classnames), len(templates), -1)
    mean = emb.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).T


def logit_scale(clip) -> float:
    """The model's learned temperature (100 for the released CLIPs)."""
    scale = getattr(clip.model, "logit_scale", None)
    return float(scale.exp().item()) if scale is not None else 100.0


@dataclass
class ZeroShotResult:
    classnames: list[str]
    probs: np.ndarray  # (N, C) softmax over classes
    labels: list[str] | None = None

    @property
    def predictions(self) -> list[str]:
        return [self.classnames[i] for i in self.probs.argmax(1)]

    def top_k(self, k: int = 5) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probs, axis=1)[:, :k]
        return [[(self.classnames[j], float(self.probs[i, j])) for j in row] for i, row in enumerate(order)]

    @property
    def accuracy(self) -> float:
        if self.labels is None:
            raise ValueError("no labels were given, so there is no accuracy: pass labels=[...]")
        return float(np.mean(np.array(self.predictions) == np.array(self.labels)))

    def confusion_matrix(self) -> pd.DataFrame:
        """Rows: true class, columns: predicted class, counts."""
        if self.labels is None:
            raise ValueError("no labels were given, so there is no confusion matrix: pass labels=[...]")
        idx = {c: i for i, c in enumerate(self.classnames)}
        m = np.zeros((len(idx), len(idx)), dtype=int)
        for t, p in zip(self.labels, self.predictions):
            m[idx[t], idx[p]] += 1
        return pd.DataFrame(m, index=pd.Index(self.classnames, name="true"),
                            columns=pd.Index(self.classnames, name="predicted"))

    def table(self, k: int = 3) -> pd.DataFrame:
        rows = []
        for i, top in enumerate(self.top_k(k)):
            row = {"prediction": top[0][0], "probability": round(top[0][1], 4),
                   "top_k": ", ".join(f"{c} {p:.2f}" for c, p in top)}
            if self.labels is not None:
                row.update(label=self.labels[i], correct=self.labels[i] == top[0][0])
            rows.append(row)
        return pd.DataFrame(rows)


def classify(clip, images, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {}.",),
             labels: Sequence[str] | None = None, weights: np.ndarray | None = None) -> ZeroShotResult:
    """Zero-shot classify images (anything `clip.encode_images` takes, or an (N, D) embedding array)."""
    weights = build_classifier(clip, classnames, templates) if weights is None else weights
    z = images if isinstance(images, np.ndarray) and images.ndim == 2 else np.asarray(clip.encode_images(images))
    logits = logit_scale(clip) * z @ weights
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    if labels is not None:
        unknown = sorted(set(labels) - set(classnames))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classnames {list(classnames)}")
    return ZeroShotResult(list(classnames), probs, list(labels) if labels is not None else None)
