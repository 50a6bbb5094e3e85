"""Typed, validated run settings (pydantic), loadable from and saved to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from patchvae.errors import ConfigError
from patchvae.models.config import VAEConfig

Device = Literal["auto", "cpu", "cuda"]


class TrainConfig(BaseModel):
    """Optimisation settings. Defaults are those of the 2016 Keras example (RMSprop)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: Literal["rmsprop", "adam", "sgd"] = "rmsprop"
    learning_rate: float = Field(default=1e-3, gt=0)
    # RMSprop: Keras' rho is PyTorch's alpha; Keras adds epsilon outside the square root too.
    rho: float = Field(default=0.9, gt=0, lt=1)
    epsilon: float = Field(default=1e-7, gt=0)
    batch_size: PositiveInt = 100
    epochs: PositiveInt = 50
    seed: int = Field(default=0, ge=0)
    device: Device = "auto"
    # KL warm-up: the KL weight grows linearly from 0 to the model's beta over these epochs
    kl_warmup_epochs: int = Field(default=0, ge=0)
    # mixture-prior models (VaDE): after this many epochs, fit a Gaussian mixture to the
    # training latent means and start the prior from it (0: the prior starts at random)
    gmm_init_epochs: int = Field(default=0, ge=0)
    # semi-supervised models: every step also trains the classifier on this many labelled
    # samples, drawn class-balanced with replacement from the labelled ones (0: labels count
    # only where they happen to fall in a batch)
    labelled_batch_size: int = Field(default=32, ge=0)
    # ... each turned by a random one of the 8 flips/quarter turns (patches have no upright)
    augment_labelled: bool = True


class MnistStudyConfig(BaseModel):
    """Everything a ``patchvae mnist`` run depends on; saved as ``settings.yaml`` in the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str | None = None  # None: the download cache (``--download``) or the bundled sample
    use_bundled_sample: bool = False
    digits: list[int] = Field(default_factory=lambda: [7, 9])
    preset: str | None = "keras2016"
    model: VAEConfig = Field(default_factory=VAEConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # also cluster a 2-D UMAP of the latent (fitted on train latents; needs umap-learn)
    umap: bool = False

    @field_validator("digits")
    @classmethod
    def _check_digits(cls, digits: list[int]) -> list[int]:
        bad = [d for d in digits if not 0 <= d <= 9]
        if bad:
            raise ValueError(f"digits must lie in 0-9, got {bad}")
        if len(set(digits)) < 2:
            raise ValueError(f"give at least two different digits, got {digits}")
        return sorted(set(digits))


M = TypeVar("M", bound=BaseModel)


def validation_message(exc: ValidationError) -> str:
    """One line naming each bad setting, what it got and what it expects."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        parts.append(
            f"{where}: {message} (got {got!r})"
            if not isinstance(got, dict)
            else f"{where}: {message}"
        )
    return "; ".join(parts)


def build_config(cls: type[M], values: dict[str, Any]) -> M:
    """Validate ``values`` into ``cls``, turning a validation error into a :class:`ConfigError`."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {validation_message(exc)}") from None


def load_yaml_config(cls: type[M], path: str | Path) -> M:
    """Read a YAML settings file into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid settings: {validation_message(exc)}") from None


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


class ExtractConfig(BaseModel):
    """Settings of ``patchvae extract``: from volumes to a patch store. Saved in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Literal["auto", "isles2015", "isles2022", "csv"] = "auto"
    root: str = "."
    modalities: list[str] = Field(default_factory=lambda: ["DWI"], min_length=1)
    patch_size: PositiveInt = 28
    stride: PositiveInt | None = None  # None: the patch size (non-overlapping grid)
    spacing: float | None = Field(default=None, gt=0)  # isotropic resampling, mm
    n4: bool = False
    brain_mask: Literal["auto", "nonzero", "otsu"] = "auto"  # used when no brain-mask file
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    min_brain: float = Field(default=0.5, ge=0, le=1)
    lesion_threshold: float = Field(default=0.0, ge=0, lt=1)  # label = lesion fraction > this
    workers: PositiveInt = 1
    on_error: Literal["fail", "skip"] = "fail"

    @field_validator("clip_percentiles")
    @classmethod
    def _check_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {value}")
        return value

    @property
    def grid_stride(self) -> int:
        return self.stride or self.patch_size


class PatchTrainConfig(BaseModel):
    """Everything a ``patchvae train`` run on a patch store depends on (``settings.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patches: str
    val_cases: list[str] | None = None
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    preset: str | None = "keras2016"
    model: VAEConfig = Field(default_factory=VAEConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # semi-supervised models: how many training patches keep their label (None: all)
    label_budget: PositiveInt | None = None
