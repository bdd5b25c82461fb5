"""Scoring features against the world's known factors: what real data cannot do.

Each scene's factor values (`probes.factors.factor_labels`) become binary concepts ("colour=red",
"count=2"). For every feature and concept, the AUROC of the feature's activation as a detector of
the concept (0.5 = unrelated, 1 = it fires more on every positive than on any negative). A
feature's best concept is its highest AUROC; then:

- purity: of the scenes on which the feature fires, the share that carry its best concept;
- coverage: the share of concepts that own a feature with AUROC >= 0.95;
- naming accuracy: how often the feature's automatic name (`naming.name_directions`) is its best
  concept, counted over live features whose best AUROC reaches `min_auroc` (naming a feature that
  detects nothing cannot be right or wrong).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from clipspace.errors import InvalidArgumentError

COVERAGE_AUROC = 0.95


def concept_matrix(labels: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per factor value present ("colour=red"), one row per scene; a factor
    that is undefined for a scene (NaN) makes every one of its concepts False there."""
    cols = {}
    for f in labels.columns:
        values = labels[f].dropna().astype(str)
        for v in sorted(values.unique()):
            cols[f"{f}={v}"] = (labels[f].notna() & (labels[f].astype(str) == v)).to_numpy()
    return pd.DataFrame(cols)


def auroc_matrix(activations, concepts: pd.DataFrame) -> np.ndarray:
    """AUROC (n_features, n_concepts) of each activation column for each boolean concept column.

    The Mann-Whitney form with average ranks for ties, equal to sklearn's roc_auc_score, for all
    pairs at once; NaN where a concept has no positives or no negatives."""
    A = np.asarray(activations, dtype=np.float64)
    Y = np.asarray(concepts, dtype=bool)
    if A.ndim != 2 or Y.ndim != 2 or len(A) != len(Y) or len(A) == 0:
        raise InvalidArgumentError(f"activations {A.shape} and concepts {Y.shape} need the same non-zero number of rows")
    if not np.isfinite(A).all():
        raise InvalidArgumentError("activations hold NaN or infinite values")
    ranks = rankdata(A, axis=0)  # (n, F)
    pos = Y.sum(0).astype(np.float64)  # (C,)
    neg = len(Y) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (ranks.T @ Y - pos * (pos + 1) / 2) / (pos * neg)
    auc[:, (pos == 0) | (neg == 0)] = np.nan
    return auc


def feature_scores(activations, concepts: pd.DataFrame, names: pd.DataFrame | None = None,
                   detector=None) -> pd.DataFrame:
    """Per feature: its best concept, AUROC, purity, how often it fires, and (given `names` from
    `name_directions`) whether its name is its best concept.

    `detector` (same shape as `activations`) is the score the AUROC ranks, e.g. the SAE's
    pre-activations (`decision_function`); by default the activations themselves."""
    A = np.asarray(activations, dtype=np.float64)
    auc = auroc_matrix(A if detector is None else detector, concepts)
    filled = np.where(np.isnan(auc), -np.inf, auc)
    best = filled.argmax(1)
    fires = A > 0
    Y = np.asarray(concepts, dtype=bool)
    n_fire = fires.sum(0)
    hits = (fires & Y[:, best]).sum(0)
    table = pd.DataFrame({
        "feature": np.arange(A.shape[1]),
        "best_concept": np.asarray(concepts.columns)[best],
        "auroc": filled[np.arange(len(best)), best],
        "purity": np.where(n_fire > 0, hits / np.maximum(n_fire, 1), np.nan),
        "fire_rate": n_fire / len(A),
        "mean_activation": A.mean(0),
    })
    table.loc[n_fire == 0, ["best_concept", "auroc"]] = [None, np.nan]
    if names is not None:
        if len(names) != A.shape[1]:
            raise InvalidArgumentError(f"{len(names)} names for {A.shape[1]} features")
        table["name"] = (names["factor"].astype(str) + "=" + names["value"].astype(str)).to_numpy()
        table["name_cosine"] = names["cosine"].to_numpy()
        table["named_right"] = table["name"] == table["best_concept"]
    return table


def coverage(activations, concepts: pd.DataFrame, threshold: float = COVERAGE_AUROC) -> pd.DataFrame:
    """Per concept: the best AUROC any feature reaches, which feature, and whether it is covered."""
    auc = auroc_matrix(activations, concepts)
    filled = np.where(np.isnan(auc), -np.inf, auc)
    best = filled.argmax(0)
    top = filled[best, np.arange(auc.shape[1])]
    return pd.DataFrame({"concept": concepts.columns, "factor": [c.split("=")[0] for c in concepts.columns],
                         "best_feature": best, "auroc": top, "covered": top >= threshold})


def summary(scores: pd.DataFrame, covered: pd.DataFrame, min_auroc: float = 0.8) -> dict:
    """The headline numbers: live features, coverage overall and per factor, naming accuracy."""
    live = scores[scores["fire_rate"] > 0]
    out = {"features": int(len(scores)), "live_features": int(len(live)),
           "median_auroc": float(live["auroc"].median()) if len(live) else float("nan"),
           "median_purity": float(live["purity"].median()) if len(live) else float("nan"),
           "coverage": float(covered["covered"].mean()),
           **{f"coverage_{f}": float(g["covered"].mean()) for f, g in covered.groupby("factor", sort=False)}}
    if "named_right" in scores:
        judged = live[live["auroc"] >= min_auroc]
        out["named_features"] = int(len(judged))
        out["naming_accuracy"] = float(judged["named_right"].mean()) if len(judged) else float("nan")
    return out
