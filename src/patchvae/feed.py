"""What the trainer reads: samples held in memory or streamed from a patch store, in an order
that is the same either way.

Each epoch's order is drawn in the main process from the run's shuffle stream
(:func:`epoch_windows`): a training set up to ``window`` samples is one random permutation (as
it always was); a larger one is cut into blocks of contiguous samples (the store's chunks),
the blocks are permuted, and each window of consecutive samples in that sequence is shuffled
within itself. The trainer takes batches of consecutive samples of this order, so whether the
samples come from memory (:class:`ArrayRows`) or from the store (:class:`StoreRows`, read one
window at a time, through a ``DataLoader`` with workers when asked) does not change a number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from patchvae.errors import DataError
from patchvae.store import read_patch_rows

BLOCK = 64  # samples per block: the store's chunk of patches


class Rows:
    """``n`` samples of one shape that can be read by position (0 .. n-1)."""

    n: int
    shape: tuple[int, ...]

    def read(self, index: np.ndarray) -> np.ndarray:
        """Samples at positions ``index`` (any order, repeats allowed), float32."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self.n * int(np.prod(self.shape)) * 4

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """All samples in order, ``size`` at a time."""
        for start in range(0, self.n, size):
            yield self.read(np.arange(start, min(start + size, self.n)))


class ArrayRows(Rows):
    """Samples held in memory (a numpy array or a tensor, N first)."""

    def __init__(self, data: np.ndarray | torch.Tensor) -> None:
        self.data = data
        self.n, self.shape = int(data.shape[0]), tuple(data.shape[1:])

    def read(self, index: np.ndarray) -> np.ndarray:
        data = self.data
        if isinstance(data, torch.Tensor):
            return data[torch.as_tensor(index, dtype=torch.long)].cpu().numpy()
        return np.asarray(data[index], dtype=np.float32)

    def tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.data)


class StoreRows(Rows):
    """Some rows of a patch store's ``patches``, read from the file when asked: contiguous
    runs are read as slices (one chunk read per block), so memory holds what was asked for,
    never the store. The file is opened once per process (each ``DataLoader`` worker has its
    own handle)."""

    def __init__(self, path: str | Path, rows: np.ndarray, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.size > 1 and not (np.diff(self.rows) > 0).all():
            raise ValueError("StoreRows: rows must be increasing")
        self.n, self.shape = int(self.rows.size), tuple(shape)
        self._handle: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:  # sent to workers without the open file
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _dataset(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            import h5py

            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle["patches"]

    def read(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if index.size < 2 or (np.diff(index) > 0).all():  # in order already: no second copy
            return self.read_sorted(index)
        unique, inverse = np.unique(index, return_inverse=True)
        return self.read_sorted(unique)[inverse]

    def read_sorted(self, unique: np.ndarray) -> np.ndarray:
        """Samples at increasing positions ``unique``, read run by run into one array."""
        try:
            return read_patch_rows(self.path, self._dataset(), self.rows[unique])
        except OSError as exc:  # a checksum mismatch, a truncated file
            raise DataError(self.path, f"damaged patch store ({exc})") from None


def epoch_windows(
    n: int, batch_size: int, window: int, generator: torch.Generator
) -> list[np.ndarray]:
    """This epoch's order, as windows of positions; batches are consecutive ``batch_size``
    pieces of the windows put end to end (only the very last batch is smaller).

    Up to ``window`` samples: one random permutation, as :func:`patchvae.batches.batch_indices`
    draws it. More: blocks of :data:`BLOCK` samples in random order, cut into windows of about
    ``window`` samples (a multiple of ``batch_size``), each shuffled within itself.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> [w.size for w in epoch_windows(300, 50, 128, g)]
    [100, 100, 100]
    """
    if n <= window:
        return [torch.randperm(n, generator=generator).numpy()]
    blocks = torch.randperm(-(-n // BLOCK), generator=generator).numpy()
    sequence = (blocks[:, None] * BLOCK + np.arange(BLOCK)).ravel()
    sequence = sequence[sequence < n]
    size = max(batch_size, window // batch_size * batch_size)
    windows = []
    for start in range(0, n, size):
        part = sequence[start : start + size]
        windows.append(part[torch.randperm(part.size, generator=generator).numpy()])
    return windows


class _Windows(IterableDataset):
    """Each item is one window: its samples in stored order, their positions, and the
    window's order as indices into them (``positions[order]`` is the window), so a window is
    held once, not twice; window ``i`` is read by worker ``i % workers``, so a
    ``DataLoader`` yields them in order whatever the number of workers."""

    def __init__(self, rows: Rows, windows: list[np.ndarray]) -> None:
        self.rows, self.windows = rows, windows

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(first, len(self.windows), step):
            positions, order = np.unique(self.windows[i], return_inverse=True)
            samples = self.rows.read(positions)
            yield torch.from_numpy(samples), torch.from_numpy(positions), torch.from_numpy(order)


def stream_windows(
    rows: Rows, windows: list[np.ndarray], workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Read the windows of an epoch in order: (samples, positions, order) per window, the
    window being ``positions[order]`` and its samples ``samples[order]``."""
    if workers == 0:
        yield from _Windows(rows, windows)
        return
    loader = DataLoader(
        _Windows(rows, windows),
        batch_size=None,
        num_workers=min(workers, len(windows)),
        pin_memory=pin,
        prefetch_factor=1,
        persistent_workers=False,
    )
    yield from loader
