"""Building a VAE from its config: one entry point over the architectures.

``VAE``, ``VAEOutput`` and ``MLPVAE`` are re-exported here for the code that imports them from
this module.
"""

from __future__ import annotations

from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.base import VAE, VAEOutput
from patchvae.models.conv import ConvVAE
from patchvae.models.dae import DenoisingAE
from patchvae.models.mlp import MLPVAE

__all__ = [
    "MLPVAE",
    "VAE",
    "ConvVAE",
    "DenoisingAE",
    "VAEOutput",
    "build_model",
    "count_parameters",
]
ARCHITECTURES: dict[str, type[VAE]] = {"mlp": MLPVAE, "conv": ConvVAE, "dae": DenoisingAE}


def build_model(config: VAEConfig) -> VAE:
    """Build the VAE that ``config.architecture`` names.

    Example
    -------
    >>> model = build_model(VAEConfig())
    >>> sum(p.numel() for p in model.parameters())
    404244
    """
    return ARCHITECTURES[config.architecture](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
