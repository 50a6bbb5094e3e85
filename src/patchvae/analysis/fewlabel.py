"""A few labels: how well a handful of labelled patches separate lesion from healthy."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler


def few_label_auroc(
    features: np.ndarray,
    labels: np.ndarray,
    k: int,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float] | None:
    """Fit a logistic regression on ``k`` labelled patches, score AUROC on all the others.

    Each draw takes ``k`` patches at random with at least one lesion and one healthy patch
    among them (a user labelling a few patches would include both). Returns mean, sd and the
    number of draws, or ``None`` when there are too few of either class.
    """
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if k < 2 or positives.size < 1 or negatives.size < 1 or labels.size - k < 2:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        chosen = np.concatenate([rng.choice(positives, 1), rng.choice(negatives, 1)])
        rest = np.setdiff1d(np.arange(labels.size), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, k - 2, replace=False)])
        held = np.setdiff1d(np.arange(labels.size), chosen)
        if np.unique(labels[held]).size < 2:
            continue
        scaler = StandardScaler().fit(features[chosen])
        model = LogisticRegression(max_iter=1000).fit(
            scaler.transform(features[chosen]), labels[chosen]
        )
        probability = model.predict_proba(scaler.transform(features[held]))[:, 1]
        scores.append(roc_auc_score(labels[held], probability))
    if not scores:
        return None
    return {"mean": float(np.mean(scores)), "sd": float(np.std(scores)), "draws": len(scores)}
