"""What made an artefact: versions, time, machine; torch-free (extraction, the analysis and
the report record it too)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any


def versions(*packages: str) -> dict[str, str]:
    """Versions of Python, patchvae, torch, numpy and ``packages``, read from the installed
    distributions' metadata (nothing is imported).

    Example
    -------
    >>> sorted(versions("h5py"))
    ['h5py', 'numpy', 'patchvae', 'python', 'torch']
    """
    found = {"python": platform.python_version()}
    for name in ("patchvae", "torch", "numpy", *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def made_by(device: str | None = None, device_name: str | None = None) -> dict[str, Any]:
    """The provenance every artefact records: versions, time, machine (and device)."""
    info: dict[str, Any] = {
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
    }
    if device is not None:
        info["device"] = device
    if device_name is not None:
        info["device_name"] = device_name
    return info
