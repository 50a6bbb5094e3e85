"""MNIST from the official IDX files: find, validate, select digits, keep the official split.

Three ways to get the files:

* ``--data-dir DIR``: a folder holding the four official files (gzip or not);
* the bundled sample (:func:`bundled_mnist_dir`): real MNIST 7s and 9s shipped in the package;
* :func:`fetch_mnist`: download once from a public mirror into a cache, checksums verified.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from patchvae.data.idx import maybe_gunzip, parse_idx, read_idx_bytes
from patchvae.errors import DataError
from patchvae.io import atomic_path

SPLITS = ("train", "test")
FILE_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
OFFICIAL_COUNTS = {"train": 60_000, "test": 10_000}
# SHA-256 of the *uncompressed* official files: independent of how a copy was gzipped.
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class MnistSplit:
    """One split of MNIST: ``images`` (N, 28, 28) uint8, ``labels`` (N,) int64, provenance."""

    split: str
    images: np.ndarray
    labels: np.ndarray
    sources: dict[str, str]  # file path -> sha256 of its uncompressed bytes

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select_digits(self, digits: Sequence[int]) -> MnistSplit:
        """Keep only the given digits, in the files' order."""
        keep = np.isin(self.labels, np.asarray(list(digits)))
        return MnistSplit(self.split, self.images[keep], self.labels[keep], self.sources)

    def as_float(self) -> np.ndarray:
        """Images scaled to [0, 1] as float32, shape (N, 1, 28, 28) (channel first)."""
        return (self.images.astype(np.float32) / 255.0)[:, None, :, :]


def bundled_mnist_dir() -> Path:
    """Folder of the MNIST sample shipped inside the package (7s and 9s only; see its README)."""
    return Path(str(resources.files("patchvae") / "data" / "sample" / "mnist"))


def default_cache_dir() -> Path:
    """Where :func:`fetch_mnist` keeps its files: ``$PATCHVAE_CACHE/mnist`` or ``~/.cache``."""
    root = os.environ.get("PATCHVAE_CACHE") or Path.home() / ".cache" / "patchvae"
    return Path(root) / "mnist"


def _find_file(folder: Path, stem: str) -> Path:
    # Official names, and the dotted variant some copies use (train-images.idx3-ubyte).
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise DataError(folder, f"no MNIST file {stem}[.gz] in this folder")


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def load_mnist_split(folder: str | Path, split: str) -> MnistSplit:
    """Read and validate one official split (``"train"`` or ``"test"``) from ``folder``.

    Checks the IDX headers, that images are N x 28 x 28 unsigned bytes, that labels are
    digits 0-9, and that both files hold the same number of items.
    """
    folder = Path(folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not folder.is_dir():
        raise DataError(folder, "MNIST data folder not found")
    image_path = _find_file(folder, FILE_STEMS[(split, "images")])
    label_path = _find_file(folder, FILE_STEMS[(split, "labels")])
    image_bytes = read_idx_bytes(image_path)
    label_bytes = read_idx_bytes(label_path)
    images = parse_idx(image_bytes, image_path)
    labels = parse_idx(label_bytes, label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            image_path, f"expected N x 28 x 28 unsigned bytes, found {images.shape} {images.dtype}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(label_path, f"expected N unsigned-byte labels, found {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            label_path,
            f"{labels.shape[0]} labels for {images.shape[0]} images in {image_path.name}",
        )
    if labels.size and labels.max() > 9:
        raise DataError(label_path, f"label {int(labels.max())} is not a digit 0-9")
    sources = {str(image_path): _sha256(image_bytes), str(label_path): _sha256(label_bytes)}
    return MnistSplit(split, images, labels.astype(np.int64), sources)


def load_mnist(folder: str | Path, digits: Sequence[int] = (7, 9)) -> tuple[MnistSplit, MnistSplit]:
    """Load the official train and test splits from ``folder``, keeping only ``digits``.

    Example
    -------
    >>> train, test = load_mnist(bundled_mnist_dir(), digits=(7, 9))
    >>> sorted(set(train.labels.tolist()))
    [7, 9]
    """
    train = load_mnist_split(folder, "train").select_digits(digits)
    test = load_mnist_split(folder, "test").select_digits(digits)
    for part in (train, test):
        missing = sorted(set(digits) - set(np.unique(part.labels).tolist()))
        if missing:
            raise DataError(folder, f"the {part.split} split holds no images of digit(s) {missing}")
    return train, test


def fetch_mnist(
    cache_dir: str | Path | None = None,
    mirrors: Sequence[str] = MIRRORS,
    checksums: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the four official files once into ``cache_dir`` and return that folder.

    Each file is verified against the SHA-256 of its uncompressed official content before it
    is renamed into place, so the cache never holds a partial or wrong file. Files already
    cached and valid are not downloaded again.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    expected_sums = OFFICIAL_SHA256 if checksums is None else checksums
    folder.mkdir(parents=True, exist_ok=True)
    for stem, expected in expected_sums.items():
        final = folder / f"{stem}.gz"
        if final.is_file() and _sha256(read_idx_bytes(final)) == expected:
            continue
        _download_verified(final, stem, expected, mirrors, timeout)
    return folder


def _download_verified(
    final: Path, stem: str, expected: str, mirrors: Sequence[str], timeout: float
) -> None:
    problems = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                blob = response.read()
        except (urllib.error.URLError, OSError) as exc:
            problems.append(f"{url}: {exc}")
            continue
        try:
            digest = _sha256(maybe_gunzip(blob, url))
        except DataError as exc:
            problems.append(str(exc))
            continue
        if digest != expected:
            problems.append(f"{url}: checksum {digest[:12]}... is not the official one")
            continue
        with atomic_path(final) as tmp:
            tmp.write_bytes(blob)
        return
    raise DataError(final, "download failed: " + "; ".join(problems))
