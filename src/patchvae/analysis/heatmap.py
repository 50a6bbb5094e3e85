"""Patch scores put back on their slices, and voxel-level metrics of that back-projection."""

from __future__ import annotations

import numpy as np
import pandas as pd

from patchvae.analysis.anomaly import detection_metrics
from patchvae.patches import tile_mean


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
    n = len(table)
    tiles = np.broadcast_to(np.asarray(scores, dtype=float)[:, None, None], (n, size, size))
    rows, cols = table.row.to_numpy(), table.col.to_numpy()
    where = pd.DataFrame(
        {"case": table.case_id.astype(str).to_numpy(), "slice": table.slice.to_numpy(int)}
    )
    return {
        (str(case), int(k)): tile_mean(tiles[on], rows[on], cols[on], shape_yx)[0]
        for (case, k), on in where.groupby(["case", "slice"], sort=False).indices.items()
    }


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
