"""Helpers of the fault-injection tests: snapshots of a folder, small full disks, subprocesses."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from patchvae.io import is_temporary


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a file's bytes, a link's target, else its kind."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            key = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                found[key] = path.read_bytes()
            else:
                found[key] = ("kind", stat.S_IFMT(info.st_mode))
    return found


def assert_kept(before: dict[str, object], root: Path) -> None:
    """Every entry that existed before is still there, byte for byte."""
    after = snapshot(root)
    lost = [key for key in before if key not in after]
    changed = [key for key in before if key in after and after[key] != before[key]]
    assert not lost and not changed, f"lost {lost}, changed {changed}"


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p.name) or p.name.endswith(".lock")]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextmanager
def small_disk(size_kib: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB (read-only if asked: permissions do not stop root), mounted
    for the test; skipped where mounting is not allowed."""
    mount = shutil.which("mount")
    folder = Path(tempfile.mkdtemp(prefix="patchvae-full-"))
    result = (
        subprocess.run(
            [
                mount,
                "-t",
                "tmpfs",
                "-o",
                f"size={size_kib}k" + (",ro" if read_only else ""),
                "tmpfs",
                str(folder),
            ],
            capture_output=True,
        )
        if mount
        else None
    )
    if result is None or result.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root): full-disk test skipped")
    try:
        yield folder
    finally:
        _unmount(folder)
        folder.rmdir()


def _unmount(folder: Path) -> None:
    """Unmount, after letting Python close what the command under test left to the collector
    (an open file keeps the mount busy; in the whole suite this happened once in many runs);
    a mount still busy after 2 s is detached lazily, so the folder can go."""
    import gc

    for _ in range(20):
        gc.collect()
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(folder)], check=False)


def disk_free(folder: Path) -> int:
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def start_cli(args: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "patchvae", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until ``path`` exists (while ``process`` runs)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
