"""One process at a time per output: advisory locks that die with their process.

A run folder is locked on the folder itself (nothing is left behind); an output file (a patch
store, a table) on a ``.NAME.lock`` file beside it, removed on release. ``flock`` locks are
released by the kernel when the process ends, however it ends (``kill -9`` included), so a
crashed run never blocks the next one. Locks are re-entrant within a process: the demo trains
and then analyses the same run folder.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from patchvae.errors import RunDirError
from patchvae.io import remove_stale_temporaries, shielded


@dataclass
class _Held:
    fd: int
    count: int
    lock_file: Path | None


_held: dict[Path, _Held] = {}


def _in_use(path: Path) -> RunDirError:
    return RunDirError(
        f"{path}: in use by another patchvae process; wait for it to finish or choose another --out"
    )


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(path) from None


@contextmanager
def lock_folder(folder: str | Path, create: bool = True) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for this process; stale temporaries in it are
    removed once the lock is held."""
    folder = Path(folder)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    try:
        if _take(key, lambda: _lock_directory(key, folder)):
            remove_stale_temporaries(key)
        yield folder
    finally:
        _release(key)


@contextmanager
def lock_file(path: str | Path) -> Iterator[Path]:
    """Hold the output file ``path`` (through ``.NAME.lock`` beside it) for this process;
    stale temporaries of ``path`` are removed once the lock is held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = path.parent.resolve() / path.name
    try:
        if _take(key, lambda: _lock_marker(key, path)):
            remove_stale_temporaries(key.parent, of=key.name)
        yield path
    finally:
        _release(key)


def _take(key: Path, acquire: Callable[[], _Held]) -> bool:
    """Hold ``key`` (again, if this process holds it already); whether it is newly held. A
    signal cannot cut this in two: the lock is taken and recorded, or neither."""
    with shielded():
        if key in _held:
            _held[key].count += 1
            return False
        _held[key] = acquire()
        return True


def _lock_directory(key: Path, folder: Path) -> _Held:
    fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    _lock(fd, folder)
    return _Held(fd, 1, None)


def _lock_marker(key: Path, path: Path) -> _Held:
    marker = key.parent / f".{key.name}.lock"
    while True:
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # name the output, not our lock file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        _lock(fd, path)
        # another process may have removed the lock file between our open and flock: then
        # we would hold a lock on a file nobody else can see; take the new one instead
        try:
            same = os.stat(marker).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return _Held(fd, 1, marker)
        os.close(fd)


def _release(key: Path) -> None:
    with shielded():
        held = _held.get(key)
        if held is None:  # never taken (it was in use)
            return
        held.count -= 1
        if held.count:
            return
        del _held[key]
        if held.lock_file is not None:
            with suppress(FileNotFoundError):
                held.lock_file.unlink()  # still holding the lock: nobody else is past the check
        os.close(held.fd)
