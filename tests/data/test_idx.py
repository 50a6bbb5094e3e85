from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from patchvae.data.idx import encode_idx, parse_idx, read_idx
from patchvae.data.mnist import bundled_mnist_dir
from patchvae.errors import DataError


def test_reads_real_gzipped_and_plain_files_identically(tmp_path: Path) -> None:
    gz = bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz"
    plain = tmp_path / "t10k-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    a, b = read_idx(gz), read_idx(plain)
    assert a.shape == (900, 28, 28) and a.dtype == np.uint8  # the bundled sample's test split
    np.testing.assert_array_equal(a, b)
    assert 0 < a.mean() < 255  # real strokes, not an empty array


def test_encode_parse_round_trip_all_types() -> None:
    rng = np.random.default_rng(0)
    for dtype in ("u1", "i1", "i2", "i4", "f4", "f8"):
        array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
        np.testing.assert_array_equal(parse_idx(encode_idx(array)), array)


def test_header_is_big_endian() -> None:
    blob = b"\x00\x00\x0c\x01" + struct.pack(">I", 2) + struct.pack(">2i", 1, -2)
    assert parse_idx(blob).tolist() == [1, -2]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "too short"),
        (b"PK\x03\x04" + b"\x00" * 20, "bad magic"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic"),  # unknown type code
        (b"\x00\x00\x08\x03\x00\x00", "header ends early"),
    ],
)
def test_not_idx_is_a_clear_error(payload: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_idx(payload, "f.idx")


def test_truncated_plain_file_names_file_and_sizes(tmp_path: Path) -> None:
    good = gzip.decompress((bundled_mnist_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = tmp_path / "labels"
    path.write_bytes(good[:-10])
    with pytest.raises(
        DataError, match=r"labels: truncated IDX file: .*needs 900 data bytes, found 890"
    ):
        read_idx(path)


def test_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    good = gzip.decompress((bundled_mnist_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = tmp_path / "labels"
    path.write_bytes(good + b"\x01\x02")
    with pytest.raises(DataError, match="2 bytes after the data"):
        read_idx(path)


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    raw = (bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz").read_bytes()
    path = tmp_path / "images.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"images\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_corrupted_gzip_is_a_clear_error(tmp_path: Path) -> None:
    raw = bytearray((bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw[200:260] = bytes(60)  # damage the deflate stream
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")
