"""The versions every artefact records; torch-free (extraction records them too)."""

from __future__ import annotations

import platform
from importlib import metadata


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
