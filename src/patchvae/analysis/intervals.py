"""Bootstrap 95 % intervals of AUROC and of its difference from the baseline's.

With a few dozen lesion patches an AUROC moves by several hundredths from one draw of patches
to the next; every score is reported with its interval, and each score's difference from the
intensity baseline with a paired interval (both scores resampled together), which is what
says whether a score beats the baseline.

Two resampling units: patches (stratified: lesion and healthy patches resampled separately,
so every resample has both), and cases (a cluster bootstrap, where patches of one patient are
not independent), given at least ``MIN_CASES`` cases that hold both classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

RESAMPLES = 1000
MIN_CASES = 3


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` (r, n) for the rows of ``labels`` (r, n) of 0/1, by the
    rank-sum (Mann-Whitney) formula with ties counted half.

    Example
    -------
    >>> auroc_rows(np.array([[0, 0, 1, 1]]), np.array([[0.1, 0.4, 0.35, 0.8]])).tolist()
    [0.75]
    """
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _interval(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]


def _patch_resamples(labels: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` stratified resamples (count, n) of row indices."""
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    return np.concatenate(
        [
            rng.choice(positives, (count, positives.size)),
            rng.choice(negatives, (count, negatives.size)),
        ],
        axis=1,
    )


def _case_resamples(groups: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` cluster resamples: cases drawn with replacement, all their rows each time."""
    cases = np.unique(groups)
    rows = {case: np.flatnonzero(groups == case) for case in cases}
    return [
        np.concatenate([rows[case] for case in rng.choice(cases, cases.size)]) for _ in range(count)
    ]


def auroc_intervals(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    baseline: str,
    groups: np.ndarray | None = None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict[str, dict[str, Any]]:
    """Per score: the 95 % interval of its AUROC and of its difference from ``baseline``'s,
    by patch, and by case where there are at least ``MIN_CASES`` cases with both classes.

    Example
    -------
    >>> y = np.array([0] * 50 + [1] * 50)
    >>> s = {"b": np.r_[np.zeros(50), np.ones(50)], "v": np.arange(100.0)}
    >>> found = auroc_intervals(y, s, "b")
    >>> found["v"]["by_patch"]["auroc"], found["v"]["by_patch"]["difference"]
    ([1.0, 1.0], [0.0, 0.0])
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {name: {} for name in scores}
    if min((labels == 1).sum(), (labels == 0).sum()) < 2:
        return out
    stacked = np.stack([np.asarray(scores[name], dtype=np.float64) for name in scores])
    names = list(scores)
    base = names.index(baseline)
    units: dict[str, list[np.ndarray]] = {}
    units["by_patch"] = list(_patch_resamples(labels, rng, resamples))
    if groups is not None:
        both = [g for g in np.unique(groups) if np.unique(labels[groups == g]).size == 2]
        if len(both) >= MIN_CASES:
            units["by_case"] = _case_resamples(np.asarray(groups), rng, resamples)
    for unit, draws in units.items():
        aurocs = np.stack([_aurocs(labels[rows], stacked[:, rows]) for rows in draws])  # (B, S)
        for j, name in enumerate(names):
            out[name][unit] = {
                "auroc": _interval(aurocs[:, j]),
                "difference": _interval(aurocs[:, j] - aurocs[:, base]),
                "resamples": len(draws),
            }
    return out


def _aurocs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of every score (rows of ``scores``) for one resample's ``labels``."""
    return auroc_rows(np.broadcast_to(labels, scores.shape), scores)
