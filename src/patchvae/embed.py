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


@dataclass
class PatchScores:
    """Per-sample posterior parameters and ELBO terms, decoding the posterior mean."""

    mu: np.ndarray
    logvar: np.ndarray
    recon_error: np.ndarray  # reconstruction loss summed over pixels (the model's own kind)
    kl: np.ndarray  # KL to the prior, summed over latent dimensions
    # semi-supervised models: the classifier's probability of each class, (N, classes)
    class_probability: np.ndarray | None = None


@torch.no_grad()
def score_patches(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> PatchScores:
    """Encode, decode the posterior mean and score every sample: deterministic per-patch scores."""
    device = next(model.parameters()).device
    data = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    classes = model.config.classifier_classes
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for start in range(0, data.shape[0], batch_size):
        out = model(data[start : start + batch_size].to(device), sample=False)
        probability = (
            torch.softmax(out.class_logits, dim=1)
            if out.class_logits is not None
            else out.mu.new_zeros((out.mu.shape[0], 0))
        )
        values = (out.mu, out.logvar, out.recon_loss, out.reg_loss, probability)
        for bucket, value in zip(parts, values, strict=True):
            bucket.append(value.cpu().numpy())
    model.train(was_training)
    if not parts[0]:
        dim = model.config.latent_dim
        parts = [[np.zeros((0, dim))], [np.zeros((0, dim))], [np.zeros(0)], [np.zeros(0)]]
        parts.append([np.zeros((0, classes))])
    mu, logvar, recon, kl, probability = (np.concatenate(p) for p in parts)
    return PatchScores(mu, logvar, recon, kl, probability if classes else None)
