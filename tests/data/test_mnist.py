from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from patchvae.data.idx import encode_idx
from patchvae.data.mnist import (
    OFFICIAL_SHA256,
    bundled_mnist_dir,
    fetch_mnist,
    load_mnist,
    load_mnist_split,
)
from patchvae.errors import DataError


def test_bundled_sample_holds_real_sevens_and_nines() -> None:
    train, test = load_mnist(bundled_mnist_dir())
    assert (len(train), len(test)) == (3000, 500)
    assert np.bincount(train.labels, minlength=10)[[7, 9]].tolist() == [1500, 1500]
    x = train.as_float()
    assert x.shape == (3000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_digit_selection_keeps_order_and_only_chosen_digits(mnist_copy: Path) -> None:
    full = load_mnist_split(mnist_copy, "train")
    sevens = full.select_digits([7])
    assert set(sevens.labels.tolist()) == {7}
    np.testing.assert_array_equal(sevens.images, full.images[full.labels == 7])


def test_missing_digit_is_an_error(mnist_copy: Path) -> None:
    """A folder whose train split lacks a digit (here: its 3s relabelled as 7s)."""
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    labels = load_mnist_split(mnist_copy, "train").labels.astype(np.uint8)
    path.write_bytes(gzip.compress(encode_idx(np.where(labels == 3, 7, labels).astype(np.uint8))))
    with pytest.raises(DataError, match=r"holds no images of digit\(s\) \[3\]"):
        load_mnist(mnist_copy, digits=(3, 7))


def test_full_mnist_official_split_counts(shared_mnist: Path) -> None:
    train, test = load_mnist(shared_mnist, digits=(7, 9))
    assert (len(train), len(test)) == (12_214, 2_037)
    assert np.bincount(test.labels, minlength=10)[[7, 9]].tolist() == [1028, 1009]
    assert set(train.sources.values()) <= set(OFFICIAL_SHA256.values())


def test_label_count_mismatch(mnist_copy: Path) -> None:
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    labels = load_mnist_split(mnist_copy, "test").labels[:-1].astype(np.uint8)
    path.write_bytes(gzip.compress(encode_idx(labels)))
    with pytest.raises(DataError, match="899 labels for 900 images"):
        load_mnist_split(mnist_copy, "test")


def test_labels_outside_digits(mnist_copy: Path) -> None:
    labels = load_mnist_split(mnist_copy, "test").labels.astype(np.uint8)
    labels[3] = 12
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    with pytest.raises(DataError, match="label 12 is not a digit"):
        load_mnist_split(mnist_copy, "test")


def test_wrong_image_shape(mnist_copy: Path) -> None:
    images = np.zeros((500, 32, 32), np.uint8)
    (mnist_copy / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images)))
    with pytest.raises(
        DataError, match=r"expected N x 28 x 28 unsigned bytes, found \(500, 32, 32\)"
    ):
        load_mnist_split(mnist_copy, "test")


def test_folder_without_mnist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MNIST file train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="MNIST data folder not found"):
        load_mnist(tmp_path / "absent")


def _local_mirror(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A file:// mirror of the bundled sample, with the sample's own checksums."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sums = {}
    for source in bundled_mnist_dir().glob("*.gz"):
        (mirror / source.name).write_bytes(source.read_bytes())
        sums[source.name.removesuffix(".gz")] = hashlib.sha256(
            gzip.decompress(source.read_bytes())
        ).hexdigest()
    return mirror.as_uri() + "/", sums


def test_fetch_verifies_and_caches(tmp_path: Path) -> None:
    url, sums = _local_mirror(tmp_path)
    cache = fetch_mnist(tmp_path / "cache", mirrors=[url], checksums=sums)
    train, _ = load_mnist(cache)
    assert len(train) == 3000
    # a second call downloads nothing: the mirror can vanish
    fetch_mnist(tmp_path / "cache", mirrors=["file:///nonexistent/"], checksums=sums)


def test_fetch_rejects_wrong_checksum_and_leaves_no_file(tmp_path: Path) -> None:
    url, sums = _local_mirror(tmp_path)
    bad = {k: "0" * 64 for k in sums}
    with pytest.raises(DataError, match="is not the official one"):
        fetch_mnist(tmp_path / "cache", mirrors=[url], checksums=bad)
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_tries_the_next_mirror(tmp_path: Path) -> None:
    url, sums = _local_mirror(tmp_path)
    cache = fetch_mnist(tmp_path / "cache", mirrors=["file:///nonexistent/", url], checksums=sums)
    assert len(list(cache.glob("*.gz"))) == 4
