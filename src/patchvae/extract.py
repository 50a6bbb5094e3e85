"""From a dataset folder to a patch store: discover, preprocess, cut, write, case by case.

Cases are processed one at a time (or by ``workers`` threads, two cases each in flight), so
memory is bounded by a few volumes, never the dataset. The store is written under a
temporary name and renamed only when every case is done; with ``on_error="skip"`` a case that
fails is reported and left out, and nothing is written if no case is left.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from patchvae.config import ExtractConfig
from patchvae.data.volumes import CaseFiles, discover_cases
from patchvae.errors import DataError
from patchvae.io import check_replaceable
from patchvae.locks import lock_file
from patchvae.patches import PatchBatch, extract_patches
from patchvae.preprocess import load_case
from patchvae.store import PatchStoreWriter, file_sha256, is_patch_store
from patchvae.versions import versions


@dataclass
class CaseResult:
    case_id: str
    batch: PatchBatch | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ExtractSummary:
    store: Path | None
    written: list[dict[str, Any]]
    skipped: list[tuple[str, str]]  # (case_id, reason)

    @property
    def patches(self) -> int:
        return sum(c["patches"] for c in self.written)

    @property
    def lesion_patches(self) -> int:
        return sum(c["lesion_patches"] for c in self.written)


def process_case(case: CaseFiles, settings: ExtractConfig) -> CaseResult:
    """Preprocess and cut one case; a DataError becomes the result's ``error``."""
    try:
        normalised = load_case(case, settings)
        batch = extract_patches(
            normalised,
            settings.patch_size,
            settings.grid_stride,
            settings.min_brain,
            settings.lesion_threshold,
        )
    except DataError as exc:
        return CaseResult(case.case_id, error=str(exc))
    sources = {
        name: {"path": str(path), "sha256": file_sha256(path)}
        for name, path in (
            *case.channels.items(),
            ("lesion_mask", case.lesion_mask),
            ("brain_mask", case.brain_mask),
        )
        if path is not None
    }
    info = {
        "shape_zyx": list(normalised.brain.shape),
        "spacing_xyz_mm": list(normalised.spacing),
        # where every patch lies in physical space, and the grid of the file it came from
        "grid": None if normalised.grid is None else normalised.grid.model_dump(mode="json"),
        "source_grid": None
        if normalised.source is None
        else normalised.source.model_dump(mode="json"),
        "brain_voxels": int(normalised.brain.sum()),
        "lesion_voxels": None if normalised.lesion is None else int(normalised.lesion.sum()),
        "preprocessing": normalised.params,
        "sources": sources,
    }
    return CaseResult(case.case_id, batch, info)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42  # Linux prctl options (linux/prctl.h)


@cache
def _libc() -> Any:
    """The C library this process runs on, or None (Windows)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # TypeError: Windows, where there is no such handle
        return None


@cache
def _keep_freed_memory() -> None:
    """With glibc: serve volume-sized arrays from the heap and keep what is freed there for the
    next case, instead of mapping fresh pages for every array of every case, whose page
    faults cost more than the work done on them (the four BraTS cases with one worker,
    interleaved: 0.86-0.87 s against 0.94-0.97 s). Process-wide and done once: memory the
    process frees is reused by it rather than handed back. Without ``mallopt``, nothing."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        mallopt(_M_TRIM_THRESHOLD, 1 << 30)


@contextmanager
def _without_huge_pages() -> Iterator[None]:
    """On Linux: no transparent huge pages while extracting (the setting restored after).
    numpy asks for huge pages for every large array; where the kernel must compact memory
    to find one, the page fault waits, and two worker threads faulting in one address space
    wait on each other. In a new process, the four BraTS cases took 1.23-1.45 s with one
    worker and 0.76-0.87 s with two, against 0.95-0.99 s and 0.60-0.63 s without huge pages
    (benchmarks/extract.py); a warm process loses nothing measurable."""
    prctl = getattr(_libc(), "prctl", None)
    before = prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0) if prctl is not None else -1
    if prctl is None or before < 0 or prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        yield  # not Linux, or a kernel without the option: nothing changed
        return
    try:
        yield
    finally:
        prctl(_PR_SET_THP_DISABLE, before, 0, 0, 0)


def _results(cases: list[CaseFiles], settings: ExtractConfig) -> Generator[CaseResult]:
    """Results in case order; with workers, at most two cases per worker in flight (one
    running, one queued behind it, so no worker waits while the store is written).

    The workers are threads, not processes: reading (inflate), the numpy passes, ITK's
    filters and HDF5's writes all release the GIL, so threads scale as processes would, and
    a case's patches reach the writer without being pickled through a pipe (with processes,
    that copy and the forked workers' first touches of memory cost more CPU than the writing
    itself: benchmarks/extract.py)."""
    if settings.workers == 1:
        for case in cases:
            yield process_case(case, settings)
        return
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="patchvae-extract") as pool:
        pending: list[Future[CaseResult]] = []
        try:
            for case in cases:
                pending.append(pool.submit(process_case, case, settings))
                if len(pending) >= 2 * settings.workers:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:  # an error or an interruption: no queued case starts
            for future in pending:
                future.cancel()


def extract_dataset(
    settings: ExtractConfig,
    out: str | Path,
    on_case: Callable[[CaseResult], None] | None = None,
    cases: list[CaseFiles] | None = None,
    force: bool = False,
) -> ExtractSummary:
    """Discover the cases of ``settings.root`` (or take ``cases``) and write the store ``out``.

    ``on_case`` is called with each case's result as it completes (for progress lines). An
    existing ``out`` is replaced only with ``force`` and only if it is a patch store (never an
    input volume, a manifest, a link or a device); the old store stays until the new one is
    complete.
    """
    out = Path(out)
    check_replaceable(out, force, is_patch_store, "patch store")
    _keep_freed_memory()
    if cases is None:
        cases = discover_cases(settings.root, settings.layout, settings.modalities)
    with lock_file(out), _without_huge_pages():
        check_replaceable(out, force, is_patch_store, "patch store")  # now that we hold it
        return _write_store(settings, out, cases, on_case)


def _write_store(
    settings: ExtractConfig,
    out: Path,
    cases: list[CaseFiles],
    on_case: Callable[[CaseResult], None] | None,
) -> ExtractSummary:
    provenance = {"versions": versions("SimpleITK", "nibabel", "h5py"), "n_cases_found": len(cases)}
    written: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    writer = PatchStoreWriter(
        out, settings.modalities, settings.patch_size, settings.model_dump(mode="json"), provenance
    )
    try:
        with closing(_results(cases, settings)) as results:  # a failure: queued cases not run
            for result in results:
                if on_case is not None:
                    on_case(result)
                if result.error is not None:
                    if settings.on_error == "fail":
                        raise DataError(None, result.error)
                    skipped.append((result.case_id, result.error))
                    continue
                assert result.batch is not None
                written.append(writer.append(result.batch, result.info))
        if not written:
            raise DataError(
                Path(settings.root), f"no case left to write: all {len(skipped)} case(s) failed"
            )
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return ExtractSummary(out, written, skipped)
