"""Encode data with a trained VAE: posterior means and log-variances per sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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
    # the 95th percentile of the restoration's absolute residual, median-filtered, inside
    # the patch's eroded foreground (Kascenas et al.'s score, per patch)
    residual: np.ndarray | None = None


def score_patches(model: VAE, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> PatchScores:
    """Encode, decode the posterior mean and score every sample: deterministic per-patch scores."""

    def step(m: VAE, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = m(batch, sample=False)
        probability = (
            torch.softmax(out.class_logits, dim=1)
            if out.class_logits is not None
            else out.mu.new_zeros((out.mu.shape[0], 0))
        )
        # the features of the same encoder pass
        hidden = out.hidden
        features = hidden if hidden is not None else out.mu.new_zeros((out.mu.shape[0], 0))
        residual = residual_score(batch, torch.sigmoid(out.logits))
        return out.mu, out.logvar, out.recon, out.kl, probability, features, residual

    mu, logvar, recon, kl, probability, features, residual = infer(model, x, step, batch_size)
    return PatchScores(
        mu,
        logvar,
        recon,
        kl,
        probability if model.config.classifier_classes else None,
        features if features.shape[1] else None,
        residual,
    )


def residual_score(
    x: torch.Tensor, restored: torch.Tensor, percentile: float = 95.0
) -> torch.Tensor:
    """Per image: the ``percentile`` of |x - restored| (mean over channels), median-filtered
    3 x 3, over the foreground (non-zero voxels) eroded by one pixel, so the rim of the brain,
    which every model restores worst, does not count; the whole image where none is left.

    Example
    -------
    >>> x = torch.zeros(1, 1, 10, 10); x[..., 1:9, 1:9] = 0.5
    >>> restored = x.clone(); restored[..., 3:6, 3:6] = 0.1  # a 3x3 spot it did not restore
    >>> round(float(residual_score(x, restored)[0]), 3)
    0.4
    >>> restored[..., 3:6, 3:6] = 0.5; restored[..., 4, 4] = 0.1  # one pixel: filtered out
    >>> float(residual_score(x, restored)[0])
    0.0
    """
    residual = (x - restored).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    windows = F.unfold(F.pad(residual, (1, 1, 1, 1), mode="replicate"), 3)  # (B, 9, H*W)
    filtered = windows.median(dim=1).values  # (B, H*W)
    foreground = (x.amax(dim=1, keepdim=True) > 0).float()
    eroded = -F.max_pool2d(-foreground, 3, stride=1, padding=1)  # a pixel with all 8 neighbours
    inside = eroded.flatten(1) > 0
    inside[inside.sum(dim=1) == 0] = True
    values = torch.where(inside, filtered, torch.full_like(filtered, float("nan")))
    return torch.nanquantile(values, percentile / 100, dim=1)


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
