from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from patchvae.config import ExtractConfig
from patchvae.data.volumes import bundled_isles22_dir, discover_cases
from patchvae.datasets import PatchDataset
from patchvae.errors import DataError
from patchvae.extract import extract_dataset
from patchvae.patches import reassemble
from patchvae.preprocess import load_case
from patchvae.store import PatchStore, PatchStoreWriter, file_sha256


@pytest.fixture(scope="module")
def bundled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "isles.h5"
    extract_dataset(ExtractConfig(root=str(bundled_isles22_dir())), out)
    return out


def test_store_holds_patches_table_settings_and_sources(bundled_store: Path) -> None:
    store = PatchStore(bundled_store)
    # 179 and 28 are regression values (this version's counts on the bundled case, kept so a
    # change shows); robustness/test_faults.py checks the labels against an independent count
    assert store.n_patches == 179 and store.channels == ["DWI"] and store.patch_size == 28
    table = store.table()
    assert list(table.columns) == [
        "case_id",
        "slice",
        "row",
        "col",
        "brain_fraction",
        "lesion_fraction",
        "label",
    ]
    assert (table.label == 1).sum() == 28 and set(table.case_id) == {"sub-strokecase0009_ses-0001"}
    assert store.settings["patch_size"] == 28 and store.settings["min_brain"] == 0.5
    (case,) = store.cases
    dwi = case["sources"]["DWI"]
    assert dwi["sha256"] == file_sha256(dwi["path"])
    assert (
        case["preprocessing"]["channels"]["DWI"]["clip_high"]
        > case["preprocessing"]["channels"]["DWI"]["clip_low"]
    )
    assert "SimpleITK" in store.provenance["versions"]


def test_store_round_trip_reproduces_normalised_volume(bundled_store: Path) -> None:
    store = PatchStore(bundled_store)
    table = store.table()
    case = load_case(discover_cases(bundled_isles22_dir())[0], ExtractConfig())
    volume, covered = reassemble(
        store.patches(),
        table.slice.to_numpy(),
        table.row.to_numpy(),
        table.col.to_numpy(),
        case.image.shape,
    )
    np.testing.assert_array_equal(volume[:, covered], case.image[:, covered])
    assert case.lesion is not None
    for row in table.itertuples():
        window = case.lesion[row.slice, row.row : row.row + 28, row.col : row.col + 28]
        assert row.lesion_fraction == pytest.approx(window.mean())


def test_masks_under_each_patch(bundled_store: Path) -> None:
    store = PatchStore(bundled_store)
    table = store.table()
    lesion, brain = store.masks("lesion"), store.masks("brain")
    assert lesion.shape == brain.shape == (179, 28, 28)
    np.testing.assert_allclose(lesion.mean(axis=(1, 2)), table.lesion_fraction, rtol=1e-6)
    np.testing.assert_allclose(brain.mean(axis=(1, 2)), table.brain_fraction, rtol=1e-6)
    assert int(lesion.sum()) <= 523  # only lesion voxels under kept patches


def test_patches_by_row_and_torch_dataset(bundled_store: Path) -> None:
    store = PatchStore(bundled_store)
    everything = store.patches()
    rows = np.array([5, 2, 5, 100])
    np.testing.assert_array_equal(store.patches(rows), everything[rows])
    dataset = PatchDataset(store, rows=np.array([3, 7]))
    patch, row = dataset[1]
    assert len(dataset) == 2 and row == 7 and tuple(patch.shape) == (1, 28, 28)
    np.testing.assert_array_equal(patch.numpy(), everything[7])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    with pytest.raises(RuntimeError), PatchStoreWriter(out, ["DWI"], 28, {}):
        raise RuntimeError("crash in the middle")
    assert list(tmp_path.iterdir()) == []


def test_an_interruption_while_opening_leaves_nothing_and_no_late_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal that arrives after HDF5 opened the new store but before the writer holds it
    (SIGTERM just after extraction starts): the file is dropped, and the HDF5 file left
    behind, flushed when Python collects it, raises nothing (it printed two tracebacks)."""
    import gc
    import sys

    class Interrupted(BaseException):
        pass

    opened = h5py.File

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = opened(*args, **kwargs)
        handle.attrs["written"] = 1  # something for HDF5 to flush
        raise Interrupted

    late: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda raised: late.append(raised.exc_value))
    monkeypatch.setattr(h5py, "File", interrupted)
    with pytest.raises(Interrupted):
        PatchStoreWriter(tmp_path / "p.h5", ["DWI"], 4, {})
    gc.collect()
    assert late == [] and list(tmp_path.iterdir()) == []


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(DataError, match="damaged or not a patch store"):
        PatchStore(tmp_path / "x.h5")
    with h5py.File(tmp_path / "y.h5", "w") as handle:
        handle.create_dataset("patches", data=np.zeros((1, 1, 2, 2)))
    with pytest.raises(DataError, match="not a patch store of format"):
        PatchStore(tmp_path / "y.h5")


def test_workers_give_the_same_store(tmp_path: Path, bundled_store: Path) -> None:
    from tests.volume_helpers import write_isles2015

    root = write_isles2015(tmp_path / "siss", ".nii.gz", n_cases=2)
    one = extract_dataset(ExtractConfig(root=str(root)), tmp_path / "one.h5")
    two = extract_dataset(ExtractConfig(root=str(root), workers=2), tmp_path / "two.h5")
    assert [c["case_id"] for c in two.written] == ["1", "2"]
    np.testing.assert_array_equal(PatchStore(one.store).patches(), PatchStore(two.store).patches())  # type: ignore[arg-type]
    # the same real volume in the ISLES 2015 layout gives the patches of the bundled case
    np.testing.assert_array_equal(
        PatchStore(one.store).patches()[:179], PatchStore(bundled_store).patches()
    )  # type: ignore[arg-type]


def test_the_same_extraction_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """A second extraction a second later is the same file byte for byte, so its sha256 (which
    every artefact made from it records) names its content: no time is written into it."""
    import time

    from tests.volume_helpers import write_isles2015

    root = write_isles2015(tmp_path / "siss", ".nii.gz", n_cases=1)
    first = extract_dataset(ExtractConfig(root=str(root)), tmp_path / "first.h5")
    time.sleep(1.1)  # HDF5 keeps object times in whole seconds
    second = extract_dataset(ExtractConfig(root=str(root)), tmp_path / "second.h5")
    assert file_sha256(first.store) == file_sha256(second.store)  # type: ignore[arg-type]


def test_a_failing_case_stops_the_workers_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With workers, a case that fails (on_error fail) leaves no store, and the cases queued
    behind it never start: at most two cases per worker were ever taken. With skip, the
    others are written in case order."""
    import patchvae.extract as extract_module
    from tests.volume_helpers import write_isles2015

    root = write_isles2015(tmp_path / "siss", ".nii.gz", n_cases=8)
    real, started = extract_module.load_case, []

    def load(case, settings, timings=None):  # type: ignore[no-untyped-def]
        started.append(case.case_id)
        if case.case_id == "1":
            raise DataError(Path("damaged.nii.gz"), "truncated")
        return real(case, settings, timings)

    monkeypatch.setattr(extract_module, "load_case", load)
    with pytest.raises(DataError, match=r"damaged\.nii\.gz: truncated"):
        extract_dataset(ExtractConfig(root=str(root), workers=2), tmp_path / "failed.h5")
    assert list(tmp_path.glob("failed*")) == []
    assert "1" in started and len(started) <= 4  # 8 cases, 2 workers: 4 in flight at most

    summary = extract_dataset(
        ExtractConfig(root=str(root), workers=2, on_error="skip"), tmp_path / "skipped.h5"
    )
    assert summary.skipped == [("1", "damaged.nii.gz: truncated")]
    assert [c["case_id"] for c in summary.written] == [str(i) for i in range(2, 9)]


def test_a_signal_while_hdf5_writes_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT/SIGTERM raise from the signal handler wherever Python is; during a store write
    that is inside HDF5's call into the guarded file, where h5py would swallow it. The writer
    holds it until HDF5 returns, then raises it: the store is dropped, nothing is left."""
    from patchvae import store as store_module
    from patchvae.errors import Interrupted
    from patchvae.io import raise_or_defer
    from patchvae.patches import PatchBatch

    n, s = 200, 8
    rng = np.random.default_rng(0)
    batch = PatchBatch(
        "a", rng.random((n, 1, s, s), dtype=np.float32), np.zeros(n, int), np.arange(n),
        np.zeros(n, int), np.ones(n), np.zeros(n), np.zeros(n, int),
        np.ones((n, s, s), np.uint8), np.zeros((n, s, s), np.uint8), n,
    )  # fmt: skip
    write, signals = store_module._GuardedFile.write, []

    def signalled(self, data):  # type: ignore[no-untyped-def]
        if not signals:  # the handler runs once, in the first write HDF5 makes
            signals.append(1)
            raise_or_defer(Interrupted("SIGTERM", 143))
        return write(self, data)

    monkeypatch.setattr(store_module._GuardedFile, "write", signalled)
    with pytest.raises(Interrupted), PatchStoreWriter(tmp_path / "s.h5", ["DWI"], s, {}) as w:
        w.append(batch, {})
        w.append(batch, {})
    assert signals == [1] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only")
def test_huge_pages_are_off_while_extracting_and_restored_after() -> None:
    from patchvae import extract as extract_module

    prctl = extract_module._libc().prctl

    def thp_disabled() -> int:
        return int(prctl(extract_module._PR_GET_THP_DISABLE, 0, 0, 0, 0))

    before = thp_disabled()
    if before < 0 or prctl(extract_module._PR_SET_THP_DISABLE, before, 0, 0, 0) != 0:
        pytest.skip("this kernel (or its sandbox) refuses PR_GET/PR_SET_THP_DISABLE")
    with extract_module._without_huge_pages():
        assert thp_disabled() == 1
    assert thp_disabled() == before
    with pytest.raises(RuntimeError), extract_module._without_huge_pages():
        raise RuntimeError("a failed extraction restores it too")
    assert thp_disabled() == before
