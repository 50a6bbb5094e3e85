"""Encode data with a trained VAE: posterior means and log-variances per sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from patchvae.models.inference import infer
from patchvae.models.vae import VAE


@dataclass
class Embedding:
    """Posterior parameters, each (N, latent_dim) float32."""

    mu: np.ndarray
    logvar: np.ndarray


def encode(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> Embedding:
    """Posterior mean and log-variance of every sample of ``x`` (N, C, H, W).

    Example
    -------
    >>> from patchvae.models import VAEConfig, build_model
    >>> encode(build_model(VAEConfig()), np.zeros((3, 1, 28, 28), np.float32)).mu.shape
    (3, 2)
    """
    mu, logvar = infer(model, x, lambda m, b: m.encode(b), batch_size)
    return Embedding(mu, logvar)


def reconstruct(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Decode each sample's posterior mean: the model's deterministic reconstruction."""
    (out,) = infer(model, x, lambda m, b: (m.decode(m.encode(b)[0]),), batch_size)
    return out


@dataclass
class PatchScores:
    """Per-sample posterior parameters and ELBO terms, decoding the posterior mean."""

    mu: np.ndarray
    logvar: np.ndarray
    recon_error: np.ndarray  # reconstruction loss summed over pixels (the model's own kind)
    kl: np.ndarray  # KL to the prior, summed over latent dimensions
    # semi-supervised models: the classifier's probability of each class, (N, classes)
    class_probability: np.ndarray | None = None
    # the encoder's features (its last dense layer), (N, features); None where it has none
    features: np.ndarray | None = None


def score_patches(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> PatchScores:
    """Encode, decode the posterior mean and score every sample: deterministic per-patch scores."""

    def step(m: VAE, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = m(batch, sample=False)
        probability = (
            torch.softmax(out.class_logits, dim=1)
            if out.class_logits is not None
            else out.mu.new_zeros((out.mu.shape[0], 0))
        )
        hidden = m.encoder_outputs(batch).hidden
        features = hidden if hidden is not None else out.mu.new_zeros((out.mu.shape[0], 0))
        return out.mu, out.logvar, out.recon, out.kl, probability, features

    mu, logvar, recon, kl, probability, features = infer(model, x, step, batch_size)
    return PatchScores(
        mu,
        logvar,
        recon,
        kl,
        probability if model.config.classifier_classes else None,
        features if features.shape[1] else None,
    )


def encoder_features(
    model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000
) -> np.ndarray:
    """The encoder's features (its last dense layer) of every sample, (N, features)."""

    def step(m: VAE, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = m.encoder_outputs(batch).hidden
        if hidden is None:
            raise ValueError("this model's encoder has no dense features")
        return (hidden,)

    return infer(model, x, step, batch_size)[0]
