"""Typographic attacks: write a word on an image and watch the zero-shot label follow the word.

CLIP learned to read, so an apple with a paper label saying "iPod" is classified as an iPod (the
unCLIP paper's Figure 6 pairs those probabilities with decoder variations that still show apples).
`write_text` makes the attacked image, `typographic_attack` classifies clean and attacked versions
and counts how often the prediction goes to the written word, and `class_probability_bars` draws
the figure's bars. World scenes are attacked with the world's own text renderer (the written word
the model saw in training); photos and user images with `write_text`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from clipspace import world
from clipspace.probes.zero_shot import (WORLD_TEMPLATES, Template, ZeroShotClassifier, ZeroShotResult, embed_images,
                        world_classnames)

POSITIONS = {"top": (0.5, 0.15), "center": (0.5, 0.5), "bottom": (0.5, 0.85)}


# ---------------------------------------------------------------------------------------------
# Writing on images
# ---------------------------------------------------------------------------------------------
def _rgb(colour, name: str) -> tuple[int, int, int]:
    if isinstance(colour, str):
        if colour not in world.TEXT_COLOURS:
            raise ValueError(f"{name}={colour!r} is not a known colour name; use one of "
                             f"{tuple(world.TEXT_COLOURS)} or an (r, g, b) tuple")
        return world.TEXT_COLOURS[colour]
    rgb = tuple(int(c) for c in colour)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"{name}={colour!r} must be a colour name or an (r, g, b) tuple of 0..255")
    return rgb


def _load_font(font, px: int) -> ImageFont.ImageFont:
    if font is None:
        return ImageFont.load_default(size=max(px, 4))  # Pillow's bundled scalable font, same everywhere
    path = Path(font).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"font={str(font)!r} does not exist; give the path of a .ttf/.otf file, "
                                "or font=None for Pillow's bundled font")
    try:
        return ImageFont.truetype(str(path), size=max(px, 4))
    except OSError as e:
        raise ValueError(f"font={str(font)!r} could not be read as a TrueType/OpenType font: {e}") from None


def write_text(image, text: str, position="bottom", size: float = 0.15, colour="black",
               opacity: float = 1.0, font=None, box=None, max_width: float = 0.92) -> Image.Image:
    """A new RGB image with `text` written on `image` (which stays untouched).

    position: (x, y) of the text centre as fractions of width and height, or 'top', 'center', 'bottom'.
    size: font height as a fraction of the image height; a word wider than `max_width` of the image
      shrinks to fit. colour, box: a colour name (`world.TEXT_COLOURS`) or (r, g, b); `box` draws a
      label behind the text, like the paper label on the "iPod" apple. opacity: 0..1, of text and box.
    font: None for Pillow's bundled font, or the path of a TrueType/OpenType file.
    """
    from clipspace.images import load_image

    if not isinstance(text, str) or not text:
        raise ValueError(f"text={text!r} must be a non-empty string")
    if isinstance(position, str):
        if position not in POSITIONS:
            raise ValueError(f"position={position!r} must be one of {tuple(POSITIONS)} or (x, y) fractions")
        position = POSITIONS[position]
    x, y = (float(v) for v in position)
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"position={position!r}: x and y are fractions of the image, in [0, 1]")
    if not 0 < size <= 1:
        raise ValueError(f"size={size!r} is a fraction of the image height, in (0, 1]")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity={opacity!r} must be in [0, 1]")
    img = load_image(image).copy()  # RGB, and never the caller's object
    w, h = img.size
    rgb, alpha = _rgb(colour, "colour"), int(round(255 * opacity))
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    px = max(int(round(size * h)), 4)
    f = _load_font(font, px)
    width = draw.textlength(text, font=f)
    if width > max_width * w:
        f = _load_font(font, int(px * max_width * w / width))
    xy = (x * w, y * h)
    if box is not None:
        left, top, right, bottom = draw.textbbox(xy, text, font=f, anchor="mm")
        pad = 0.25 * (bottom - top)
        draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(*_rgb(box, "box"), alpha))
    draw.text(xy, text, font=f, fill=(*rgb, alpha), anchor="mm")
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------
def _attack_scene(scene: world.Scene, word: str | None) -> tuple[world.Scene, world.Scene]:
    """(clean, attacked) versions of a world scene, both rendered by the world itself."""
    clean = dataclasses.replace(scene, text=None)
    text = scene.text or world.Text(word or "", colour=world._text_colour_for(scene.background))
    attacked = dataclasses.replace(scene, text=dataclasses.replace(text, word=word or text.word))
    if not attacked.text.word:
        raise ValueError("a scene without written text needs an attack word")
    return clean, attacked


@dataclass
class TypographicResult:
    """Clean and attacked zero-shot results for the same images, and what the written words did."""

    clean: ZeroShotResult
    attacked: ZeroShotResult
    words: list[str]  # the word written on each image

    @property
    def eligible(self) -> np.ndarray:
        """Images whose word is a class other than the true one: only there can the label flip to it."""
        cls = self.clean.classnames
        return np.array([w in cls and w != cls[y] for w, y in zip(self.words, self.clean.labels)])

    def _to_word(self, result: ZeroShotResult) -> np.ndarray:
        names = result.predicted_names
        return np.array([n == w for n, w in zip(names, self.words)])

    def _rows(self, mask: np.ndarray) -> dict:
        e = self.eligible & mask
        c_ok = self.clean.predictions == self.clean.labels
        a_ok = self.attacked.predictions == self.attacked.labels
        rate = lambda v, m: float(v[m].mean()) if m.any() else float("nan")  # noqa: E731
        return {"n": int(mask.sum()), "clean_accuracy": rate(c_ok, mask), "attacked_accuracy": rate(a_ok, mask),
                "n_eligible": int(e.sum()),
                # share of attacked images predicted as their written word ...
                "flip_rate": rate(self._to_word(self.attacked), e),
                # ... against the share of clean images already predicted as that word (the baseline)
                "clean_word_rate": rate(self._to_word(self.clean), e)}

    def summary(self) -> pd.DataFrame:
        """One row over all images: n, clean and attacked accuracy, flip rate toward the word and its baseline."""
        return pd.DataFrame([self._rows(np.ones(len(self.words), bool))])

    def per_class(self) -> pd.DataFrame:
        """The summary per true class."""
        y = self.clean.labels
        return pd.DataFrame([{"class": c, **self._rows(y == i)} for i, c in enumerate(self.clean.classnames)
                             if (y == i).any()])

    def table(self) -> pd.DataFrame:
        """One row per image: truth, word, clean and attacked predictions with probabilities."""
        cls = self.clean.classnames
        return pd.DataFrame({
            "true": self.clean.true_names, "word": self.words,
            "clean_prediction": self.clean.predicted_names,
            "clean_p_true": self.clean.probs[np.arange(len(self.words)), self.clean.labels],
            "attacked_prediction": self.attacked.predicted_names,
            "attacked_p_true": self.attacked.probs[np.arange(len(self.words)), self.attacked.labels],
            "attacked_p_word": [float(p[cls.index(w)]) if w in cls else float("nan")
                                for p, w in zip(self.attacked.probs, self.words)],
        })


def typographic_attack(clip, images: Sequence, labels: Sequence, attack_words: Sequence[str] | None,
                       classnames: Sequence[str], templates: Sequence[Template], top_k: int = 5,
                       **text_kw) -> TypographicResult:
    """Classify each image clean and with its attack word written on it.

    images: world Scenes (attacked with the world's text renderer, at the scene's own text position;
      a scene's existing word is used when `attack_words` is None) or anything `write_text` takes.
    labels: the true class of each image (names or indices into `classnames`).
    text_kw: passed to `write_text` for non-scene images (position, size, colour, box, font ...).
    """
    images = list(images)
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but there are {n} images")
    if attack_words is None:
        if not all(isinstance(s, world.Scene) and s.text is not None for s in images):
            raise ValueError("attack_words=None works only for world scenes that already carry a written word; "
                             "give one attack word per image")
        attack_words = [s.text.word for s in images]
    elif isinstance(attack_words, str):
        attack_words = [attack_words] * n  # one word for every image
    attack_words = list(attack_words)
    if len(attack_words) != n:
        raise ValueError(f"attack_words has {len(attack_words)} entries but there are {n} images")
    clean, attacked = [], []
    for im, word in zip(images, attack_words):
        if isinstance(im, world.Scene):
            c, a = _attack_scene(im, word)
            clean.append(c.render(clip.image_size))
            attacked.append(a.render(clip.image_size))
        else:
            clean.append(im)
            attacked.append(write_text(im, word, **text_kw))
    zsc = ZeroShotClassifier.from_clip(clip, classnames, templates)
    z = embed_images(clip, clean + attacked)
    return TypographicResult(zsc.classify(z[:n], labels, top_k), zsc.classify(z[n:], labels, top_k), attack_words)


def world_attack(clip, n: int = 60, seed: int = world.PROBE_SEED + 4) -> TypographicResult:
    """The world's Figure-6 probe: single shapes labelled with another shape's name, classified by shape."""
    scenes = world.typographic_scenes(n, seed)
    return typographic_attack(clip, scenes, [s.objects[0].shape for s in scenes], None,
                              world_classnames("shape"), WORLD_TEMPLATES["shape"])


# ---------------------------------------------------------------------------------------------
# Photos for a real CLIP
# ---------------------------------------------------------------------------------------------
# skimage.data's bundled photos (no download) and what each shows.
SKIMAGE_LABELS = {"astronaut": "astronaut", "chelsea": "cat", "coffee": "cup of coffee", "rocket": "rocket",
                  "camera": "man with a camera", "coins": "coins", "stereo_motorcycle": "motorcycle",
                  "hubble_deep_field": "galaxies"}
# The photos' own classes plus the words the classic attacks write.
SKIMAGE_CLASSES = list(SKIMAGE_LABELS.values()) + ["dog", "ipod", "pizza", "library", "apple"]


def skimage_photos(names: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """name -> RGB PIL image of skimage.data's bundled photos (all of `SKIMAGE_LABELS` by default)."""
    import skimage.data

    out = {}
    for name in names or SKIMAGE_LABELS:
        if name not in SKIMAGE_LABELS:
            raise ValueError(f"{name!r} is not one of the bundled photos {tuple(SKIMAGE_LABELS)}")
        a = getattr(skimage.data, name)()
        a = a[0] if isinstance(a, tuple) else a  # stereo pairs: the left view
        out[name] = Image.fromarray(a).convert("RGB")
    return out


# ---------------------------------------------------------------------------------------------
# Figure 6's bars
# ---------------------------------------------------------------------------------------------
def class_probability_bars(probs, classnames: Sequence[str], title: str = "", top: int | None = 8):
    """Horizontal bars of class probabilities; `probs` is one (C,) vector or {'clean': p, 'attacked': q}.

    With several vectors the bars are grouped; `top` keeps the classes most probable in any of them.
    """
    import plotly.graph_objects as go

    series = dict(probs) if isinstance(probs, dict) else {"probability": probs}
    series = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in series.items()}
    for k, v in series.items():
        if len(v) != len(classnames):
            raise ValueError(f"probs[{k!r}] has {len(v)} values but there are {len(classnames)} classnames")
    best = np.max(np.stack(list(series.values())), axis=0)
    order = np.argsort(-best, kind="stable")[: top or len(classnames)][::-1]  # most probable on top
    fig = go.Figure([go.Bar(x=v[order], y=[classnames[i] for i in order], orientation="h", name=k,
                            text=[f"{p:.0%}" for p in v[order]], textposition="outside")
                     for k, v in series.items()])
    fig.update_layout(title=title, barmode="group", xaxis=dict(title="probability", range=[0, 1.15]),
                      height=120 + 28 * len(order) * max(1, len(series)), margin=dict(l=10, r=10, t=50, b=40),
                      showlegend=len(series) > 1)
    return fig


# ---------------------------------------------------------------------------------------------
# One scene, one word (notebook 05's panel)
# ---------------------------------------------------------------------------------------------
def attack_scene(scene: world.Scene, word: str, x: float = 0.5, y: float = 0.8, size: float = 0.22,
                 opacity: float = 1.0, colour: str | None = None) -> world.Scene:
    """`scene` with `word` written by the world's own renderer (replacing any word it had).

    x, y: the word's centre as fractions of the image; size: font height as a fraction of the image;
    colour: a `world.TEXT_COLOURS` name, default black (white on a black background).
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word={word!r} must be a non-empty string")
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"x={x!r}, y={y!r}: the word's centre is a fraction of the image, in [0, 1]")
    if not 0 < size <= 1:
        raise ValueError(f"size={size!r} is a fraction of the image height, in (0, 1]")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity={opacity!r} must be in [0, 1]")
    colour = colour or world._text_colour_for(scene.background)
    _rgb(colour, "colour")  # a clear error for an unknown colour name
    return dataclasses.replace(scene, text=world.Text(word.strip(), float(x), float(y), float(size), colour,
                                                      float(opacity)))


@dataclass
class SceneAttack:
    """One scene, clean and with a word written on it, classified both ways."""

    clean: Image.Image
    attacked: Image.Image
    classnames: list[str]
    clean_probs: np.ndarray  # (C,)
    attacked_probs: np.ndarray  # (C,)
    word: str
    attacked_scene: world.Scene  # the scene with the word: re-render or decode it at any size

    @property
    def clean_prediction(self) -> str:
        return self.classnames[int(self.clean_probs.argmax())]

    @property
    def attacked_prediction(self) -> str:
        return self.classnames[int(self.attacked_probs.argmax())]

    def figure(self, top: int | None = 8):
        """Figure 6's bars: clean and attacked probabilities side by side."""
        return class_probability_bars({"clean": self.clean_probs, "attacked": self.attacked_probs}, self.classnames,
                                      title=f'"{self.word}": {self.clean_prediction} → {self.attacked_prediction}',
                                      top=top)


def attack_classnames(word: str, classnames: Sequence[str] | None = None) -> list[str]:
    """The classes to score an attack with: the world's shapes by default, plus the word when it is not
    one of them (so its bar can appear, as the "iPod" bar does in Figure 6)."""
    names = list(world_classnames("shape") if classnames is None else classnames)
    word = word.strip()
    return names if word in names else names + [word]


def scene_attack(clip, scene: world.Scene, word: str, classnames: Sequence[str] | None = None,
                 templates: Sequence[Template] | None = None, image_size: int | None = None,
                 **text) -> SceneAttack:
    """Write `word` on `scene` (`attack_scene` keywords x, y, size, opacity, colour) and classify the
    clean and attacked renders. Classes default to `attack_classnames(word)`, templates to the world's
    shape ensemble. `image_size` is the size of the returned images (default the model's)."""
    clean_scene = dataclasses.replace(scene, text=None)
    attacked_scene = attack_scene(clean_scene, word, **text)
    names = attack_classnames(word, classnames)
    zsc = ZeroShotClassifier.from_clip(clip, names, WORLD_TEMPLATES["shape"] if templates is None else templates)
    res = zsc.classify(embed_images(clip, [clean_scene, attacked_scene]))
    size = image_size or clip.image_size
    return SceneAttack(clean_scene.render(size), attacked_scene.render(size), names, res.probs[0], res.probs[1],
                       word.strip(), attacked_scene)


def photo_attack(clip, word: str = "ipod", names: Sequence[str] | None = None,
                 templates: Sequence[Template] | None = None, **text_kw) -> TypographicResult:
    """The real-CLIP route: skimage.data's bundled photos, each with `word` written on a white label,
    classified over `SKIMAGE_CLASSES` with open_clip's 80 ImageNet templates by default."""
    from clipspace.probes.zero_shot import OPENAI_TEMPLATES

    photos = skimage_photos(names)
    text_kw = {"box": "white", "size": 0.12, **text_kw}
    return typographic_attack(clip, list(photos.values()), [SKIMAGE_LABELS[k] for k in photos], word,
                              SKIMAGE_CLASSES, OPENAI_TEMPLATES if templates is None else templates, **text_kw)
