"""Progress of a long loop: a tqdm bar on a terminal, a few plain lines in a log or a pipe."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


class PlainProgress:
    """Progress as a few plain lines (about ten per run) for a log file or a pipe, where a
    progress bar would write thousands of carriage-return updates."""

    def __init__(self, total: int, initial: int, lines: int = 10) -> None:
        self.total, self.done = total, initial
        self.every = max(1, total // lines)
        self.postfix: dict[str, Any] = {}
        self.due = False  # a line is owed: printed with the next figures, or at the end

    def update(self, steps: int = 1) -> None:
        before, self.done = self.done, self.done + steps
        self.due |= self.done // self.every > before // self.every

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.due:
            self._print()

    def _print(self) -> None:
        shown = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"  step {self.done}/{self.total} {shown}".rstrip(), file=sys.stderr, flush=True)
        self.due = False

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.due and exc[0] is None:
            self._print()


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal, a few plain lines otherwise, nothing when disabled."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial)
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )
