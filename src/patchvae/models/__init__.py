"""The VAE family and its typed configs."""

from patchvae.models.config import VAEConfig
from patchvae.models.vae import MLPVAE, VAE, VAEOutput, build_model, count_parameters

__all__ = ["MLPVAE", "VAE", "VAEConfig", "VAEOutput", "build_model", "count_parameters"]
