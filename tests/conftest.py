from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from patchvae.data.mnist import bundled_mnist_dir

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_mnist() -> Path:
    folder = SHARED_DATA / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"full MNIST not found at {folder} (../shared/data is a developer-only folder)")
    return folder


@pytest.fixture
def mnist_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample, to damage in tests."""
    target = tmp_path / "mnist"
    shutil.copytree(bundled_mnist_dir(), target)
    return target


def gunzip_to(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target
