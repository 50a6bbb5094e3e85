"""Axial patches on a regular grid, with lesion labels and provenance.

A patch is ``size x size`` voxels of one axial slice of the canonical (LPS) volume. Its
provenance is (case_id, slice, row, col): the slice index ``k`` and the voxel indices of its
top-left corner in the (z, y, x) array, so ``volume[:, k, row:row+size, col:col+size]`` is the
patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from patchvae.preprocess import NormalisedCase


@dataclass
class PatchBatch:
    """The patches kept from one case, with one row of provenance per patch."""

    case_id: str
    pixels: np.ndarray  # (n, channels, size, size) float32
    slice: np.ndarray  # (n,) int32, axial slice index k
    row: np.ndarray  # (n,) int32, top row (y) of the patch
    col: np.ndarray  # (n,) int32, left column (x) of the patch
    brain_fraction: np.ndarray  # (n,) float32
    lesion_fraction: np.ndarray  # (n,) float32, NaN when the case has no lesion mask
    label: np.ndarray  # (n,) int8: 1 lesion, 0 healthy, -1 unknown (no mask)
    brain_mask: np.ndarray  # (n, size, size) uint8: the brain mask under each patch
    lesion_mask: np.ndarray  # (n, size, size) uint8: the lesion mask (zeros without a mask)
    grid_patches: int  # patches on the grid before the brain-fraction filter

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def grid_starts(length: int, size: int, stride: int) -> np.ndarray:
    """Start indices of the patches along one axis: 0, stride, ... while the patch fits.

    Example
    -------
    >>> grid_starts(112, 28, 28).tolist()
    [0, 28, 56, 84]
    """
    if length < size:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - size + 1, stride)


def _windows(array: np.ndarray, size: int, stride: int) -> np.ndarray:
    """View (..., z, n_rows, n_cols, size, size) of the grid's windows; no copy."""
    return sliding_window_view(array, (size, size), axis=(-2, -1))[..., ::stride, ::stride, :, :]


def extract_patches(
    case: NormalisedCase,
    size: int = 28,
    stride: int | None = None,
    min_brain: float = 0.5,
    lesion_threshold: float = 0.0,
) -> PatchBatch:
    """Cut every axial slice of ``case`` into a grid of patches and keep those with at least
    ``min_brain`` brain fraction. Labels: lesion fraction > ``lesion_threshold`` (default: any
    lesion voxel, as in the reference study).
    """
    stride = stride or size
    brain_windows = _windows(case.brain, size, stride)  # (z, nr, nc, s, s)
    brain_fraction = brain_windows.mean(axis=(-2, -1), dtype=np.float64)
    grid_patches = int(brain_fraction.size)
    k, r, c = np.nonzero(brain_fraction >= min_brain - 1e-12)
    pixels = _windows(case.image, size, stride)[:, k, r, c]  # (channels, n, s, s), a copy
    pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2, 3), dtype=np.float32)
    brain_mask = brain_windows[k, r, c].astype(np.uint8)
    if case.lesion is not None:
        lesion_mask = _windows(case.lesion, size, stride)[k, r, c].astype(np.uint8)
        lesion_fraction = lesion_mask.mean(axis=(-2, -1), dtype=np.float64)
        label = (lesion_fraction > lesion_threshold).astype(np.int8)
    else:
        lesion_mask = np.zeros_like(brain_mask)
        lesion_fraction = np.full(k.shape, np.nan)
        label = np.full(k.shape, -1, dtype=np.int8)
    return PatchBatch(
        case_id=case.case_id,
        pixels=pixels,
        slice=k.astype(np.int32),
        row=(r * stride).astype(np.int32),
        col=(c * stride).astype(np.int32),
        brain_fraction=brain_fraction[k, r, c].astype(np.float32),
        lesion_fraction=lesion_fraction.astype(np.float32),
        label=label,
        brain_mask=brain_mask,
        lesion_mask=lesion_mask,
        grid_patches=grid_patches,
    )


def tile_mean(
    tiles: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape_yx: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Put tiles (n, ..., s, s) of one slice on a (..., y, x) canvas at their (row, col)
    corners: each voxel gets the mean of the tiles covering it (NaN where none does); also
    return how many tiles cover each (y, x) voxel. The one way patches go back on a slice.

    Example
    -------
    >>> mean, count = tile_mean(np.ones((2, 2, 2)), np.array([0, 1]), np.array([0, 0]), (3, 2))
    >>> count.tolist(), float(np.nansum(mean))
    ([[1, 1], [2, 2], [1, 1]], 6.0)
    """
    size = tiles.shape[-1]
    sums = np.zeros((*tiles.shape[1:-2], *shape_yx))
    counts = np.zeros(shape_yx, dtype=np.int64)
    for tile, r, c in zip(tiles, rows, cols, strict=True):
        sums[..., r : r + size, c : c + size] += tile
        counts[r : r + size, c : c + size] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan), counts


def paste(
    tiles: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape_yx: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Put tiles (n, ..., s, s) of one slice back on a (..., y, x) canvas of their dtype, 0
    where no tile lies; also return the (y, x) mask of covered voxels. Overlapping tiles (stride
    < size) hold the same voxels, so their mean is that voxel.

    Example
    -------
    >>> canvas, covered = paste(np.ones((1, 2, 2)), np.array([1]), np.array([0]), (3, 3))
    >>> canvas.tolist(), int(covered.sum())
    ([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], 4)
    """
    mean, counts = tile_mean(tiles, rows, cols, shape_yx)
    covered = counts > 0
    canvas = np.where(covered, mean, 0)
    return (canvas > 0.5 if tiles.dtype == bool else canvas.astype(tiles.dtype)), covered


def reassemble(
    pixels: np.ndarray,
    slices: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Put patches (n, C, s, s) back into a (C, z, y, x) volume; also return the covered mask.

    Where patches overlap (stride < size) the later one wins: they hold the same voxels.
    """
    volume = np.zeros(shape, dtype=np.float32)
    covered = np.zeros(shape[1:], dtype=bool)
    for k in np.unique(slices):
        on = np.flatnonzero(slices == k)  # in order: the later patch still wins
        canvas, mask = paste(pixels[on], rows[on], cols[on], (shape[2], shape[3]))
        volume[:, k][:, mask] = canvas[:, mask]
        covered[k] |= mask
    return volume, covered
