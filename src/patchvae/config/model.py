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

    architecture: Literal["mlp", "conv"] = "mlp"
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 28, 28)
    hidden_dims: list[PositiveInt] = Field(default_factory=lambda: [256], min_length=1)
    latent_dim: PositiveInt = 2
    # conv only: channels of the stride-2 convolutions (each halves the patch side)
    conv_channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1)
    activation: Literal["relu", "elu", "tanh"] = "relu"
    # "gmm": a learned Gaussian-mixture prior (VaDE-style) whose components are clusters
    prior: Literal["gaussian", "gmm"] = "gaussian"
    n_clusters: PositiveInt = 2
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

    @model_validator(mode="before")
    @classmethod
    def _architecture_default_init(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("init") is None:
            conv = values.get("architecture") == "conv"
            values = {**values, "init": "torch_default" if conv else "glorot_uniform"}
        return values

    @model_validator(mode="after")
    def _check_conv_fits(self) -> VAEConfig:
        if self.architecture == "conv":
            side = min(self.input_shape[1:])
            if side >> len(self.conv_channels) < 1:
                raise ValueError(
                    f"{len(self.conv_channels)} stride-2 convolutions do not fit "
                    f"{self.input_shape[1]}x{self.input_shape[2]} inputs"
                )
        if self.architecture == "conv" and self.init != "torch_default":
            raise ValueError(
                f"init: {self.init} is implemented for the mlp only; conv layers keep "
                "PyTorch's default initialisation (init: torch_default, the default for conv)"
            )
        if self.classifier_input == "pooled" and self.architecture != "conv":
            raise ValueError("classifier_input 'pooled' needs architecture 'conv'")
        return self

    @property
    def classifier_input_dim(self) -> int:
        """Width of the classifier's input (see ``classifier_input``)."""
        pooled = 2 * self.conv_channels[-1] if self.classifier_input == "pooled" else 0
        return self.latent_dim + pooled

    @property
    def input_dim(self) -> int:
        channels, height, width = self.input_shape
        return channels * height * width
