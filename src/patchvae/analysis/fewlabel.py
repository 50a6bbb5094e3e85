"""A few labels: how well a handful of labelled patches separate lesion from healthy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

# cluster-then-label: groups of the training latents, each named by the few labelled patches
# that fall in it. The analysis reports the majority naming and the NMI of this many groups
# (the first version's single grouping; the scores use LATENT_GROUP_COUNTS)
LATENT_GROUP_COUNT = 10
# the scores pool the labelled patches of several groupings (coarse groups name many
# patches from few labels, fine ones separate what coarse ones mix), each number of groups
# fitted from LATENT_GROUP_RESTARTS k-means starts of one initialisation each. Chosen by the
# mean AUROC on the training patches of the lesion-clusters runs (BraTS, MS, ISLES'22, seeds
# 0-2), never the scored ones: 10 groups alone 0.614; (5, 10, 20, 40) 0.671; (2, 5, 10, 20,
# 40) 0.682, the groups' rates averaged; the same with unnamed groups at the overall rate
# 0.691 (at the nearest named group's: 0.682); with 80 groups too, three starts of the best
# of 10 initialisations 0.699, ten starts of one 0.704 (and 3.6 times faster). Re-measured
# on this version's runs (2026-11-26): rates averaged 0.708, their log-odds averaged 0.700,
# the labelled patches pooled (pooled_rates) 0.717, better in 8 of the 9 runs, kept; its
# prior weight at 1, 10 or 60 pseudo-patches 0.7169, 0.7171, 0.7173: 1 kept (docs/models.md)
LATENT_GROUP_COUNTS = (2, 5, 10, 20, 40, 80)
LATENT_GROUP_RESTARTS = 10


def label_draws(
    labels: np.ndarray, k: int, repeats: int = 20, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` draws of ``k`` labelled patches (at least one lesion and one healthy patch
    among them: a user labelling a few patches would include both) and the patches left to
    score, which must hold both classes (draws where they do not are skipped). The same seed
    gives the same draws, so methods compared on them see the same labels."""
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if k < 2 or positives.size < 1 or negatives.size < 1 or labels.size - k < 2:
        return
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        chosen = np.concatenate([rng.choice(positives, 1), rng.choice(negatives, 1)])
        rest = np.setdiff1d(np.arange(labels.size), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, k - 2, replace=False)])
        held = np.setdiff1d(np.arange(labels.size), chosen)
        if np.unique(labels[held]).size >= 2:
            yield chosen, held


def _summary(scores: list[float]) -> dict[str, float] | None:
    if not scores:
        return None
    return {"mean": float(np.mean(scores)), "sd": float(np.std(scores)), "draws": len(scores)}


def few_label_auroc(
    features: np.ndarray,
    labels: np.ndarray,
    k: int,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float] | None:
    """Fit a logistic regression on ``k`` labelled patches, score AUROC on all the others
    (draws: ``label_draws``). Returns mean, sd and the number of draws, or ``None`` when
    there are too few of either class."""
    scores = []
    for chosen, held in label_draws(labels, k, repeats, seed):
        scaler = StandardScaler().fit(features[chosen])
        model = LogisticRegression(max_iter=1000).fit(
            scaler.transform(features[chosen]), labels[chosen]
        )
        probability = model.predict_proba(scaler.transform(features[held]))[:, 1]
        scores.append(roc_auc_score(labels[held], probability))
    return _summary(scores)


def pooled_rates(
    groupings: Sequence[np.ndarray],
    chosen: np.ndarray,
    labels: np.ndarray,
    held: np.ndarray,
    prior_weight: float = 1.0,
) -> np.ndarray:
    """Cluster-then-label's score of the ``held`` patches: the lesion rate of the labelled
    patches (``chosen``, whose ``labels`` are given) that share a group with the patch,
    each counted once for every grouping in which it does, pulled towards the overall rate by
    ``prior_weight`` pseudo-patches: (lesion + w x overall) / (shared + w). A grouping in
    which many labelled patches share the patch's group (a coarse one) weighs more than one
    in which one or none do; with a single grouping, each group is named by the lesion rate
    of the labelled patches in it, so one label does not make a certainty. A patch that
    shares no group with a labelled patch is unnamed and takes the overall rate: it says
    nothing, and the other groupings decide.

    Example
    -------
    >>> coarse, fine = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4])
    >>> chosen, labels, held = np.array([0, 1, 3]), np.array([1, 0, 0]), np.array([2, 4])
    >>> pooled_rates([coarse, fine], chosen, labels, held).round(3)
    array([0.444, 0.167])
    """
    overall = float(labels.mean())
    weights = labels.astype(float)
    hits = np.zeros(held.size)
    shared = np.zeros(held.size)
    for groups in groupings:
        n_groups = int(groups.max()) + 1
        counts = np.bincount(groups[chosen], minlength=n_groups)
        lesion = np.bincount(groups[chosen], weights=weights, minlength=n_groups)
        hits += lesion[groups[held]]
        shared += counts[groups[held]]
    named = shared + prior_weight
    rates = np.full(held.size, overall)
    np.divide(hits + prior_weight * overall, named, out=rates, where=named > 0)
    return rates


def cluster_label_auroc(
    groupings: Sequence[np.ndarray],
    labels: np.ndarray,
    k: int,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, float] | None:
    """Cluster-then-label: every patch not labelled is scored by ``pooled_rates`` over
    ``groupings`` (each the patches' group numbers, e.g. k-means at several numbers of
    groups), named from the ``k`` labelled patches of each draw; AUROC on those patches. The
    draws are ``few_label_auroc``'s for the same seed."""
    scores = []
    for chosen, held in label_draws(labels, k, repeats, seed):
        score = pooled_rates(groupings, chosen, labels[chosen], held)
        scores.append(roc_auc_score(labels[held], score))
    return _summary(scores)
