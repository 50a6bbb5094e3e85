"""Encode data with a trained VAE: posterior means and log-variances per sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from patchvae.models.vae import VAE


@dataclass
class Embedding:
    """Posterior parameters, each (N, latent_dim) float32."""

    mu: np.ndarray
    logvar: np.ndarray


@torch.no_grad()
def encode(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> Embedding:
    """Posterior mean and log-variance of every sample of ``x`` (N, C, H, W).

    Example
    -------
    >>> from patchvae.models import VAEConfig, build_model
    >>> encode(build_model(VAEConfig()), np.zeros((3, 1, 28, 28), np.float32)).mu.shape
    (3, 2)
    """
    device = next(model.parameters()).device
    data = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    mus, logvars = [], []
    for start in range(0, data.shape[0], batch_size):
        mu, logvar = model.encode(data[start : start + batch_size].to(device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    model.train(was_training)
    latent_dim = model.config.latent_dim
    if not mus:
        empty = np.zeros((0, latent_dim), np.float32)
        return Embedding(empty, empty.copy())
    return Embedding(torch.cat(mus).numpy(), torch.cat(logvars).numpy())


@torch.no_grad()
def reconstruct(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Decode each sample's posterior mean: the model's deterministic reconstruction."""
    device = next(model.parameters()).device
    data = torch.as_tensor(x)
    outs = [
        model.decode(model.encode(data[i : i + batch_size].to(device))[0]).cpu()
        for i in range(0, data.shape[0], batch_size)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros_like(np.asarray(x))
