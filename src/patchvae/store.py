"""The patch store: one HDF5 file with the patches, their provenance table, and the settings,
versions and source files (path and SHA-256) that made them.

Layout::

    /patches            float32 (n, channels, size, size)
    /masks/brain        uint8 (n, size, size): the brain mask under each patch
    /masks/lesion       uint8 (n, size, size): the lesion mask (zeros where a case has none)
    /index/<column>     one dataset per column: case (number of the case in ``cases``),
                        slice, row, col, brain_fraction, lesion_fraction, label
    attrs               format, settings (JSON), channels, patch_size, provenance (JSON),
                        cases (JSON: per case counts, shape, spacing, normalisation, sources)

Written case by case through :class:`PatchStoreWriter`, so memory holds one case at a time,
into a temporary file renamed into place only when complete.

Damage is detected, not read: every dataset chunk carries a Fletcher-32 checksum that HDF5
verifies on each read, and the file uses HDF5's newest format, whose metadata (object headers,
attributes) carry checksums too. A damaged store is a one-line :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd

from patchvae.errors import DataError
from patchvae.io import discard_temporary, rename_temporary, shielded, temporary_sibling
from patchvae.patches import PatchBatch

_FORMAT_NAME = "patchvae-patch-store/"  # + version: the marker of every store patchvae wrote
STORE_FORMAT = f"{_FORMAT_NAME}3"
MASKS = ("brain", "lesion")
INDEX_COLUMNS = ("case", "slice", "row", "col", "brain_fraction", "lesion_fraction", "label")
_INDEX_DTYPES = {
    "case": "i4",
    "slice": "i4",
    "row": "i4",
    "col": "i4",
    "brain_fraction": "f4",
    "lesion_fraction": "f4",
    "label": "i1",
}


def _write_error(path: Path, exc: BaseException) -> DataError:
    """One line for a failed write of the store (a full disk, a read-only folder)."""
    found = re.search(r"errno = (\d+)", str(exc))
    errno = exc.errno if isinstance(exc, OSError) and exc.errno else None
    errno = errno or (int(found[1]) if found else None)
    reason = os.strerror(errno) if errno else f"{type(exc).__name__}: {exc}"
    return DataError(path, f"could not write the patch store ({reason}); nothing was kept")


def is_patch_store(path: str | Path) -> bool:
    """Whether ``path`` is a regular file holding a patch store (of any format version)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            marker = handle.attrs.get("format", "")
    except Exception:  # not HDF5, damaged: not ours to replace
        return False
    return isinstance(marker, str) and marker.startswith(_FORMAT_NAME)


_SHA256_SEEN: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file. A file read once in this process is not read again while its
    inode, size and modification time are unchanged (a store of many GB is checked by
    several stages of one command)."""
    path = Path(path)
    info = path.stat()
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key in _SHA256_SEEN:
        return _SHA256_SEEN[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    _SHA256_SEEN[key] = digest.hexdigest()
    return _SHA256_SEEN[key]


class _GuardedFile(io.RawIOBase):
    """The store's file as HDF5 sees it (h5py's ``fileobj`` driver). A failed write (a full
    disk) is recorded and the rest of the file is discarded instead of failing inside HDF5:
    HDF5 cannot close a file whose writes failed and crashes the interpreter at exit. The
    writer checks :attr:`failed` after every step and drops the file.

    Once closed, it accepts and ignores what HDF5 still sends: an interruption (SIGTERM)
    between opening the HDF5 file and handing it to the writer leaves an HDF5 file the writer
    cannot close, which flushes into this one when Python collects it, after the writer has
    dropped the file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._raw = open(path, "r+b", buffering=0)  # noqa: SIM115 (closed in close())
        self.failed: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return offset if self._raw.closed else self._raw.seek(offset, whence)

    def tell(self) -> int:
        return 0 if self._raw.closed else self._raw.tell()

    def readinto(self, buffer: Any) -> int | None:
        return 0 if self._raw.closed else self._raw.readinto(buffer)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._raw.closed:  # the file was dropped: nothing of it is kept
            return len(view)
        done = 0
        while self.failed is None and done < len(view):
            try:
                done += self._raw.write(view[done:]) or 0
            except OSError as exc:
                self.failed = exc
        if done < len(view):
            self._raw.seek(len(view) - done, os.SEEK_CUR)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self._raw.closed:
            return size or 0
        try:
            return self._raw.truncate(size)
        except OSError as exc:
            self.failed = self.failed or exc
            return size if size is not None else self.tell()

    def flush(self) -> None:
        pass  # unbuffered: every write went to the operating system already

    def close(self) -> None:
        if not self._raw.closed:
            try:
                self._raw.close()
            except OSError as exc:
                self.failed = self.failed or exc
        super().close()


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
        self._guard = _GuardedFile(self._tmp)
        try:
            with shielded():  # a signal while HDF5 writes: raised when it returns (see append)
                self._file = h5py.File(self._guard, "w", libver="latest")
                self._create(len(channels), patch_size)
                attrs = self._file.attrs
                attrs["format"] = STORE_FORMAT
                attrs["channels"] = json.dumps(list(channels))
                attrs["patch_size"] = patch_size
                attrs["settings"] = json.dumps(settings)
                attrs["provenance"] = json.dumps(provenance or {})
            self._check()
        except BaseException as exc:
            self.abort()
            raise self._failure(exc) from None
        self._cases: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self._guard.failed is not None:
            raise _write_error(self.path, self._guard.failed)

    def _failure(self, exc: BaseException) -> BaseException:
        """The error to raise: a failed write said in one line, anything else as it is."""
        if self._guard.failed is not None:
            return _write_error(self.path, self._guard.failed)
        if isinstance(exc, OSError | RuntimeError):
            return _write_error(self.path, exc)
        return exc

    def _create(self, c: int, s: int) -> None:
        checked = {"fletcher32": True, "compression": "lzf"}
        self._file.create_dataset(
            "patches", shape=(0, c, s, s), maxshape=(None, c, s, s), dtype="f4",
            chunks=(64, c, s, s), **checked,
        )  # fmt: skip
        masks = self._file.create_group("masks")
        for name in MASKS:
            masks.create_dataset(
                name, shape=(0, s, s), maxshape=(None, s, s), dtype="u1", chunks=(64, s, s),
                **checked,
            )  # fmt: skip
        index = self._file.create_group("index")
        for column in INDEX_COLUMNS:
            index.create_dataset(
                column, shape=(0,), maxshape=(None,), dtype=_INDEX_DTYPES[column],
                chunks=(1024,), **checked,
            )  # fmt: skip

    def append(self, batch: PatchBatch, case_info: dict[str, Any]) -> dict[str, Any]:
        """Add one case's patches and its description; return the case's record (with counts)."""
        try:
            # HDF5 calls into the guarded file from C, and h5py swallows what is raised there:
            # a SIGINT/SIGTERM that lands in that call would be lost. Shielded, it is held
            # until HDF5 returns and raised here.
            with shielded():
                self._append(batch)
            self._check()
        except BaseException as exc:
            self.abort()
            raise self._failure(exc) from None
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

    def _append(self, batch: PatchBatch) -> None:
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
        for column in INDEX_COLUMNS:
            index[column].resize(n_new, axis=0)
            index[column][n_old:n_new] = (
                len(self._cases) if column == "case" else getattr(batch, column)
            )

    def close(self) -> Path:
        """Finish the file and rename it into place (a failure removes it, and says why)."""
        try:
            with shielded():
                self._file.attrs["cases"] = json.dumps(self._cases)
                self._file.close()
                self._guard.close()
            self._check()
            rename_temporary(self._tmp, self.path)
        except BaseException as exc:
            self.abort()
            raise self._failure(exc) from None
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file; never raises (it runs while another error is raised)."""
        with suppress(Exception):
            self._file.close()
        with suppress(Exception):
            self._guard.close()
        discard_temporary(self._tmp)

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
    """Read a patch store: patches as numpy or torch, provenance as a pandas table.

    Every read is checked: a damaged chunk fails its checksum, and patches must be finite and
    in [0, 1]; either is a one-line :class:`DataError` naming the store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "patch store not found")
        with self._open() as handle:
            attrs = dict(handle.attrs)
            if attrs.get("format") != STORE_FORMAT:
                raise DataError(self.path, _format_problem(attrs.get("format")))
            try:
                self.n_patches = int(handle["patches"].shape[0])
                self.channels: list[str] = json.loads(attrs["channels"])
                self.patch_size = int(attrs["patch_size"])
                self.settings: dict[str, Any] = json.loads(attrs["settings"])
                self.provenance: dict[str, Any] = json.loads(attrs["provenance"])
                self.cases: list[dict[str, Any]] = json.loads(attrs["cases"])
                shapes = {handle[f"index/{c}"].shape for c in INDEX_COLUMNS}
                shapes |= {handle[f"masks/{m}"].shape[:1] for m in MASKS}
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(
                    self.path, f"damaged patch store ({type(exc).__name__}: {exc})"
                ) from None
        if shapes != {(self.n_patches,)}:
            raise DataError(self.path, "damaged patch store (its tables differ in length)")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every patch: the input shape of a model trained on it."""
        return (len(self.channels), self.patch_size, self.patch_size)

    @contextmanager
    def _open(self) -> Iterator[h5py.File]:
        """The HDF5 file; damage anywhere in what the block reads is a one-line DataError."""
        try:
            with h5py.File(self.path, "r") as handle:
                yield handle
        except (OSError, RuntimeError, KeyError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(self.path, f"damaged or not a patch store ({_short(detail)})") from None

    def table(self) -> pd.DataFrame:
        """One row per patch: case_id, slice, row, col, brain_fraction, lesion_fraction, label."""
        with self._open() as handle:
            columns = {column: handle["index"][column][:] for column in INDEX_COLUMNS}
        codes = columns.pop("case")
        names = np.array([case["case_id"] for case in self.cases], dtype=object)
        if codes.size and (codes.min() < 0 or codes.max() >= names.size):
            raise DataError(self.path, "damaged patch store (case numbers out of range)")
        return pd.DataFrame({"case_id": names[codes] if codes.size else [], **columns})

    def patches(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Patches (n, channels, size, size) float32; all, or the given row numbers."""
        with self._open() as handle:
            data = handle["patches"]
            if rows is None:
                out = np.asarray(data[:])
                check_patch_values(self.path, out)
                return out
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size < 2 or (np.diff(rows) > 0).all():  # in order already: no gather
                return read_patch_rows(self.path, data, rows)
            unique, inverse = np.unique(rows, return_inverse=True)
            return read_patch_rows(self.path, data, unique)[inverse]

    def masks(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The ``brain`` or ``lesion`` mask under every patch (or the patches at increasing
        row numbers ``rows``), (n, size, size) bool."""
        if name not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {name!r}")
        with self._open() as handle:
            if rows is None:
                return np.asarray(handle["masks"][name][:]).astype(bool)
            rows = np.asarray(rows, dtype=np.int64)
            return read_patch_rows(self.path, handle["masks"][name], rows).astype(bool)


def read_patch_rows(path: Path, dataset: Any, rows: np.ndarray) -> np.ndarray:
    """The patches at increasing row numbers ``rows`` of a store's ``patches`` dataset, read
    one contiguous run at a time (a slice: whole chunks, not h5py's point selection), and
    checked. The one way rows are read, by :class:`PatchStore` and by the training stream."""
    out = np.empty((rows.size, *dataset.shape[1:]), dtype=np.float32)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks]).tolist()
    ends = np.concatenate([breaks, [rows.size]]).tolist()
    for a, b in zip(starts, ends, strict=True):
        if b > a:
            dataset.read_direct(out, np.s_[rows[a] : rows[b - 1] + 1], np.s_[a:b])
    check_patch_values(path, out)
    return out


def check_patch_values(path: Path, patches: np.ndarray) -> None:
    """Patches are finite and in [0, 1]; anything else is a damaged store."""
    if patches.size and not (
        np.isfinite(patches).all() and patches.min() >= 0 and patches.max() <= 1
    ):
        raise DataError(path, "damaged patch store (patch values outside [0, 1])")


def _format_problem(found: object) -> str:
    if isinstance(found, str) and found.startswith(_FORMAT_NAME):
        return (
            f"a patch store of the older format {found} (no checksums); run `patchvae extract` "
            f"again to write {STORE_FORMAT}"
        )
    return f"not a patch store of format {STORE_FORMAT}"


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."
