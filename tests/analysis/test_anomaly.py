"""Lesion metrics against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from patchvae.analysis.anomaly import aggregate_posterior_nll, detection_metrics, intensity_baseline
from patchvae.analysis.fewlabel import few_label_auroc
from patchvae.analysis.heatmap import backproject, best_threshold, voxel_metrics


def test_auroc_auprc_by_hand() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    m = detection_metrics(labels, scores)
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert m["auroc"] == pytest.approx(0.75)
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): precision at the positives is 1 and 2/3
    # so AP = (1 + 2/3) / 2
    assert m["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(detection_metrics(np.array([0, 0]), np.array([1.0, 2.0]))["auroc"])


def test_aggregate_posterior_by_hand() -> None:
    # two unit Gaussians at -1 and +1 in 1-D; at z = 0 each gives N(1; 0, 1)
    mu = np.array([[-1.0], [1.0]])
    nll = aggregate_posterior_nll(np.array([[0.0], [5.0]]), mu, np.zeros((2, 1)))
    expected0 = -math.log(math.exp(-0.5) / math.sqrt(2 * math.pi))
    expected5 = -math.log(0.5 * (math.exp(-18) + math.exp(-8)) / math.sqrt(2 * math.pi))
    assert nll == pytest.approx([expected0, expected5])


def test_intensity_baseline_is_the_95th_percentile() -> None:
    patch = np.arange(100, dtype=float).reshape(1, 1, 10, 10) / 100
    assert intensity_baseline(patch)[0] == pytest.approx(np.percentile(np.arange(100) / 100, 95))


def test_voxel_metrics_by_hand() -> None:
    # patch 0: score 2, 3 lesion voxels of 4 brain; patch 1: score 1, 1 lesion of 4
    lesion = np.array([[[1, 1], [1, 0]], [[0, 0], [1, 0]]])
    brain = np.ones_like(lesion)
    m = voxel_metrics(np.array([2.0, 1.0]), lesion, brain, threshold=1.5)
    # positives: 3 at score 2, 1 at score 1; negatives: 1 at 2, 3 at 1
    # AUROC = P(pos > neg) + 0.5 P(tie) = (3*3 + 0.5*(3*1 + 1*3)) / 16
    assert m["auroc"] == pytest.approx((9 + 3) / 16)
    # best Dice: patch 0 only -> 2*3 / (2*3 + 1 + 1) = 0.75; both -> 2*4/(8+4) = 0.667
    assert m["oracle_dice"] == pytest.approx(0.75)
    # a threshold chosen elsewhere: 1.5 calls patch 0 only (0.75); 0.5 calls both (0.667)
    assert m["dice"] == pytest.approx(0.75)
    assert voxel_metrics(np.array([2.0, 1.0]), lesion, brain, 0.5)["dice"] == pytest.approx(8 / 12)
    assert best_threshold(
        np.array([1.0, 1.0]), np.array([3.0, 1.0]), np.array([1.0, 3.0])
    ) == pytest.approx((8 / 12, 1.0))


def test_backprojection_puts_each_score_where_its_patch_came_from() -> None:
    rng = np.random.default_rng(0)
    t = pd.DataFrame(
        {
            "case_id": ["a", "a", "a", "b"],
            "slice": [3, 3, 4, 3],
            "row": [0, 4, 8, 4],
            "col": [4, 0, 8, 4],
        }
    )
    scores = rng.normal(size=4)
    maps = backproject(scores, t, 4, (12, 12))
    assert set(maps) == {("a", 3), ("a", 4), ("b", 3)}
    for score, row in zip(scores, t.itertuples(), strict=True):
        region = maps[(row.case_id, row.slice)][row.row : row.row + 4, row.col : row.col + 4]
        assert np.all(region == score)
    covered = sum(np.isfinite(m).sum() for m in maps.values())
    assert covered == 4 * 16  # nothing lands outside the patches


def test_few_labels_separable_and_too_few() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [80, 20])
    features = np.where(labels[:, None] == 1, 3.0, 0.0) + rng.normal(0, 0.3, size=(100, 2))
    result = few_label_auroc(features, labels, 10, repeats=5)
    assert result is not None and result["mean"] > 0.99 and result["draws"] == 5
    assert few_label_auroc(features, np.zeros(100, int), 10) is None


def test_score_volume_against_a_voxel_by_voxel_loop_and_with_its_count_reused() -> None:
    """Overlapping patches on two slices: each voxel the mean of the scores of the patches
    covering it, as a plain loop over patches computes it; a second score of the same
    patches, given the first call's count, gets the same map as one that counts again."""
    from patchvae.analysis.heatmap import score_volume

    rng = np.random.default_rng(0)
    shape, size = (2, 9, 8), 3
    slices, rows, cols = rng.integers(0, 2, 12), rng.integers(0, 7, 12), rng.integers(0, 6, 12)
    first, second = rng.normal(size=12), rng.normal(size=12)
    total, count = np.zeros(shape), np.zeros(shape)
    for k, r, c, v in zip(slices, rows, cols, second, strict=True):
        total[k, r : r + size, c : c + size] += v
        count[k, r : r + size, c : c + size] += 1
    _, counted = score_volume(first, slices, rows, cols, size, shape)
    reused, again = score_volume(second, slices, rows, cols, size, shape, counted)
    fresh, _ = score_volume(second, slices, rows, cols, size, shape)
    np.testing.assert_array_equal(again, count)
    np.testing.assert_allclose(reused, np.where(count > 0, total / np.maximum(count, 1), np.nan))
    np.testing.assert_array_equal(reused, fresh)
