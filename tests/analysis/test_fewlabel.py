"""A few labels: the logistic regression's draws and cluster-then-label."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from patchvae.analysis.anomaly import detection_metrics
from patchvae.analysis.fewlabel import (
    DESCRIPTOR_PERCENTILES,
    cluster_label_auroc,
    fit_weak_score,
    label_draws,
    patch_descriptors,
    pooled_rates,
)
from patchvae.splits import draw_labelled


def test_groups_are_named_from_the_labelled_patches_in_them() -> None:
    groups = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 3])
    chosen, held = np.arange(6), np.arange(6, 10)
    labels = np.array([1, 1, 0, 0, 0, 0])
    rates = pooled_rates([groups], chosen, labels, held, prior_weight=0.0)
    # two of three lesion in group 0, none in groups 1 and 2; group 3 has no labelled patch,
    # so nothing names it: it takes the overall rate of the labelled patches (1/3)
    assert rates.tolist() == [2 / 3, 0.0, 0.0, 1 / 3]
    # the prior weight pulls a group of one label towards the overall rate
    smoothed = pooled_rates([groups], chosen, labels, held, prior_weight=1.0)
    assert smoothed[2] == (0 + 1 / 3) / 2 and smoothed[3] == 1 / 3


def test_cluster_then_label_finds_lesion_groups_that_labels_name() -> None:
    """Lesion patches fill three of ten groups: a few labels name them, and the held-out
    patches of those groups outrank the others; shuffled groups carry no such signal."""
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 10, 600)
    labels = (groups < 3).astype(int)
    found = cluster_label_auroc([groups], labels, k=20, seed=0)
    assert found is not None and found["draws"] == 20
    assert found["mean"] > 0.85
    noise = rng.permutation(groups)
    shuffled = cluster_label_auroc([noise], labels, k=20, seed=0)
    assert shuffled is not None and shuffled["mean"] < 0.65
    # several groupings: their labelled patches pooled; a grouping given twice ranks the
    # patches as once, and one that carries no signal dilutes one that does
    twice = cluster_label_auroc([groups] * 2, labels, k=20, seed=0)
    assert twice == found
    mixed = cluster_label_auroc([groups, noise], labels, k=20, seed=0)
    assert mixed is not None and shuffled["mean"] < mixed["mean"] < found["mean"]


def test_draws_hold_both_classes_and_repeat_with_the_seed() -> None:
    labels = np.array([0] * 30 + [1] * 5)
    draws = list(label_draws(labels, 6, repeats=5, seed=3))
    assert len(draws) == 5
    for chosen, held in draws:
        assert set(labels[chosen]) == {0, 1} and len(chosen) == 6
        assert np.intersect1d(chosen, held).size == 0 and len(held) == 29
    again = list(label_draws(labels, 6, repeats=5, seed=3))
    assert all((a[0] == b[0]).all() for a, b in zip(draws, again, strict=True))


def test_groupings_of_a_large_store_are_fitted_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the cap the k-means fits see a sample of the training latents, and still place
    every analysed patch: two far-apart blobs stay apart in the 2-group grouping."""
    from patchvae.stages import analysis

    monkeypatch.setattr(analysis, "LATENT_GROUP_FIT_MAX", 60)
    rng = np.random.default_rng(0)
    blob = np.repeat([0, 1], 500)
    train = rng.normal(size=(1000, 3)) + 20.0 * blob[:, None]
    analysed = rng.normal(size=(200, 3)) + 20.0 * np.repeat([0, 1], 100)[:, None]
    fitted: list[int] = []
    real_fit = analysis.KMeans.fit

    def counting_fit(self: Any, x: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        fitted.append(len(x))
        return real_fit(self, x, *args, **kwargs)

    monkeypatch.setattr(analysis.KMeans, "fit", counting_fit)
    groupings = analysis._latent_groups(train, analysed, seed=0)
    assert set(fitted) == {60}  # every fit saw the sample, not the 1,000 latents
    two = next(g for g in groupings if g.max() == 1)
    assert len(two) == 200 and len(set(two[:100])) == 1 and set(two[:100]) != set(two[100:])


def test_pooled_rates_weigh_each_grouping_by_the_labels_its_group_shares() -> None:
    """Each labelled patch that shares a group with the scored one counts once per
    grouping, so the grouping whose group holds more labelled patches weighs more than one
    whose group holds one."""
    # scored patch 0 shares a coarse group with four labelled patches (three lesion) and a
    # fine group with one healthy patch: (3 + 0 + w x overall) / (4 + 1 + w)
    coarse = np.array([0, 0, 0, 0, 0, 1, 1])
    fine = np.array([0, 0, 1, 2, 3, 4, 5])
    chosen = np.array([1, 2, 3, 4, 5])
    labels = np.array([0, 1, 1, 1, 0])
    (rate,) = pooled_rates([coarse, fine], chosen, labels, np.array([0]), prior_weight=1.0)
    assert rate == pytest.approx((3 + 0 + 1.0 * labels.mean()) / (4 + 1 + 1.0))
    # the averaged rates would give the fine group's single healthy label half the say
    # (the coarse group's rate (3 + w x overall) / (4 + w), the fine one's w x overall / (1 + w))
    overall = labels.mean()
    averaged = ((3 + overall) / (4 + 1) + overall / (1 + 1)) / 2
    assert averaged < rate


def test_the_labelled_draw_keeps_one_of_each_class_and_the_budget() -> None:
    labels = np.array([0] * 50 + [1] * 2 + [-1] * 5)
    for seed in range(20):
        kept = draw_labelled(labels, 5, seed)
        assert (kept >= 0).sum() == 5 and (kept == 1).sum() >= 1 and (kept == 0).sum() >= 1
        assert (kept[kept >= 0] == labels[kept >= 0]).all()  # the true labels, nothing else
        assert (kept[labels == -1] == -1).all()  # an unknown label is never drawn
    np.testing.assert_array_equal(draw_labelled(labels, 5, 3), draw_labelled(labels, 5, 3))
    assert (draw_labelled(labels, None, 0) == labels).all()  # no budget: every known label


def test_a_classifier_run_draws_its_labels_as_the_weak_score_does() -> None:
    """One draw for both uses of a label budget: the patches a classifier recipe trains on
    are those a weak-labels run of the same seed fits on."""
    from patchvae.config import PatchTrainConfig
    from patchvae.stages.training import _training_labels

    labels = np.random.default_rng(1).choice([0, 0, 0, 1, -1], 300)
    config = PatchTrainConfig(patches="s.h5", label_budget=20, train={"seed": 4})
    kept, n = _training_labels(config, labels)
    np.testing.assert_array_equal(kept.numpy(), draw_labelled(labels, 20, 4))
    assert n == 20


def test_patch_descriptors_by_hand() -> None:
    equalised = np.zeros((2, 1, 4, 4))
    equalised[0, 0] = np.arange(16).reshape(4, 4) / 16
    brain = np.zeros((2, 4, 4), dtype=bool)
    brain[0, :2] = True  # the first 8 voxels: 0/16 ... 7/16
    found = patch_descriptors(equalised, brain)
    expected = np.percentile(np.arange(8) / 16, DESCRIPTOR_PERCENTILES)
    np.testing.assert_allclose(found[0, :-1], expected)
    assert found[0, -1] == 0.5
    assert (found[1] == 0).all()  # no brain: nothing to describe


def test_true_labels_outvote_the_label_free_scores_mistake() -> None:
    """A label-free score ranks bright artefacts (feature 1) above the lesions (feature 0):
    its pseudo-labels call them lesion. Twenty true labels, two of them artefacts labelled
    healthy and one a lesion, turn the weak score around; without them it learns the
    mistake."""
    rng = np.random.default_rng(0)
    n = 1000
    lesion = np.zeros(n, dtype=bool)
    lesion[:30] = True
    artefact = np.zeros(n, dtype=bool)
    artefact[30:60] = True
    features = rng.normal(size=(n, 2))
    features[lesion, 0] += 3.0
    features[artefact, 1] += 3.0
    label_free = features[:, 1] + 0.4 * features[:, 0]  # artefacts first, then lesions
    truth = lesion.astype(int)
    assert detection_metrics(truth, label_free)["auroc"] < 0.85
    kept = np.full(n, -1)
    chosen = [0, 30, 31, *range(100, 117)]  # one lesion, two artefacts, 17 healthy
    kept[chosen] = truth[chosen]
    weak = fit_weak_score(features, label_free, kept)
    unlabelled = np.setdiff1d(np.arange(n), chosen)
    fitted = detection_metrics(truth[unlabelled], weak(features)[unlabelled])["auroc"]
    blind = fit_weak_score(features, label_free, np.full(n, -1))
    mimic = detection_metrics(truth[unlabelled], blind(features)[unlabelled])["auroc"]
    assert fitted > 0.95 and mimic < 0.85  # the label-free score alone: 0.82
    # pseudo-labels: the top 3 % (30) and the lower half (500), less the labelled among them
    pseudo = (label_free >= np.quantile(label_free, 0.97)) | (
        label_free <= np.quantile(label_free, 0.5)
    )
    assert weak.record() == {
        "labelled": 20,
        "labelled_lesion": 1,
        "pseudo_labelled": 530 - int(pseudo[chosen].sum()),
    }


def test_the_weak_score_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="lesion and healthy"):
        fit_weak_score(np.zeros((10, 1)), np.ones(10), np.full(10, -1))
