"""Batched inference: one place where a model is run over data without gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import nn

Net = TypeVar("Net", bound=nn.Module)  # a VAE, or any other network (self-training's)


@torch.no_grad()
def infer(
    model: Net,
    x: torch.Tensor | np.ndarray,
    step: Callable[[Net, torch.Tensor], tuple[torch.Tensor, ...]],
    batch_size: int = 1000,
) -> tuple[np.ndarray, ...]:
    """Run ``step(model, batch)`` over ``x`` (N, C, H, W) in batches, in eval mode and without
    gradients, on the model's device; each output concatenated as a numpy array (N, ...).
    The model's train/eval mode is restored afterwards.

    Example
    -------
    >>> from patchvae.config.model import VAEConfig
    >>> from patchvae.models.vae import build_model
    >>> mu, = infer(build_model(VAEConfig()), np.zeros((3, 1, 28, 28), np.float32),
    ...             lambda m, b: (m.encode(b)[0],))
    >>> mu.shape
    (3, 2)
    """
    device = next(model.parameters()).device
    data = torch.as_tensor(x)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, data.shape[0], batch_size) if data.shape[0] else [0]
        parts = [step(model, data[s : s + batch_size].to(device)) for s in starts]
    finally:
        model.train(was_training)
    return tuple(torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(len(parts[0])))
