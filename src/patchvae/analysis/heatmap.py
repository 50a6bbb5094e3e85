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
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch scores as a (z, y, x) map: each voxel gets the mean score of the patches
    covering it (NaN where none does); also the number of covering patches per voxel.

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
    corner_sum = np.zeros(shape_zyx)
    corner_count = np.zeros(shape_zyx)
    np.add.at(corner_sum, (slices, rows, cols), np.asarray(scores, dtype=np.float64))
    np.add.at(corner_count, (slices, rows, cols), 1.0)
    total, count = _box_sum(corner_sum, size), np.rint(_box_sum(corner_count, size))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), count.astype(np.int64)


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
    scores: np.ndarray, lesion_masks: np.ndarray, brain_masks: np.ndarray
) -> dict[str, float]:
    """Voxel-level AUROC, AUPRC and best Dice of back-projected patch scores.

    Every brain voxel under a patch takes the patch's score; lesion voxels are positives. On a
    non-overlapping grid this is exact; with overlap a voxel counts once per covering patch.
    Best Dice: the highest Dice over all thresholds on the score.
    """
    lesion = lesion_masks.reshape(len(scores), -1).astype(bool)
    brain = brain_masks.reshape(len(scores), -1).astype(bool)
    positives = (lesion & brain).sum(axis=1).astype(float)
    negatives = (~lesion & brain).sum(axis=1).astype(float)
    labels = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    metrics = detection_metrics(
        labels, np.concatenate([scores, scores]), np.concatenate([positives, negatives])
    )
    metrics["best_dice"] = best_dice(scores, positives, negatives)
    return metrics


def best_dice(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """Best Dice over thresholds when a patch's voxels are all called lesion at once.

    Example
    -------
    >>> s, pos = np.array([3.0, 2.0, 1.0]), np.array([4.0, 0.0, 1.0])
    >>> neg = np.array([0.0, 5.0, 5.0])
    >>> round(best_dice(s, pos, neg), 4)  # top patch only: 2*4 / (2*4 + 0 + 1)
    0.8889
    """
    total = positives.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, tp, fp = scores[order], np.cumsum(positives[order]), np.cumsum(negatives[order])
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # a threshold takes whole ties
    dice = 2 * tp / (2 * tp + fp + (total - tp))
    return float(dice[last_of_tie].max())
