"""The patch store: one HDF5 file with the patches, their provenance table, and the settings,
versions and source files (path and SHA-256) that made them.

Layout::

    /patches            float32 (n, channels, size, size)
    /masks/brain        uint8 (n, size, size): the brain mask under each patch
    /masks/lesion       uint8 (n, size, size): the lesion mask (zeros where a case has none)
    /index/<column>     one dataset per column: case_id, slice, row, col, brain_fraction,
                        lesion_fraction, label
    attrs               format, settings (JSON), channels, patch_size, provenance (JSON),
                        cases (JSON: per case counts, shape, spacing, normalisation, sources)

Written case by case through :class:`PatchStoreWriter`, so memory holds one case at a time,
into a temporary file renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd

from patchvae.errors import DataError
from patchvae.io import temporary_sibling
from patchvae.patches import PatchBatch

STORE_FORMAT = "patchvae-patch-store/2"
MASKS = ("brain", "lesion")
INDEX_COLUMNS = ("slice", "row", "col", "brain_fraction", "lesion_fraction", "label")
_INDEX_DTYPES = {
    "slice": "i4",
    "row": "i4",
    "col": "i4",
    "brain_fraction": "f4",
    "lesion_fraction": "f4",
    "label": "i1",
}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class PatchStoreWriter:
    """Append cases to a new store; the file appears under its name only on a clean ``close``.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.h5"
    >>> with PatchStoreWriter(path, channels=["DWI"], patch_size=4, settings={}) as writer:
    ...     pass
    >>> PatchStore(path).n_patches
    0
    """

    def __init__(
        self,
        path: str | Path,
        channels: Sequence[str],
        patch_size: int,
        settings: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._tmp = temporary_sibling(self.path)
        self._file = h5py.File(self._tmp, "w")
        c, s = len(channels), patch_size
        self._file.create_dataset(
            "patches",
            shape=(0, c, s, s),
            maxshape=(None, c, s, s),
            dtype="f4",
            chunks=(64, c, s, s),
            compression="lzf",
        )
        masks = self._file.create_group("masks")
        for name in MASKS:
            masks.create_dataset(
                name,
                shape=(0, s, s),
                maxshape=(None, s, s),
                dtype="u1",
                chunks=(64, s, s),
                compression="lzf",
            )
        index = self._file.create_group("index")
        index.create_dataset(
            "case_id", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,)
        )
        for column in INDEX_COLUMNS:
            index.create_dataset(
                column, shape=(0,), maxshape=(None,), dtype=_INDEX_DTYPES[column], chunks=(1024,)
            )
        attrs = self._file.attrs
        attrs["format"] = STORE_FORMAT
        attrs["channels"] = json.dumps(list(channels))
        attrs["patch_size"] = patch_size
        attrs["settings"] = json.dumps(settings)
        attrs["provenance"] = json.dumps(provenance or {})
        self._cases: list[dict[str, Any]] = []

    def append(self, batch: PatchBatch, case_info: dict[str, Any]) -> dict[str, Any]:
        """Add one case's patches and its description; return the case's record (with counts)."""
        n_old = self._file["patches"].shape[0]
        n_new = n_old + len(batch)
        patches = self._file["patches"]
        patches.resize(n_new, axis=0)
        patches[n_old:n_new] = batch.pixels
        for name in MASKS:
            dataset = self._file["masks"][name]
            dataset.resize(n_new, axis=0)
            dataset[n_old:n_new] = getattr(batch, f"{name}_mask")
        index = self._file["index"]
        index["case_id"].resize(n_new, axis=0)
        index["case_id"][n_old:n_new] = [batch.case_id] * len(batch)
        for column in INDEX_COLUMNS:
            index[column].resize(n_new, axis=0)
            index[column][n_old:n_new] = getattr(batch, column)
        self._cases.append(
            {
                "case_id": batch.case_id,
                "grid_patches": batch.grid_patches,
                "patches": len(batch),
                "lesion_patches": int((batch.label == 1).sum()),
                **case_info,
            }
        )
        return self._cases[-1]

    def close(self) -> Path:
        self._file.attrs["cases"] = json.dumps(self._cases)
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PatchStoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PatchStore:
    """Read a patch store: patches as numpy or torch, provenance as a pandas table."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "patch store not found")
        try:
            with h5py.File(self.path, "r") as handle:
                attrs = dict(handle.attrs)
                self.n_patches = int(handle["patches"].shape[0])
        except (OSError, KeyError) as exc:
            raise DataError(
                self.path, f"not a readable patch store ({type(exc).__name__})"
            ) from None
        if attrs.get("format") != STORE_FORMAT:
            raise DataError(self.path, f"not a patch store of format {STORE_FORMAT}")
        self.channels: list[str] = json.loads(attrs["channels"])
        self.patch_size = int(attrs["patch_size"])
        self.settings: dict[str, Any] = json.loads(attrs["settings"])
        self.provenance: dict[str, Any] = json.loads(attrs["provenance"])
        self.cases: list[dict[str, Any]] = json.loads(attrs.get("cases", "[]"))

    def table(self) -> pd.DataFrame:
        """One row per patch: case_id, slice, row, col, brain_fraction, lesion_fraction, label."""
        with h5py.File(self.path, "r") as handle:
            index = handle["index"]
            data = {"case_id": index["case_id"].asstr()[:]}
            data.update({column: index[column][:] for column in INDEX_COLUMNS})
        return pd.DataFrame(data)

    def patches(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Patches (n, channels, size, size) float32; all, or the given row numbers."""
        with h5py.File(self.path, "r") as handle:
            data = handle["patches"]
            if rows is None:
                return np.asarray(data[:])
            rows = np.asarray(rows, dtype=np.int64)
            out = np.empty((rows.size, *data.shape[1:]), dtype=np.float32)
            if rows.size:  # h5py reads increasing, unique indices
                unique, inverse = np.unique(rows, return_inverse=True)
                out[:] = data[unique][inverse]
            return out

    def masks(self, name: str) -> np.ndarray:
        """The ``brain`` or ``lesion`` mask under every patch, (n, size, size) bool."""
        if name not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {name!r}")
        with h5py.File(self.path, "r") as handle:
            return np.asarray(handle["masks"][name][:]).astype(bool)
