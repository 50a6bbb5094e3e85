"""Typed, validated model settings, saved beside the weights so a checkpoint rebuilds itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class VAEConfig(BaseModel):
    """Settings of one VAE.

    ``input_shape`` is (channels, height, width), channel first. The loss is the negative ELBO:
    reconstruction summed over pixels plus ``beta`` times the KL divergence summed over latent
    dimensions, averaged over the batch (the 2016 Keras example's ``784 * mean BCE + KL``).

    Example
    -------
    >>> VAEConfig(latent_dim=2).hidden_dims
    [256]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # mlp, conv: VAEs; dae: a denoising autoencoder (a small U-Net, no bottleneck) trained to
    # remove coarse noise (Kascenas et al., MIDL 2022): a lesion is what it does not restore
    architecture: Literal["mlp", "conv", "dae"] = "mlp"
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 28, 28)
    hidden_dims: list[PositiveInt] = Field(default_factory=lambda: [256], min_length=1)
    latent_dim: PositiveInt = 2
    # conv only: channels of the stride-2 convolutions (each halves the patch side); not given:
    # [32, 64] for conv, None (no convolutions) for mlp, which refuses it
    conv_channels: list[PositiveInt] | None = Field(default=None, min_length=1)
    activation: Literal["relu", "elu", "tanh"] = "relu"
    # "gmm": a learned Gaussian-mixture prior (VaDE-style) whose components are clusters
    prior: Literal["gaussian", "gmm"] = "gaussian"
    # gmm only: the number of mixture components; not given: 2 for gmm, None for gaussian
    n_clusters: PositiveInt | None = None
    # semi-supervised: a classifier on the latent mean, trained jointly on the labelled samples
    # (label >= 0; -1 = unlabelled), its cross-entropy weighted by classifier_weight
    classifier_classes: int = Field(default=0, ge=0)
    classifier_weight: float = Field(default=1.0, ge=0)
    # what the classifier sees: the latent mean, or (conv only) the latent mean plus the
    # max- and mean-pooled maps of the encoder's last convolution (shared with the encoder, so
    # "a bright spot anywhere in the patch" is one filter away, wherever the spot lies)
    classifier_input: Literal["latent", "pooled"] = "latent"
    reconstruction_loss: Literal["bce", "mse"] = "bce"
    beta: float = Field(default=1.0, ge=0.0)
    # Keras initialises Dense layers Glorot-uniform with zero biases; PyTorch differs. Not
    # given (None): glorot_uniform for mlp (the 2016 network), torch_default for conv, whose
    # layers keep PyTorch's initialisation (glorot_uniform is refused there, not ignored).
    init: Literal["glorot_uniform", "torch_default"] = "glorot_uniform"
    # dae only: training noise, Gaussian (sd noise_std) drawn on a noise_grid x noise_grid
    # grid, upsampled to the patch and added where the patch is not background (noise_brain)
    noise_grid: PositiveInt | None = None
    noise_std: float | None = Field(default=None, gt=0)
    noise_brain: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, values: Any) -> Any:
        """Settings of one variant take their defaults only in that variant."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        conv = values.get("architecture") in ("conv", "dae")
        if values.get("init") is None:
            values["init"] = "torch_default" if conv else "glorot_uniform"
        if conv and values.get("conv_channels") is None:
            values["conv_channels"] = [32, 64]
        if values.get("architecture") == "dae":
            defaults: dict[str, Any] = {"noise_grid": 7, "noise_std": 0.2, "noise_brain": True}
            defaults["reconstruction_loss"] = "mse"
            # the "latent" of a DAE: its deepest maps averaged over positions
            defaults["latent_dim"] = values["conv_channels"][-1]
            values.update({k: v for k, v in defaults.items() if values.get(k) is None})
        for key, default in (("latent_dim", 2), ("reconstruction_loss", "bce")):
            if key in values and values[key] is None:  # reset by a switch of variant
                values[key] = default
        if values.get("prior") == "gmm" and values.get("n_clusters") is None:
            values["n_clusters"] = 2
        return values

    @model_validator(mode="after")
    def _check_variant(self) -> VAEConfig:
        """Every setting saved is one the network honours: others are refused."""
        if self.architecture == "mlp" and self.conv_channels is not None:
            raise ValueError(f"conv_channels: a {self.architecture} network has no convolutions")
        noise = (self.noise_grid, self.noise_std, self.noise_brain)
        if self.architecture != "dae" and any(v is not None for v in noise):
            raise ValueError("noise_grid, noise_std, noise_brain: only a dae is trained on noise")
        if self.architecture == "dae":
            self._check_dae()
        if self.prior != "gmm" and self.n_clusters is not None:
            raise ValueError("n_clusters: only a mixture prior (prior: gmm) has clusters")
        if self.architecture == "conv":
            side = min(self.input_shape[1:])
            if side >> len(self.convolutions) < 1:
                raise ValueError(
                    f"{len(self.convolutions)} stride-2 convolutions do not fit "
                    f"{self.input_shape[1]}x{self.input_shape[2]} inputs"
                )
        if self.architecture in ("conv", "dae") and self.init != "torch_default":
            raise ValueError(
                f"init: {self.init} is implemented for the mlp only; conv layers keep "
                "PyTorch's default initialisation (init: torch_default, the default for conv)"
            )
        if self.classifier_input == "pooled" and self.architecture != "conv":
            raise ValueError("classifier_input 'pooled' needs architecture 'conv'")
        return self

    def _check_dae(self) -> None:
        """A DAE has no latent to sample, no prior and no classifier."""
        if self.latent_dim != self.convolutions[-1]:
            raise ValueError(
                f"latent_dim: a dae's latent is its deepest maps averaged over positions "
                f"({self.convolutions[-1]} channels); leave latent_dim out"
            )
        if self.prior != "gaussian" or self.classifier_classes:
            raise ValueError("a dae has no prior and no classifier (prior, classifier_classes)")
        if min(self.input_shape[1:]) >> (len(self.convolutions) - 1) < 1:
            raise ValueError(f"{len(self.convolutions)} levels do not fit the patch size")

    @property
    def convolutions(self) -> list[int]:
        """Channels of the stride-2 convolutions; empty for a network without them."""
        return list(self.conv_channels or [])

    @property
    def clusters(self) -> int:
        """Components of the mixture prior; 0 for a Gaussian prior."""
        return self.n_clusters or 0

    @property
    def classifier_input_dim(self) -> int:
        """Width of the classifier's input (see ``classifier_input``)."""
        pooled = 2 * self.convolutions[-1] if self.classifier_input == "pooled" else 0
        return self.latent_dim + pooled

    @property
    def input_dim(self) -> int:
        channels, height, width = self.input_shape
        return channels * height * width


def upgrade_saved_model(values: dict[str, Any]) -> dict[str, Any]:
    """Model settings as patchvae 0.1 saved them, read as they were meant: it saved the
    defaults of every variant (conv_channels [32, 64] for mlp networks, n_clusters 2 for a
    Gaussian prior, init glorot_uniform for conv networks, which never had it). Only those
    saved defaults are mapped; any other value is checked as given.

    Example
    -------
    >>> upgrade_saved_model({"architecture": "mlp", "conv_channels": [32, 64], "n_clusters": 2})
    {'architecture': 'mlp'}
    """
    values = dict(values)
    architecture, prior = values.get("architecture", "mlp"), values.get("prior", "gaussian")
    if architecture != "conv" and values.get("conv_channels") == [32, 64]:
        del values["conv_channels"]
    if prior != "gmm" and values.get("n_clusters") == 2:
        del values["n_clusters"]
    if architecture == "conv" and values.get("init") == "glorot_uniform":
        values["init"] = "torch_default"
    return values
