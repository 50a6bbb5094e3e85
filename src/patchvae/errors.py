"""One exception hierarchy for the project.

The command line turns any :class:`PatchvaeError` into one clear line and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path


def one_line(text: str) -> str:
    """``text`` with control characters (line breaks, tabs, NUL) written as escapes, so a
    message naming a user's odd file or key stays one line.

    Example
    -------
    >>> one_line("bad key 'a\\nb'")
    "bad key 'a\\\\nb'"
    """
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text
    )


class PatchvaeError(Exception):
    """Base class of every error patchvae raises on purpose; its message is one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class DataError(PatchvaeError):
    """Input data is missing, unreadable or malformed."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ConfigError(PatchvaeError):
    """A setting has a value patchvae cannot use."""


class RunDirError(PatchvaeError):
    """The output cannot be used for this run (it holds another run, is not patchvae's, or is
    in use by another patchvae process)."""


class TrainingDiverged(PatchvaeError):
    """The loss became NaN or infinite; the checkpoint keeps the last good epoch."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that no ``except Exception`` swallows it
    and every ``finally`` (temporary files, locks) runs on the way out."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        self.signal_name = signal_name
        self.exit_code = exit_code
        super().__init__(signal_name)
