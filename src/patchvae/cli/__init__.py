"""The ``patchvae`` command: one sub-command per stage, plus ``demo``.

Thin by design: it parses, validates, calls library functions and prints. Any
:class:`~patchvae.errors.PatchvaeError` becomes one line on stderr and exit status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from patchvae.cli import stages, studies  # noqa: F401  (registers the commands)
from patchvae.cli.app import app, state
from patchvae.errors import Interrupted, PatchvaeError, one_line
from patchvae.io import oserror_message, raise_or_defer, remove_live_temporaries


def expand_multi_value_options(
    argv: list[str], options: tuple[str, ...] = ("--digits", "--val-cases", "--seeds")
) -> list[str]:
    """Turn ``--digits 7 9`` into ``--digits 7 --digits 9``: click options take one value each.

    Example
    -------
    >>> expand_multi_value_options(["mnist", "--digits", "7", "9", "--out", "r"])
    ['mnist', '--digits', '7', '--digits', '9', '--out', 'r']
    """
    expanded: list[str] = []
    pending: str | None = None  # the multi-value option whose values are being read
    taken = 0
    for token in argv:
        if pending is not None and not token.startswith("--"):
            expanded += [pending, token]
            taken += 1
            continue
        if pending is not None and taken == 0:
            expanded.append(pending)  # no value: click reports it
        pending = None
        if token in options:
            pending, taken = token, 0
            continue
        expanded.append(token)
    if pending is not None and taken == 0:
        expanded.append(pending)
    return expanded


def _raise_interrupted(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    raise_or_defer(Interrupted(name, 128 + signum))


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (not KeyboardInterrupt, which typer turns
    into a silent exit), so temporary files are removed on the way out and one line is said."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(message: str, code: int) -> None:
    typer.echo(f"patchvae: {one_line(message)}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    state["debug"] = "--debug" in args[:1]
    hook = sys.unraisablehook
    if not state["debug"]:
        # h5py reports errors of objects closed during a failure (a full disk) through this
        # hook, hundreds of lines; the error that caused them is said in one line below
        sys.unraisablehook = lambda unraisable: None
    try:
        with _signals_raise():
            # standalone mode: typer reports usage errors itself (exit 2) and exits with the status
            app(args=args, prog_name="patchvae")
    except Interrupted as stop:
        remove_live_temporaries()
        what = "interrupted" if stop.signal_name == "SIGINT" else "terminated"
        _fail(
            f"{what} ({stop.signal_name}); no half-written file was kept; run the same command "
            "again (a training run continues from its last epoch with --resume)",
            stop.exit_code,
        )
    except PatchvaeError as exc:
        if state["debug"]:
            raise
        _fail(f"error: {exc}", 2)
    except OSError as exc:
        if state["debug"]:
            raise
        _fail(f"error: {oserror_message(exc)}", 2)
    except MemoryError:
        if state["debug"]:
            raise
        _fail("error: out of memory (the input is larger than this machine can hold)", 2)
    except Exception as exc:
        if state["debug"]:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1)
    finally:
        sys.unraisablehook = hook
