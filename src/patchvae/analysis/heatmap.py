"""Patch scores put back on their slices and volumes, and voxel-level metrics of that
back-projection."""

from __future__ import annotations

import numpy as np
import pandas as pd

from patchvae.analysis.anomaly import detection_metrics


def backproject(
    scores: np.ndarray, table: pd.DataFrame, size: int, shape_yx: tuple[int, int]
) -> dict[tuple[str, int], np.ndarray]:
    """One (y, x) map per (case, slice): each voxel gets the mean score of the patches covering
    it (one patch on a non-overlapping grid), NaN where no patch lies.

    Example
    -------
    >>> t = pd.DataFrame({"case_id": ["a"], "slice": [3], "row": [2], "col": [0]})
    >>> m = backproject(np.array([5.0]), t, 2, (4, 4))[("a", 3)]
    >>> np.nan_to_num(m).tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0]]
    """
    scores = np.asarray(scores, dtype=float)
    rows, cols = table.row.to_numpy(), table.col.to_numpy()
    where = pd.DataFrame(
        {"case": table.case_id.astype(str).to_numpy(), "slice": table.slice.to_numpy(int)}
    )
    maps = {}
    for (case, k), on in where.groupby(["case", "slice"], sort=False).indices.items():
        flat = np.zeros(len(on), dtype=np.int64)
        mean, _ = score_volume(scores[on], flat, rows[on], cols[on], size, (1, *shape_yx))
        maps[(str(case), int(k))] = mean[0]
    return maps


def score_volume(
    scores: np.ndarray,
    slices: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    shape_zyx: tuple[int, int, int],
    count: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch scores as a (z, y, x) map: each voxel gets the mean score of the patches
    covering it (NaN where none does); also the number of covering patches per voxel
    (``count``: that number from an earlier call for the same patches, not counted again).

    Patches are ``size x size`` axial squares with top-left corners (slice, row, col). Each
    score is placed at its corner and summed over the patch's footprint with running sums (a
    box filter), so a dense grid costs a few passes over the volume, not one per patch.

    Example
    -------
    >>> mean, count = score_volume(np.array([2.0, 4.0]), np.array([0, 0]), np.array([0, 1]),
    ...                            np.array([0, 0]), 2, (1, 3, 2))
    >>> mean[0].tolist(), count[0].tolist()
    ([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]], [[1, 1], [2, 2], [1, 1]])
    """
    if count is None:
        corner_count = np.zeros(shape_zyx)
        np.add.at(corner_count, (slices, rows, cols), 1.0)
        count = np.rint(_box_sum(corner_count, size)).astype(np.int64)
    corner_sum = np.zeros(shape_zyx)
    np.add.at(corner_sum, (slices, rows, cols), np.asarray(scores, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, _box_sum(corner_sum, size) / count, np.nan), count


def _box_sum(corners: np.ndarray, size: int) -> np.ndarray:
    """At each (y, x): the sum of ``corners`` over (y - size, y] x (x - size, x], per slice:
    the total of the patches whose footprint covers the voxel."""
    out = corners
    for axis in (1, 2):
        running = np.cumsum(out, axis=axis)
        shifted = np.zeros_like(running)
        length = running.shape[axis]
        if length > size:
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis], tail[axis] = slice(size, None), slice(None, length - size)
            shifted[tuple(head)] = running[tuple(tail)]
        out = running - shifted
    return out


def voxel_metrics(
    scores: np.ndarray,
    lesion_masks: np.ndarray,
    brain_masks: np.ndarray,
    threshold: float | None = None,
) -> dict[str, float]:
    """Voxel-level AUROC and AUPRC of back-projected patch scores, and two Dice values.

    Every brain voxel under a patch takes the patch's score; lesion voxels are positives. On a
    non-overlapping grid this is exact (the same numbers as the NIfTI maps over the covered
    brain voxels); with overlap a voxel counts once per covering patch. ``oracle_dice``: the
    best Dice over all thresholds, chosen on these very patches (an upper bound, not a
    result); ``dice``: the Dice at ``threshold``, chosen elsewhere (the training cases).
    """
    positives, negatives = patch_voxels(lesion_masks, brain_masks)
    labels = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    metrics = detection_metrics(
        labels, np.concatenate([scores, scores]), np.concatenate([positives, negatives])
    )
    metrics["oracle_dice"] = best_threshold(scores, positives, negatives)[0]
    if threshold is not None:
        metrics["dice"] = dice_at(scores, positives, negatives, threshold)
        metrics["threshold"] = float(threshold)
    return metrics


def patch_voxels(
    lesion_masks: np.ndarray, brain_masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per patch: its lesion voxels and its other brain voxels."""
    n = len(lesion_masks)
    lesion = lesion_masks.reshape(n, -1).astype(bool)
    brain = brain_masks.reshape(n, -1).astype(bool)
    return (lesion & brain).sum(axis=1).astype(float), (~lesion & brain).sum(axis=1).astype(float)


def dice_at(
    scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray, threshold: float
) -> float:
    """Dice when every voxel of the patches scoring at least ``threshold`` is called lesion.

    Example
    -------
    >>> s, pos, neg = np.array([3.0, 2.0, 1.0]), np.array([4.0, 0.0, 1.0]), np.array([0, 5.0, 5])
    >>> dice_at(s, pos, neg, 2.5)  # the top patch: 2*4 / (2*4 + 0 + 1)
    0.8888888888888888
    """
    total = positives.sum()
    if total == 0:
        return float("nan")
    called = scores >= threshold
    tp, fp = positives[called].sum(), negatives[called].sum()
    return float(2 * tp / (2 * tp + fp + (total - tp)))


def best_threshold(
    scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> tuple[float, float]:
    """The best Dice over thresholds when a patch's voxels are all called lesion at once, and
    the threshold that gives it.

    Example
    -------
    >>> s, pos = np.array([3.0, 2.0, 1.0]), np.array([4.0, 0.0, 1.0])
    >>> neg = np.array([0.0, 5.0, 5.0])
    >>> best_threshold(s, pos, neg)  # top patch only: 2*4 / (2*4 + 0 + 1)
    (0.8888888888888888, 3.0)
    """
    total = positives.sum()
    if total == 0:
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, tp, fp = scores[order], np.cumsum(positives[order]), np.cumsum(negatives[order])
    last_of_tie = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])  # whole ties
    dice = 2 * tp / (2 * tp + fp + (total - tp))
    best = last_of_tie[int(np.argmax(dice[last_of_tie]))]
    return float(dice[best]), float(scores[best])
