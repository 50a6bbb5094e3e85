"""Read, check, reorient, resample and normalise one case's volumes with SimpleITK.

Every volume is brought to one canonical orientation, LPS (ITK's own: the first voxel axis runs
to the patient's left, the second to posterior, the third to superior), so that an axial slice
is ``array[k]`` of the (z, y, x) numpy array whatever the file's direction matrix, shown in the
radiological convention (patient's right on the image's left, anterior at the top).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from patchvae.config import ExtractConfig
from patchvae.data.volumes import CaseFiles
from patchvae.errors import DataError
from patchvae.geometry import Grid, HasGrid, check_overlap, resample_onto
from patchvae.reading import BLOCK, MAX_VOXELS, Volume, read_voxels

# ITK prints warnings (e.g. about NIfTI header fields) straight to stderr; our errors say enough.
sitk.ProcessObject_SetGlobalWarningDisplay(False)

CANONICAL_ORIENTATION = "LPS"
GRID_TOLERANCE = 1e-3  # relative for spacing, absolute for direction cosines; origin: 1% of a voxel


@dataclass
class NormalisedCase:
    """One case after preprocessing, in canonical orientation, arrays (z, y, x)."""

    case_id: str
    image: np.ndarray  # (channels, z, y, x) float32 in [0, 1], 0 outside the brain
    brain: np.ndarray  # (z, y, x) bool
    lesion: np.ndarray | None  # (z, y, x) bool, or None without a mask
    spacing: tuple[float, float, float]  # (x, y, z) mm, after resampling
    params: dict[str, Any] = field(default_factory=dict)  # every normalisation parameter
    grid: Grid | None = None  # the arrays' grid in physical space (canonical, resampled)
    source: Grid | None = None  # the grid of the first channel's file


def check_same_grid(
    reference: HasGrid, other: HasGrid, reference_path: Path, other_path: Path
) -> None:
    """Same size, spacing, origin and direction (within tolerance), else a DataError naming both."""
    ref_spacing = np.array(reference.GetSpacing())
    problems = []
    if reference.GetSize() != other.GetSize():
        problems.append(f"size {other.GetSize()} vs {reference.GetSize()}")
    elif not np.allclose(other.GetSpacing(), ref_spacing, rtol=GRID_TOLERANCE, atol=0):
        problems.append(f"spacing {_fmt(other.GetSpacing())} vs {_fmt(reference.GetSpacing())}")
    elif not np.allclose(other.GetOrigin(), reference.GetOrigin(), atol=1e-2 * ref_spacing.min()):
        problems.append(f"origin {_fmt(other.GetOrigin())} vs {_fmt(reference.GetOrigin())}")
    elif not np.allclose(other.GetDirection(), reference.GetDirection(), atol=GRID_TOLERANCE):
        problems.append("direction matrices differ")
    if problems:
        raise DataError(
            other_path,
            f"not on the grid of {reference_path}: {problems[0]} (resample or register it first)",
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def is_canonical(image: HasGrid) -> bool:
    """Whether the voxel axes already run in the canonical orientation."""
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines
    return bool(orientation(image.GetDirection()) == CANONICAL_ORIENTATION)


def reorient(image: sitk.Image) -> sitk.Image:
    """Permute and flip the voxel axes to the canonical orientation (no interpolation); an
    image already in it is returned as it is (not copied)."""
    if is_canonical(image):
        return image
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def resample_isotropic(
    image: sitk.Image, spacing: float, is_mask: bool = False, path: Path | None = None
) -> sitk.Image:
    """Resample to ``spacing`` mm in every axis, covering the same field of view.

    The new grid keeps the outer edges of the old one (its first voxel centre lies half a new
    voxel inside the old first voxel's edge), so at an integer factor no new voxel centre falls
    midway between two old ones. Images use linear interpolation. Masks are label maps: any
    label above 0 is foreground, and they are resampled by nearest neighbour, so every new
    voxel takes the label of the old voxel it lies in (at 2 -> 1 mm each old voxel becomes
    exactly 8) and nothing hinges on rounding a tie.
    """
    old_spacing = np.array(image.GetSpacing())
    old_size = np.array(image.GetSize())
    new_size = np.maximum(1, np.round(old_size * old_spacing / spacing)).astype(int)
    if int(np.prod(new_size)) > MAX_VOXELS:
        raise DataError(
            path,
            f"resampling {tuple(old_size)} voxels to {spacing:g} mm gives {tuple(new_size)}, "
            f"more than {MAX_VOXELS:,} voxels; choose a coarser --spacing",
        )
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((spacing - old_spacing) / 2)
    if is_mask:
        source, interpolator, pixel = image > 0, sitk.sitkNearestNeighbor, sitk.sitkUInt8
    else:
        source, interpolator, pixel = (
            sitk.Cast(image, sitk.sitkFloat32),
            sitk.sitkLinear,
            sitk.sitkFloat32,
        )
    return sitk.Resample(
        source,
        [int(s) for s in new_size],
        sitk.Transform(),
        interpolator,
        [float(v) for v in origin],
        (spacing,) * 3,
        image.GetDirection(),
        0.0,
        pixel,
    )


def derive_brain_mask(array: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str]:
    """Brain mask from the intensities of the first channel (z, y, x).

    ``nonzero``: every voxel that is not exactly 0 (skull-stripped data, zero background).
    ``otsu``: above Otsu's threshold, holes filled (background not zero).
    ``auto``: ``nonzero`` when at least 5% of the voxels are exactly 0, else ``otsu``.
    """
    if method == "auto":
        method = "nonzero" if np.mean(array == 0) >= 0.05 else "otsu"
    if method == "nonzero":
        return array != 0, method
    if method == "otsu":
        image = sitk.GetImageFromArray(array.astype(np.float32))
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        mask = sitk.GetArrayFromImage(otsu.Execute(image)).astype(bool)
        return ndimage.binary_fill_holes(mask), method
    raise ValueError(f"brain mask method must be auto, nonzero or otsu, got {method!r}")


def n4_correct(image: sitk.Image, brain: np.ndarray, shrink: int = 4) -> sitk.Image:
    """N4 bias-field correction inside the brain, fitted on a shrunk copy for speed and applied
    at full resolution."""
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(image)
    image = sitk.Cast(image, sitk.sitkFloat32)
    small_image = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(mask, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.Execute(small_image, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return image / sitk.Exp(log_bias)


def scale_to_unit(
    array: np.ndarray, brain: np.ndarray, percentiles: tuple[float, float], path: Path
) -> tuple[np.ndarray, dict[str, float]]:
    """Clip at intensity percentiles inside the brain and scale to [0, 1]; background 0."""
    inside = array[brain]  # a copy, so the percentiles may reorder it
    low, high = (float(v) for v in np.percentile(inside, percentiles, overwrite_input=True))
    if not high > low:
        raise DataError(
            path, f"intensity is constant ({low:g}) inside the brain mask; cannot scale it"
        )
    # one new array, worked in place a block at a time (the volume crosses the memory bus
    # once, not once per pass): np.clip((array - low) / (high - low), 0, 1) in float32,
    # background 0 (x * False is +0 for the clipped, non-negative x)
    scaled = np.empty(array.shape, np.float32)
    flat_in, flat_brain, flat_out = array.reshape(-1), brain.reshape(-1), scaled.reshape(-1)
    for start in range(0, flat_out.size, BLOCK):
        out = flat_out[start : start + BLOCK]
        np.subtract(flat_in[start : start + BLOCK], low, out=out, dtype=np.float32)
        np.divide(out, high - low, out=out)
        np.clip(out, 0.0, 1.0, out=out)
        np.multiply(out, flat_brain[start : start + BLOCK], out=out)
    return scaled, {"clip_low": low, "clip_high": high}


@contextmanager
def _timed(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def load_case(
    case: CaseFiles, settings: ExtractConfig, timings: dict[str, float] | None = None
) -> NormalisedCase:
    """Read, check, reorient, (resample), mask, (N4-correct) and scale one case.

    Raises :class:`DataError` naming the file for anything that cannot be used. ``timings``,
    when given, receives the seconds spent in each step (for ``benchmarks/extract.py``).
    """
    first_name, first_path = next(iter(case.channels.items()))
    images, masks = _read_checked(case, timings, settings.reference)

    def canonical(volume: Volume, is_mask: bool) -> Volume:
        if settings.spacing is None and is_canonical(volume):
            return volume  # no ITK filter to run: no ITK image made
        image = reorient(volume.image)
        if settings.spacing is not None:
            image = resample_isotropic(image, settings.spacing, is_mask, first_path)
        return Volume.of(image)

    with _timed(timings, "reorient_resample"):
        channel_volumes = [canonical(images[name], False) for name in case.channels]
        arrays = [v.voxels.astype(np.float32, copy=False) for v in channel_volumes]
        mask_arrays = {
            kind: canonical(volume, True).voxels > 0 for kind, (_, volume) in masks.items()
        }
    size = settings.patch_size
    if arrays[0].shape[1] < size or arrays[0].shape[2] < size:
        raise DataError(
            first_path,
            f"axial slices of {arrays[0].shape[2]}x{arrays[0].shape[1]} voxels "
            f"are smaller than one {size}x{size} patch",
        )
    params: dict[str, Any] = {
        "orientation": CANONICAL_ORIENTATION,
        "spacing_mm": list(channel_volumes[0].GetSpacing()),
        "channels": {},
    }
    with _timed(timings, "brain_mask"):
        if "brain" in mask_arrays:
            brain, params["brain_mask"] = mask_arrays["brain"], "file"
        else:
            brain, params["brain_mask"] = _derived_brain_mask(images[first_name].image, settings)
    if not brain.any():
        raise DataError(
            masks["brain"][0] if "brain" in masks else first_path, "the brain mask is empty"
        )
    channels = []
    for name, volume, array in zip(case.channels, channel_volumes, arrays, strict=True):
        if settings.n4:
            with _timed(timings, "n4"):
                corrected = n4_correct(volume.image, brain)
                array = sitk.GetArrayFromImage(corrected).astype(np.float32)
        with _timed(timings, "scale"):
            scaled, scale_params = scale_to_unit(
                array, brain, settings.clip_percentiles, case.channels[name]
            )
        channels.append(scaled)
        params["channels"][name] = {**scale_params, "n4": settings.n4}
    spacing = tuple(float(v) for v in channel_volumes[0].GetSpacing())
    return NormalisedCase(
        case.case_id,
        np.stack(channels) if len(channels) > 1 else channels[0][None],  # one: no copy
        brain,
        mask_arrays.get("lesion"),
        (spacing[0], spacing[1], spacing[2]),
        params,
        grid=Grid.of(channel_volumes[0]),
        source=Grid.of(images[first_name]),
    )


def _read_checked(
    case: CaseFiles, timings: dict[str, float] | None, reference: bool = False
) -> tuple[dict[str, Volume], dict[str, tuple[Path, Volume]]]:
    """A case's channels and masks, read and checked: finite, all on the first channel's grid
    (``reference``: resampled onto it by physical position where they are not)."""
    first_name, first_path = next(iter(case.channels.items()))
    with _timed(timings, "read"):  # each read checks its voxels are finite
        images = {name: read_voxels(path) for name, path in case.channels.items()}
        masks = {
            kind: (path, read_voxels(path))
            for kind, path in (("lesion", case.lesion_mask), ("brain", case.brain_mask))
            if path is not None
        }
    with _timed(timings, "check"):
        first = images[first_name]
        for name, image in images.items():
            if name != first_name:
                images[name] = _on_grid(first, image, first_path, case.channels[name], reference)
        masks = {
            kind: (path, _on_grid(first, mask, first_path, path, reference, label=True))
            for kind, (path, mask) in masks.items()
        }
    return images, masks


def _on_grid(
    first: Volume,
    image: Volume,
    first_path: Path,
    path: Path,
    reference: bool,
    label: bool = False,
) -> Volume:
    """``image`` on the first channel's grid: checked to be there (one rule,
    :func:`check_same_grid`, with or without ``reference``), or (``reference``) resampled
    onto it when it is not, after checking that the two overlap in space."""
    try:
        check_same_grid(first, image, first_path, path)
        return image
    except DataError:
        if not reference:
            raise
    check_overlap(Grid.of(first), Grid.of(image), first_path, path)
    return Volume.of(resample_onto(image.image, first.image, label))


def _derived_brain_mask(image: sitk.Image, settings: ExtractConfig) -> tuple[np.ndarray, str]:
    """A brain mask derived from the first channel (no mask file), on the case's final grid.

    Derived on the file's own grid, then resampled as a mask: a "non-zero" test after
    interpolation would hinge on tiny values (and on whether denormals are flushed)."""
    native = reorient(image)
    native_brain, method = derive_brain_mask(sitk.GetArrayFromImage(native), settings.brain_mask)
    mask_image = sitk.GetImageFromArray(native_brain.astype(np.uint8))
    mask_image.CopyInformation(native)
    if settings.spacing is not None:
        mask_image = resample_isotropic(mask_image, settings.spacing, is_mask=True)
    return sitk.GetArrayFromImage(mask_image) > 0, method
