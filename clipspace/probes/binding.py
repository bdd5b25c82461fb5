"""Attribute binding: does the embedding know which attribute goes with which object?

Each probe item is an image with two captions that use the same words and differ only in how they
are bound: colours swapped between the objects ("a red square ... a blue circle" vs "a blue square
... a red circle"), the relation mirrored ("left of" vs "right of"), or the count changed ("two red
stars" vs "three red stars"). A model that embeds captions as bags of words cannot tell the pair
apart, so it scores the true caption above its swap half the time: chance is 50%.

Ties (identical scores) count as half a win, so a model blind to the swap sits at chance rather
than at 0%. Intervals are Wilson score intervals (good at small n and near 0 or 1).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from clipspace import world
from clipspace.probes.zero_shot import embed_images

KINDS = ("colour", "relation", "count")


# ---------------------------------------------------------------------------------------------
# World pairs
# ---------------------------------------------------------------------------------------------
def mirror(scene: world.Scene) -> world.Scene:
    """The two objects trade places: the relation flips, nothing else changes."""
    a, b = scene.objects[:2]
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, x=b.x, y=b.y),
                                               dataclasses.replace(b, x=a.x, y=a.y), *scene.objects[2:]))


def recount(scene: world.Scene, k: int) -> world.Scene:
    """The same object k times (only the caption is used, so positions may repeat)."""
    return dataclasses.replace(scene, objects=scene.objects[:1] * k)


def colour_swap_rows(n: int, seed: int = world.PROBE_SEED + 5, template: int = 0) -> list[tuple]:
    """(scene, caption, caption with the two colours swapped, 'colour'); template 2 drops the relation."""
    rows = []
    for s, _, _ in world.colour_swap_pairs(n, seed):
        a, b = s.objects
        swapped = dataclasses.replace(s, objects=(dataclasses.replace(a, colour=b.colour),
                                                  dataclasses.replace(b, colour=a.colour)))
        rows.append((s, s.caption(template), swapped.caption(template), "colour"))
    return rows


def relation_rows(n: int, seed: int = world.PROBE_SEED + 1) -> list[tuple]:
    """(scene, caption, caption with the relation mirrored, 'relation')."""
    return [(s, s.caption(0), mirror(s).caption(0), "relation") for s in world.relation_scenes(n, seed)]


def count_rows(n: int, seed: int = world.PROBE_SEED + 2) -> list[tuple]:
    """(scene, caption, caption with a neighbouring count, 'count'): 1 vs 2, 2 vs 1 or 3, 3 vs 2."""
    rows = []
    for i, s in enumerate(world.count_scenes(n, seed)):
        other = {1: 2, 3: 2}.get(s.count, 1 if i % 2 else 3)
        rows.append((s, s.caption(0), recount(s, other).caption(0), "count"))
    return rows


def binding_pairs(n_per_kind: int = 50, kinds: Sequence[str] = KINDS, seed: int | None = None) -> list[tuple]:
    """World rows (scene, true caption, swapped caption, kind), n_per_kind of each kind.

    `seed=None` uses the world's held-out probe seeds; an integer offsets all of them.
    """
    makers = {"colour": (colour_swap_rows, world.PROBE_SEED + 5), "relation": (relation_rows, world.PROBE_SEED + 1),
              "count": (count_rows, world.PROBE_SEED + 2)}
    rows = []
    for kind in kinds:
        if kind not in makers:
            raise ValueError(f"kind={kind!r} is not a binding kind; use some of {KINDS}")
        make, default = makers[kind]
        rows += make(n_per_kind, default if seed is None else default + int(seed))
    return rows


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------
def wilson_interval(wins: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion wins / n (wins may be fractional: ties are halves)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + confidence / 2)
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass
class BindingResult:
    """Per pair: the image's cosine with its true caption and with the swap."""

    true_captions: list[str]
    swapped_captions: list[str]
    kinds: list[str]
    true_scores: np.ndarray  # (N,) cosine(image, true caption)
    swapped_scores: np.ndarray  # (N,) cosine(image, swapped caption)
    confidence: float = 0.95

    @property
    def wins(self) -> np.ndarray:
        """1 where the true caption scores higher, 0.5 on a tie, 0 where the swap wins."""
        return np.where(self.true_scores > self.swapped_scores, 1.0,
                        np.where(self.true_scores == self.swapped_scores, 0.5, 0.0))

    def _row(self, kind: str, mask: np.ndarray) -> dict:
        w, n = float(self.wins[mask].sum()), int(mask.sum())
        lo, hi = wilson_interval(w, n, self.confidence)
        return {"kind": kind, "n": n, "accuracy": w / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
                "mean_margin": float((self.true_scores - self.swapped_scores)[mask].mean()) if n else float("nan")}

    def summary(self) -> pd.DataFrame:
        """Per kind (in order of first appearance) and over all pairs: n, accuracy, CI, mean cosine margin."""
        kinds = np.array(self.kinds)
        rows = [self._row(k, kinds == k) for k in dict.fromkeys(self.kinds)]
        if len(rows) > 1:
            rows.append(self._row("all", np.ones(len(kinds), bool)))
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"kind": self.kinds, "true_caption": self.true_captions,
                             "swapped_caption": self.swapped_captions, "true_score": self.true_scores,
                             "swapped_score": self.swapped_scores, "win": self.wins})


def binding_probe(clip, images, true_captions: Sequence[str], swapped_captions: Sequence[str],
                  kinds: Sequence[str] | None = None, confidence: float = 0.95) -> BindingResult:
    """Score each image against its true caption and its swapped caption.

    images: anything `clip.encode_images` takes, world Scenes, or an (N, D) array of image embeddings.
    kinds: a label per pair for the summary ('colour', 'relation', ... or your own); default 'pair'.
    """
    true_captions, swapped_captions = list(true_captions), list(swapped_captions)
    n = len(true_captions)
    kinds = ["pair"] * n if kinds is None else list(kinds)
    if not (len(swapped_captions) == len(kinds) == n):
        raise ValueError(f"true_captions ({n}), swapped_captions ({len(swapped_captions)}) and kinds "
                         f"({len(kinds)}) must have one entry per image")
    same = [i for i in range(n) if true_captions[i] == swapped_captions[i]]
    if same:
        raise ValueError(f"pairs {same[:5]} have identical true and swapped captions; a swap must change the text")
    z = embed_images(clip, images)
    if len(z) != n:
        raise ValueError(f"{len(z)} images but {n} caption pairs")
    t = np.asarray(clip.encode_texts(true_captions + swapped_captions), dtype=np.float32)
    return BindingResult(true_captions, swapped_captions, kinds, np.einsum("nd,nd->n", z, t[:n]),
                         np.einsum("nd,nd->n", z, t[n:]), confidence)


def world_binding(clip, n_per_kind: int = 50, kinds: Sequence[str] = KINDS, seed: int | None = None) -> BindingResult:
    """The binding probe on the world's held-out pairs."""
    rows = binding_pairs(n_per_kind, kinds, seed)
    return binding_probe(clip, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def binding_figure(result: BindingResult, title: str = "Attribute binding: true caption above its swap"):
    """Accuracy per kind with its confidence interval, and the 50% chance line."""
    import plotly.graph_objects as go

    s = result.summary()
    fig = go.Figure(go.Bar(x=s["kind"], y=s["accuracy"], text=[f"{a:.0%}" for a in s["accuracy"]],
                           error_y=dict(type="data", symmetric=False, array=s["ci_high"] - s["accuracy"],
                                        arrayminus=s["accuracy"] - s["ci_low"])))
    fig.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
    fig.update_layout(title=title, yaxis=dict(range=[0, 1.05], title="accuracy"), height=380)
    return fig


def pair_scores_figure(result: BindingResult, kind: str = "all"):
    """Each pair of one kind ('all' for every pair) as a point: cosine with the true caption (x)
    against cosine with its swap (y). Points below the diagonal are wins; the title gives the win
    rate and its Wilson interval. Hover shows both captions."""
    import plotly.graph_objects as go

    kinds = np.array(result.kinds)
    if kind != "all" and kind not in set(result.kinds):
        raise ValueError(f"kind={kind!r} is not in this result; use 'all' or one of {sorted(set(result.kinds))}")
    mask = np.ones(len(kinds), bool) if kind == "all" else kinds == kind
    row = result._row(kind, mask)
    t, s = result.true_scores[mask], result.swapped_scores[mask]
    idx = np.nonzero(mask)[0]
    hover = [f"{result.true_captions[i]}<br>swap: {result.swapped_captions[i]}" for i in idx]
    lo = float(min(t.min(), s.min())) - 0.02 if len(t) else 0.0
    hi = float(max(t.max(), s.max())) + 0.02 if len(t) else 1.0
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="gray"), name="tie",
                   hoverinfo="skip"),
        go.Scatter(x=t, y=s, mode="markers", name="pairs", customdata=idx, text=hover,
                   marker=dict(size=8, color=np.where(t > s, "#4c72b0", "#dd8452")),
                   hovertemplate="%{text}<br>true %{x:.3f}, swap %{y:.3f}<extra>pair %{customdata}</extra>"),
    ])
    fig.update_layout(title=f"{kind}: true caption wins {row['accuracy']:.0%} of {row['n']} "
                            f"({result.confidence:.0%} CI {row['ci_low']:.2f}-{row['ci_high']:.2f})",
                      xaxis=dict(title="cosine(image, true caption)", range=[lo, hi]),
                      yaxis=dict(title="cosine(image, swapped caption)", range=[lo, hi]),
                      showlegend=False, height=420, width=480, margin=dict(l=10, r=10, t=50, b=40))
    return fig
