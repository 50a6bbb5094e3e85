"""Voxel grids in physical space, and maps carried from the canonical grid back to a file's.

Extraction works on a canonical grid (LPS orientation, optionally resampled to isotropic
spacing). Every result that leaves patchvae as a volume goes back onto the grid of the file it
came from: same size, spacing, origin and direction, so it overlays the scan in 3D Slicer,
ITK-SNAP or FSLeyes and voxel metrics can be checked with any tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from pydantic import BaseModel, ConfigDict

from patchvae.errors import DataError

# how close two grids must be to be "the same": spacing relative, direction absolute,
# origin in voxels
_SPACING_RTOL, _DIRECTION_ATOL, _ORIGIN_VOXELS = 1e-4, 1e-4, 1e-3


class HasGrid(Protocol):
    """What has a grid: a SimpleITK image, an image file reader (its header read), or a
    :class:`~patchvae.reading.Volume`."""

    def GetSize(self) -> Any: ...  # SimpleITK's names

    def GetSpacing(self) -> Any: ...

    def GetOrigin(self) -> Any: ...

    def GetDirection(self) -> Any: ...


class Grid(BaseModel):
    """A 3-D voxel grid in physical space (ITK's conventions: (x, y, z) index order, mm)."""

    model_config = ConfigDict(frozen=True)

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, float, float, float, float, float, float, float, float]

    @classmethod
    def of(cls, image: HasGrid) -> Grid:
        """The grid of a SimpleITK image (or image file reader, or read volume)."""
        size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
        direction = image.GetDirection()
        return cls(
            size=(int(size[0]), int(size[1]), int(size[2])),
            spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            direction=tuple(float(v) for v in direction),  # type: ignore[arg-type]
        )

    def image(self, array_zyx: np.ndarray | None = None) -> sitk.Image:
        """An image on this grid: of ``array_zyx`` (z, y, x), or empty float32."""
        if array_zyx is None:
            image = sitk.Image([int(s) for s in self.size], sitk.sitkFloat32)
        else:
            if array_zyx.shape != self.size[::-1]:
                raise ValueError(f"array {array_zyx.shape} is not on a grid of {self.size[::-1]}")
            image = sitk.GetImageFromArray(array_zyx)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def same_as(self, other: Grid) -> bool:
        """Same size, and spacing, origin and direction equal within rounding."""
        spacing = np.array(self.spacing)
        return (
            self.size == other.size
            and np.allclose(other.spacing, spacing, rtol=_SPACING_RTOL, atol=0)
            and np.allclose(other.direction, self.direction, atol=_DIRECTION_ATOL)
            and np.allclose(other.origin, self.origin, atol=_ORIGIN_VOXELS * spacing.min())
        )

    def physical_point(self, index_xyz: np.ndarray) -> np.ndarray:
        """Physical coordinates (mm) of voxel indices (..., 3) in (x, y, z) order."""
        direction = np.array(self.direction).reshape(3, 3)
        scaled = np.asarray(index_xyz, dtype=np.float64) * np.array(self.spacing)
        return np.array(self.origin) + scaled @ direction.T

    def corners(self) -> np.ndarray:
        """Physical coordinates of the grid's 8 outer corners (half a voxel beyond the centres)."""
        low, high = -0.5, np.array(self.size) - 0.5
        box = np.array(
            [[x, y, z] for x in (low, high[0]) for y in (low, high[1]) for z in (low, high[2])]
        )
        return self.physical_point(box)


def to_grid(
    array_zyx: np.ndarray, canonical: Grid, target: Grid, label: bool = False
) -> sitk.Image:
    """A map on the canonical grid, carried onto ``target`` (the file's own grid).

    Where the canonical grid is the file's grid reoriented (no resampling), the voxels are
    permuted and flipped back, exactly; otherwise the map is resampled by physical position
    (linear, or nearest neighbour for a ``label`` map). Voxels of ``target`` outside the
    canonical grid get NaN (0 for labels). The result carries ``target``'s geometry exactly.
    """
    image = canonical.image(np.ascontiguousarray(array_zyx))
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(target.direction)
    back = sitk.DICOMOrient(image, code)
    if Grid.of(back).same_as(target):
        out = back
    else:
        interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
        fill = 0.0 if label else float("nan")
        out = sitk.Resample(image, target.image(), sitk.Transform(), interpolator, fill)
    out.SetSpacing(target.spacing)  # the file's numbers, not their rounded round trip
    out.SetOrigin(target.origin)
    out.SetDirection(target.direction)
    return out


def check_overlap(reference: Grid, other: Grid, reference_path: Path, other_path: Path) -> None:
    """A one-line DataError when ``other`` and ``reference`` share no point in space."""
    low_a, high_a = reference.corners().min(axis=0), reference.corners().max(axis=0)
    low_b, high_b = other.corners().min(axis=0), other.corners().max(axis=0)
    if (np.minimum(high_a, high_b) <= np.maximum(low_a, low_b)).any():
        raise DataError(
            other_path,
            f"does not overlap {reference_path} in space (their bounding boxes are disjoint: "
            "check the headers' origin and direction)",
        )


def resample_onto(image: sitk.Image, reference: sitk.Image, label: bool = False) -> sitk.Image:
    """``image`` resampled onto ``reference``'s grid by physical position (linear, or nearest
    neighbour for label maps); 0 outside ``image``."""
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = image.GetPixelID() if label else sitk.sitkFloat32
    source = image if label else sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(source, reference, sitk.Transform(), interpolator, 0.0, pixel)


def write_on_grid(
    array_zyx: np.ndarray,
    canonical: Grid,
    target: Grid,
    path: Path,
    like: Path | None,
    label: bool = False,
) -> str:
    """A map on the canonical grid written as NIfTI on ``target``, the grid of the file
    ``like`` (:func:`to_grid`, then :func:`write_map`); the file's name."""
    return write_map(to_grid(array_zyx, canonical, target, label), path, like)


def write_map(image: sitk.Image, path: Path, like: Path | None) -> str:
    """Write a map on the grid of the file ``like`` as NIfTI. A NIfTI ``like`` lends its header
    (its affine, qform and sform, bit for bit), so every tool reads the map on exactly the
    input's grid; other formats' geometry is written by SimpleITK."""
    if not _same_nifti_grid(like, image):
        sitk.WriteImage(image, str(path), useCompression=True)
        return path.name
    assert like is not None
    source: Any = nib.load(str(like))
    header = source.header.copy()
    data = sitk.GetArrayFromImage(image).T  # (x, y, z): the file's voxel order
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    nib.save(type(source)(data, source.affine, header), str(path))
    return path.name


def _same_nifti_grid(like: Path | None, image: sitk.Image) -> bool:
    """Whether ``like`` is a NIfTI file whose header puts it on ``image``'s grid."""
    if like is None or not like.is_file() or not like.name.lower().endswith((".nii", ".nii.gz")):
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(like))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return reader.GetDimension() == 3 and Grid.of(reader).same_as(Grid.of(image))
