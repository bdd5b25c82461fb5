"""Zero-shot classification with prompt ensembles, exactly as open_clip builds it.

For each class, every template is filled with the class name, embedded, L2-normalised, averaged and
re-normalised (prompt ensembling, `open_clip.build_zero_shot_classifier`). Classes change without
retraining: a new list of names is a new classifier. An image is classified by the softmax of
`logit_scale * cosine` over the class embeddings; `logit_scale` is the model's own learned inverse
temperature (100 for the released CLIPs), so the probabilities are the model's, not ours.

Templates are `str.format` strings with one `{}` or callables `f(classname) -> str` (open_clip's
metadata uses lambdas). The shapes world gets its own templates, phrased like its training captions
("a red circle", "an orange circle"): the model learned from captions that name colour and shape
together, so a shape class is an ensemble over colours, a colour class an ensemble over shapes,
and a written word is 'the word "{}"'.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import pandas as pd
from open_clip.zero_shot_metadata import (IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES,  # noqa: F401 (re-exported)
                                          SIMPLE_IMAGENET_TEMPLATES)
from scipy.special import softmax

from clipspace import world

Template = Union[str, Callable[[str], str]]

OPENAI_TEMPLATES = list(OPENAI_IMAGENET_TEMPLATES)  # 80 callables, as open_clip ships them
SIMPLE_TEMPLATES = list(SIMPLE_IMAGENET_TEMPLATES)  # the 7-template subset CLIP's authors recommend


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArticleTemplate:
    """A template whose article follows the class name: '{a} {} circle' gives 'an orange circle'.

    The world's captions say "an orange circle", never "a orange circle"; a template that gets the
    article wrong asks the text encoder about a phrase it never saw in training.
    """

    fmt: str

    def __call__(self, classname: str) -> str:
        return self.fmt.format(classname, a=world._article(classname))


WORLD_TEMPLATES: dict[str, list[Template]] = {
    # A shape class averages over every colour the world paints it in ("an orange {}") ...
    "shape": [f"{world._article(c)} {c} {{}}" for c in world.COLOURS],
    # ... a colour class over every shape; the article belongs to the colour, so it is filled in late.
    "colour": [ArticleTemplate(f"{{a}} {{}} {s}") for s in world.SHAPES],
    "word": ['the word "{}"'],
}
WORLD_CLASSES: dict[str, list[str]] = {
    "shape": list(world.SHAPES), "colour": list(world.COLOURS), "word": list(world.WORDS),
}


def world_classnames(factor: str) -> list[str]:
    """The class names of a world factor: 'shape', 'colour' or 'word'."""
    if factor not in WORLD_CLASSES:
        raise ValueError(f"factor={factor!r} has no world classes; use one of {tuple(WORLD_CLASSES)}")
    return list(WORLD_CLASSES[factor])


def world_labels(scenes: Sequence[world.Scene], factor: str) -> list[str]:
    """The true class of each scene for `factor`: shape or colour of the first object, or the written word."""
    world_classnames(factor)  # validates the factor
    out = []
    for i, s in enumerate(scenes):
        if factor == "word":
            if s.text is None:
                raise ValueError(f"scene {i} has no written word, so it has no 'word' label")
            out.append(s.text.word)
        else:
            if not s.objects:
                raise ValueError(f"scene {i} has no object, so it has no {factor!r} label")
            out.append(s.objects[0].shape if factor == "shape" else s.objects[0].colour)
    return out


def fill_templates(classname: str, templates: Sequence[Template]) -> list[str]:
    """Every template filled with `classname` (format strings with `{}`, or callables)."""
    return [t(classname) if callable(t) else t.format(classname) for t in templates]


def _check(classnames, templates) -> tuple[list[str], list[Template]]:
    if isinstance(classnames, str) or isinstance(templates, str):
        raise TypeError("classnames and templates must be lists (a bare string would be read as a list of "
                        "characters); wrap a single template as ['a photo of a {}']")
    classnames, templates = list(classnames), list(templates)
    if not classnames:
        raise ValueError("classnames is empty: give at least one class name")
    if not templates:
        raise ValueError("templates is empty: give at least one template, e.g. ['a photo of a {}.']")
    dupes = sorted({c for c in classnames if classnames.count(c) > 1})
    if dupes:
        raise ValueError(f"classnames repeats {dupes}: each class must appear once")
    for t in templates:
        if not callable(t) and (not isinstance(t, str) or "{}" not in t):
            raise ValueError(f"template {t!r} must be a format string with one '{{}}' for the class name, "
                             "or a callable classname -> text")
    return classnames, templates


# ---------------------------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------------------------
def build_classifier(clip, classnames: Sequence[str], templates: Sequence[Template],
                     batch_size: int = 256) -> np.ndarray:
    """Class embeddings (D, C) by prompt ensembling; equals `open_clip.build_zero_shot_classifier`."""
    classnames, templates = _check(classnames, templates)
    texts = [text for c in classnames for text in fill_templates(c, templates)]
    z = np.asarray(clip.encode_texts(texts, batch_size=batch_size), dtype=np.float32)  # (C*T, D), unit rows
    z = z.reshape(len(classnames), len(templates), -1).mean(axis=1)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.ascontiguousarray(z.T)


def logit_scale(clip) -> float:
    """The model's learned inverse temperature exp(logit_scale): 100 for the released CLIPs."""
    scale = getattr(clip.model, "logit_scale", None)
    if scale is None:
        return 100.0
    return float(np.exp(float(scale.detach().float().cpu().reshape(-1)[0])))


@dataclass
class ZeroShotResult:
    """What a zero-shot run says about each image; `table()` shows it one row per image."""

    classnames: list[str]
    logits: np.ndarray  # (N, C) = logit_scale * cosine
    probs: np.ndarray  # (N, C) softmax of the logits
    labels: np.ndarray | None = None  # (N,) true class indices, when given
    k: int = 5  # how many classes top_k and table() list
    names: list | None = None  # what to call each image in the table

    @property
    def predictions(self) -> np.ndarray:
        """(N,) predicted class indices."""
        return self.probs.argmax(axis=1)

    @property
    def predicted_names(self) -> list[str]:
        return [self.classnames[i] for i in self.predictions]

    def top_k_indices(self, k: int | None = None) -> np.ndarray:
        """(N, k) class indices, most probable first (stable: ties keep class order)."""
        k = self.k if k is None else max(1, min(int(k), len(self.classnames)))
        return np.argsort(-self.probs, axis=1, kind="stable")[:, :k]

    def top_k(self, k: int | None = None) -> list[list[tuple[str, float]]]:
        """Per image, the k most probable (class, probability) pairs."""
        return [[(self.classnames[j], float(self.probs[i, j])) for j in row]
                for i, row in enumerate(self.top_k_indices(k))]

    def _need_labels(self):
        if self.labels is None:
            raise ValueError("no labels were given, so there is nothing to score against: pass labels=[...]")

    @property
    def true_names(self) -> list[str]:
        self._need_labels()
        return [self.classnames[i] for i in self.labels]

    @property
    def accuracy(self) -> float:
        self._need_labels()
        return float(np.mean(self.predictions == self.labels))

    def top_k_accuracy(self, k: int | None = None) -> float:
        self._need_labels()
        return float(np.mean((self.top_k_indices(k) == self.labels[:, None]).any(axis=1)))

    def confusion_matrix(self) -> pd.DataFrame:
        """(C, C) counts: row = true class, column = predicted class (sklearn's convention)."""
        self._need_labels()
        c = len(self.classnames)
        m = np.zeros((c, c), dtype=np.int64)
        np.add.at(m, (self.labels, self.predictions), 1)
        return pd.DataFrame(m, index=pd.Index(self.classnames, name="true"),
                            columns=pd.Index(self.classnames, name="predicted"))

    def per_class(self) -> pd.DataFrame:
        """Images and accuracy per true class (NaN for a class no image belongs to)."""
        self._need_labels()
        correct = self.predictions == self.labels
        return pd.DataFrame([{"class": c, "n": int((self.labels == i).sum()),
                              "accuracy": float(correct[self.labels == i].mean()) if (self.labels == i).any()
                              else float("nan")} for i, c in enumerate(self.classnames)])

    def table(self, k: int | None = None) -> pd.DataFrame:
        """One row per image: prediction, its probability, the top-k classes, and the truth when known."""
        top = self.top_k_indices(k)
        pred = self.predictions
        rows = []
        for i in range(len(self.probs)):
            row = {"image": self.names[i] if self.names is not None else i,
                   "prediction": self.classnames[pred[i]],
                   "probability": float(self.probs[i, pred[i]]),
                   "top_k": ", ".join(f"{self.classnames[j]} {self.probs[i, j]:.2f}" for j in top[i])}
            if self.labels is not None:
                row["true"] = self.classnames[self.labels[i]]
                row["correct"] = bool(pred[i] == self.labels[i])
            rows.append(row)
        return pd.DataFrame(rows)


def _label_indices(labels, classnames: list[str], n: int) -> np.ndarray:
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but there are {n} images")
    index = {c: i for i, c in enumerate(classnames)}
    out = []
    for lab in labels:
        if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
            if not 0 <= lab < len(classnames):
                raise ValueError(f"label index {lab} is outside 0..{len(classnames) - 1}")
            out.append(int(lab))
        elif lab in index:
            out.append(index[lab])
        else:
            raise ValueError(f"label {lab!r} is not one of the classnames {classnames}")
    return np.asarray(out, dtype=np.int64)


@dataclass
class ZeroShotClassifier:
    """Class embeddings built once from templates; classify embeddings or images with them."""

    classnames: list[str]
    templates: list[Template]
    weights: np.ndarray  # (D, C), unit columns
    logit_scale: float

    @classmethod
    def from_clip(cls, clip, classnames: Sequence[str], templates: Sequence[Template],
                  scale: float | None = None, batch_size: int = 256) -> "ZeroShotClassifier":
        classnames, templates = _check(classnames, templates)
        w = build_classifier(clip, classnames, templates, batch_size=batch_size)
        return cls(classnames, templates, w, logit_scale(clip) if scale is None else float(scale))

    def classify(self, embeddings: np.ndarray, labels=None, top_k: int = 5, names=None) -> ZeroShotResult:
        """Classify (N, D) image embeddings; `labels` (names or indices) enables accuracy."""
        z = np.asarray(embeddings, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.weights.shape[0]:
            raise ValueError(f"embeddings must be (N, {self.weights.shape[0]}); got shape {z.shape}")
        z = z / np.linalg.norm(z, axis=1, keepdims=True)  # cosine, even if the caller did not normalise
        logits = self.logit_scale * (z @ self.weights)
        y = None if labels is None else _label_indices(labels, self.classnames, len(z))
        if names is not None and len(names) != len(z):
            raise ValueError(f"names has {len(names)} entries but there are {len(z)} images")
        return ZeroShotResult(self.classnames, logits, softmax(logits, axis=1), y,
                              max(1, min(int(top_k), len(self.classnames))),
                              None if names is None else list(names))

    def __call__(self, clip, images, labels=None, top_k: int = 5, names=None) -> ZeroShotResult:
        return self.classify(embed_images(clip, images), labels, top_k, names)


def embed_images(clip, images_or_embeddings) -> np.ndarray:
    """Image embeddings of anything `clip.encode_images` takes, or of world Scenes; an (N, D) float
    array as wide as the embedding passes through unchanged (wrap a lone grayscale image in a list)."""
    x = images_or_embeddings
    if hasattr(x, "embeddings") and hasattr(x, "__array__"):  # a clipspace Corpus stands for its embedding rows
        x = np.asarray(x)
    if isinstance(x, np.ndarray) and x.ndim == 2 and np.issubdtype(x.dtype, np.floating) \
            and x.shape[1] == clip.embed_dim:
        return np.asarray(x, dtype=np.float32)
    if isinstance(x, world.Scene):
        x = [x]
    if isinstance(x, (list, tuple)) and any(isinstance(s, world.Scene) for s in x):
        x = [s.render(clip.image_size) if isinstance(s, world.Scene) else s for s in x]
    return np.asarray(clip.encode_images(x), dtype=np.float32)


def zero_shot(clip, images_or_embeddings, classnames: Sequence[str], templates: Sequence[Template],
              labels=None, top_k: int = 5, scale: float | None = None, names=None) -> ZeroShotResult:
    """Classify images (paths, PIL, arrays, world Scenes) or an (N, D) array of image embeddings.

    `labels` (class names or indices) adds accuracy, top-k accuracy and the confusion matrix;
    `scale` overrides the model's logit scale.
    """
    zsc = ZeroShotClassifier.from_clip(clip, classnames, templates, scale)
    return zsc.classify(embed_images(clip, images_or_embeddings), labels, top_k, names)


def classify(clip, images, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {}.",),
             labels=None, weights: np.ndarray | None = None, top_k: int = 5) -> ZeroShotResult:
    """`zero_shot` with an optional prebuilt (D, C) `weights` matrix (skips embedding the prompts)."""
    if weights is None:
        return zero_shot(clip, images, classnames, list(templates), labels, top_k)
    zsc = ZeroShotClassifier(list(classnames), list(templates), np.asarray(weights, dtype=np.float32),
                             logit_scale(clip))
    return zsc.classify(embed_images(clip, images), labels, top_k)


# ---------------------------------------------------------------------------------------------
# Notebook 01: typed class names, named template sets, world probe sets, the confusion heatmap
# ---------------------------------------------------------------------------------------------
PHOTO_TEMPLATES: list[Template] = ["a photo of a {}."]  # CLIP's single default prompt
TEMPLATE_SETS = ("world", "imagenet", "single")  # world-phrased / open_clip's 80 ImageNet / "a photo of a {}."


def parse_classnames(text: str) -> list[str]:
    """Comma-separated class names as typed in a text box: stripped, empty entries dropped."""
    names = [c.strip() for c in str(text).split(",") if c.strip()]
    if not names:
        raise ValueError(f"no class names in {text!r}: type them separated by commas, e.g. 'circle, square, star'")
    return names


def world_factor(classnames: Sequence[str]) -> str | None:
    """'shape' when every class name is a world shape, 'colour' when every one is a world colour, else None."""
    names = set(classnames)
    if names <= set(world.SHAPES):
        return "shape"
    if names <= set(world.COLOURS):
        return "colour"
    return None


def templates_for(template_set: str, classnames: Sequence[str]) -> list[Template]:
    """The templates of a named set for these class names.

    'world': the world's own phrasing: the colour ensemble for shape names, the shape ensemble for
    colour names, and '{a} {}' for anything else ('red circle' -> 'a red circle').
    'imagenet': open_clip's 80 OpenAI ImageNet templates. 'single': 'a photo of a {}.'.
    """
    if template_set == "imagenet":
        return list(OPENAI_TEMPLATES)
    if template_set == "single":
        return list(PHOTO_TEMPLATES)
    if template_set == "world":
        factor = world_factor(classnames)
        return list(WORLD_TEMPLATES[factor]) if factor else [ArticleTemplate("{a} {}")]
    raise ValueError(f"template_set={template_set!r}; use one of {TEMPLATE_SETS}")


@dataclass
class WorldZeroShot:
    """Zero-shot on world scenes: every scene classified, and the ones with a known truth scored."""

    result: ZeroShotResult  # all scenes, no labels (for per-scene bars)
    scored: ZeroShotResult | None  # scenes whose true shape/colour is a class, with labels; None if no factor
    factor: str | None  # 'shape', 'colour' or None
    index: np.ndarray  # (M,) positions in `scenes` of the scored ones


def world_zero_shot(clip, scenes: Sequence[world.Scene], classnames: Sequence[str], template_set: str = "world",
                    embeddings: np.ndarray | None = None, top_k: int = 5) -> WorldZeroShot:
    """Classify world scenes with typed class names and a named template set.

    When the class names are all shapes (or all colours), the scenes whose first object's shape
    (colour) is one of them are scored: accuracy and the confusion matrix. `embeddings` (N, D) of the
    scenes skips re-embedding them when only the classes or templates change.
    """
    scenes = list(scenes)
    classnames = list(classnames)
    zsc = ZeroShotClassifier.from_clip(clip, classnames, templates_for(template_set, classnames))
    z = embed_images(clip, scenes) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    if len(z) != len(scenes):
        raise ValueError(f"embeddings has {len(z)} rows but there are {len(scenes)} scenes")
    result = zsc.classify(z, top_k=top_k)
    factor = world_factor(classnames)
    if factor is None:
        return WorldZeroShot(result, None, None, np.zeros(0, dtype=np.int64))
    truth = world_labels(scenes, factor)
    index = np.array([i for i, t in enumerate(truth) if t in classnames], dtype=np.int64)
    if len(index) == 0:
        return WorldZeroShot(result, None, factor, index)
    scored = zsc.classify(z[index], [truth[i] for i in index], top_k=top_k, names=index.tolist())
    return WorldZeroShot(result, scored, factor, index)


def confusion_figure(result: ZeroShotResult, title: str = ""):
    """Heatmap of the confusion matrix (rows true, columns predicted) with the accuracy in the title."""
    import plotly.graph_objects as go

    cm = result.confusion_matrix()
    correct, n = int(np.trace(cm.to_numpy())), int(cm.to_numpy().sum())
    fig = go.Figure(go.Heatmap(z=cm.to_numpy(), x=list(cm.columns), y=list(cm.index), colorscale="Blues",
                               text=cm.to_numpy(), texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    head = f"{title}: " if title else ""
    fig.update_layout(title=f"{head}accuracy {result.accuracy:.2f} ({correct}/{n})",
                      xaxis=dict(title="predicted"), yaxis=dict(title="true", autorange="reversed"),
                      height=160 + 34 * len(cm), width=200 + 50 * len(cm), margin=dict(l=10, r=10, t=50, b=40))
    return fig
