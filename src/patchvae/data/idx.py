"""Reader for the IDX format of the MNIST files (LeCun et al.), plain or gzip-compressed.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data in C order. The type of compression is read from the file's first
bytes, not from its name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from patchvae.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx_bytes(path: str | Path) -> bytes:
    """Return the uncompressed bytes of an IDX file, gzip or not."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    return maybe_gunzip(path.read_bytes(), path)


def maybe_gunzip(raw: bytes, path: str | Path = "<bytes>") -> bytes:
    """Decompress ``raw`` if it starts with the gzip magic bytes, else return it unchanged."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(path, f"corrupt or truncated gzip data ({exc})") from None


def parse_idx(payload: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into an array, checking the header against the data length.

    Parameters
    ----------
    payload
        The file's uncompressed bytes.
    path
        Named in error messages.

    Returns
    -------
    numpy.ndarray with the dimensions the header states, in native byte order.

    Example
    -------
    >>> import struct
    >>> blob = b"\\x00\\x00\\x08\\x01" + struct.pack(">I", 3) + bytes([7, 9, 7])
    >>> parse_idx(blob).tolist()
    [7, 9, 7]
    """
    if len(payload) < 4:
        raise DataError(path, f"not an IDX file: {len(payload)} bytes, too short for a header")
    zero0, zero1, type_code, ndim = payload[0], payload[1], payload[2], payload[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(path, f"not an IDX file: bad magic number 0x{payload[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise DataError(path, "truncated IDX file: header ends early")
    dims = struct.unpack(f">{ndim}I", payload[4:header_len])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(payload) - header_len
    if found < expected:
        raise DataError(
            path,
            f"truncated IDX file: header {tuple(dims)} needs {expected} data bytes, found {found}",
        )
    if found > expected:
        raise DataError(
            path,
            f"malformed IDX file: {found - expected} bytes after the data "
            f"the header {tuple(dims)} declares",
        )
    array = np.frombuffer(payload, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a numpy array."""
    return parse_idx(read_idx_bytes(path), path)


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise an array to IDX bytes (uncompressed); the inverse of :func:`parse_idx`."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"array dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[dtype]]).tobytes()
