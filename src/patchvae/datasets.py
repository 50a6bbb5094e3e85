"""PyTorch views of patchvae's artefacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from patchvae.store import PatchStore


class PatchDataset(Dataset):
    """A PyTorch dataset over a store (loaded into memory): item i is (patch tensor, row i)."""

    def __init__(self, store: PatchStore | str | Path, rows: np.ndarray | None = None) -> None:
        store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.rows = np.arange(store.n_patches) if rows is None else np.asarray(rows)
        self.data = torch.from_numpy(store.patches(self.rows))

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        return self.data[item], int(self.rows[item])
