"""Named model + training settings. ``keras2016`` is the network of the reference study."""

from __future__ import annotations

from typing import Any

from patchvae.config import M, TrainConfig, build_config
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


# a setting that changes the kind of network -> the settings only that kind has
_VARIANT_SETTINGS = {
    "architecture": (
        "init",
        "conv_channels",
        "noise_grid",
        "noise_std",
        "noise_brain",
        "latent_dim",
        "reconstruction_loss",
    ),
    "prior": ("n_clusters",),
}


def get_preset(name: str) -> tuple[VAEConfig, TrainConfig]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}"
        ) from None


def build_settings(
    cls: type[M],
    base: M | None,
    preset: str | None,
    overrides: dict[str, dict[str, Any]],
    top: dict[str, Any] | None = None,
) -> M:
    """The one "preset + overrides" builder: settings from ``base`` (a settings file) or from
    ``preset`` (default keras2016), then the ``model``/``train`` overrides (None: not given),
    then top-level values. Changing the network (anything but its input shape) means the run
    is no longer the preset's, and ``preset`` is recorded as None; changing the architecture
    without naming ``init`` takes that architecture's default initialisation.

    Example
    -------
    >>> from patchvae.config import MnistStudyConfig
    >>> s = build_settings(MnistStudyConfig, None, None, {"train": {"epochs": 3}})
    >>> s.preset, s.train.epochs, s.model.latent_dim
    ('keras2016', 3, 2)
    """
    if base is not None:
        values = base.model_dump(mode="json")
    else:
        model, train = get_preset(preset or "keras2016")
        values = {
            "preset": preset or "keras2016",
            "model": model.model_dump(),
            "train": train.model_dump(),
        }
    for section, items in overrides.items():
        given = {k: v for k, v in items.items() if v is not None}
        if section == "model":
            # a network of another kind takes that kind's own settings unless given
            for switch, own in _VARIANT_SETTINGS.items():
                if switch in given:
                    given.update({k: None for k in own if k not in given})
        values[section] = {**values.get(section, {}), **given}
        if section == "model" and set(given) - {"input_shape"}:
            values["preset"] = None  # no longer the preset's network
    values.update({k: v for k, v in (top or {}).items() if v is not None})
    return build_config(cls, values)
