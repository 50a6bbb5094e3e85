"""Loss terms of the VAE family, per sample (the caller averages over the batch)."""

from __future__ import annotations

import math

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


def gmm_prior_terms(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_logits: torch.Tensor,
    prior_mu: torch.Tensor,
    prior_logvar: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VaDE regulariser and cluster responsibilities, per sample.

    With responsibilities gamma_c = p(c | z) under the mixture prior (pi, mu_c, var_c):
    sum_c gamma_c KL(N(mu, var) || N(mu_c, var_c)) + KL(gamma || pi).
    Returns (regulariser (batch,), gamma (batch, clusters)).
    """
    log_pi = torch.log_softmax(prior_logits, dim=0)  # (K,)
    diff = z[:, None, :] - prior_mu[None]  # (B, K, D)
    log_pz_c = -0.5 * (
        math.log(2 * math.pi) + prior_logvar[None] + diff.pow(2) / prior_logvar.exp()[None]
    ).sum(dim=2)
    gamma = torch.softmax(log_pi[None] + log_pz_c, dim=1)  # (B, K)
    kl_c = 0.5 * (
        prior_logvar[None]
        - logvar[:, None, :]
        + (logvar.exp()[:, None, :] + (mu[:, None, :] - prior_mu[None]).pow(2))
        / prior_logvar.exp()[None]
        - 1.0
    ).sum(dim=2)  # (B, K)
    kl_cat = (gamma * (torch.log(gamma.clamp_min(1e-10)) - log_pi[None])).sum(dim=1)
    return (gamma * kl_c).sum(dim=1) + kl_cat, gamma


def cluster_target_loss(responsibilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the responsibilities p(c | z), (batch, K), against each sample's
    target component, (batch,); samples whose target is -1 count as 0 (the mean is still
    over the whole batch, so a batch's weight does not depend on how many have targets)."""
    known = targets >= 0
    chosen = responsibilities.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    return torch.where(known, -torch.log(chosen.clamp_min(1e-10)), 0.0).mean()
