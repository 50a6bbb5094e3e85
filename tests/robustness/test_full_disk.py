"""A full disk for every command that writes: one line, a non-zero exit, nothing left behind.

The disk is a small tmpfs mounted by the test (skipped with a reason where mounting is not
allowed). Where the command reads a run folder, a copy of it is put on the disk first, with a
little room to spare, so that the command's own writes are what fill it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchvae.data.volumes import bundled_isles22_dir
from patchvae.tables import read_embedding
from tests.conftest import Cli
from tests.robustness.fault_helpers import assert_kept, one_line, small_disk, snapshot, temporaries

FULL = ("No space left on device", "could not write")


def _size_kib(folder: Path, room: int) -> int:
    """What ``folder`` takes on a tmpfs, in KiB (whole pages per file), plus ``room``."""
    pages = sum(-(-p.stat().st_size // 4096) for p in folder.rglob("*") if p.is_file())
    return 4 * pages + 4 * sum(1 for p in folder.rglob("*") if p.is_dir()) + room


@pytest.mark.parametrize(
    "command", ["extract", "train", "mnist", "embed", "compare", "demo", "analyze", "report"]
)
def test_full_disk(
    command: str,
    tmp_path: Path,
    cli: Cli,
    two_case_store: Path,
    trained_run: Path,
) -> None:
    needs_run = command in ("analyze", "report")
    if command == "report":  # a run with an analysis, whose report no longer fits
        run = tmp_path / "run"
        shutil.copytree(trained_run, run)
        assert cli(["analyze", str(run), "--patches", str(two_case_store)])[0] == 0
        (run / "report.html").unlink(missing_ok=True)
    else:
        run = trained_run
    # room for a little of the command's writes: an analysis writes about 100 KiB, a report
    # its figures (several 100 KiB)
    room = 32 if command == "analyze" else 96
    size = _size_kib(run, room) if needs_run else 16 if command == "embed" else 64
    with small_disk(size) as disk:
        if needs_run:
            shutil.copytree(run, disk / "run")
        grid = tmp_path / "grid.yaml"
        grid.write_text("dataset: mnist\nseeds: [0]\nmodels: [{name: a, train: {epochs: 1}}]\n")
        store, out = str(two_case_store), str(disk / "out")
        args = {
            "extract": ["extract", "--root", str(bundled_isles22_dir()), "--out", f"{out}.h5"],
            "train": ["train", "--patches", store, "--epochs", "1", "--quiet", "--out", out],
            "mnist": ["mnist", "--sample", "--epochs", "1", "--quiet", "--out", out],
            "embed": ["embed", str(run), "--patches", store, "--out", f"{out}.csv"],
            "compare": ["compare", "--config", str(grid), "--out", out],
            "demo": ["demo", "--epochs", "1", "--quiet", "--out", out],
            "analyze": ["analyze", str(disk / "run"), "--patches", store],
            "report": ["report", str(disk / "run")],
        }[command]
        before = snapshot(disk)
        code, _, err = cli(args)
        line = one_line(err)
        assert code == 2 and any(m in line for m in FULL), line
        assert_kept(before, disk)
        extra = sorted(set(snapshot(disk)) - set(before))
        if command == "analyze" and extra:
            # the embedding stage finished before the analysis filled the disk: its table is
            # whole (and reused by the next analyze), only the analysis is missing
            assert extra == ["run/embedding-siss.parquet"], extra
            read_embedding(disk / extra[0])
        else:
            assert not extra, f"a partial artefact was left: {extra}"
        assert not temporaries(disk)


@pytest.mark.parametrize("command", ["extract", "train", "mnist", "demo"])
def test_read_only_output(command: str, cli: Cli, two_case_store: Path) -> None:
    with small_disk(64, read_only=True) as disk:
        out = str(disk / "out")
        args = {
            "extract": ["extract", "--root", str(bundled_isles22_dir()), "--out", f"{out}.h5"],
            "train": ["train", "--patches", str(two_case_store), "--quiet", "--out", out],
            "mnist": ["mnist", "--sample", "--epochs", "1", "--quiet", "--out", out],
            "demo": ["demo", "--epochs", "1", "--quiet", "--out", out],
        }[command]
        code, _, err = cli(args)
        assert code == 2 and "Read-only file system" in one_line(err) and out in err, err
        assert not list(disk.iterdir())
