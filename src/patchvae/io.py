"""Safe file handling: atomic artefacts, stale temporaries, what ``--force`` may replace, and
reading users' text files with one-line errors.

Artefacts are written under a temporary name beside their final name (``.NAME.XXXXXXXX.tmp``)
and renamed when complete, so a crash never leaves a half-written file under the final name.
A temporary left by a killed process (``kill -9`` cannot be caught) is removed the next time
that artefact, or the run folder holding it, is written by a process that holds its lock.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from patchvae.errors import DataError, RunDirError

# mkstemp's random part is 8 characters of [a-z0-9_]
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
MAX_TEXT_BYTES = 16 << 20  # settings files and manifests larger than this are refused


def is_temporary(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a temporary file patchvae makes (of artefact ``of``, when given).

    Example
    -------
    >>> is_temporary(".store.h5.k2j_9xq1.tmp", of="store.h5"), is_temporary("store.h5")
    (True, False)
    """
    found = _TEMPORARY.match(name)
    return found is not None and (of is None or found["name"] == of)


def remove_stale_temporaries(folder: str | Path, of: str | None = None) -> list[Path]:
    """Remove patchvae's temporary files in ``folder`` (those of artefact ``of``, or all).

    Only call this while holding the lock of the output they belong to: a temporary of a
    process that is still writing would otherwise be taken from under it.
    """
    folder = Path(folder)
    removed = []
    with suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if not is_temporary(entry.name, of):
                continue
            if entry.is_file(follow_symlinks=False):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):  # an unfinished atomic_folder
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    return removed


# Temporaries this process made and has not yet renamed or removed: a signal can arrive at
# any bytecode, also between creating a temporary and the ``try`` that would remove it, so the
# command line removes whatever is still listed here on its way out.
_live: set[Path] = set()
# Signals that arrive while a temporary is being created (and listed) wait until it is.
_shield: dict[str, Any] = {"depth": 0, "pending": None}


def raise_or_defer(exc: BaseException) -> None:
    """Called by a signal handler: raise ``exc`` now, or at the end of a shielded step."""
    if _shield["depth"]:
        _shield["pending"] = exc
        return
    raise exc


@contextmanager
def shielded() -> Iterator[None]:
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
        pending, _shield["pending"] = _shield["pending"], None
        if pending is not None and not _shield["depth"]:
            raise pending


def remove_live_temporaries() -> None:
    """Remove every temporary this process still has (after an interruption)."""
    for path in list(_live):
        discard_temporary(path)


def temporary_sibling(final: str | Path, folder: bool = False, clean: bool = True) -> Path:
    """Create an empty temporary file (or ``folder``) beside ``final`` (same folder, so a
    rename is atomic), with the permissions a new one gets under the umask (mkstemp alone
    gives 0600); with ``clean``, stale temporaries of ``final`` from killed processes are
    removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temporaries(final.parent, of=final.name)
    with shielded():
        if folder:
            made = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        else:
            fd, made = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
        _live.add(Path(made))
    os.chmod(made, (0o777 if folder else 0o666) & ~_umask())
    return Path(made)


def discard_temporary(path: Path) -> None:
    """Remove a temporary (file or folder) made by :func:`temporary_sibling`."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()
    _live.discard(path)


def rename_temporary(path: Path, final: Path) -> None:
    """Rename a finished temporary to its final name."""
    os.replace(path, final)
    _live.discard(path)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary file lives in the same folder, so the rename is atomic on POSIX. On any
    exception (a full disk, SIGTERM) the temporary file is removed and ``final`` is left as it
    was.

    Example
    -------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text()
    'done'
    """
    final = Path(final)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        rename_temporary(tmp, final)
    except OSError as exc:
        if exc.filename in (None, str(tmp)) and exc.errno:
            # say which artefact could not be written, not its temporary name
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final)) from None
        raise
    finally:
        discard_temporary(tmp)


@contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder of files written together (an analysis): they
    are written into a temporary folder that replaces ``final`` only when all are complete.

    An existing ``final`` is moved aside and removed after the swap: only call this for a
    folder patchvae made and checked (it holds nothing else).
    """
    final = Path(final)
    tmp = temporary_sibling(final, folder=True)
    old: Path | None = None
    try:
        yield tmp
        if final.exists():
            # moved aside, not cleaned: ``tmp`` is a temporary of ``final`` too
            old = temporary_sibling(final, folder=True, clean=False)
            os.replace(final, old)
        rename_temporary(tmp, final)
    finally:
        discard_temporary(tmp)
        if old is not None:
            discard_temporary(old)


@contextmanager
def staged_files(root: str | Path, name: str) -> Iterator[Path]:
    """Files written into ``root`` and its subfolders as one step (a report and its figures):
    yield a temporary folder ``root/.NAME.XXXXXXXX.tmp`` to write them into, laid out as
    ``root``; when the block succeeds each is moved into place (a rename, which needs no
    space), and on any failure none is.
    """
    root = Path(root)
    tmp = temporary_sibling(root / name, folder=True)
    try:
        yield tmp
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            final = root / path.relative_to(tmp)
            final.parent.mkdir(exist_ok=True)
            os.replace(path, final)
    finally:
        discard_temporary(tmp)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomic(final: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result to ``final``."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return Path(final)


def write_text_atomic(final: str | Path, text: str) -> Path:
    return write_atomic(final, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(final: str | Path, payload: Any) -> Path:
    return write_text_atomic(final, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_arrays_atomic(final: str | Path, arrays: dict[str, Any]) -> Path:
    """Named numpy arrays as one compressed ``.npz``, written whole (no pickled objects)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **arrays)

    return write_atomic(final, write)


def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first: the folders a command
    creates, and removes again (when still empty) if it fails."""
    found: list[Path] = []
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        found.append(path)
        path = path.parent
    return found


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder that is empty, deepest first; others stay."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()


def check_replaceable(
    path: str | Path, force: bool, is_ours: Callable[[Path], bool], what: str
) -> None:
    """Refuse an output path that patchvae may not write: anything there that is not a regular
    file (a folder, a link, a FIFO, a device) always; a regular file unless ``force`` is given
    and ``is_ours`` recognises it as an artefact patchvae wrote (by its format marker)."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise RunDirError(f"{path}: is a symbolic link; patchvae never writes through a link")
    if stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"{path}: is a folder; --out must name the {what} file to write")
    if not stat.S_ISREG(info.st_mode):
        raise RunDirError(
            f"{path}: is not a regular file (a device, FIFO or socket); never written"
        )
    article = "an" if what[0] in "aeiou" else "a"
    if not is_ours(path):
        raise RunDirError(
            f"{path}: exists and is not {article} {what} written by patchvae; it is never "
            "replaced (choose another --out)"
        )
    if not force:
        raise RunDirError(f"{path}: already exists; pass --force to replace it, or another --out")


def read_text(path: str | Path, what: str) -> str:
    """A user's text file (settings, manifest) as str: UTF-8, a leading BOM dropped; a missing,
    oversized, binary or non-UTF-8 file is a one-line :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DataError(path, f"{what} is {size:,} bytes; more than {MAX_TEXT_BYTES:,} is refused")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise DataError(path, f"{what} holds NUL bytes; expected a UTF-8 text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, f"{what} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def read_json(path: str | Path, what: str) -> Any:
    """A JSON artefact patchvae wrote; missing or damaged is a one-line :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"{what} is damaged ({type(exc).__name__}); re-create it") from None


def oserror_message(exc: OSError) -> str:
    """One line for an operating-system error: the file and what went wrong."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    if exc.errno == errno.ENOSPC:
        reason += "; nothing half-written was kept, free space and run the same command again"
    return f"{exc.filename}: {reason}" if exc.filename else reason
