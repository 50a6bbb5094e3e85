"""A few labels: how well a handful of labelled patches separate lesion from healthy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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


# weak supervision: a linear score fitted to a few labelled patches and to pseudo-labels
# drawn from a label-free score. Chosen by the mean of the three dev sets' training AUROCs
# (BraTS: its three training cases), the labelled patches left out, on lesion-unsupervised
# runs (seeds 0-2; docs/models.md, "Twenty labels, weakly supervised"): the top 3 % of the
# label-free fusion as lesion and its lower half as healthy (against 1 % / 5 % and the lower
# 80 %), the labelled patches weighed 20 pseudo-labels each (against 5), C = 1 (against 0.01
# and 0.1)
WEAK_TOP = 0.03
WEAK_BOTTOM = 0.5
WEAK_LABEL_WEIGHT = 20.0
WEAK_C = 1.0
DESCRIPTOR_PERCENTILES = (50, 75, 90, 95, 98, 99, 100)


def patch_descriptors(equalised: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """What a linear score reads of a patch's intensities: the percentiles
    ``DESCRIPTOR_PERCENTILES`` of its equalised brain voxels (mean over channels; 0 for a
    patch with no brain) and its brain fraction, (n, 8) from ``equalised`` (n, C, s, s) and
    ``brain`` (n, s, s)."""
    n = equalised.shape[0]
    inside = brain.reshape(n, -1).astype(bool)
    values = equalised.mean(axis=1).reshape(n, -1)
    found = np.zeros((n, len(DESCRIPTOR_PERCENTILES)))
    for i in np.flatnonzero(inside.any(axis=1)):
        found[i] = np.percentile(values[i][inside[i]], DESCRIPTOR_PERCENTILES)
    return np.column_stack([found, inside.mean(axis=1)])


@dataclass
class WeakScore:
    """A fitted weakly supervised score: standardise the features, then a logistic
    regression's probability of lesion."""

    scaler: StandardScaler
    model: LogisticRegression
    n_labelled: int
    n_labelled_lesion: int
    n_pseudo: int

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.scaler.transform(features))[:, 1]

    def record(self) -> dict[str, int]:
        """What it was fitted on, for the analysis record."""
        return {
            "labelled": self.n_labelled,
            "labelled_lesion": self.n_labelled_lesion,
            "pseudo_labelled": self.n_pseudo,
        }


def fit_weak_score(features: np.ndarray, label_free: np.ndarray, kept: np.ndarray) -> WeakScore:
    """Fit the weakly supervised score on the training patches: ``features`` (n, d), a
    label-free score ``label_free`` (n,) whose top ``WEAK_TOP`` fraction are taken as lesion
    and lower ``WEAK_BOTTOM`` as healthy (pseudo-labels), and the few true labels ``kept``
    (n,; -1 where unknown), which replace the pseudo-labels of their patches and weigh
    ``WEAK_LABEL_WEIGHT`` each. The label-free score's mistakes are outvoted where the
    patches' features and the true labels disagree with it.

    Example
    -------
    >>> x = np.arange(100.0)[:, None]
    >>> kept = np.full(100, -1); kept[[5, 95]] = [0, 1]
    >>> weak = fit_weak_score(x, x[:, 0], kept)
    >>> bool(weak(np.array([[10.0]]))[0] < 0.5 < weak(np.array([[99.0]]))[0])
    True
    """
    pseudo = np.full(label_free.shape, -1, dtype=np.int64)
    pseudo[label_free >= np.quantile(label_free, 1 - WEAK_TOP)] = 1
    pseudo[label_free <= np.quantile(label_free, WEAK_BOTTOM)] = 0
    known = kept >= 0
    pseudo[known] = kept[known]
    use = pseudo >= 0
    if np.unique(pseudo[use]).size < 2:
        raise ValueError("the weak score needs lesion and healthy patches among its labels")
    weight = np.where(known, WEAK_LABEL_WEIGHT, 1.0)
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=WEAK_C, max_iter=5000).fit(
        scaler.transform(features[use]), pseudo[use], sample_weight=weight[use]
    )
    lesion = int((kept[known] == 1).sum())
    return WeakScore(scaler, model, int(known.sum()), lesion, int((use & ~known).sum()))
