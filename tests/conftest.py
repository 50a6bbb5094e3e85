from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from patchvae.config import ExtractConfig
from patchvae.data.mnist import bundled_mnist_dir
from patchvae.extract import extract_dataset
from tests.volume_helpers import write_isles2015

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` each worker takes its share of the cores, for torch here and for
    the commands it starts (OpenMP, numba); N workers with a thread per core each made the
    suite crawl on a 16-core machine. A plain ``pytest`` leaves the defaults alone."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    import torch

    threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


@pytest.fixture(scope="session")
def two_case_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cases in the ISLES 2015 layout (the bundled DWI, the second flipped left-right)."""
    import SimpleITK as sitk

    root = write_isles2015(tmp_path_factory.mktemp("siss") / "data", ".nii.gz", n_cases=2)
    for path in (root / "2").glob("*/*.nii.gz"):
        sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(path)), [True, False, False], True), str(path))
    out = tmp_path_factory.mktemp("store") / "siss.h5"
    extract_dataset(ExtractConfig(root=str(root)), out)
    return out


@pytest.fixture(scope="session")
def trained_run(two_case_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r"
    code = cli_code(
        [
            "train",
            "--patches",
            str(two_case_store),
            "--val-cases",
            "2",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            str(run),
        ]
    )
    assert code == 0
    return run


Cli = Callable[[list[str]], tuple[int, str, str]]

# tests that compile with torch.compile: Inductor needs a C++ compiler on the CPU
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler on the CPU",
)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the command line in this process: ``cli(["train", ...])`` gives its exit status,
    stdout and stderr (each call's output only)."""

    def run(args: list[str]) -> tuple[int, str, str]:
        code = cli_code(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def cli_code(args: list[str]) -> int:
    """Run the command line in this process; its exit status."""
    from patchvae.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def gunzip_to(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target


class _FirstTwo:
    """A stand-in for umap-learn's UMAP: the data's first two dimensions."""

    def __init__(self, **settings: object) -> None:
        self.settings = settings

    def fit(self, data: np.ndarray) -> _FirstTwo:
        self.embedding_ = data[:, :2]
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        return data[:, :2]


@pytest.fixture
def stand_in_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """umap-learn replaced by :class:`_FirstTwo` (CI does not install it; the tests are
    about patchvae's part)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_FirstTwo))


def bar_images(n: int, seed: int, kinds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """16x16 images, flattened, a bright bar either across (kind 0) or down (kind 1), at a
    random place, over noise: two groups a classifier of images tells apart at once. The
    kinds are drawn at random unless given."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 2, n) if kinds is None else kinds
    images = rng.uniform(0, 0.3, (n, 16, 16)).astype(np.float32)
    for image, kind, place in zip(images, kinds, rng.integers(3, 13, n), strict=True):
        if kind == 0:
            image[place - 1 : place + 2, 2:14] = 1.0
        else:
            image[2:14, place - 1 : place + 2] = 1.0
    return images.reshape(n, -1), kinds
