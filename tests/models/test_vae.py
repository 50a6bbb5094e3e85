from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from patchvae.config.presets import get_preset
from patchvae.models import VAEConfig, build_model, count_parameters
from patchvae.models.losses import gaussian_kl, reconstruction_loss


class TestBuild:
    def test_keras2016_has_the_example_architecture(self) -> None:
        model_config, train_config = get_preset("keras2016")
        model = build_model(model_config)
        # 784-256-2 encoder (mu and log-variance heads), 2-256-784 decoder
        assert count_parameters(model) == (784 * 256 + 256) + 2 * (256 * 2 + 2) + (
            2 * 256 + 256
        ) + (256 * 784 + 784)
        assert (train_config.batch_size, train_config.epochs) == (100, 50)
        assert (train_config.learning_rate, train_config.rho, train_config.epsilon) == (
            1e-3,
            0.9,
            1e-7,
        )

    def test_glorot_init_with_zero_biases(self) -> None:
        model = build_model(VAEConfig())
        first = model.encoder[1]
        limit = math.sqrt(6 / (784 + 256))
        assert first.weight.abs().max() <= limit and first.weight.abs().max() > 0.9 * limit
        assert torch.all(first.bias == 0)

    @pytest.mark.parametrize(
        "values",
        [{"latent_dim": 0}, {"hidden_dims": []}, {"hidden_dims": [-3]}, {"beta": -1}, {"foo": 1}],
    )
    def test_invalid_config_is_rejected(self, values: dict) -> None:
        with pytest.raises(ValidationError):
            VAEConfig(**values)


class TestForward:
    def test_shapes_and_named_outputs(self) -> None:
        model = build_model(VAEConfig(input_shape=(2, 8, 6), hidden_dims=[32, 16], latent_dim=3))
        x = torch.rand(5, 2, 8, 6)
        out = model(x)
        assert out.recon_x.shape == x.shape and out.logits.shape == x.shape
        assert out.mu.shape == out.logvar.shape == out.z.shape == (5, 3)
        assert out.recon.shape == out.kl.shape == (5,)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert torch.all((out.recon_x >= 0) & (out.recon_x <= 1))

    def test_posterior_mean_is_deterministic_sampling_is_seeded(self) -> None:
        model = build_model(VAEConfig())
        x = torch.rand(4, 1, 28, 28)
        assert torch.equal(model(x, sample=False).z, model(x, sample=False).mu)
        a = model(x, generator=torch.Generator().manual_seed(3)).z
        b = model(x, generator=torch.Generator().manual_seed(3)).z
        c = model(x, generator=torch.Generator().manual_seed(4)).z
        assert torch.equal(a, b) and not torch.equal(a, c)


class TestLoss:
    def test_terms_against_hand_computed_values(self) -> None:
        # x = [1, 0], p = sigmoid(logits) = [0.8, 0.3]: BCE = -ln 0.8 - ln 0.7
        logits = torch.logit(torch.tensor([[0.8, 0.3]], dtype=torch.float64))
        x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        assert reconstruction_loss(logits, x, "bce").item() == pytest.approx(0.5798185, abs=1e-6)
        assert reconstruction_loss(logits, x, "mse").item() == pytest.approx(0.04 + 0.09)
        # mu = [1, 0], var = [1, 2]: KL = 1/2 [(1 + 1 - 0 - 1) + (2 + 0 - ln 2 - 1)] = 1 - ln(2)/2
        mu = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        logvar = torch.tensor([[0.0, math.log(2.0)]], dtype=torch.float64)
        assert gaussian_kl(mu, logvar).item() == pytest.approx(1 - math.log(2) / 2)

    def test_batch_loss_is_keras_784_mean_bce_plus_kl_averaged(self) -> None:
        torch.manual_seed(0)
        model = build_model(VAEConfig()).double()
        x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
        out = model(x, sample=False)
        p = out.recon_x.detach().numpy().reshape(3, -1)
        t = x.numpy().reshape(3, -1)
        keras_xent = 784 * np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)), axis=1)
        mu, logvar = out.mu.detach().numpy(), out.logvar.detach().numpy()
        keras_kl = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), axis=1)
        assert out.loss.item() == pytest.approx(np.mean(keras_xent + keras_kl), rel=1e-9)

    def test_beta_weights_the_kl(self) -> None:
        torch.manual_seed(0)
        base = build_model(VAEConfig())
        heavy = build_model(VAEConfig(beta=4.0))
        heavy.load_state_dict(base.state_dict())
        x = torch.rand(2, 1, 28, 28)
        a, b = base(x, sample=False), heavy(x, sample=False)
        assert (b.loss - a.loss).item() == pytest.approx(3 * a.kl.mean().item(), rel=1e-5)
