"""Run folders: one run per folder, its settings file beside its artefacts.

A folder that holds another run is never overwritten; ``resume`` continues a run only with the
settings it was made with (more epochs, or another device, are allowed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from patchvae.config import to_yaml
from patchvae.errors import RunDirError
from patchvae.io import write_text_atomic

SETTINGS_FILE = "settings.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
# Settings that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({"train.epochs", "train.device"})


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def prepare_run_dir(out: str | Path, settings: BaseModel, resume: bool) -> Path:
    """Check ``out`` can take this run, create it, and write ``settings.yaml`` (atomically)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder")
    if resume:
        _check_resume(out, settings)
    elif out.exists() and any(out.iterdir()):
        what = "holds another run" if (out / SETTINGS_FILE).exists() else "is not empty"
        raise RunDirError(
            f"{out}: {what}; pass --resume to continue a run there, or choose a new --out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SETTINGS_FILE, to_yaml(settings))
    return out


def _check_resume(out: Path, settings: BaseModel) -> None:
    settings_path = out / SETTINGS_FILE
    if not settings_path.is_file() or not (out / CHECKPOINT_FILE).is_file():
        raise RunDirError(
            f"{out}: no run to resume here (needs {SETTINGS_FILE} and {CHECKPOINT_FILE})"
        )
    try:
        saved = yaml.safe_load(settings_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise RunDirError(f"{settings_path}: not valid YAML; cannot resume") from None
    old = _flatten(saved if isinstance(saved, dict) else {})
    new = _flatten(settings.model_dump(mode="json"))
    changed = sorted(
        key
        for key in set(old) | set(new)
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key)
    )
    if changed:
        detail = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise RunDirError(f"{out}: cannot resume with other settings ({detail})")
