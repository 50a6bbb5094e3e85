"""Reading one volume file: checked, and each NIfTI file read once.

Every problem is a one-line :class:`~patchvae.errors.DataError` naming the file: missing,
damaged or truncated files, absurd sizes, images that are not one 3-D volume of one value per
voxel, NaN or infinite voxels.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from patchvae.errors import DataError

MAX_VOXELS = 2**29  # one volume (after resampling); 2 GiB as float32


def read_volume(path: str | Path) -> sitk.Image:
    """Read one 3-D, single-component volume; any other content is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: refuse absurd sizes before reading
        voxels = int(np.prod(reader.GetSize(), dtype=np.float64))
        if voxels > MAX_VOXELS:
            size = "x".join(str(s) for s in reader.GetSize())
            raise DataError(path, f"the header claims {size} voxels, more than {MAX_VOXELS:,}")
        if path.name.lower().endswith((".nii", ".nii.gz")):
            image = _read_nifti_once(path, reader)
        else:
            image = reader.Execute()
    except RuntimeError as exc:
        reason = _first_itk_reason(str(exc))
        raise DataError(path, f"cannot be read as an image ({reason})") from None
    if image.GetDimension() != 3:
        size = "x".join(str(s) for s in image.GetSize())
        hint = "; give one 3-D volume per channel" if image.GetDimension() > 3 else ""
        raise DataError(
            path, f"expected a 3-D volume, found a {image.GetDimension()}-D image ({size}){hint}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            path, f"expected one value per voxel, found {image.GetNumberOfComponentsPerPixel()}"
        )
    return image


def _read_nifti_once(path: Path, reader: sitk.ImageFileReader) -> sitk.Image:
    """A NIfTI volume read once: the file is decompressed once and its raw voxels checked
    (ITK's NIfTI reader reads a truncated file without complaint, the rest left as zeros, and
    turns NaN and infinite voxels into 0: the raw voxels catch both), and the image takes the
    geometry ITK reads from the header (``reader`` has read only the header), so it is the
    image ITK would give. Scaled voxels (``scl_slope``/``scl_inter``) are checked the same
    way but left to ITK, which scales them in its own way."""
    try:
        header, data = _nifti_voxels(path)
        slope, inter = header.get_slope_inter()
    except Exception as exc:  # nibabel, zlib and numpy raise several types for damaged files
        reason = str(exc).splitlines()[0].replace(str(path), "").strip(" :")
        raise DataError(path, f"cannot be read as an image ({reason})") from None
    if (
        data.dtype.kind in "fc"
        and data.size
        and not (
            np.isfinite(data.min()) and np.isfinite(data.max())  # NaN propagates; inf is an end
        )
    ):
        check_finite(data, path)
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        return reader.Execute()  # scaled voxels: what ITK does itself; its checks follow
    size = tuple(reader.GetSize())
    pixels = _as_itk_pixels(data, reader.GetPixelID())
    if (
        pixels is None
        or reader.GetDimension() != 3
        or reader.GetNumberOfComponents() != 1
        or data.size != int(np.prod(size))
    ):
        return reader.Execute()  # what ITK does itself; its checks follow
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels.reshape(size, order="F").T))
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    return image


def _nifti_voxels(path: Path) -> tuple[Any, np.ndarray]:
    """A NIfTI file's header (nibabel) and its raw voxels, (x, y, z, ...) in file order: the
    file is read and decompressed once, in one piece (gzip checks its CRC and length), and
    the voxels are a view of those bytes. A file shorter than its header says is refused."""
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.decompress(raw)
    kind = (
        nib.Nifti2Header
        if raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")
        else nib.Nifti1Header
    )
    header = kind.from_fileobj(io.BytesIO(raw))
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    count, offset = int(np.prod(shape)), int(header["vox_offset"])
    if len(raw) < offset + count * dtype.itemsize:
        raise ValueError(
            f"truncated: {len(raw) - offset} bytes of voxels, the header needs "
            f"{count * dtype.itemsize}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    if not dtype.isnative:  # big-endian files: numbers in this machine's order
        data = data.astype(dtype.newbyteorder("="))
    return header, data.reshape(shape, order="F")


def _as_itk_pixels(data: np.ndarray, pixel: int) -> np.ndarray | None:
    """The voxels in the pixel type ITK reads this file as (ITK gives integers stored with a
    unit scale as float), or None where that is not an exact conversion."""
    found = sitk.GetImageFromArray(np.zeros((1, 1, 1), dtype=data.dtype)).GetPixelID()
    if found == pixel:
        return data
    exact = {sitk.sitkFloat32: (np.float32, 2**24), sitk.sitkFloat64: (np.float64, 2**53)}
    if pixel in exact and data.dtype.kind in "iu" and data.size:
        dtype, limit = exact[pixel]
        if max(abs(int(data.min())), abs(int(data.max()))) <= limit:
            return data.astype(dtype)
    return None


def _first_itk_reason(message: str) -> str:
    """The core of an ITK exception text: what the reader said, without file paths."""
    for line in message.splitlines():
        if "ITK ERROR" in line:
            core = line.split("): ", 1)[-1].strip()
            return re.sub(r"\s*/\S+", "", core)[:160] or "damaged or unknown format"
    return "damaged or unknown format"


def check_finite(array: np.ndarray, path: Path) -> None:
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise DataError(
            path,
            f"{bad} voxel(s) are NaN or infinite; patchvae refuses them "
            "rather than guess values (fix the file)",
        )
