"""The VAE family and its typed configs.

The configs import without torch (settings are validated by steps that need no model); the
models load torch when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from patchvae.config.model import VAEConfig

if TYPE_CHECKING:
    from patchvae.models.vae import MLPVAE, VAE, VAEOutput, build_model, count_parameters

__all__ = ["MLPVAE", "VAE", "VAEConfig", "VAEOutput", "build_model", "count_parameters"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from patchvae.models import vae

        return getattr(vae, name)
    raise AttributeError(f"module 'patchvae.models' has no attribute {name!r}")
