"""The shapes world: seeded scenes of coloured shapes and written words with known factors.

A `Scene` is a small frozen dataclass (objects, background, optional written word) that renders
at any size and round-trips through JSON, so every figure can say exactly what it shows and every
probe has ground truth. Geometry lives in unit coordinates ([0, 1] x [0, 1], y down), so the same
scene renders identically (up to anti-aliasing) at 32, 64 or 512 px.

Generators at the bottom make the training stream (`training_pairs`) and the probe sets of the
later notebooks (`single_objects`, `relation_scenes`, `count_scenes`, `word_scenes`,
`typographic_scenes`, `colour_swap_pairs`). All randomness comes from `numpy.random.Generator`s
seeded with integers, never from `hash()` (salted per process).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

NATIVE_SIZE = 64
SUPERSAMPLE = 4  # PIL draws without anti-aliasing: draw big, then downsample

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (220, 38, 38),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (34, 160, 60),
    "blue": (37, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 125, 190),
    "brown": (125, 75, 35),
}
BACKGROUNDS = {"white": (245, 245, 245), "gray": (150, 150, 150), "black": (20, 20, 20)}
SIZES = {"small": 0.11, "medium": 0.16, "large": 0.22}  # object radius as a share of the image
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# Words the world writes: every class name a probe uses, plus a few that are none of them.
EXTRA_WORDS = ("ipod", "apple", "cat", "dog", "clip", "hello")
WORDS = SHAPES + tuple(COLOURS) + EXTRA_WORDS
TEXT_COLOURS = {"black": (10, 10, 10), "white": (250, 250, 250), **COLOURS}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str = "medium"
    x: float = 0.5  # centre, unit coordinates
    y: float = 0.5
    rotation: float = 0.0  # degrees; small jitter only, so a square stays a square

    @property
    def radius(self) -> float:
        return SIZES[self.size]


@dataclass(frozen=True)
class Text:
    word: str
    x: float = 0.5  # centre, unit coordinates
    y: float = 0.8
    size: float = 0.22  # font height as a share of the image
    colour: str = "black"
    opacity: float = 1.0


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...] = ()
    background: str = "white"
    text: Text | None = None

    # --- factors -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.objects)

    def relation(self, i: int = 0, j: int = 1) -> str:
        """Where object i is relative to object j, along the axis where they differ most."""
        a, b = self.objects[i], self.objects[j]
        dx, dy = a.x - b.x, a.y - b.y
        if abs(dx) >= abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"

    # --- captions ------------------------------------------------------------------------------
    def caption(self, template: int = 0) -> str:
        """A caption naming the scene's factors; `template` picks among the phrasings."""
        return _caption(self, template)

    # --- rendering -----------------------------------------------------------------------------
    def render(self, size: int = NATIVE_SIZE) -> Image.Image:
        return render(self, size)

    # --- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        text = Text(**d["text"]) if d.get("text") else None
        return cls(tuple(Obj(**o) for o in d["objects"]), d["background"], text)

    @classmethod
    def from_json(cls, s: str) -> "Scene":
        return cls.from_dict(json.loads(s))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n, radius, phase):
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n),
                 cy + radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]

    t = math.radians(rot)
    if shape == "square":
        return ring(4, r * 1.2, math.pi / 4 + t)
    if shape == "diamond":
        return [(cx + dx * math.cos(t) - dy * math.sin(t), cy + dx * math.sin(t) + dy * math.cos(t))
                for dx, dy in ((0, -r * 1.25), (r * 0.8, 0), (0, r * 1.25), (-r * 0.8, 0))]
    if shape == "triangle":
        return ring(3, r * 1.25, -math.pi / 2 + t)
    if shape == "star":
        outer, inner = ring(5, r * 1.3, -math.pi / 2 + t), ring(5, r * 0.52, -math.pi / 2 + math.pi / 5 + t)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r * 1.1, r * 0.38
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
               (-a, -b), (-b, -b)]
        return [(cx + dx * math.cos(t) - dy * math.sin(t), cy + dx * math.sin(t) + dy * math.cos(t))
                for dx, dy in pts]
    raise ValueError(f"unknown shape {shape!r}; the world knows {SHAPES}")


_FONTS: dict[int, ImageFont.ImageFont] = {}


def _font(px: int) -> ImageFont.ImageFont:
    # Pillow's bundled scalable font: present in every wheel, so renders match across machines.
    if px not in _FONTS:
        _FONTS[px] = ImageFont.load_default(size=max(px, 4))
    return _FONTS[px]


def render(scene: Scene, size: int = NATIVE_SIZE) -> Image.Image:
    """Render `scene` as an RGB image of `size` x `size` pixels."""
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}; use one of {tuple(BACKGROUNDS)}")
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        if o.colour not in COLOURS:
            raise ValueError(f"unknown colour {o.colour!r}; the world knows {tuple(COLOURS)}")
        cx, cy, r = o.x * big, o.y * big, o.radius * big
        if o.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[o.colour])
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r, o.rotation), fill=COLOURS[o.colour])
    if scene.text is not None:
        img = _write(img, scene.text)
    return img.resize((size, size), Image.Resampling.LANCZOS if size < big else Image.Resampling.BICUBIC)


def _write(img: Image.Image, text: Text) -> Image.Image:
    big = img.width
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    px = int(round(text.size * big))
    font = _font(px)
    width = draw.textlength(text.word, font=font)
    if width > 0.92 * big:  # long words shrink to fit rather than run off the edge
        font = _font(int(px * 0.92 * big / width))
    colour = TEXT_COLOURS.get(text.colour)
    if colour is None:
        raise ValueError(f"unknown text colour {text.colour!r}; use one of {tuple(TEXT_COLOURS)}")
    alpha = int(round(255 * min(max(text.opacity, 0.0), 1.0)))
    draw.text((text.x * big, text.y * big), text.word, font=font, fill=(*colour, alpha), anchor="mm")
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------
def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(o: Obj, with_size: bool = False) -> str:
    words = ([o.size] if with_size else []) + [o.colour, o.shape]
    return f"{_article(words[0])} {' '.join(words)}"


def _caption(scene: Scene, template: int) -> str:
    objs = scene.objects
    if not objs:
        body = "an empty picture"
    elif len(objs) == 1:
        o = objs[0]
        body = [_np(o), _np(o, with_size=True), f"{_np(o)} on a {scene.background} background",
                f"a photo of {_np(o)}"][template % 4]
    elif len({(o.shape, o.colour) for o in objs}) == 1:
        o = objs[0]
        body = f"{NUMBER_WORDS[len(objs)]} {o.colour} {_plural(o.shape)}"
    elif len(objs) == 2:
        rel = scene.relation(0, 1)
        rel_words = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
        # Three phrasings in four name the relation; "and" leaves it out, as people often do.
        join = "and" if template % 4 == 2 else rel_words
        body = f"{_np(objs[0])} {join} {_np(objs[1])}"
    else:
        body = ", ".join(_np(o) for o in objs[:-1]) + f" and {_np(objs[-1])}"
    if scene.text is not None:
        if not objs:
            return f'the word "{scene.text.word}"'
        body += f' with the word "{scene.text.word}" written on it'
    return body


# ---------------------------------------------------------------------------------------------
# Random scenes
# ---------------------------------------------------------------------------------------------
def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _choice(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def random_object(rng, shape=None, colour=None, size=None, x=None, y=None) -> Obj:
    size = size or _choice(rng, tuple(SIZES))
    r = SIZES[size] * 1.3
    return Obj(shape or _choice(rng, SHAPES), colour or _choice(rng, tuple(COLOURS)), size,
               float(x if x is not None else rng.uniform(r, 1 - r)),
               float(y if y is not None else rng.uniform(r, 1 - r)),
               float(rng.uniform(-10, 10)))


def random_text(rng, word=None, below=True, colour=None) -> Text:
    word = word or _choice(rng, WORDS)
    size = float(rng.uniform(0.2, 0.28))
    # Written words sit in the lower band (like a label) unless asked to go anywhere.
    y = float(rng.uniform(0.78, 0.88)) if below else float(rng.uniform(0.15, 0.85))
    return Text(word, float(rng.uniform(0.42, 0.58)), y, size, colour or _choice(rng, ("black", "white")), 1.0)


def _text_colour_for(background: str) -> str:
    return "white" if background == "black" else "black"


def single_object(rng, text: bool = False, **kw) -> Scene:
    rng = _rng(rng)
    bg = kw.pop("background", None) or _choice(rng, tuple(BACKGROUNDS))
    if text:
        o = random_object(rng, y=float(rng.uniform(0.3, 0.45)), size=kw.pop("size", None) or
                          _choice(rng, ("small", "medium")), **kw)
        return Scene((o,), bg, random_text(rng, colour=_text_colour_for(bg)))
    return Scene((random_object(rng, **kw),), bg)


def two_objects(rng, relation: str | None = None, text: bool = False) -> Scene:
    """Two distinct objects separated clearly along one axis, so the relation is unambiguous."""
    rng = _rng(rng)
    relation = relation or _choice(rng, RELATIONS)
    size = _choice(rng, ("small", "medium"))
    a = random_object(rng, size=size)
    while True:
        b = random_object(rng, size=size)
        if (b.shape, b.colour) != (a.shape, a.colour):
            break
    lo, hi, mid = float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.7, 0.8)), float(rng.uniform(0.3, 0.7))
    if text:
        mid = min(mid, 0.4)
    first, second = {"left of": (lo, hi), "right of": (hi, lo), "above": (lo, hi), "below": (hi, lo)}[relation]
    if relation in ("left of", "right of"):
        a, b = dataclasses.replace(a, x=first, y=mid), dataclasses.replace(b, x=second, y=mid)
    else:
        a, b = dataclasses.replace(a, x=mid, y=first), dataclasses.replace(b, x=mid, y=second)
    bg = _choice(rng, tuple(BACKGROUNDS))
    return Scene((a, b), bg, random_text(rng, colour=_text_colour_for(bg)) if text else None)


def counted_objects(rng, n: int | None = None) -> Scene:
    """n identical objects (same shape, colour and size) that do not overlap."""
    rng = _rng(rng)
    n = n or int(rng.integers(1, 4))
    shape, colour = _choice(rng, SHAPES), _choice(rng, tuple(COLOURS))
    size = "small"
    objs: list[Obj] = []
    while len(objs) < n:
        o = random_object(rng, shape, colour, size)
        if all((o.x - p.x) ** 2 + (o.y - p.y) ** 2 > (2.6 * o.radius) ** 2 for p in objs):
            objs.append(o)
    return Scene(tuple(objs), _choice(rng, tuple(BACKGROUNDS)))


def word_only(rng, word: str | None = None) -> Scene:
    rng = _rng(rng)
    bg = _choice(rng, tuple(BACKGROUNDS))
    return Scene((), bg, random_text(rng, word, below=False, colour=_text_colour_for(bg)))


def random_scene(rng) -> Scene:
    """One draw from the training mixture of scene kinds."""
    rng = _rng(rng)
    kind = float(rng.random())
    if kind < 0.25:
        return single_object(rng)
    if kind < 0.45:
        return single_object(rng, text=True)
    if kind < 0.65:
        return two_objects(rng)
    if kind < 0.85:
        return counted_objects(rng, int(rng.integers(2, 4)))
    return word_only(rng)


def perturb(scene: Scene, rng) -> Scene:
    """A minimal change of one named factor: the hard negative that sits beside `scene` in a batch.

    Colour swap for pairs, another word for written text, another shape or colour for single
    objects, the mirrored relation, another count. Contrastive training on such pairs is what
    teaches binding, reading and counting instead of bag-of-words matching.
    """
    rng = _rng(rng)
    objs = list(scene.objects)
    if scene.text is not None and (not objs or rng.random() < 0.6):
        word = _choice(rng, tuple(w for w in WORDS if w != scene.text.word))
        return dataclasses.replace(scene, text=dataclasses.replace(scene.text, word=word))
    if len(objs) == 2 and (objs[0].shape, objs[0].colour) != (objs[1].shape, objs[1].colour):
        a, b = objs
        r = rng.random()
        if r < 0.4 and a.colour != b.colour:  # colour swap: the binding negative
            return dataclasses.replace(scene, objects=(dataclasses.replace(a, colour=b.colour),
                                                        dataclasses.replace(b, colour=a.colour)))
        if r < 0.7:  # mirror: the relation negative
            return dataclasses.replace(scene, objects=(dataclasses.replace(a, x=b.x, y=b.y),
                                                        dataclasses.replace(b, x=a.x, y=a.y)))
        if a.shape != b.shape:  # shape swap
            return dataclasses.replace(scene, objects=(dataclasses.replace(a, shape=b.shape),
                                                        dataclasses.replace(b, shape=a.shape)))
    if len(objs) >= 2 and len({(o.shape, o.colour) for o in objs}) == 1:  # another count
        n = _choice(rng, tuple(k for k in (1, 2, 3) if k != len(objs)))
        twin = counted_objects(rng, n)
        return Scene(tuple(dataclasses.replace(o, shape=objs[0].shape, colour=objs[0].colour)
                           for o in twin.objects), scene.background)
    o = objs[0]
    if rng.random() < 0.5:
        o2 = dataclasses.replace(o, shape=_choice(rng, tuple(s for s in SHAPES if s != o.shape)))
    else:
        o2 = dataclasses.replace(o, colour=_choice(rng, tuple(c for c in COLOURS if c != o.colour)))
    return dataclasses.replace(scene, objects=(o2, *objs[1:]))


def training_pairs(seed: int, batch_size: int) -> Iterator[list[tuple[Scene, str]]]:
    """Endless batches of (scene, caption), half of them minimal-pair hard negatives of the other half.

    Captions within a batch are unique: a repeated caption would be a false negative for the
    contrastive loss, so a draw that repeats one is replaced.
    """
    rng = np.random.default_rng(seed)
    while True:
        batch: list[tuple[Scene, str]] = []
        seen: set[str] = set()
        while len(batch) < batch_size:
            s = random_scene(rng)
            pair = [s, perturb(s, rng)] if len(batch) + 1 < batch_size else [s]
            caps = [p.caption(int(rng.integers(4))) for p in pair]
            if len(set(caps)) < len(caps) or seen.intersection(caps):
                continue
            seen.update(caps)
            batch.extend(zip(pair, caps))
        yield batch


# ---------------------------------------------------------------------------------------------
# Probe sets: held-out scenes for the measurements of the later notebooks
# ---------------------------------------------------------------------------------------------
PROBE_SEED = 10_000_019  # far from any training seed


def single_object_scene(shape: str, colour: str, background: str = "white", word: str = "") -> Scene:
    """One large object, centred (raised a little when a word is written under it): a scene a user builds."""
    for name, value, known in (("shape", shape, SHAPES), ("colour", colour, COLOURS), ("background", background, BACKGROUNDS)):
        if value not in known:
            raise ValueError(f"{name}={value!r} is not in the world; use one of {', '.join(known)}")
    text = Text(word.strip()) if word.strip() else None
    return Scene((Obj(shape, colour, "large", 0.5, 0.45 if text else 0.5),), background, text)


def single_objects(n: int, seed: int = PROBE_SEED) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [single_object(rng) for _ in range(n)]


def relation_scenes(n: int, seed: int = PROBE_SEED + 1) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [two_objects(rng) for _ in range(n)]


def count_scenes(n: int, seed: int = PROBE_SEED + 2) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [counted_objects(rng, 1 + i % 3) for i in range(n)]


def word_scenes(n: int, seed: int = PROBE_SEED + 3, words=WORDS) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [word_only(rng, words[i % len(words)]) for i in range(n)]


def typographic_scenes(n: int, seed: int = PROBE_SEED + 4) -> list[Scene]:
    """Single objects labelled with the name of another shape: the misleading word."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = single_object(rng, text=True)
        word = _choice(rng, tuple(w for w in SHAPES if w != s.objects[0].shape))
        out.append(dataclasses.replace(s, text=dataclasses.replace(s.text, word=word)))
    return out


def colour_swap_pairs(n: int, seed: int = PROBE_SEED + 5) -> list[tuple[Scene, str, str]]:
    """(scene, its caption, the caption with the two colours swapped) for binding probes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = two_objects(rng)
        a, b = s.objects
        if a.colour == b.colour or a.shape == b.shape:
            continue
        swapped = dataclasses.replace(s, objects=(dataclasses.replace(a, colour=b.colour),
                                                   dataclasses.replace(b, colour=a.colour)))
        out.append((s, s.caption(0), swapped.caption(0)))
    return out


def mixed_scenes(n: int, seed: int = PROBE_SEED + 6) -> list[Scene]:
    """A held-out sample of the training mixture, for maps and retrieval."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng) for _ in range(n)]
