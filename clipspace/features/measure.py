"""Measure dictionary features, SpLiCE and the compositional probes on the offline default, and
write docs/dictionary-features.md (+ .json). Rerunnable, seeded:

    python -m clipspace.features.measure            # ~3-5 minutes on 2 CPU cores
    python -m clipspace.features.measure --quick    # small sizes, to check it runs
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipspace.cache import write_atomic
from clipspace.features import splice_probes
from clipspace.features.atlas import fit_atlas
from clipspace.features.sae import SparseAutoencoder
from clipspace.features import naming, scoring, steering
from clipspace.probes.factors import FactorProbes, factor_captions, factor_labels, factor_scenes

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _table(df: pd.DataFrame) -> str:
    from clipspace.train.measure_clip import markdown_table

    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in df.to_dict("records")]
    return markdown_table(rows)


def measure(clip, n: int = 1500, quick: bool = False) -> dict:
    t0 = time.perf_counter()
    scenes = factor_scenes(n)
    Z = clip.encode_images([s.render(clip.image_size) for s in scenes])
    captions = factor_captions(scenes)
    Zt = clip.encode_texts(captions)
    labels = factor_labels(scenes)
    concepts = scoring.concept_matrix(labels)
    out = {"n_scenes": n, "clip": clip.name}

    # SAE on image embeddings, a sweep of sparsity
    sweep = []
    for k in ((8,) if quick else (4, 8, 16)):
        atlas = fit_atlas(clip, n=n, k=k, embeddings=Z, steps=300 if quick else 1500)
        sweep.append({"k": k, **atlas.summary()})
        if k == 8:
            main = atlas
    out["image_sae"] = sweep
    # ... and on the captions' text embeddings, scored against the same scenes' factors
    tsae = SparseAutoencoder(n_features=64, k=8, steps=300 if quick else 1500, seed=0).fit(Zt)
    vocab = naming.world_vocabulary()
    T = clip.encode_texts(list(vocab["text"]))
    names = naming.name_directions(tsae.components_, T, vocab, centre=True)
    tscores = scoring.feature_scores(tsae.transform(Zt), concepts, names, detector=tsae.decision_function(Zt))
    out["text_sae"] = scoring.summary(tscores, scoring.coverage(tsae.decision_function(Zt), concepts))
    out["image_coverage"] = main.coverage.groupby("factor", sort=False)["auroc"].median().round(3).to_dict()
    judged = main.scores[(main.scores["fire_rate"] > 0) & (main.scores["auroc"] >= 0.8)].copy()
    judged["factor"] = judged["best_concept"].str.split("=").str[0]
    judged["raw_right"] = judged["raw_name"] == judged["best_concept"]
    out["naming_by_factor"] = (judged.groupby("factor").agg(features=("feature", "size"), gap_corrected=("named_right", "mean"),
                                                            raw=("raw_right", "mean")).reset_index().to_dict("records"))

    # Steering: the best feature of each of colour and shape, decoded from 8 base scenes
    from clipspace.unclip.decoder import decoder_for

    decoder, why = decoder_for(clip)
    out["steering"] = []
    if decoder is not None:
        probes = FactorProbes(("colour", "shape", "count", "background")).fit(Z, labels)
        ranked = main.ranked()
        for f in ("colour", "shape"):
            row = ranked[ranked["best_concept"].str.startswith(f + "=")].iloc[0]
            target = row["best_concept"]
            base = Z[(labels[f].astype(str) != target.split("=")[1]).to_numpy()][: 4 if quick else 8]
            s = steering.steering_scores(decoder, clip, probes, base, main.sae.components_[int(row["feature"])],
                                         target, alphas=(0.0, 0.5, 1.0, 1.5), steps=10 if quick else 25)
            out["steering"] += [{"feature": int(row["feature"]), "target": target, "auroc": float(row["auroc"]), **r}
                                for r in s.to_dict("records")]

    # SpLiCE
    sp, sscenes, SZ = splice_probes.fit_world_splice(clip, n=min(n, 600), embeddings=Z[:min(n, 600)])
    out["splice_path"] = splice_probes.recovery_path(sp, scenes[:min(n, 600)], SZ).to_dict("records")
    out["splice_binding"] = splice_probes.binding_overlap(clip, sp, n=40 if quick else 100)
    out["splice_typography"] = splice_probes.typography(clip, n=40 if quick else 100)

    # Compositional probes
    from clipspace.probes.compositional import compositional_table

    out["compositional"] = compositional_table(clip, n=20 if quick else 100).to_dict("records")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def write_report(m: dict, path: Path) -> None:
    comp = pd.DataFrame(m["compositional"])[["probe", "kind", "metric", "score", "chance", "ci_low", "blind_score",
                                             "text_alone_solves"]]
    text = f"""# Dictionary features, SpLiCE and compositional probes, scored on the shapes world

Measured by `python -m clipspace.features.measure` on `{m['clip']}` (the offline default), {m['n_scenes']}
held-out factor scenes (`probes.factors.factor_scenes`), seeded; {m['seconds']} s on this machine.
Every number below is checked against each scene's known factors, which real data cannot do.

## Sparse autoencoder on image embeddings (TopK, 64 features; k = active features per image)

AUROC is each feature's pre-activation as a detector of its best concept ("colour=red"); coverage is
the share of concepts owning a feature with AUROC >= 0.95; naming accuracy counts features with
AUROC >= 0.8 whose nearest vocabulary text (gap-corrected, or not) is that concept.

{_table(pd.DataFrame(m['image_sae']))}

Median best AUROC per factor's concepts (k = 8): {m['image_coverage']}

Naming accuracy by the factor each feature detects best (k = 8, features with AUROC >= 0.8):

{_table(pd.DataFrame(m['naming_by_factor']))}

The same SAE on the captions' text embeddings (k = 8): coverage {m['text_sae']['coverage']:.2f},
naming accuracy {m['text_sae'].get('naming_accuracy', float('nan')):.2f}; per factor:
{ {k: round(v, 2) for k, v in m['text_sae'].items() if k.startswith('coverage_')} }.

## Steering (decoded by the offline unCLIP decoder, re-embedded, read by factor probes)

z' = normalise(z + alpha d) for the best colour and shape feature, from base scenes that lack the
target; target_rate is the share read as the target, leak the share of other factor readings changed.

{_table(pd.DataFrame(m['steering'])) if m['steering'] else 'No decoder pairs with this CLIP: skipped.'}

## SpLiCE (concepts: the world vocabulary; both modalities centred)

{_table(pd.DataFrame(m['splice_path']))}

Binding as a number: decompositions of colour-swapped pairs overlap {m['splice_binding']['swap_overlap']:.2f}
(weighted Jaccard; unrelated pairs {m['splice_binding']['unrelated_overlap']:.2f}). The two scenes hold the same
concepts, so a decomposition that were a bag of concepts would overlap 1; a sparse solver can also
split weight differently between correlated concepts, so read it against the unrelated pairs.

Typography as a number (objects labelled with another shape's name, lam {splice_probes.DEFAULT_LAM}): the written
word is recovered in {m['splice_typography']['word_recovered']:.2f} of images and outweighs the true shape in
{m['splice_typography']['word_outweighs_shape']:.2f}; the true shape is recovered in
{m['splice_typography']['shape_recovered']:.2f} (without the text: {m['splice_typography']['shape_recovered_without_text']:.2f}).

## Compositional probes (Winoground-style groups, counting, negation; blind = text only)

{_table(comp)}
"""
    write_atomic(path, text)
    write_atomic(path.with_suffix(".json"), json.dumps(m, indent=1, default=float) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m clipspace.features.measure", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=DOCS / "dictionary-features.md")
    a = ap.parse_args(argv)
    from clipspace.factory import load_clip

    m = measure(load_clip(), n=200 if a.quick else a.n, quick=a.quick)
    write_report(m, a.out)
    print(f"wrote {a.out} in {m['seconds']} s")


if __name__ == "__main__":
    main()
