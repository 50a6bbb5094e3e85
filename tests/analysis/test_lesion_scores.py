"""Scores for lesions in contaminated data: Mahalanobis, equalised baseline, core AUROC,
rank fusion."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from patchvae.analysis.anomaly import (
    core_auroc,
    fit_gaussian,
    fuse_by_rank,
    histogram_equalised_baseline,
    intensity_baseline,
    mahalanobis,
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
