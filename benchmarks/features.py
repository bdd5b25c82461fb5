"""Dictionary features: each of clipspace's solvers against the library a user would reach for,
on the same data in the same run (ratios paired per round; > 1 means clipspace is faster).

- SpLiCE decompositions of N image embeddings: the batched coordinate descent against sklearn's
  `Lasso(positive=True)` fitted once per image (SpLiCE's own sklearn path), with their agreement;
- the TopK SAE fit against sklearn's `MiniBatchDictionaryLearning` on the same embeddings, with
  the variance each explains (different objectives: a context figure, not a race);
- AUROC of every feature for every concept: one rank computation against a loop of roc_auc_score.
"""
from __future__ import annotations

import numpy as np

from .harness import interleave, paired_ratio, summarize


def run(quick: bool = False) -> dict:
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.linear_model import Lasso
    from sklearn.metrics import roc_auc_score

    from clipspace.features import naming, scoring
    from clipspace.features.sae import SparseAutoencoder
    from clipspace.features.splice import Splice
    from clipspace.probes.factors import factor_labels, factor_scenes

    from . import subjects

    clip, clip_note = subjects.offline_clip()
    n = 200 if quick else 1500
    scenes = factor_scenes(n)
    Z = clip.encode_images([s.render(clip.image_size) for s in scenes], cache=False)
    vocab = naming.world_vocabulary()
    sp = Splice().fit(Z, clip.encode_texts(list(vocab["text"])), list(vocab["factor"] + "=" + vocab["value"]))
    n_splice, lam, repeat = (20, 0.3, 2) if quick else (1000, 0.3, 5)
    Zs = Z[:n_splice]
    D, Zc = sp.dictionary_, sp.centre_images(Zs)

    def sklearn_splice():
        return np.stack([Lasso(alpha=lam / (2 * D.shape[1]), positive=True, fit_intercept=False, tol=1e-8,
                               max_iter=100_000).fit(D.T, z).coef_ for z in Zc])

    steps = 200 if quick else 1500
    sae = lambda: SparseAutoencoder(n_features=64, k=8, steps=steps, seed=0).fit(Z)  # noqa: E731
    mbdl = lambda: MiniBatchDictionaryLearning(n_components=64, alpha=0.1, batch_size=256, random_state=0,  # noqa: E731
                                               max_iter=3 if quick else 20, transform_algorithm="lasso_lars").fit(Z)
    fitted = sae()
    A = fitted.decision_function(Z)
    C = scoring.concept_matrix(factor_labels(scenes))

    def auroc_loop():
        return np.array([[roc_auc_score(C.iloc[:, c], A[:, f]) if 0 < C.iloc[:, c].sum() < len(C) else np.nan
                          for c in range(C.shape[1])] for f in range(A.shape[1])])

    contenders = {
        "SpLiCE: clipspace (batched)": lambda: sp.decompose(Zs, lam),
        "SpLiCE: sklearn Lasso per image": sklearn_splice,
        "SAE fit: clipspace TopK": sae,
        "dictionary: sklearn MiniBatchDictionaryLearning": mbdl,
        "AUROC: clipspace (ranks)": lambda: scoring.auroc_matrix(A, C),
        "AUROC: sklearn roc_auc_score loop": auroc_loop,
    }
    times = interleave(contenders, repeat=repeat, warmup=1)
    agree = float(np.abs(sp.decompose(Zs, lam).weights - sklearn_splice()).max())
    auroc_agree = float(np.nanmax(np.abs(scoring.auroc_matrix(A, C) - auroc_loop())))
    ref = mbdl()
    ev_ref = 1 - ((ref.transform(Z) @ ref.components_ - Z) ** 2).sum() / ((Z - Z.mean(0)) ** 2).sum()
    pairs = [("SpLiCE", "SpLiCE: sklearn Lasso per image", "SpLiCE: clipspace (batched)"),
             ("SAE vs dictionary learning", "dictionary: sklearn MiniBatchDictionaryLearning", "SAE fit: clipspace TopK"),
             ("AUROC", "AUROC: sklearn roc_auc_score loop", "AUROC: clipspace (ranks)")]
    rows = [{"what": name, "seconds": summarize(t)} for name, t in times.items()]
    ratio_rows = [{"what": label, "ratio": paired_ratio(times[slow], times[fast])} for label, slow, fast in pairs]
    notes = [f"CLIP: {clip_note}; {n} factor scenes, 128-d embeddings; {len(vocab)} concepts",
             f"SpLiCE on {n_splice} images at lam {lam}: max |w_clipspace - w_sklearn| = {agree:.1e}",
             f"AUROC of 64 features x {C.shape[1]} concepts: max difference from sklearn {auroc_agree:.1e}",
             f"variance explained: TopK SAE (k 8, {steps} steps) {fitted.explained_variance(Z):.3f}, "
             f"MiniBatchDictionaryLearning (alpha 0.1, lasso_lars codes) {ev_ref:.3f}",
             f"{repeat} interleaved rounds after one warm-up round."]
    return {"title": "Dictionary features", "status": "ok", "notes": notes,
            "tables": [{"caption": "Ratios (paired per round; > 1 means clipspace is faster)",
                        "columns": [["what", "what"], ["ratio", "median [IQR]"]], "rows": ratio_rows},
                       {"caption": "Times", "columns": [["what", "what"], ["seconds", "seconds"]], "rows": rows}],
            "data": {"seconds": times, "splice_max_abs_diff": agree, "auroc_max_abs_diff": auroc_agree}}
