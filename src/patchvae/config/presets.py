"""Named model + training settings. ``keras2016`` is the network of the reference study."""

from __future__ import annotations

from patchvae.config import TrainConfig
from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError

PRESETS: dict[str, tuple[VAEConfig, TrainConfig]] = {
    # The 2016 Keras example (keras/examples/variational_autoencoder.py): 784-256-2, ReLU,
    # sigmoid output, 784 * mean BCE + KL, RMSprop (lr 1e-3, rho 0.9, eps 1e-7), batch 100,
    # 50 epochs, Glorot-uniform weights and zero biases.
    "keras2016": (
        VAEConfig(
            architecture="mlp",
            hidden_dims=[256],
            latent_dim=2,
            activation="relu",
            reconstruction_loss="bce",
            beta=1.0,
            init="glorot_uniform",
        ),
        TrainConfig(
            optimizer="rmsprop",
            learning_rate=1e-3,
            rho=0.9,
            epsilon=1e-7,
            batch_size=100,
            epochs=50,
        ),
    ),
}


def get_preset(name: str) -> tuple[VAEConfig, TrainConfig]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}"
        ) from None
