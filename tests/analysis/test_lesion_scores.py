"""Scores for lesions in contaminated data: Mahalanobis, equalised baseline, core AUROC,
rank fusion."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from patchvae.analysis.anomaly import (
    adjacent_patches,
    bright_spot_count,
    core_auroc,
    count_bright_spots,
    fit_gaussian,
    fuse_by_rank,
    histogram_equalised_baseline,
    in_context,
    intensity_baseline,
    mahalanobis,
    surrounding_patches,
)


def test_mahalanobis_by_hand() -> None:
    # covariance diag(4, 1) rotated by 45 degrees: precision = R diag(1/4, 1) R^T
    rotation = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
    precision = rotation @ np.diag([0.25, 1.0]) @ rotation.T
    mean = np.array([1.0, 2.0])
    # a point 2 along the long axis (sd 2) and 3 along the short one (sd 1): sqrt(1 + 9)
    point = mean + 2 * rotation[:, 0] + 3 * rotation[:, 1]
    assert mahalanobis(point[None], mean, precision)[0] == pytest.approx(np.sqrt(10))


def test_fitted_gaussian_recovers_the_distances() -> None:
    rng = np.random.default_rng(0)
    covariance = np.array([[4.0, 1.2], [1.2, 1.0]])
    train = rng.multivariate_normal([3.0, -1.0], covariance, size=20000)
    mean, precision = fit_gaussian(train)
    query = rng.multivariate_normal([3.0, -1.0], covariance, size=50)
    exact = mahalanobis(query, np.array([3.0, -1.0]), np.linalg.inv(covariance))
    np.testing.assert_allclose(mahalanobis(query, mean, precision), exact, rtol=0.03, atol=0.03)


def test_equalised_baseline_orders_a_case_as_p95_and_puts_cases_on_one_scale() -> None:
    rng = np.random.default_rng(1)
    patches = rng.random((40, 1, 6, 6))
    brain = np.ones((40, 6, 6), bool)
    cases = np.repeat(["a", "b"], 20)
    patches[20:] = patches[:20] * 0.5  # case b: case a's tissue, half as bright
    equalised = histogram_equalised_baseline(patches, brain, cases)
    plain = intensity_baseline(patches)
    for case in ("a", "b"):
        on = cases == case
        assert (np.argsort(equalised[on]) == np.argsort(plain[on])).all()
    np.testing.assert_allclose(equalised[20:], equalised[:20])  # one scale
    assert not np.allclose(plain[20:], plain[:20])


def _tissue(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` patches of noisy tissue (0.4-0.6) in a brain that covers their left 20 columns."""
    rng = np.random.default_rng(seed)
    patches = np.zeros((n, 1, 28, 28))
    patches[:, 0, :, :20] = rng.uniform(0.4, 0.6, (n, 28, 20))
    return patches, patches[:, 0] > 0


def test_bright_spots_count_a_few_voxel_lesion_deep_in_the_brain() -> None:
    patches, brain = _tissue(60)
    healthy = intensity_baseline(patches[:1])
    lesion = 0.9
    patches[0, 0, 10:12, 8:10] = lesion  # 2 x 2 voxels deep in the brain: 4 of 560
    patches[1, 0, 10:12, 18:20] = lesion  # the same on the brain's rim (its last 2 columns)
    patches[2, 0, 0:2, 8:10] = lesion  # ... and at the patch's own edge, inside the brain
    spots = bright_spot_count(patches, brain, np.zeros(60), quantile=0.999, erosion=2)
    # by hand: 60 x 560 brain voxels, rank > 0.999 = the brightest 34; the rim is columns 18-19
    top = np.sort(patches[:, 0][brain])[-34]
    expected = ((patches[:, 0] >= top) & (np.arange(28) < 18)).sum(axis=(1, 2))
    np.testing.assert_array_equal(np.floor(spots), expected)
    assert expected[0] >= 4 and expected[2] >= 4  # the patch's edge is not the brain's rim
    assert spots.argmax() in (0, 2)
    # 4 voxels barely move the patch's 95th percentile (the tissue spans 0.4-0.6)
    assert intensity_baseline(patches[:1]) - healthy < 0.01


def test_bright_spots_count_per_case_and_break_ties_without_reordering() -> None:
    patches, brain = _tissue(40, seed=3)
    patches[20:] = patches[:20] * 0.5  # case b: case a's tissue, half as bright
    patches = np.concatenate([patches, patches * 0.9], axis=1)  # a second channel, same order
    cases = np.repeat(["a", "b"], 20)
    spots = bright_spot_count(patches, brain, cases, quantile=0.95, erosion=0)
    np.testing.assert_allclose(spots[20:], spots[:20])  # each case on its own scale
    counts = np.floor(spots * 2) / 2  # the mean count of two channels: steps of 1/2
    assert (spots - counts < 0.5).all()  # the tie-break stays below one step
    # by hand: 20 x 560 brain voxels, rank > 0.95 = the brightest 560
    top = np.sort(patches[:20, 0][brain[:20]])[-560]
    np.testing.assert_array_equal(counts[:20], (patches[:20, 0] >= top).sum(axis=(1, 2)))


def test_bright_spots_count_where_an_adjacent_slice_confirms_them() -> None:
    """Four patches at one place on slices 3-6 and one elsewhere: a spot on slices 4 and 5
    (a small lesion) counts on both; a spot on slice 3 alone (noise) does not; the patch with
    no neighbour among those given counts its spot unconfirmed."""
    patches, brain = _tissue(5, seed=1)
    equalised = np.zeros_like(patches)
    equalised[:, :, brain[0]] = 0.5  # brain voxels, none bright
    equalised[0, 0, 10, 8] = 1.0  # slice 3: bright alone
    equalised[1, 0, 12:14, 8:10] = equalised[2, 0, 12:14, 9:11] = 1.0  # slices 4, 5: overlap
    equalised[4, 0, 10, 8] = 1.0  # elsewhere, no neighbour
    slices, rows = np.array([3, 4, 5, 6, 4]), np.array([0, 0, 0, 0, 56])
    adjacent = adjacent_patches(np.zeros(5), slices, rows, np.zeros(5))
    np.testing.assert_array_equal(adjacent, [[-1, 1], [0, 2], [1, 3], [2, -1], [-1, -1]])
    plain = np.floor(count_bright_spots(equalised, brain, 0.99, erosion=0))
    confirmed = np.floor(count_bright_spots(equalised, brain, 0.99, 0, adjacent))
    np.testing.assert_array_equal(plain, [1, 4, 4, 0, 1])
    np.testing.assert_array_equal(confirmed, [0, 2, 2, 0, 1])  # the two overlapping voxels
    with pytest.raises(ValueError, match="share a case, slice, row and column"):
        adjacent_patches(np.zeros(2), np.array([4, 4]), np.zeros(2), np.zeros(2))


def _grid(slices: int, side: int, step: int) -> tuple[np.ndarray, ...]:
    """Patch positions of one case: ``slices`` slices, ``side`` x ``side`` starts ``step``
    pixels apart."""
    z, r, c = np.meshgrid(np.arange(slices), np.arange(side) * step, np.arange(side) * step)
    return np.zeros(z.size), z.ravel(), r.ravel(), c.ravel()


def test_the_patches_around_are_one_patch_width_away_whatever_the_stride() -> None:
    cases, slices, rows, cols = _grid(3, 3, 28)  # non-overlapping 28-pixel patches
    around = surrounding_patches(cases, slices, rows, cols, size=28)
    middle = int(np.flatnonzero((slices == 1) & (rows == 28) & (cols == 28))[0])
    assert sorted(around[middle]) == sorted(set(range(27)) - {middle})  # all 26 others
    corner = int(np.flatnonzero((slices == 0) & (rows == 0) & (cols == 0))[0])
    assert (around[corner] >= 0).sum() == 7  # 2 x 2 x 2 block, itself left out
    # windows cut every 7 pixels: still the windows 28 pixels away, not the overlapping ones
    cases, slices, rows, cols = _grid(3, 9, 7)
    around = surrounding_patches(cases, slices, rows, cols, size=28)
    middle = int(np.flatnonzero((slices == 1) & (rows == 28) & (cols == 28))[0])
    found = around[middle][around[middle] >= 0]
    assert found.size == 26
    assert set(np.abs(rows[found] - 28)) <= {0, 28} and set(np.abs(cols[found] - 28)) <= {0, 28}
    # another case at the same place is not around it
    two = surrounding_patches(np.array(["a", "b"]), np.zeros(2), np.zeros(2), [0, 28], size=28)
    assert (two == -1).all()


def test_in_context_lifts_an_edge_patch_beside_a_lesion_and_not_one_alone() -> None:
    """3 slices of 5 x 5 patches: the middle one full of lesion (count 300), one beside it
    holding the lesion's edge (count 2), one far from both with the same count (noise)."""
    from scipy.stats import rankdata

    cases, slices, rows, cols = _grid(3, 5, 28)
    count = np.zeros(slices.size)
    at = {key: i for i, key in enumerate(zip(slices, rows, cols, strict=True))}
    full, edge, alone = at[(1, 56, 56)], at[(1, 56, 84)], at[(1, 0, 0)]
    count[full], count[edge], count[alone] = 300.0, 2.0, 2.0
    around = surrounding_patches(cases, slices, rows, cols, size=28)
    score = in_context(count, around)
    assert score[edge] > score[alone]  # the same count, one beside a lesion
    assert score[full] == score.max()
    # by brute force: the largest count among the patches within one patch width, itself too
    nearby = np.array(
        [
            max(
                count[j]
                for j in range(count.size)
                if abs(slices[j] - slices[i]) <= 1
                and abs(rows[j] - rows[i]) <= 28
                and abs(cols[j] - cols[i]) <= 28
            )
            for i in range(count.size)
        ]
    )
    assert nearby[edge] == nearby[full] == 300 and nearby[alone] == 2
    expected = (rankdata(count) + 0.5 * rankdata(nearby)) / count.size
    np.testing.assert_allclose(score, expected)


def test_core_auroc_leaves_out_edge_patches() -> None:
    fraction = np.array([0.0, 0.0, 0.0, 0.02, 0.5, 0.3])
    score = np.array([0.1, 0.2, 0.3, 0.05, 0.9, 0.8])
    # the edge patch (2 % lesion, lowest score) would cost the plain AUROC; core ignores it
    assert core_auroc(fraction, score) == 1.0
    assert roc_auc_score(fraction > 0, score) < 1.0
    assert np.isnan(core_auroc(np.zeros(3), score[:3]))


def test_rank_fusion_weights() -> None:
    base, partner = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(fuse_by_rank(base, partner, 1.0), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(fuse_by_rank(base, partner, 0.0), [1.0, 0.75, 0.5, 0.25])
