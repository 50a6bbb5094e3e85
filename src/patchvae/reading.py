"""Reading one volume file: checked, and each NIfTI file read once.

Every problem is a one-line :class:`~patchvae.errors.DataError` naming the file: missing,
damaged or truncated files, absurd sizes, images that are not one 3-D volume of one value per
voxel, NaN or infinite voxels.
"""

from __future__ import annotations

import io
import re
import threading
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from patchvae.errors import DataError

try:  # ISA-L's inflate (python-isal): zlib's interface and checks, about 1.5x its speed
    from isal.isal_zlib import decompressobj as _inflater
except ImportError:  # a platform without its wheels: the standard library's zlib
    _inflater = zlib.decompressobj  # type: ignore[assignment]

_CHUNK = 1 << 20  # compressed bytes read at a time
_KEEP_BYTES = 256 << 20  # the largest decompressed volume whose buffer is kept for the next
_buffers = threading.local()  # one reused buffer per thread

MAX_VOXELS = 2**29  # one volume (after resampling); 2 GiB as float32
# voxels worked at a time where several passes run over a volume: the passes after the first
# find the block in the core's cache, so the volume crosses the memory bus once. 2**18 (1 MiB
# of float32), not smaller: each block's numpy calls take the GIL again, and with several
# extraction threads 2**16 made them wait on one another (the scale step 2-5x slower)
BLOCK = 1 << 18


class _Owned:
    """An array interface and the object that owns its memory: an array made from it keeps
    the owner alive."""

    def __init__(self, interface: dict[str, Any], owner: object) -> None:
        self.__array_interface__ = interface
        self.owner = owner


class Volume:
    """One volume as read: its voxels, (z, y, x) in the pixel type ITK reads the file as, and
    ITK's geometry (``GetSize``, ``GetSpacing``, ``GetOrigin``, ``GetDirection``, as on an
    image). The SimpleITK image is made on first need (:attr:`image`): a case that needs no
    ITK filter never copies its voxels into one."""

    def __init__(
        self,
        voxels: np.ndarray,
        info: sitk.Image | sitk.ImageFileReader,
        image: sitk.Image | None = None,
    ) -> None:
        self.voxels = voxels
        self._size = tuple(int(v) for v in info.GetSize())
        self._spacing = tuple(info.GetSpacing())
        self._origin = tuple(info.GetOrigin())
        self._direction = tuple(info.GetDirection())
        self._image = image

    @classmethod
    def of(cls, image: sitk.Image) -> Volume:
        """A volume of an image, its voxels a view of the image's buffer that keeps the image
        alive (SimpleITK's own view does not: it outlives the image only to read freed
        memory)."""
        view = sitk.GetArrayViewFromImage(image)
        return cls(np.asarray(_Owned(view.__array_interface__, image)), image, image)

    # SimpleITK's names, so what takes an image's geometry (Grid.of) takes a volume's
    def GetSize(self) -> tuple[int, ...]:
        return self._size

    def GetSpacing(self) -> tuple[float, ...]:
        return self._spacing

    def GetOrigin(self) -> tuple[float, ...]:
        return self._origin

    def GetDirection(self) -> tuple[float, ...]:
        return self._direction

    @property
    def image(self) -> sitk.Image:
        """The SimpleITK image of these voxels and this geometry."""
        if self._image is None:
            image = sitk.GetImageFromArray(self.voxels)
            image.SetOrigin(self._origin)
            image.SetSpacing(self._spacing)
            image.SetDirection(self._direction)
            self._image = image
        return self._image


def read_volume(path: str | Path) -> sitk.Image:
    """Read one 3-D, single-component volume as a SimpleITK image; any other content is a
    one-line DataError (see :func:`read_voxels`)."""
    return read_voxels(path).image


def read_voxels(path: str | Path) -> Volume:
    """Read one 3-D, single-component volume of finite values; anything else is a one-line
    DataError. NIfTI files are decompressed once, by patchvae, and give the voxels ITK would
    give without making an ITK image; other formats are read by ITK."""
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
        read = _read_nifti_once(path, reader) if _is_nifti(path) else reader.Execute()
    except RuntimeError as exc:
        reason = _first_itk_reason(str(exc))
        raise DataError(path, f"cannot be read as an image ({reason})") from None
    if isinstance(read, Volume):
        return read  # a 3-D volume of one component: checked before making it
    image = read
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
    volume = Volume.of(image)
    if not _is_nifti(path):  # NIfTI: its raw voxels were checked (ITK turns NaN into 0)
        check_finite(volume.voxels, path)
    return volume


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _read_nifti_once(path: Path, reader: sitk.ImageFileReader) -> Volume | sitk.Image:
    """A NIfTI volume read once: the file is decompressed once and its raw voxels checked
    (ITK's NIfTI reader reads a truncated file without complaint, the rest left as zeros, and
    turns NaN and infinite voxels into 0: the raw voxels catch both), and the volume takes the
    geometry ITK reads from the header (``reader`` has read only the header), so it is the
    image ITK would give. Scaled voxels (``scl_slope``/``scl_inter``) are scaled as ITK does
    (to float32, then ``value * slope + inter`` in double, stored as float32); any other
    scaled type, or content that is not one 3-D volume, is left to ITK, which then reads the
    file a second time (and gives an image)."""
    try:
        header, data = _nifti_voxels(path)
        slope, inter = header.get_slope_inter()
    except Exception as exc:  # nibabel, zlib and numpy raise several types for damaged files
        reason = str(exc).splitlines()[0].replace(str(path), "").strip(" :")
        raise DataError(path, f"cannot be read as an image ({reason})") from None
    _check_finite_fast(data, path)
    size = tuple(reader.GetSize())
    if (
        reader.GetDimension() != 3
        or reader.GetNumberOfComponents() != 1
        or data.size != int(np.prod(size))
    ):
        return reader.Execute()  # what ITK does itself; its checks follow
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        if reader.GetPixelID() != sitk.sitkFloat32:
            return reader.Execute()  # scaled to double: ITK's own arithmetic
        pixels = _scaled_as_itk(data, float(slope), float(inter))
        _check_finite_fast(pixels, path)  # a huge slope can overflow float32
    else:
        converted = _as_itk_pixels(data, reader.GetPixelID())
        if converted is None:
            return reader.Execute()  # what ITK does itself; its checks follow
        pixels = converted
    kept = getattr(_buffers, "bytes", None)
    if kept is not None and np.may_share_memory(pixels, kept):
        pixels = pixels.copy(order="K")  # the buffer is this thread's next read's
    # (x, y, z) in file order, Fortran-shaped: transposed, the (z, y, x) C-order array ITK's
    # buffer layout gives, without a copy
    return Volume(pixels.reshape(size, order="F").T, reader)


def _scaled_as_itk(data: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """``value * slope + inter`` as ITK computes it for a float32 image: each value to
    float32, then to double for the arithmetic, the result stored as float32. Worked a block
    at a time, so the double temporaries stay small (a whole volume of them would be twice
    its float32 size, written and read again)."""
    out = np.empty_like(data, dtype=np.float32)  # data's shape and memory order
    # both flat in memory order (of ``out``, a fresh contiguous array: a view of it)
    source, target = data.ravel(order="K"), out.ravel(order="K")
    for start in range(0, source.size, BLOCK):
        block = source[start : start + BLOCK].astype(np.float32).astype(np.float64)
        block *= slope
        block += inter
        target[start : start + BLOCK] = block  # rounded to float32, as astype rounds
    return out


def _check_finite_fast(data: np.ndarray, path: Path) -> None:
    """Refuse NaN and infinite voxels; two reductions decide (NaN propagates through min and
    max, infinity is an end), and only a bad volume pays for the count."""
    if data.dtype.kind not in "fc" or not data.size:
        return
    flat = data.ravel(order="K")  # memory order: a view
    for start in range(0, flat.size, BLOCK):  # each block read from memory once, for both
        block = flat[start : start + BLOCK]
        if not (np.isfinite(block.min()) and np.isfinite(block.max())):
            check_finite(data, path)


def _nifti_voxels(path: Path) -> tuple[Any, np.ndarray]:
    """A NIfTI file's header (nibabel) and its raw voxels, (x, y, z, ...) in file order: the
    file is read and decompressed once (gzip's CRC and length are checked), and the voxels
    are a view of those bytes, valid until this thread's next read. A file shorter than its
    header says is refused."""
    raw = _file_bytes(path)
    kind = (
        nib.Nifti2Header
        if bytes(raw[:4]) in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")
        else nib.Nifti1Header
    )
    header = kind.from_fileobj(io.BytesIO(raw[:1024].tobytes()))
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    count, offset = int(np.prod(shape)), int(header["vox_offset"])
    if raw.size < offset + count * dtype.itemsize:
        raise ValueError(
            f"truncated: {raw.size - offset} bytes of voxels, the header needs "
            f"{count * dtype.itemsize}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    if not dtype.isnative:  # big-endian files: numbers in this machine's order
        data = data.astype(dtype.newbyteorder("="))
    return header, data.reshape(shape, order="F")


def _file_bytes(path: Path) -> np.ndarray:
    """The file's bytes, gunzipped if it ends in .gz, in a buffer this thread reuses.

    Decompressing in chunks into a kept buffer, instead of into a new bytes object per file,
    spares the page faults of a fresh allocation the size of the volume, which cost more
    than the inflate itself (benchmarks/extract.py). Every gzip member is checked: CRC,
    length, and a stream that ends early."""
    with path.open("rb") as file:
        if not path.name.lower().endswith(".gz"):
            size = path.stat().st_size
            out = _buffer(size)
            got = file.readinto(out.data[:size])
            return out[:got]
        file.seek(0, 2)
        if file.tell() >= 4:  # gzip's trailer holds the length (mod 2**32): a size hint
            file.seek(-4, 2)
            hint = int.from_bytes(file.read(4), "little")
            file.seek(0)
        else:
            hint = 0
        out, written = _buffer(hint), 0
        inflater, chunk, ended, limit = _inflater(wbits=31), bytearray(_CHUNK), False, 4 * _CHUNK
        while read := file.readinto(chunk):
            pending, full = memoryview(chunk)[:read], False
            while pending or full:  # ``full``: output stopped at the limit, more may follow
                if ended:  # a further gzip member (concatenated .gz files are valid gzip)
                    if not any(pending):  # trailing zeros some writers pad with
                        break
                    inflater, ended = _inflater(wbits=31), False
                piece = inflater.decompress(pending, limit)
                if written + len(piece) > out.size:
                    out = _buffer(max(2 * out.size, written + len(piece)), keep=out[:written])
                out[written : written + len(piece)] = np.frombuffer(piece, np.uint8)
                written, ended, full = written + len(piece), inflater.eof, len(piece) == limit
                pending = memoryview(inflater.unused_data if ended else inflater.unconsumed_tail)
        if not ended:
            raise ValueError("truncated: the compressed stream ends early")
    return out[:written]


def _buffer(size: int, keep: np.ndarray | None = None) -> np.ndarray:
    """A byte buffer of at least ``size``, this thread's kept one where it is big enough;
    ``keep`` is copied to its start. Buffers above _KEEP_BYTES are not kept."""
    kept = getattr(_buffers, "bytes", None)
    if kept is not None and kept.size >= size and keep is None:
        return kept
    fresh = np.empty(size, dtype=np.uint8)
    if keep is not None:
        fresh[: keep.size] = keep
    _buffers.bytes = fresh if size <= _KEEP_BYTES else None
    return fresh


def _as_itk_pixels(data: np.ndarray, pixel: int) -> np.ndarray | None:
    """The voxels in the pixel type ITK reads this file as (ITK gives integers stored with a
    unit scale as float), or None where that is not an exact conversion."""
    if _itk_pixel_of(data.dtype.str) == pixel:
        return data
    exact = {sitk.sitkFloat32: (np.float32, 2**24), sitk.sitkFloat64: (np.float64, 2**53)}
    if pixel in exact and data.dtype.kind in "iu" and data.size:
        dtype, limit = exact[pixel]
        if max(abs(int(data.min())), abs(int(data.max()))) <= limit:
            return data.astype(dtype)
    return None


@cache
def _itk_pixel_of(dtype: str) -> int:
    """The ITK pixel type SimpleITK gives an array of this numpy dtype."""
    return int(sitk.GetImageFromArray(np.zeros((1, 1, 1), dtype=np.dtype(dtype))).GetPixelID())


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
