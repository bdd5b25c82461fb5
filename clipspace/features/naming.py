"""Naming directions with words: each direction gets the vocabulary text whose embedding is nearest.

Discover-then-Name names an SAE feature by the argmax cosine between its decoder direction and the
text embeddings of a vocabulary. Image and text embeddings of CLIP sit in two separate cones (the
modality gap), so a raw text embedding mostly points along the text cone's mean and every
direction tends to get the same few names. SpLiCE's correction, offered here as `centre=True`:
subtract the vocabulary's mean embedding and renormalise, leaving what tells the words apart.

A vocabulary is a table (factor, value, text): for the offline default, every factor value of the
shapes world phrased as its captions phrase it, so a name can be checked against the scene's
truth; for a real CLIP, ImageNet's class names (factor "imagenet"), which cannot be checked.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from clipspace import world
from clipspace.errors import InvalidArgumentError
from clipspace.probes.factors import POSITIONS

VOCABULARY_COLUMNS = ("factor", "value", "text")


def world_vocabulary(factors: Sequence[str] = ("colour", "shape", "size", "count", "background", "word", "position")) -> pd.DataFrame:
    """Every factor value of the shapes world, with a short text in the words its captions use.

    `value` matches `probes.factors.factor_labels` (counts as strings), so a name can be scored."""
    phrasing = {
        "colour": [(c, c) for c in world.COLOURS],
        "shape": [(s, s) for s in world.SHAPES],
        "size": [(s, s) for s in world.SIZES],
        "count": [(str(n), f"{w} objects" if n > 1 else "one object") for n, w in world.NUMBER_WORDS.items()],
        "background": [(b, f"on a {b} background") for b in world.BACKGROUNDS],
        "word": [(w, f'the word "{w}"') for w in ("star", "red", "cat", "hello")],
        "position": [(p, {"left": "on the left", "centre": "in the centre", "right": "on the right"}[p]) for p in POSITIONS],
    }
    rows = []
    for f in factors:
        if f not in phrasing:
            raise InvalidArgumentError(f"factor={f!r} has no world vocabulary; use some of {tuple(phrasing)}")
        rows += [(f, v, t) for v, t in phrasing[f]]
    return pd.DataFrame(rows, columns=list(VOCABULARY_COLUMNS))


def imagenet_vocabulary() -> pd.DataFrame:
    """ImageNet's 1,000 class names as open_clip ships them: a vocabulary for a real CLIP."""
    from open_clip import IMAGENET_CLASSNAMES

    return pd.DataFrame({"factor": "imagenet", "value": list(IMAGENET_CLASSNAMES),
                         "text": [f"a photo of a {c}." for c in IMAGENET_CLASSNAMES]})


def check_vocabulary(vocabulary: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in VOCABULARY_COLUMNS if c not in getattr(vocabulary, "columns", ())]
    if missing or len(vocabulary) == 0:
        raise InvalidArgumentError(f"vocabulary must be a non-empty table with columns {VOCABULARY_COLUMNS} "
                                   f"(see world_vocabulary()); missing {missing}")
    return vocabulary.reset_index(drop=True)


def unit_rows(X, name: str = "X") -> np.ndarray:
    """Rows scaled to unit length; zero or non-finite rows are errors (no direction to name)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if not np.isfinite(X).all() or (norms == 0).any():
        raise InvalidArgumentError(f"{name} has a zero, NaN or infinite row; every row must be a direction")
    return X / norms


def centred(E, mean=None) -> np.ndarray:
    """SpLiCE's gap correction: unit rows minus their mean (or `mean`), renormalised."""
    E = unit_rows(E, "embeddings")
    return unit_rows(E - (E.mean(0) if mean is None else np.asarray(mean)), "centred embeddings")


def name_directions(directions, text_embeddings, vocabulary: pd.DataFrame, centre: bool = True) -> pd.DataFrame:
    """For each direction (rows), the vocabulary entry with the highest cosine, that cosine, and its
    margin over the runner-up.

    `text_embeddings` are the vocabulary texts' CLIP embeddings, one row per vocabulary row;
    `centre` applies the gap correction to them first (the directions are differences already)."""
    vocabulary = check_vocabulary(vocabulary)
    T = np.asarray(text_embeddings, dtype=np.float64)
    if len(T) != len(vocabulary):
        raise InvalidArgumentError(f"{len(T)} text embeddings for {len(vocabulary)} vocabulary rows; embed vocabulary['text']")
    T = centred(T) if centre else unit_rows(T, "text_embeddings")
    cos = unit_rows(directions, "directions") @ T.T
    best = cos.argmax(1)
    out = vocabulary.iloc[best].reset_index(drop=True).rename(columns={"text": "name"})
    out.insert(0, "direction", np.arange(len(best)))
    out["cosine"] = cos[np.arange(len(best)), best]
    # how far the name is ahead of the runner-up: a small margin is a fragile name
    out["margin"] = out["cosine"] - (np.sort(cos, 1)[:, -2] if cos.shape[1] > 1 else np.nan)
    return out
