"""Compositional probes: Winoground groups, counting and negation on world scenes, each beside a
blind text-only baseline that says whether the captions alone would have solved it.

- **Winoground** (`winoground_scores`, `world_winoground`): a group is two images and two captions
  that use the same words composed differently (colours exchanged between the objects, or the
  objects trading places). Text score: each image prefers its own caption; image score: each
  caption prefers its own image; group score: both. Chance 1/4, 1/4 and 1/6 (for i.i.d. scores the
  two diagonal entries are the top two of four with probability 2!2!/4!). Scores are strict
  inequalities, as in the benchmark: **ties count as losses**, so a bag-of-words model, which ties
  every same-words caption pair, scores 0 rather than chance.
- **Counting** (`counting_probe`): an image of k identical objects against the captions for 1, 2
  and 3 of them; correct when the true count ranks first (chance 1/3).
- **Negation** (`negation_probe`, NegBench-style): "a scene with no red objects" against a scene
  with a red object and the same scene with that object recoloured; correct when the scene without
  red scores higher (chance 1/2). The affirmative control ("a scene with a red object" prefers the
  red scene) shows whether the model reads the colour word at all, so a failure on the negated
  caption reads as "ignores *no*", not "cannot see red".
- **Binding swaps** (`binding_ranking`): `binding.binding_pairs` as ranking items, so they get the
  blind baseline too.

Ranking probes (counting, negation, binding) split ties: an item whose true candidate ties with m-1
others wins 1/m, the expected accuracy of breaking the tie at random, so a model blind to the
difference sits at chance instead of below it (the binding probe's convention for m = 2).

The blind baseline (`blind_scores`) scores each candidate caption without its image. The default,
``"logistic"``, is a caption-only pairwise logistic regression (true caption minus negative, no
intercept, cross-validated over items): it learns any regularity that separates true from negative
captions in the probe's construction, which is what "text alone solves it" means. The zero-training
alternative, ``"prior"`` (each caption's cosine to the probe set's mean image embedding, a text-only
prior in the spirit of SugarCrepe's blind models), only catches a bias that happens to lie along
that one direction; binding's count pairs show the difference: their negatives are "two ..." in two
items of three, which the regression learns and the prior need not. A probe whose blind accuracy
has a Wilson lower bound above chance is flagged ``text_alone_solves``.

Where the candidates are images (negation, and the image side of Winoground), a text-only scorer
gives every candidate the same score, so its blind accuracy is chance (split ties) or 0 (Winoground)
by construction; it is computed anyway, so the table shows it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from clipspace import world
from clipspace.probes.binding import KINDS as BINDING_KINDS
from clipspace.probes.binding import binding_pairs, mirror, recount, wilson_interval
from clipspace.probes.zero_shot import embed_images

WINOGROUND_KINDS = ("colour", "relation")
WINOGROUND_CHANCE = {"text": 1 / 4, "image": 1 / 4, "group": 1 / 6}
COUNTS = (1, 2, 3)
NEGATED = "a scene with no {} objects"
AFFIRMATIVE = "a scene with a {} object"
BLIND_METHODS = ("logistic", "prior")
NEGATION_SEED = world.PROBE_SEED + 8  # the next held-out probe seed (factors uses + 7)

COLUMNS = ["probe", "kind", "metric", "n", "score", "chance", "ci_low", "ci_high", "blind_score",
           "blind_ci_low", "blind_ci_high", "text_alone_solves"]


def _offset(default: int, seed: int | None) -> int:
    """`seed=None` keeps the world's held-out probe seed; an integer offsets it (as binding_pairs does)."""
    return default if seed is None else default + int(seed)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _rate_row(wins: np.ndarray, chance: float, confidence: float) -> dict:
    w, n = float(np.sum(wins)), int(len(wins))
    lo, hi = wilson_interval(w, n, confidence)
    return {"n": n, "score": w / n if n else float("nan"), "chance": chance, "ci_low": lo, "ci_high": hi}


def _blind_columns(wins: np.ndarray | None, chance: float, confidence: float) -> dict:
    if wins is None:
        return {"blind_score": float("nan"), "blind_ci_low": float("nan"), "blind_ci_high": float("nan"),
                "text_alone_solves": False}
    r = _rate_row(wins, chance, confidence)
    return {"blind_score": r["score"], "blind_ci_low": r["ci_low"], "blind_ci_high": r["ci_high"],
            "text_alone_solves": bool(r["ci_low"] > chance)}


# ---------------------------------------------------------------------------------------------
# Winoground scores
# ---------------------------------------------------------------------------------------------
@dataclass
class WinogroundResult:
    """Per group: S[k, i, j] = similarity of image i and caption j (caption i belongs to image i)."""

    similarity: np.ndarray  # (G, 2, 2)
    kinds: list[str]
    captions: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    blind: "WinogroundResult | None" = None  # the same groups scored by a text-only baseline
    confidence: float = 0.95

    @property
    def text(self) -> np.ndarray:
        """Each image ranks its own caption first (strictly: a tie loses)."""
        S = self.similarity
        return (S[:, 0, 0] > S[:, 0, 1]) & (S[:, 1, 1] > S[:, 1, 0])

    @property
    def image(self) -> np.ndarray:
        """Each caption ranks its own image first (strictly: a tie loses)."""
        S = self.similarity
        return (S[:, 0, 0] > S[:, 1, 0]) & (S[:, 1, 1] > S[:, 0, 1])

    @property
    def group(self) -> np.ndarray:
        return self.text & self.image

    def rates(self) -> dict[str, float]:
        """Text, image and group score over all groups."""
        return {m: float(getattr(self, m).mean()) for m in WINOGROUND_CHANCE}

    def summary(self) -> pd.DataFrame:
        """Per kind (in order of first appearance, then 'all' when there are several) and metric:
        n, score, chance, Wilson interval, and the blind baseline's score, interval and flag."""
        kinds = np.array(self.kinds)
        groups = [(k, kinds == k) for k in dict.fromkeys(self.kinds)]
        if len(groups) > 1:
            groups.append(("all", np.ones(len(kinds), bool)))
        rows = []
        for kind, mask in groups:
            for metric, chance in WINOGROUND_CHANCE.items():
                blind = None if self.blind is None else getattr(self.blind, metric)[mask]
                rows.append({"probe": "winoground", "kind": kind, "metric": metric,
                             **_rate_row(getattr(self, metric)[mask], chance, self.confidence),
                             **_blind_columns(blind, chance, self.confidence)})
        return pd.DataFrame(rows, columns=COLUMNS)

    def table(self) -> pd.DataFrame:
        """One row per group: kind, both captions, the four similarities and the three outcomes."""
        S = self.similarity
        caps = self.captions or [("", "")] * len(S)
        return pd.DataFrame({"kind": self.kinds, "caption_0": [c[0] for c in caps], "caption_1": [c[1] for c in caps],
                             "s00": S[:, 0, 0], "s01": S[:, 0, 1], "s10": S[:, 1, 0], "s11": S[:, 1, 1],
                             "text": self.text, "image": self.image, "group": self.group})


def winoground_scores(S, kinds: Sequence[str] | None = None, confidence: float = 0.95) -> WinogroundResult:
    """Winoground text, image and group scores of similarity matrices S (n_groups, 2, 2), where
    S[k, i, j] is the similarity of image i and caption j in group k and caption i belongs to image i.

    Ties count as losses (the benchmark's strict inequalities). `result.text`, `.image`, `.group` are
    the per-group booleans; `result.summary()` has the rates with chance (1/4, 1/4, 1/6) and Wilson
    intervals. kinds: a label per group for the summary (default 'group').
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 3 or S.shape[1:] != (2, 2):
        raise ValueError(f"S must have shape (n_groups, 2, 2), got {S.shape}; wrap one group's 2x2 matrix as S[None]")
    if len(S) == 0:
        raise ValueError("S has no groups; give at least one (2, 2) similarity matrix")
    bad = np.flatnonzero(~np.isfinite(S).all(axis=(1, 2)))
    if len(bad):
        raise ValueError(f"S has NaN or infinite similarities in groups {bad[:5].tolist()}; "
                         "score every image-caption pair before computing Winoground scores")
    kinds = ["group"] * len(S) if kinds is None else list(kinds)
    if len(kinds) != len(S):
        raise ValueError(f"kinds has {len(kinds)} labels but S has {len(S)} groups; give one per group")
    return WinogroundResult(S, kinds, confidence=confidence)


# ---------------------------------------------------------------------------------------------
# World Winoground groups
# ---------------------------------------------------------------------------------------------
def _colour_group(s: world.Scene) -> tuple[world.Scene, world.Scene]:
    a, b = s.objects
    return s, dataclasses.replace(s, objects=(dataclasses.replace(a, colour=b.colour),
                                              dataclasses.replace(b, colour=a.colour)))


def _relation_group(s: world.Scene) -> tuple[world.Scene, world.Scene]:
    # The objects trade places (binding.mirror); naming the mirrored scene with its objects in the
    # other order keeps the relation word, so both captions use the same words, as in Winoground.
    m = mirror(s)
    return s, dataclasses.replace(m, objects=m.objects[::-1])


def winoground_groups(n_per_kind: int = 50, kinds: Sequence[str] = WINOGROUND_KINDS,
                      seed: int | None = None) -> list[tuple[world.Scene, world.Scene, str, str, str]]:
    """(scene 0, scene 1, caption 0, caption 1, kind) groups that differ only in composition.

    colour: two objects of different shapes and colours, and the same scene with the colours
    exchanged ("a red square to the left of a blue circle" / "a blue square to the left of a red
    circle"). relation: two objects, and the same scene with the objects' places exchanged ("a red
    square above a blue circle" / "a blue circle above a red square"). Caption i is scene i's own
    world caption. `seed=None` uses the world's held-out probe seeds; an integer offsets them.
    """
    out = []
    for kind in kinds:
        if kind == "colour":
            swaps = world.colour_swap_pairs(n_per_kind, _offset(world.PROBE_SEED + 5, seed))
            pairs = [_colour_group(s) for s, _, _ in swaps]
        elif kind == "relation":
            scenes = world.relation_scenes(n_per_kind, _offset(world.PROBE_SEED + 1, seed))
            pairs = [_relation_group(s) for s in scenes]
        else:
            raise ValueError(f"kind={kind!r} is not a Winoground kind; use some of {WINOGROUND_KINDS}")
        out += [(s0, s1, s0.caption(0), s1.caption(0), kind) for s0, s1 in pairs]
    return out


def world_winoground(clip, n_per_kind: int = 50, kinds: Sequence[str] = WINOGROUND_KINDS,
                     seed: int | None = None, confidence: float = 0.95) -> WinogroundResult:
    """Winoground scores of `clip` on `winoground_groups`: scenes rendered at clip.image_size, cosine
    of unit image and caption embeddings. `result.blind` scores the same groups by each caption's
    cosine to the mean image embedding. It is 0 by construction, whatever the captions: a
    caption-only score is the same for both images, so it can never rank both images' captions
    right (text score needs b(c0) > b(c1) and b(c1) > b(c0)) nor rank one caption's images (image
    score compares a number with itself: a tie, which loses). With same-words captions even a
    bag-of-words model that does see the image ties, so it scores 0 too."""
    groups = winoground_groups(n_per_kind, kinds, seed)
    z = embed_images(clip, [s for g in groups for s in g[:2]]).reshape(len(groups), 2, -1)
    t = np.asarray(clip.encode_texts([c for g in groups for c in g[2:4]]), dtype=np.float32).reshape(len(groups), 2, -1)
    kinds_ = [g[4] for g in groups]
    result = winoground_scores(np.einsum("gid,gjd->gij", z, t), kinds_, confidence)
    prior = t @ _unit(z.reshape(-1, z.shape[-1]).mean(0))  # (G, 2): one number per caption
    result.blind = winoground_scores(np.repeat(prior[:, None, :], 2, axis=1), kinds_, confidence)
    result.captions = [(g[2], g[3]) for g in groups]
    return result


# ---------------------------------------------------------------------------------------------
# Ranking probes and their blind baseline
# ---------------------------------------------------------------------------------------------
def ranking_wins(scores) -> np.ndarray:
    """Per item, the true candidate's (column 0) share of the top score: 1 if it alone is highest,
    1/m if it ties with m-1 others at the top, 0 otherwise."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must be (n_items, n_candidates >= 2) with the true candidate first, got {s.shape}")
    top = s.max(axis=1, keepdims=True)
    at_top = s == top
    return np.where(at_top[:, 0], 1.0 / at_top.sum(axis=1), 0.0)


def blind_scores(caption_emb, method: str = "logistic", image_mean=None, folds: int = 5, seed: int = 0,
                 C: float = 1.0) -> np.ndarray:
    """Text-only scores (n_items, n_candidates) for candidate caption embeddings (n_items,
    n_candidates, D) whose true caption is column 0; no image is seen.

    method='logistic': a pairwise logistic regression on caption embeddings (true minus negative,
    both signs, no intercept, features scaled), fitted on the other folds' items and applied to each
    held-out item, so it measures what the probe's construction gives away. method='prior': cosine of
    each caption with `image_mean` (the probe set's mean image embedding), no training.

    Cross-validation on a balanced design can land the logistic baseline somewhat *below* chance
    (what the training folds over-represent, the held-out fold under-represents); only a lower
    bound above chance is read as "text alone solves it".
    """
    T = np.asarray(caption_emb, dtype=np.float64)
    if T.ndim != 3 or T.shape[1] < 2:
        raise ValueError(f"caption_emb must be (n_items, n_candidates >= 2, dim), got {T.shape}")
    if method == "prior":
        if image_mean is None:
            raise ValueError("method='prior' needs image_mean, the probe set's mean image embedding")
        return T @ _unit(np.asarray(image_mean, dtype=np.float64))
    if method != "logistic":
        raise ValueError(f"method={method!r} is unknown; use one of {BLIND_METHODS}")
    n, m, d = T.shape
    diffs = T[:, :1] - T[:, 1:]  # (n, m-1, d)
    out = np.zeros((n, m))
    if not np.any(diffs):  # every candidate has the same caption (image ranking): text cannot choose
        return out
    k = min(folds, n)
    if k < 2:
        raise ValueError(f"the logistic blind baseline needs at least 2 items to cross-validate, got {n}")
    for train, test in KFold(k, shuffle=True, random_state=seed).split(np.arange(n)):
        x = diffs[train].reshape(-1, d)
        X, y = np.concatenate([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))]  # symmetric: no bias to learn
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # unit embeddings have tiny coordinates
        w = LogisticRegression(C=C, fit_intercept=False, max_iter=2000).fit(X / scale, y).coef_[0] / scale
        out[test] = T[test] @ w
    return out


@dataclass
class RankingResult:
    """Items with a true candidate (column 0) and negatives: images with candidate captions, or one
    caption with candidate images. `blind` holds the text-only baseline's scores of the same items."""

    probe: str
    kinds: list[str]
    scenes: list[tuple]  # per item: (scene,) for caption ranking, (true scene, other scene) for image ranking
    captions: list[tuple]  # per item: (true caption, negatives...) or (the caption,)
    scores: np.ndarray  # (N, m) model scores, true candidate first
    blind: np.ndarray  # (N, m) text-only scores
    blind_method: str = "logistic"
    confidence: float = 0.95

    @property
    def wins(self) -> np.ndarray:
        return ranking_wins(self.scores)

    @property
    def blind_wins(self) -> np.ndarray:
        return ranking_wins(self.blind)

    @property
    def chance(self) -> float:
        return 1.0 / self.scores.shape[1]

    def summary(self) -> pd.DataFrame:
        """Per kind: accuracy with chance and Wilson interval, the blind accuracy and the flag."""
        kinds = np.array(self.kinds)
        rows = []
        for kind in dict.fromkeys(self.kinds):
            mask = kinds == kind
            rows.append({"probe": self.probe, "kind": kind, "metric": "accuracy",
                         **_rate_row(self.wins[mask], self.chance, self.confidence),
                         **_blind_columns(self.blind_wins[mask], self.chance, self.confidence)})
        return pd.DataFrame(rows, columns=COLUMNS)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"kind": self.kinds, "captions": [" | ".join(c) for c in self.captions],
                             "scores": list(self.scores), "win": self.wins, "blind_win": self.blind_wins})


def _caption_ranking(clip, probe: str, scenes, candidates, kinds, blind: str, confidence: float) -> RankingResult:
    """Each scene against its candidate captions (true first), and the blind scores of the captions."""
    z = embed_images(clip, list(scenes))
    m = len(candidates[0])
    t = np.asarray(clip.encode_texts([c for cs in candidates for c in cs]), dtype=np.float32).reshape(len(z), m, -1)
    return RankingResult(probe, list(kinds), [(s,) for s in scenes], [tuple(c) for c in candidates],
                         np.einsum("nd,nmd->nm", z, t), blind_scores(t, blind, image_mean=z.mean(0)), blind, confidence)


def counting_probe(clip, n: int = 60, seed: int | None = None, blind: str = "logistic",
                   confidence: float = 0.95) -> RankingResult:
    """k identical objects (k = 1, 2, 3 in turn) against the captions for 1, 2 and 3 of them (true
    first, then the others in order); correct when the true count ranks first. Chance 1/3."""
    scenes = world.count_scenes(n, _offset(world.PROBE_SEED + 2, seed))
    candidates = [[recount(s, k).caption(0) for k in (s.count, *(c for c in COUNTS if c != s.count))] for s in scenes]
    return _caption_ranking(clip, "counting", scenes, candidates, ["1-3"] * len(scenes), blind, confidence)


def binding_ranking(clip, n_per_kind: int = 50, kinds: Sequence[str] = BINDING_KINDS, seed: int | None = None,
                    blind: str = "logistic", confidence: float = 0.95) -> RankingResult:
    """`binding.binding_pairs` (image, true caption, swapped caption) as ranking items: the same
    accuracies as `binding.world_binding`, plus the blind baseline."""
    rows = binding_pairs(n_per_kind, kinds, seed)
    return _caption_ranking(clip, "binding", [r[0] for r in rows], [(r[1], r[2]) for r in rows],
                            [r[3] for r in rows], blind, confidence)


def negation_pairs(n: int = 60, seed: int | None = None) -> list[tuple[str, world.Scene, world.Scene]]:
    """(colour, scene with one object of that colour, the same scene with it recoloured) triples.

    Colours cycle through the world's eight; scenes alternate one object and two (the other object
    never has the probed colour). The recolouring avoids the probed colour and, for two objects, the
    other object's colour, so the scenes differ in that one object's colour and in nothing else.
    """
    rng = np.random.default_rng(_offset(NEGATION_SEED, seed))
    colours = tuple(world.COLOURS)
    out = []
    for i in range(n):
        c = colours[i % len(colours)]
        if i % 2 == 0:
            s, target = world.single_object(rng, colour=c), 0
        else:
            s, target = world.two_objects(rng), int(rng.integers(2))
            objs = list(s.objects)
            other = objs[1 - target]
            if other.colour == c:
                other = dataclasses.replace(other, colour=world._choice(rng, tuple(x for x in colours if x != c)))
            objs[1 - target], objs[target] = other, dataclasses.replace(objs[target], colour=c)
            s = dataclasses.replace(s, objects=tuple(objs))
        avoid = {c} | {o.colour for j, o in enumerate(s.objects) if j != target}
        new = world._choice(rng, tuple(x for x in colours if x not in avoid))
        objs = list(s.objects)
        objs[target] = dataclasses.replace(objs[target], colour=new)
        out.append((c, s, dataclasses.replace(s, objects=tuple(objs))))
    return out


def negation_probe(clip, n: int = 60, seed: int | None = None, negated: str = NEGATED, affirmative: str = AFFIRMATIVE,
                   confidence: float = 0.95) -> RankingResult:
    """NegBench-style image ranking on `negation_pairs`: kind 'negated' asks the `negated` caption
    ("a scene with no red objects") to prefer the scene without the colour; kind 'affirmative', the
    control, asks the `affirmative` caption ("a scene with a red object") to prefer the scene with
    it. Chance 1/2 for both. The candidates are images and share the caption, so the blind baseline
    ties by construction (accuracy exactly 1/2)."""
    triples = negation_pairs(n, seed)
    z = embed_images(clip, [s for _, with_, without in triples for s in (with_, without)]).reshape(len(triples), 2, -1)
    caps_neg, caps_aff = [negated.format(c) for c, _, _ in triples], [affirmative.format(c) for c, _, _ in triples]
    t = np.asarray(clip.encode_texts(caps_neg + caps_aff), dtype=np.float32).reshape(2, len(triples), -1)
    cos = np.einsum("nid,knd->kni", z, t)  # [caption kind (negated, affirmative), item, scene (with, without)]
    # true candidate first: the scene without the colour for the negated caption, with it for the control
    scores = np.concatenate([cos[0][:, ::-1], cos[1]])
    caption_emb = np.repeat(np.concatenate([t[0], t[1]])[:, None, :], 2, axis=1)  # one caption per item
    scenes = [(wo, w) for _, w, wo in triples] + [(w, wo) for _, w, wo in triples]
    return RankingResult("negation", ["negated"] * len(triples) + ["affirmative"] * len(triples), scenes,
                         [(c,) for c in caps_neg + caps_aff], scores, blind_scores(caption_emb), "logistic", confidence)


# ---------------------------------------------------------------------------------------------
# The table and its figure
# ---------------------------------------------------------------------------------------------
def compositional_table(clip, n: int = 50, seed: int | None = None, blind: str = "logistic",
                        confidence: float = 0.95) -> pd.DataFrame:
    """Every compositional probe on `clip`, n items per probe and kind: Winoground (colour, relation;
    text, image, group), counting, negation (negated and its affirmative control) and the binding
    swaps (colour, relation, count). One row per probe, kind and metric with score, chance, Wilson
    interval, the blind text-only score and `text_alone_solves`."""
    if n < 2:
        raise ValueError(f"n={n} must be at least 2 (the blind baseline cross-validates over items)")
    if blind not in BLIND_METHODS:  # before any embedding
        raise ValueError(f"blind={blind!r} is unknown; use one of {BLIND_METHODS}")
    parts = [world_winoground(clip, n, seed=seed, confidence=confidence).summary(),
             counting_probe(clip, n, seed, blind, confidence).summary(),
             negation_probe(clip, n, seed, confidence=confidence).summary(),
             binding_ranking(clip, n, seed=seed, blind=blind, confidence=confidence).summary()]
    return pd.concat(parts, ignore_index=True)


def compositional_figure(table: pd.DataFrame,
                         title: str = "Compositional probes: model, blind text-only baseline, chance"):
    """Bars of each row's score with its Wilson interval, the blind baseline beside it, chance marked."""
    import plotly.graph_objects as go

    x = [f"{p} {k}" + ("" if m == "accuracy" else f" {m}")
         for p, k, m in zip(table["probe"], table["kind"], table["metric"])]
    fig = go.Figure([
        go.Bar(x=x, y=table["score"], name="model",
               error_y=dict(type="data", symmetric=False, array=table["ci_high"] - table["score"],
                            arrayminus=table["score"] - table["ci_low"])),
        go.Bar(x=x, y=table["blind_score"], name="blind (text only)", marker_color="lightgray"),
        go.Scatter(x=x, y=table["chance"], name="chance", mode="markers",
                   marker=dict(symbol="line-ew", size=24, line=dict(width=3, color="black"))),
    ])
    fig.update_layout(title=title, barmode="group", yaxis=dict(range=[0, 1.05], title="score"), height=420)
    return fig
