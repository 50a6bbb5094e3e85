"""Bootstrap intervals of AUROC: the rank formula, coverage, and the case bootstrap."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from patchvae.analysis.intervals import auroc_intervals, auroc_rows


def test_rank_auroc_is_sklearns_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (5, 200))
    scores = rng.integers(0, 6, (5, 200)).astype(float)  # many ties
    expected = [roc_auc_score(y, s) for y, s in zip(labels, scores, strict=True)]
    np.testing.assert_allclose(auroc_rows(labels, scores), expected, rtol=1e-12)


def test_interval_holds_the_auroc_and_narrows_with_more_positives() -> None:
    rng = np.random.default_rng(1)

    def problem(positives: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        labels = np.r_[np.zeros(1000, int), np.ones(positives, int)]
        good = np.r_[rng.normal(0, 1, 1000), rng.normal(1.5, 1, positives)]  # AUROC ~ 0.86
        return labels, {"base": rng.normal(size=labels.size), "good": good}

    widths = []
    for positives in (20, 500):
        labels, scores = problem(positives)
        found = auroc_intervals(labels, scores, "base", seed=0)["good"]["by_patch"]
        low, high = found["auroc"]
        assert low < roc_auc_score(labels, scores["good"]) < high
        # "good" beats a random baseline: the paired difference excludes 0
        assert found["difference"][0] > 0
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_case_bootstrap_needs_three_cases_with_both_classes() -> None:
    rng = np.random.default_rng(2)
    labels = np.tile([0, 0, 0, 1], 30)
    scores = {"b": rng.normal(size=120), "s": labels + rng.normal(size=120)}
    two = np.repeat(["a", "b"], 60)
    assert "by_case" not in auroc_intervals(labels, scores, "b", groups=two)["s"]
    four = np.repeat(["a", "b", "c", "d"], 30)
    by_case = auroc_intervals(labels, scores, "b", groups=four)["s"]["by_case"]
    assert by_case["auroc"][0] < by_case["auroc"][1] and by_case["resamples"] == 1000


def test_one_class_gives_no_interval() -> None:
    assert auroc_intervals(np.zeros(10, int), {"b": np.arange(10.0)}, "b") == {"b": {}}
