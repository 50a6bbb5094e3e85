"""The denoising autoencoder: shapes, coarse noise inside the brain only, a loss that falls,
save and load, and settings it honours or refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from patchvae.checkpoint import load_model
from patchvae.config import TrainConfig
from patchvae.embed import score_patches
from patchvae.models import VAEConfig, build_model
from patchvae.models.dae import DenoisingAE
from patchvae.train import fit

SMALL = VAEConfig(architecture="dae", conv_channels=[8, 16], input_shape=(1, 28, 28))


def _brain_patches(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth blobs on a zero background (the left 8 columns): patches at a brain's edge."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear") * 0.8 + 0.1
    x[..., :8] = 0.0
    return x


@pytest.mark.parametrize("shape", [(1, 28, 28), (2, 33, 31), (1, 9, 9)])
def test_shapes_for_any_patch(shape: tuple[int, int, int]) -> None:
    model = build_model(VAEConfig(architecture="dae", conv_channels=[4, 8, 16], input_shape=shape))
    assert isinstance(model, DenoisingAE)
    out = model(torch.rand(3, *shape), generator=torch.Generator().manual_seed(0))
    assert out.logits.shape == (3, *shape) and out.mu.shape == (3, 16)
    assert out.recon.shape == (3,) and float(out.kl.abs().sum()) == 0.0


def test_noise_is_coarse_and_only_inside_the_brain() -> None:
    model = build_model(SMALL)
    x = _brain_patches(16)
    noise = model.noise(x, torch.Generator().manual_seed(1))
    assert float(noise[..., :8].abs().max()) == 0.0  # background untouched
    inside = noise[..., 8:]
    assert 0.05 < float(inside.std()) < 0.4  # sd 0.2 on the grid, smoothed by the upsampling
    # coarse: neighbouring pixels move together (a 7 x 7 grid over 28 pixels); for noise
    # drawn per pixel the mean step would be about 1.4 times the mean size
    step = (inside[..., :, 1:] - inside[..., :, :-1]).abs().mean()
    assert float(step) < 0.5 * float(inside.abs().mean())
    # without noise_brain the background gets noise too
    everywhere = build_model(SMALL.model_copy(update={"noise_brain": False}))
    assert float(everywhere.noise(x, torch.Generator().manual_seed(1))[..., :8].abs().max()) > 0


def test_loss_falls_and_a_checkpoint_rebuilds_it(tmp_path: Path) -> None:
    x = _brain_patches(128)
    config = TrainConfig(epochs=6, batch_size=32, optimizer="adam", device="cpu")
    result = fit(SMALL, config, x, checkpoint_path=tmp_path / "c.pt", progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0]
    loaded = load_model(tmp_path / "c.pt")
    assert isinstance(loaded, DenoisingAE) and loaded.config == SMALL
    with torch.no_grad():
        a = result.model.eval()(x[:4], sample=False).logits
        b = loaded(x[:4], sample=False).logits
    torch.testing.assert_close(a, b)


def test_a_trained_dae_scores_an_unrestorable_spot() -> None:
    x = _brain_patches(256)
    config = TrainConfig(epochs=10, batch_size=32, optimizer="adam", device="cpu")
    model = fit(SMALL, config, x, progress=False).model
    plain = _brain_patches(20, seed=5)
    spotted = plain.clone()
    spotted[:, :, 12:17, 14:19] = 1.0  # the same patches with a bright 5 x 5 spot
    before, after = (score_patches(model, p.numpy()).residual for p in (plain, spotted))
    assert before is not None and after is not None
    assert (after > before).mean() >= 0.9 and np.median(after) > 1.3 * np.median(before)


def test_settings_it_does_not_honour_are_refused() -> None:
    with pytest.raises(ValidationError, match="latent_dim"):
        VAEConfig(architecture="dae", conv_channels=[8, 16], latent_dim=2)
    with pytest.raises(ValidationError, match="only a dae is trained on noise"):
        VAEConfig(architecture="conv", noise_std=0.2)
    with pytest.raises(ValidationError, match="no prior and no classifier"):
        VAEConfig(architecture="dae", classifier_classes=2)
    assert VAEConfig(architecture="dae").reconstruction_loss == "mse"
