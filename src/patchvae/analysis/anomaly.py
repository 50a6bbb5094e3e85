"""Scalar anomaly scores per patch and their patch-level detection metrics.

Higher score = more anomalous, for every score: reconstruction error, KL, negative ELBO, the
negative log-density of the patch's latent mean under the training patches' aggregate
posterior, the intensity baseline (the patch's 95th-percentile normalised intensity) and the
bright-spot count (how many of its voxels are among its case's brightest).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import logsumexp
from sklearn.metrics import average_precision_score, roc_auc_score

AGGREGATE_MAX_COMPONENTS = 5000  # training patches used as mixture components


def aggregate_posterior_nll(
    query_mu: np.ndarray,
    train_mu: np.ndarray,
    train_logvar: np.ndarray,
    seed: int = 0,
    batch: int = 512,
) -> np.ndarray:
    """-log q(z) at each query point, q = (1/N) sum_i N(mu_i, diag exp(logvar_i)), the aggregate
    posterior of the training patches (at most ``AGGREGATE_MAX_COMPONENTS``, drawn at random).

    Example
    -------
    >>> mu = np.zeros((1, 1)); lv = np.zeros((1, 1))
    >>> round(float(aggregate_posterior_nll(np.zeros((1, 1)), mu, lv)[0]), 4)  # -log N(0; 0, 1)
    0.9189
    """
    if train_mu.shape[0] > AGGREGATE_MAX_COMPONENTS:
        keep = np.random.default_rng(seed).choice(
            train_mu.shape[0], AGGREGATE_MAX_COMPONENTS, replace=False
        )
        train_mu, train_logvar = train_mu[keep], train_logvar[keep]
    var = np.exp(train_logvar.astype(np.float64))
    log_norm = -0.5 * (np.log(2 * np.pi * var).sum(axis=1))  # (N,)
    out = np.empty(query_mu.shape[0])
    for start in range(0, query_mu.shape[0], batch):
        q = query_mu[start : start + batch].astype(np.float64)[:, None, :]  # (b, 1, d)
        log_pdf = log_norm[None, :] - 0.5 * ((q - train_mu[None]) ** 2 / var[None]).sum(axis=2)
        out[start : start + batch] = -(logsumexp(log_pdf, axis=1) - np.log(train_mu.shape[0]))
    return out


def intensity_baseline(patches: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """The patch's ``percentile`` normalised intensity (mean over channels): a score with no
    learning at all, for lesions brighter than tissue (DWI, FLAIR)."""
    flat = patches.reshape(patches.shape[0], patches.shape[1], -1)
    return np.percentile(flat, percentile, axis=2).mean(axis=1)


def detection_metrics(
    labels: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of ``score`` for ``labels`` (1 = lesion)."""
    if np.unique(labels).size < 2:
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {
        "auroc": float(roc_auc_score(labels, score, sample_weight=weights)),
        "auprc": float(average_precision_score(labels, score, sample_weight=weights)),
    }


CORE_FRACTION = 0.1  # a "core" lesion patch: at least this fraction of lesion voxels
MAHALANOBIS_FIT_PATCHES = 20000  # training patches a feature Gaussian is fitted on


def fit_gaussian(train: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of a Gaussian fitted to training features (N, d): Ledoit-Wolf
    shrinkage, so the covariance is well conditioned with few samples or many features; at
    most ``MAHALANOBIS_FIT_PATCHES`` rows, drawn at random."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=np.float64)
    if train.shape[0] > MAHALANOBIS_FIT_PATCHES:
        keep = np.random.default_rng(seed).choice(
            train.shape[0], MAHALANOBIS_FIT_PATCHES, replace=False
        )
        train = train[keep]
    if train.shape[0] < 2:  # no spread to fit: the Euclidean distance from the one sample
        return train.mean(axis=0), np.eye(train.shape[1])
    fitted = LedoitWolf().fit(train)
    return fitted.location_, fitted.precision_


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``x`` from a Gaussian (mean, precision).

    Example
    -------
    >>> float(mahalanobis(np.array([[3.0, 4.0]]), np.zeros(2), np.eye(2))[0])
    5.0
    """
    centred = np.asarray(x, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


SPOT_QUANTILE = 0.99  # a bright spot: among the case's brightest 1 % of brain voxels
# pixels of the brain's rim left out of the spot count (12 mm at the dev sets' 1 mm): the
# cortex and the partial-volume rim hold most bright voxels that are not lesion. Chosen, like
# the quantile, by the mean of the three dev sets' training AUROCs over 0-8, 10, 12 and 15
# pixels (docs/models.md: 0.832 at 12 against 0.820 at 2, the setting before 2026-11-27)
SPOT_EROSION = 12


def equalise_by_case(patches: np.ndarray, brain: np.ndarray, cases: np.ndarray) -> np.ndarray:
    """Every voxel replaced by its intensity's rank among its case's brain voxels (the case's
    empirical CDF, in (0, 1]), per channel; ``patches`` (n, C, s, s), ``brain`` (n, s, s)."""
    equalised = np.empty(patches.shape, dtype=np.float64)
    for case in np.unique(cases):
        rows = np.flatnonzero(cases == case)
        values = patches[rows]  # (n, C, s, s)
        inside = brain[rows]
        for c in range(values.shape[1]):
            reference = np.sort(values[:, c][inside])
            if reference.size == 0:
                reference = np.sort(values[:, c].ravel())
            ranks = np.searchsorted(reference, values[:, c], side="right")
            equalised[rows, c] = ranks / max(reference.size, 1)
    return equalised


def histogram_equalised_baseline(
    patches: np.ndarray,
    brain: np.ndarray,
    cases: np.ndarray,
    percentile: float = 95.0,
) -> np.ndarray:
    """The intensity baseline after histogram equalisation of each case (Meissen et al.,
    BrainLes 2021): every voxel replaced by its intensity's rank among the case's brain
    voxels (its empirical CDF), then the patch's ``percentile`` (mean over channels).

    Within one case the equalisation is monotonic, so it orders that case's patches as the
    plain baseline does; it differs across cases, whose intensities it puts on one scale.
    """
    return intensity_baseline(equalise_by_case(patches, brain, cases), percentile)


def bright_spot_count(
    patches: np.ndarray,
    brain: np.ndarray,
    cases: np.ndarray,
    quantile: float = SPOT_QUANTILE,
    erosion: int = SPOT_EROSION,
) -> np.ndarray:
    """How many of the patch's voxels inside its brain mask, eroded by ``erosion`` pixels,
    are among their case's brightest ``1 - quantile`` of brain voxels (mean over channels),
    ties broken by the equalised 95th percentile. No learning; for lesions of a few voxels,
    which move no percentile of a 784-voxel patch.

    Example
    -------
    >>> patches = np.zeros((2, 1, 9, 9))
    >>> patches[:, 0, 1:8, 1:8] = np.linspace(0.2, 0.4, 49).reshape(7, 7)  # the brain
    >>> patches[0, 0, 1, 4] = patches[1, 0, 4, 4] = 1.0  # bright: on the rim, deep inside
    >>> score = bright_spot_count(patches, patches[:, 0] > 0, np.zeros(2), 0.98, erosion=1)
    >>> np.floor(score)  # the count; the rest breaks ties
    array([0., 1.])
    """
    return count_bright_spots(equalise_by_case(patches, brain, cases), brain, quantile, erosion)


def neighbour_patches(
    cases: np.ndarray,
    slices: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    offsets: list[tuple[int, int, int]],
) -> np.ndarray:
    """For each patch and each (slice, row, col) offset, the index of the patch of the same
    case at that offset, or -1 where the patches given hold none: (n, len(offsets)).

    Example
    -------
    >>> neighbour_patches(np.zeros(2), np.array([4, 5]), np.zeros(2), np.zeros(2), [(1, 0, 0)])
    array([[ 1],
           [-1]])
    """
    keys = pd.DataFrame(
        {"case": np.asarray(cases).astype(str), "slice": slices, "row": rows, "col": cols}
    )
    index = pd.Series(np.arange(len(keys)), index=pd.MultiIndex.from_frame(keys))
    if not index.index.is_unique:
        raise ValueError("two patches share a case, slice, row and column")
    found = np.full((len(keys), len(offsets)), -1, dtype=np.int64)
    for k, (dz, dr, dc) in enumerate(offsets):
        moved = keys.assign(
            slice=keys["slice"].to_numpy() + dz,
            row=keys["row"].to_numpy() + dr,
            col=keys["col"].to_numpy() + dc,
        )
        hit = index.reindex(pd.MultiIndex.from_frame(moved))
        found[:, k] = np.nan_to_num(hit.to_numpy(dtype=float), nan=-1).astype(np.int64)
    return found


def adjacent_patches(
    cases: np.ndarray, slices: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """For each patch, the index of the patch at the same row and column of the same case one
    slice below and one slice above, or -1 where the patches given hold none: (n, 2).

    Example
    -------
    >>> adjacent_patches(np.zeros(3), np.array([4, 5, 5]), np.array([0, 0, 9]), np.zeros(3))
    array([[-1,  1],
           [ 0, -1],
           [-1, -1]])
    """
    return neighbour_patches(cases, slices, rows, cols, [(-1, 0, 0), (1, 0, 0)])


CONTEXT_WEIGHT = 0.5  # the neighbourhood's rank counts half as much as the patch's own


def surrounding_patches(
    cases: np.ndarray, slices: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int
) -> np.ndarray:
    """For each patch, the indices of the 26 patches around it, one patch width (``size``
    pixels) away in-plane and one slice across, -1 where the patches given hold none: (n, 26).
    The patches that touch it on a grid of non-overlapping patches, whatever the stride the
    patches were cut with."""
    offsets = [
        (dz, dr * size, dc * size)
        for dz in (-1, 0, 1)
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if (dz, dr, dc) != (0, 0, 0)
    ]
    return neighbour_patches(cases, slices, rows, cols, offsets)


def in_context(
    score: np.ndarray, surrounding: np.ndarray, weight: float = CONTEXT_WEIGHT
) -> np.ndarray:
    """A score read with its surroundings: the percentile rank of the patch's own score plus
    ``weight`` x the rank of the largest score in its neighbourhood, itself and the patches
    around it (``surrounding``, :func:`surrounding_patches`). A lesion runs on into the
    patches beside it, so an edge patch that holds a few of its voxels sits next to one full
    of them, while a bright voxel or two of noise stands alone; no label, no learning. With
    itself in its neighbourhood, a patch never ranks below a neighbour only for being the
    lesion.

    Example
    -------
    >>> around = np.array([[1, -1], [0, 2], [1, -1], [-1, -1]])  # a row of three, one alone
    >>> in_context(np.array([0.0, 5.0, 1.0, 1.0]), around).tolist()  # 1.0 beside 5.0 goes up
    [0.625, 1.375, 1.0, 0.75]
    """
    from scipy.stats import rankdata

    has = surrounding >= 0
    values = np.where(has, score[np.where(has, surrounding, 0)], -np.inf)
    nearby = np.maximum(score, values.max(axis=1, initial=-np.inf))
    n = max(len(score), 1)
    return rankdata(score) / n + weight * rankdata(nearby) / n


def count_bright_spots(
    equalised: np.ndarray,
    brain: np.ndarray,
    quantile: float = SPOT_QUANTILE,
    erosion: int = SPOT_EROSION,
    adjacent: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`bright_spot_count` of patches already equalised by :func:`equalise_by_case`.

    With ``adjacent`` (:func:`adjacent_patches`), a bright voxel counts only where the voxel
    at the same place in an adjacent slice is bright too: lesions are three-dimensional,
    while a voxel bright in one slice alone is mostly noise or a vessel. A patch with no
    adjacent patch among those given (an end slice, a store extracted with slice gaps)
    counts its bright voxels unconfirmed."""
    inner = brain.astype(bool)
    if erosion:  # the patch's own border is not the brain's rim: only the mask's edges erode
        cross = ndimage.generate_binary_structure(2, 1)[None]
        inner = ndimage.binary_erosion(inner, cross, iterations=erosion, border_value=1)
    bright = (equalised > quantile) & inner[:, None]
    if adjacent is not None:
        confirmed = np.zeros_like(bright)
        for side in range(adjacent.shape[1]):
            has = adjacent[:, side] >= 0
            confirmed[has] |= bright[adjacent[has, side]]
        confirmed[(adjacent < 0).all(axis=1)] = True  # nothing to confirm with
        bright &= confirmed
        del confirmed
    spots = bright.sum(axis=(2, 3)).mean(axis=1)
    # below the count's step (1 / channels): a tie-break that never reorders two counts
    tie_break = intensity_baseline(equalised) / (2 * equalised.shape[1])
    return spots + tie_break


def core_auroc(
    lesion_fraction: np.ndarray, score: np.ndarray, core: float = CORE_FRACTION
) -> float:
    """AUROC of patches at least ``core`` lesion against lesion-free ones: edge patches with a
    voxel or two of lesion, which dominate the errors of the plain AUROC, left out."""
    positives, negatives = lesion_fraction >= core, lesion_fraction == 0
    keep = positives | negatives
    if positives.sum() == 0 or negatives.sum() == 0:
        return float("nan")
    return float(roc_auc_score(positives[keep], score[keep]))


def fuse_by_rank(baseline: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """``weight`` x the baseline's percentile rank + (1 - weight) x the partner's: two scores
    on one scale without labels (ranks are taken among the patches given).

    Example
    -------
    >>> fuse_by_rank(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0]), 0.5).tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666]
    """
    from scipy.stats import rankdata

    n = max(len(baseline), 1)
    return weight * rankdata(baseline) / n + (1 - weight) * rankdata(partner) / n
