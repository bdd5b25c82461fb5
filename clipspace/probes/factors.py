"""What does the embedding encode? Linear probes from embeddings to every known factor of a scene.

In the shapes world every factor of an image is known: colour, shape, size, horizontal position,
count, background and written word. A factor is *linearly encoded* if a logistic regression from
the embedding predicts it on held-out scenes (stratified k-fold cross-validation, seeded). Probing
the image embeddings and the text embeddings of the same scenes' captions side by side shows what
each tower keeps: position, for example, is in the pixels but never in a caption.

Honest limits: a probe measures what is *linearly decodable*, not what the model uses; chance is
the majority-class share (what always guessing the commonest class scores).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clipspace import world

POSITIONS = ("left", "centre", "right")  # horizontal third of the objects' centroid
WORD_CLASSES = ("star", "red", "cat", "hello")  # a shape name, a colour name, two other words
FACTORS = ("colour", "shape", "size", "position", "count", "background", "word")


# ---------------------------------------------------------------------------------------------
# Scenes with every factor known and balanced
# ---------------------------------------------------------------------------------------------
def _balanced(rng: np.random.Generator, classes: Sequence, n: int) -> list:
    """n labels, every class as often as possible (counts differ by at most one), shuffled."""
    reps = [classes[i % len(classes)] for i in range(n)]
    return [reps[i] for i in rng.permutation(n)]


def _place(rng, count: int, size: str, third: int, top: float, bottom: float) -> list[tuple[float, float]]:
    """Centres of `count` non-overlapping objects whose centroid lies in horizontal third `third`."""
    r = world.SIZES[size]
    lo, hi = r * 1.3, 1 - r * 1.3  # keep the whole shape inside the image
    band = (third / 3, (third + 1) / 3)
    for _ in range(20_000):
        xs = rng.uniform(max(lo, band[0] - 0.1), min(hi, band[1] + 0.1), size=count)
        ys = rng.uniform(max(lo, top), min(hi, bottom), size=count)
        if not band[0] <= xs.mean() < band[1]:
            continue
        d = np.hypot(xs[:, None] - xs[None], ys[:, None] - ys[None]) + np.eye(count) * 9
        if d.min() > 2.3 * r:
            return list(zip(xs.tolist(), ys.tolist()))
    raise RuntimeError(f"could not place {count} {size} objects in the {POSITIONS[third]} third")


def factor_scenes(n: int, seed: int = world.PROBE_SEED + 7) -> list[world.Scene]:
    """n scenes with every factor varying and balanced: colour, shape, count (1-3), position (third),
    background; size balanced over the one-object scenes (counted objects are small, as in training);
    a written word under the objects in half the scenes, the word balanced over `WORD_CLASSES`."""
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    rng = np.random.default_rng(seed)
    colours = _balanced(rng, tuple(world.COLOURS), n)
    shapes = _balanced(rng, world.SHAPES, n)
    counts = _balanced(rng, (1, 2, 3), n)
    thirds = _balanced(rng, (0, 1, 2), n)
    backgrounds = _balanced(rng, tuple(world.BACKGROUNDS), n)
    has_text = _balanced(rng, (True, False), n)
    singles = [i for i in range(n) if counts[i] == 1]
    sizes = dict(zip(singles, _balanced(rng, tuple(world.SIZES), len(singles))))
    with_text = [i for i in range(n) if has_text[i]]
    words = dict(zip(with_text, _balanced(rng, WORD_CLASSES, len(with_text))))
    scenes = []
    for i in range(n):
        size = sizes.get(i, "small")
        bottom = 0.62 - world.SIZES[size] if has_text[i] else 1.0  # leave the lower band to the word
        objs = tuple(world.random_object(rng, shapes[i], colours[i], size, x, y)
                     for x, y in _place(rng, counts[i], size, thirds[i], 0.0, bottom))
        text = world.random_text(rng, words[i], colour=world._text_colour_for(backgrounds[i])) if has_text[i] else None
        scenes.append(world.Scene(objs, backgrounds[i], text))
    return scenes


def factor_labels(scenes: Sequence[world.Scene]) -> pd.DataFrame:
    """One row per scene, one column per factor, read off the scene itself. Missing where undefined:
    colour and shape when the objects differ, word without text, and size unless there is exactly one
    object (counted objects are all small, so their size would only restate the count)."""
    rows = []
    for s in scenes:
        objs = s.objects

        def same(attr):  # the attribute shared by every object, None when they differ
            return getattr(objs[0], attr) if objs and len({getattr(o, attr) for o in objs}) == 1 else None

        cx = float(np.mean([o.x for o in objs])) if objs else None
        rows.append({"colour": same("colour"), "shape": same("shape"), "size": same("size") if len(objs) == 1 else None,
                     "position": None if cx is None else POSITIONS[min(int(cx * 3), 2)],
                     "count": len(objs), "background": s.background, "word": s.text.word if s.text else None})
    return pd.DataFrame(rows, columns=list(FACTORS))


def factor_captions(scenes: Sequence[world.Scene], template: int | None = None) -> list[str]:
    """The scenes' captions; template=None cycles the four phrasings, as the training stream does."""
    return [s.caption(i % 4 if template is None else template) for i, s in enumerate(scenes)]


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------
def probe_accuracy(X: np.ndarray, y: Sequence, folds: int = 5, seed: int = 0) -> float:
    """Mean held-out accuracy of a logistic regression X -> y under stratified k-fold CV.

    Features are standardised first (unit embeddings have tiny coordinates); folds shrink to the
    smallest class size. NaN when some class has a single example or there is only one class.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} embeddings but {len(y)} labels")
    _, counts = np.unique(y, return_counts=True)
    k = min(folds, int(counts.min()))
    if len(counts) < 2 or k < 2:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(model, X, y, cv=cv).mean())


def factor_table(scenes: Sequence[world.Scene], image_emb: np.ndarray, text_emb: np.ndarray | None = None,
                 factors: Sequence[str] = FACTORS, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per factor: classes, chance (majority share), image and text probe accuracy, n scenes where defined."""
    labels = factor_labels(scenes)
    image_emb = np.asarray(image_emb)
    if len(image_emb) != len(labels) or (text_emb is not None and len(text_emb) != len(labels)):
        raise ValueError(f"{len(labels)} scenes but {len(image_emb)} image and "
                         f"{None if text_emb is None else len(text_emb)} text embeddings; give one row per scene")
    rows = []
    for f in factors:
        if f not in FACTORS:
            raise ValueError(f"factor={f!r} is unknown; use some of {FACTORS}")
        defined = labels[f].notna().to_numpy()
        y = labels[f][defined].astype(str).to_numpy()
        shares = pd.Series(y).value_counts(normalize=True)
        rows.append({"factor": f, "classes": int(len(shares)),
                     "chance": float(shares.iloc[0]) if len(shares) else float("nan"),
                     "image_accuracy": probe_accuracy(image_emb[defined], y, folds, seed),
                     "text_accuracy": (probe_accuracy(np.asarray(text_emb)[defined], y, folds, seed)
                                       if text_emb is not None else float("nan")),
                     "n": int(defined.sum())})
    return pd.DataFrame(rows)


def world_factor_table(clip, n: int = 240, seed: int = world.PROBE_SEED + 7, **kw) -> pd.DataFrame:
    """factor_table on `factor_scenes(n, seed)`, embedding the renders and the captions with `clip`."""
    scenes = factor_scenes(n, seed)
    z_img = clip.encode_images([s.render(clip.image_size) for s in scenes])
    z_txt = clip.encode_texts(factor_captions(scenes))
    return factor_table(scenes, z_img, z_txt, **kw)


def factor_bar_chart(table: pd.DataFrame, title: str = "What a linear probe reads from the embedding"):
    """Grouped bars of image and text probe accuracy per factor, chance marked on each."""
    import plotly.graph_objects as go

    fig = go.Figure([
        go.Bar(x=table["factor"], y=table["image_accuracy"], name="image embedding"),
        go.Bar(x=table["factor"], y=table["text_accuracy"], name="caption embedding"),
        go.Scatter(x=table["factor"], y=table["chance"], name="chance", mode="markers",
                   marker=dict(symbol="line-ew", size=40, line=dict(width=3, color="black"))),
    ])
    fig.update_layout(title=title, barmode="group", yaxis=dict(range=[0, 1.05], title="held-out accuracy"),
                      height=400)
    return fig


class FactorProbes:
    """One logistic regression per factor, fitted on embeddings of scenes with known factors, to
    read the factors of *new* embeddings (a decoded image re-embedded, a steered embedding).

    Fitted attributes: `probes_` (factor -> fitted pipeline), `classes_` (factor -> class labels)."""

    def __init__(self, factors: Sequence[str] = FACTORS, C: float = 1.0):
        self.factors = factors
        self.C = C

    def fit(self, X, labels: pd.DataFrame) -> "FactorProbes":
        X = np.asarray(X, dtype=np.float64)
        if len(X) != len(labels):
            raise ValueError(f"{len(X)} embeddings but {len(labels)} label rows")
        self.probes_, self.classes_ = {}, {}
        for f in self.factors:
            if f not in FACTORS:
                raise ValueError(f"factor={f!r} is unknown; use some of {FACTORS}")
            defined = labels[f].notna().to_numpy()
            y = labels[f][defined].astype(str).to_numpy()
            if len(np.unique(y)) < 2:
                continue  # nothing to tell apart in this data
            model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
            self.probes_[f] = model.fit(X[defined], y)
            self.classes_[f] = list(model.classes_)
        return self

    def predict(self, X) -> pd.DataFrame:
        """The predicted value of every fitted factor, one row per embedding."""
        if not hasattr(self, "probes_"):
            raise ValueError("FactorProbes is not fitted yet; call .fit(embeddings, factor_labels(scenes))")
        X = np.asarray(X, dtype=np.float64)
        return pd.DataFrame({f: m.predict(X) for f, m in self.probes_.items()})

    def predict_proba(self, X, factor: str, value: str) -> np.ndarray:
        """P(factor = value) for each embedding."""
        m = self.probes_[factor]
        return m.predict_proba(np.asarray(X, dtype=np.float64))[:, list(m.classes_).index(str(value))]
