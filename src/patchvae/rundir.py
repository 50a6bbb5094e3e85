"""Run folders: one run per folder, owned by one process at a time, settings beside artefacts.

A folder that holds another run is never overwritten. ``resume`` continues a run only with the
settings it was made with (more epochs, or another device, are allowed); everything is checked
before ``settings.yaml`` is (re)written, so a refused command changes nothing. A run stopped
before its first checkpoint left nothing trained: it may be started again, with or without
``--resume``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from patchvae.artefacts import (
    ANALYSIS_FILES,
    ANALYSIS_PREFIX,
    CHECKPOINT_FILE,
    MAPS_DIR,
    SETTINGS_FILE,
    STEPS_DIR,
    STEPS_PATTERN,
    TENSORBOARD_DIR,
    TENSORBOARD_PATTERN,
    is_run_file,
)
from patchvae.config import as_read_today, to_yaml
from patchvae.errors import RunDirError
from patchvae.io import (
    is_temporary,
    missing_folders,
    read_text,
    remove_empty,
    write_text_atomic,
)
from patchvae.locks import lock_folder

# Settings of an MNIST run's analysis only (what is read off the trained model): resuming a
# finished run with others analyses it again, its training untouched.
ANALYSIS_ONLY = frozenset({"umap", "self_training"})
# Settings that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({"train.epochs", "train.device"}) | ANALYSIS_ONLY


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _contents(out: Path) -> list[str]:
    return sorted(name for name in os.listdir(out) if not is_temporary(name))


@contextmanager
def open_run_dir(out: str | Path, settings: BaseModel, resume: bool) -> Iterator[bool]:
    """Lock ``out`` for this process, check it can take this run, write ``settings.yaml``
    (atomically), and yield whether there is a checkpoint to continue from.

    The lock is held until the block ends; a second process on the same folder gets a
    :class:`RunDirError` at once.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder")
    if resume and not out.is_dir():
        raise RunDirError(f"{out}: no run to resume here (the folder does not exist)")
    created = missing_folders(out)
    with lock_folder(out):
        present = _contents(out)
        has_checkpoint = (out / CHECKPOINT_FILE).is_file()
        unstarted = not has_checkpoint and set(present) <= {SETTINGS_FILE}
        if resume and has_checkpoint:
            _check_resume(out, settings)
        elif not unstarted:
            what = "holds another run" if SETTINGS_FILE in present else "is not empty"
            hint = (
                "it has no checkpoint to resume and holds other files"
                if resume
                else "pass --resume to continue a run there, or choose a new --out folder"
            )
            raise RunDirError(f"{out}: {what}; {hint}")
        try:
            write_text_atomic(out / SETTINGS_FILE, to_yaml(settings))
            yield resume and has_checkpoint
        except BaseException:
            if not (out / CHECKPOINT_FILE).is_file():
                # nothing was trained: leave the folder as it was found (or gone)
                (out / SETTINGS_FILE).unlink(missing_ok=True)
                remove_empty(created)
            raise


def saved_settings(out: str | Path) -> dict[str, Any]:
    """The settings a run folder was made with, as plain data."""
    path = Path(out) / SETTINGS_FILE
    try:
        saved = yaml.safe_load(read_text(path, "settings file"))
    except yaml.YAMLError:
        raise RunDirError(f"{path}: not valid YAML; cannot resume") from None
    if not isinstance(saved, dict):
        raise RunDirError(f"{path}: not a settings file of a run")
    return saved


def _check_resume(out: Path, settings: BaseModel) -> None:
    from patchvae.checkpoint import checkpoint_epoch  # torch: only when resuming

    old = _flatten(as_read_today(type(settings), saved_settings(out)))
    new = _flatten(settings.model_dump(mode="json"))
    changed = sorted(
        key
        for key in set(old) | set(new)
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key)
    )
    if changed:
        detail = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise RunDirError(f"{out}: cannot resume with other settings ({detail})")
    done, asked = checkpoint_epoch(out / CHECKPOINT_FILE), new.get("train.epochs")
    if isinstance(asked, int) and done > asked:
        raise RunDirError(
            f"{out}: the checkpoint already holds {done} epochs, more than --epochs {asked}; "
            "nothing was changed"
        )


def own_run_files(run: str | Path) -> list[Path]:
    """Every file of a run folder patchvae made, for removing it; a :class:`RunDirError`
    naming the first file patchvae did not write, in which case nothing may be removed."""
    run = Path(run)
    if not (run / SETTINGS_FILE).is_file():
        raise RunDirError(f"{run}: not a run folder made by patchvae (no {SETTINGS_FILE})")
    files: list[Path] = []
    for entry in sorted(run.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and entry.name.startswith(ANALYSIS_PREFIX):
            for inner in sorted(entry.iterdir()):
                if inner.name == MAPS_DIR and inner.is_dir() and not inner.is_symlink():
                    files += _own_maps(inner)
                    continue
                _own(inner, inner.name in ANALYSIS_FILES)
                files.append(inner)
            continue
        logs = {TENSORBOARD_DIR: TENSORBOARD_PATTERN, STEPS_DIR: STEPS_PATTERN}
        if entry.is_dir() and not entry.is_symlink() and entry.name in logs:
            for inner in sorted(entry.iterdir()):
                _own(inner, fnmatch.fnmatch(inner.name, logs[entry.name]))
                files.append(inner)
            continue
        _own(entry, is_run_file(entry.name))
        files.append(entry)
    return files


def _own_maps(maps: Path) -> list[Path]:
    """The score maps of an analysis: ``maps/<case>/<score>.nii.gz``, nothing else."""
    files: list[Path] = []
    for case in sorted(maps.iterdir()):
        if not case.is_dir() or case.is_symlink():
            _own(case, False)
        for inner in sorted(case.iterdir()):
            _own(inner, inner.name.endswith(".nii.gz"))
            files.append(inner)
    return files


def _own(path: Path, known: bool) -> None:
    if not (known or is_temporary(path.name)) or path.is_symlink() or not path.is_file():
        raise RunDirError(
            f"{path}: was not written by patchvae; it is never removed (move it, or choose "
            "another --out)"
        )
