"""Atomic file writing: artefacts appear whole under their final name, or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_sibling(final: str | Path) -> Path:
    """Create an empty temporary file beside ``final`` (same folder, so a rename is atomic),
    with the permissions a new file gets under the umask (mkstemp alone gives 0600)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    The temporary file lives in the same folder, so the rename is atomic on POSIX. On any
    exception the temporary file is removed and ``final`` is left as it was.

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
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(final: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result to ``final``."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return Path(final)


def write_text_atomic(final: str | Path, text: str) -> Path:
    return write_atomic(final, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(final: str | Path, payload: Any) -> Path:
    return write_text_atomic(final, json.dumps(payload, indent=2, sort_keys=False) + "\n")
