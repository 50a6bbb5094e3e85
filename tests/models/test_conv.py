from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from patchvae.checkpoint import load_model
from patchvae.config import TrainConfig
from patchvae.models import VAEConfig, build_model
from patchvae.models.conv import ConvVAE
from patchvae.train import fit


class TestBuild:
    @pytest.mark.parametrize("shape", [(1, 28, 28), (2, 33, 31), (3, 16, 16), (1, 9, 9)])
    def test_any_patch_size_and_channels(self, shape: tuple[int, int, int]) -> None:
        model = build_model(
            VAEConfig(architecture="conv", input_shape=shape, conv_channels=[8, 16], latent_dim=4)
        )
        assert isinstance(model, ConvVAE)
        out = model(torch.rand(2, *shape))
        assert out.recon_x.shape == (2, *shape) and out.mu.shape == (2, 4)

    def test_init_is_what_the_layers_have(self, tmp_path: Path) -> None:
        """A conv network keeps PyTorch's initialisation; its settings say so, and asking for
        Glorot-uniform is refused instead of silently ignored."""
        from patchvae.checkpoint import save_checkpoint
        from patchvae.config import MnistStudyConfig
        from patchvae.config.presets import build_settings

        assert VAEConfig(architecture="conv").init == "torch_default"
        assert VAEConfig().init == "glorot_uniform"
        with pytest.raises(
            ValidationError, match="init: glorot_uniform is implemented for the mlp"
        ):
            VAEConfig(architecture="conv", init="glorot_uniform")
        # the keras2016 preset pins glorot_uniform; switching it to conv takes conv's default
        built = build_settings(
            MnistStudyConfig, None, "keras2016", {"model": {"architecture": "conv"}}
        )
        assert built.model.init == "torch_default"
        # a checkpoint written when conv runs recorded glorot_uniform still loads
        model = build_model(VAEConfig(architecture="conv", conv_channels=[4]))
        old = {**model.config.model_dump(mode="json"), "init": "glorot_uniform"}
        path = save_checkpoint(
            tmp_path / "c.pt", {"model_config": old, "model_state": model.state_dict()}
        )
        assert load_model(path).config.init == "torch_default"

    def test_weights_of_a_single_encoder_load(self) -> None:
        """Checkpoints of patchvae 0.1 held convolutions and dense layers in one ``encoder``."""
        model = build_model(VAEConfig(architecture="conv", conv_channels=[4, 8], latent_dim=3))
        state = model.state_dict()
        old = {k: v for k, v in state.items() if not k.startswith("encoder_dense.")}
        for key, value in state.items():
            if key.startswith("encoder_dense."):
                index, rest = key.split(".", 2)[1:]
                old[f"encoder.{int(index) + 4}.{rest}"] = value
        assert set(old) != set(state)
        again = build_model(model.config)
        again.load_state_dict(old)
        x = torch.rand(2, 1, 28, 28)
        assert torch.equal(again.encode(x)[0], model.encode(x)[0])

    def test_too_many_halvings_is_rejected(self) -> None:
        with pytest.raises(ValidationError, match="stride-2 convolutions do not fit"):
            VAEConfig(architecture="conv", input_shape=(1, 6, 6), conv_channels=[4, 4, 4])


class TestTraining:
    def test_loss_falls_on_a_tiny_batch(self) -> None:
        x = torch.zeros(16, 1, 12, 12)  # bars: learnable structure, unlike noise
        for i in range(16):
            if i % 2:
                x[i, 0, :, i % 12] = 1
            else:
                x[i, 0, i % 12, :] = 1
        config = VAEConfig(
            architecture="conv",
            input_shape=(1, 12, 12),
            conv_channels=[8],
            hidden_dims=[32],
            latent_dim=3,
        )
        result = fit(
            config,
            TrainConfig(
                epochs=60, batch_size=16, optimizer="adam", learning_rate=3e-3, device="cpu"
            ),
            x,
            progress=False,
        )
        losses = [h["train_loss"] for h in result.history]
        assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.9 * losses[0]

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        config = VAEConfig(
            architecture="conv", input_shape=(2, 16, 16), conv_channels=[4, 8], latent_dim=5
        )
        ckpt = tmp_path / "c.pt"
        result = fit(
            config,
            TrainConfig(epochs=1, batch_size=4, device="cpu"),
            torch.rand(8, 2, 16, 16),
            checkpoint_path=ckpt,
            progress=False,
        )
        loaded = load_model(ckpt)
        assert isinstance(loaded, ConvVAE) and loaded.config == config
        x = torch.rand(3, 2, 16, 16)
        assert torch.equal(loaded(x, sample=False).recon_x, result.model(x, sample=False).recon_x)


def test_kl_warmup_ramps_beta() -> None:
    config = VAEConfig(input_shape=(1, 6, 6), hidden_dims=[8], latent_dim=2, beta=2.0)
    result = fit(
        config,
        TrainConfig(epochs=4, batch_size=5, kl_warmup_epochs=2, device="cpu"),
        torch.rand(10, 1, 6, 6),
        progress=False,
    )
    # two steps per epoch: beta at the end of epochs 1..4 is 2 * (2/4, 4/4, 1, 1)
    assert [h["beta"] for h in result.history] == [1.0, 2.0, 2.0, 2.0]
    no_warmup = fit(
        config,
        TrainConfig(epochs=1, batch_size=5, device="cpu"),
        torch.rand(10, 1, 6, 6),
        progress=False,
    )
    assert no_warmup.history[0]["beta"] == 2.0
