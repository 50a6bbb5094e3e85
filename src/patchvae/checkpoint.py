"""Checkpoints: weights, optimiser and RNG state, configs and metadata, written atomically.

The model config is stored as plain JSON-able data, so a checkpoint rebuilds its model with no
code edits: ``load_model(path)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from patchvae.config.model import VAEConfig, upgrade_saved_model
from patchvae.errors import DataError
from patchvae.io import atomic_path
from patchvae.models.vae import VAE, build_model

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (must hold ``model_config`` and ``model_state``) atomically."""
    for key in ("model_config", "model_state"):
        if key not in payload:
            raise ValueError(f"checkpoint payload lacks {key!r}")
    # serialised in memory, then written by Python: torch's own writer reports a full disk as
    # an unexplained RuntimeError, Python as the OSError it is
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(path, f"not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(path, "not a patchvae checkpoint of a known format")
    return payload


def checkpoint_epoch(path: str | Path, payload: dict[str, Any] | None = None) -> int:
    """How many epochs a checkpoint holds (from its ``payload`` when already loaded)."""
    epoch = (payload if payload is not None else load_checkpoint(path)).get("epoch")
    if not isinstance(epoch, int) or epoch < 0:
        raise DataError(path, "the checkpoint records no epoch count")
    return epoch


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """Rebuild the model a checkpoint holds, weights loaded, in eval mode.

    Example
    -------
    >>> import tempfile, pathlib
    >>> from patchvae.models import VAEConfig, build_model
    >>> model = build_model(VAEConfig())
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "ckpt.pt"
    ...     _ = save_checkpoint(p, {"model_config": model.config.model_dump(mode="json"),
    ...                             "model_state": model.state_dict()})
    ...     load_model(p).config == model.config
    True
    """
    return model_from_payload(load_checkpoint(path, map_location), path, map_location)


def model_from_payload(
    payload: dict[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> VAE:
    """The model of an already loaded checkpoint ``payload`` (read from ``path``)."""
    config = payload.get("model_config")
    if isinstance(config, dict):
        config = upgrade_saved_model(config)  # as patchvae 0.1 saved them
    try:
        model = build_model(VAEConfig.model_validate(config))
        model.load_state_dict(payload["model_state"])
    except (ValidationError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            path, f"the weights do not fit the model settings it holds ({type(exc).__name__})"
        ) from None
    model.to(map_location)
    model.eval()
    return model
