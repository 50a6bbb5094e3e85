"""Loss terms of the VAE family, per sample (the caller averages over the batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Reconstruction loss summed over every pixel and channel, one value per sample.

    ``bce``: binary cross-entropy between ``sigmoid(logits)`` and ``target`` in [0, 1], computed
    from the logits for numerical stability (the same value as BCE on the sigmoid output).
    ``mse``: squared error between ``sigmoid(logits)`` and ``target``.
    """
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits) - target).pow(2)
    else:
        raise ValueError(f"reconstruction_loss kind must be 'bce' or 'mse', got {kind!r}")
    return per_pixel.flatten(start_dim=1).sum(dim=1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, one value per sample."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
