"""SpLiCE on the shapes world, where each scene's true concepts are known: precision and recall of
the recovered concepts, binding as a number, typography as a number."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from clipspace import world
from clipspace.features import naming, scoring
from clipspace.features.splice import Splice, concept_precision_recall, weighted_jaccard
from clipspace.probes.factors import factor_labels, factor_scenes

DEFAULT_LAM = 0.3


def concept_keys(vocabulary: pd.DataFrame) -> list[str]:
    return list(vocabulary["factor"].astype(str) + "=" + vocabulary["value"].astype(str))


def truth_matrix(scenes, keys: list[str]) -> np.ndarray:
    """(N, m) whether each scene carries each concept key; keys the world cannot state are False."""
    C = scoring.concept_matrix(factor_labels(scenes))
    return np.stack([C[k].to_numpy() if k in C else np.zeros(len(C), bool) for k in keys], 1)


def fit_world_splice(clip, vocabulary: pd.DataFrame | None = None, n: int = 600, seed: int | None = None,
                     embeddings=None) -> tuple[Splice, list, np.ndarray]:
    """A Splice fitted on the world's factor scenes and vocabulary; returns it, the scenes and their embeddings."""
    vocabulary = naming.world_vocabulary() if vocabulary is None else vocabulary
    scenes = factor_scenes(n) if seed is None else factor_scenes(n, seed)
    Z = clip.encode_images([s.render(clip.image_size) for s in scenes]) if embeddings is None else embeddings
    sp = Splice().fit(Z, clip.encode_texts(list(vocabulary["text"])), concept_keys(vocabulary))
    return sp, scenes, np.asarray(Z)


def recovery_path(sp: Splice, scenes, Z, lams=(0.1, 0.2, 0.3, 0.5)) -> pd.DataFrame:
    """Per sparsity weight: mean concepts kept, cosine rebuilt, precision and recall against the truth."""
    truth = truth_matrix(scenes, sp.concepts_)
    rows = []
    for d in sp.path(Z, lams):
        p, r = concept_precision_recall(d.weights, truth)
        rows.append({"lam": d.lam, "concepts": float(d.n_concepts.mean()), "cosine": float(d.cosine.mean()),
                     "precision": float(np.nanmean(p)), "recall": float(np.nanmean(r))})
    return pd.DataFrame(rows)


def swapped(scene: world.Scene) -> world.Scene:
    a, b = scene.objects[:2]
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour)))


def binding_overlap(clip, sp: Splice, n: int = 100, lam: float = DEFAULT_LAM) -> dict:
    """Weighted Jaccard overlap of the decompositions of colour-swapped scene pairs ("a red square
    left of a blue circle" / "a blue square left of a red circle"): near 1 means the decomposition
    is a bag of concepts that cannot tell them apart. Against unrelated pairs of the same kind."""
    scenes = [s for s, _, _ in world.colour_swap_pairs(n)]
    render = lambda ss: clip.encode_images([s.render(clip.image_size) for s in ss])
    a = sp.decompose(render(scenes), lam).weights
    b = sp.decompose(render([swapped(s) for s in scenes]), lam).weights
    return {"swap_overlap": float(np.nanmean(weighted_jaccard(a, b))),
            "unrelated_overlap": float(np.nanmean(weighted_jaccard(a, np.roll(b, 1, axis=0)))), "n": n}


def typography(clip, n: int = 100, lam: float = DEFAULT_LAM, seed: int = world.PROBE_SEED + 4) -> dict:
    """Objects labelled with another shape's name: how often the written word is recovered as a
    concept, how often the true shape still is, and that rate for the same scenes without text."""
    vocab = pd.concat([naming.world_vocabulary(("colour", "shape", "size", "background")),
                       pd.DataFrame({"factor": "word", "value": list(world.SHAPES),
                                     "text": [f'the word "{s}"' for s in world.SHAPES]})], ignore_index=True)
    scenes = world.typographic_scenes(n, seed)
    plain = [dataclasses.replace(s, text=None) for s in scenes]
    Z = clip.encode_images([s.render(clip.image_size) for s in scenes])
    Zp = clip.encode_images([s.render(clip.image_size) for s in plain])
    sp = Splice().fit(np.concatenate([Z, Zp]), clip.encode_texts(list(vocab["text"])), concept_keys(vocab))
    keys = sp.concepts_
    word = np.array([keys.index(f"word={s.text.word}") for s in scenes])
    shape = np.array([keys.index(f"shape={s.objects[0].shape}") for s in scenes])
    W, Wp = sp.decompose(Z, lam).weights, sp.decompose(Zp, lam).weights
    rows = np.arange(n)
    return {"word_recovered": float((W[rows, word] > 0).mean()), "shape_recovered": float((W[rows, shape] > 0).mean()),
            "shape_recovered_without_text": float((Wp[rows, shape] > 0).mean()),
            "word_outweighs_shape": float((W[rows, word] > W[rows, shape]).mean()), "n": n}
