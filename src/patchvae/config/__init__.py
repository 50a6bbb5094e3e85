"""Typed, validated run settings (pydantic), loadable from and saved to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError, DataError
from patchvae.io import read_text

Device = Literal["auto", "cpu", "cuda"]
MAX_SEED = 2**32 - 1
# names that become parts of file names (grid models, modalities): no folders, no "..", no
# leading dot or dash
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$"


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
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    device: Device = "auto"
    # KL warm-up: the KL weight grows linearly from 0 to the model's beta over these epochs
    kl_warmup_epochs: int = Field(default=0, ge=0)
    # mixture-prior models (VaDE): after this many epochs, fit a Gaussian mixture to the
    # training latent means and start the prior from it (0: the prior starts at random)
    gmm_init_epochs: int = Field(default=0, ge=0)
    # ... and what those epochs train under: the mixture as it was drawn at random (VaDE as
    # first built here), or "gaussian": a plain VAE under N(0, I), the mixture switched on
    # only once fitted (pretraining; a random mixture can pull every point into one cluster)
    gmm_pretrain_prior: Literal["mixture", "gaussian"] = "mixture"
    # how the mixture is fitted to the latent means: a diagonal GMM on the means themselves
    # ("latent"), or a GMM on a UMAP embedding of them (``pip install umap-learn``), whose
    # clusters give each component's weight, mean and variance in the latent ("umap": the
    # N2D recipe, which finds the groups a GMM of the raw latent splits wrongly); or
    # "umap_self_training": that GMM's clusters taught to a small conv classifier of the
    # images (out of fold, as ``self_training``); each image's most probable cluster under
    # it then gives the weights, means and variances (square single-channel images only)
    gmm_init: Literal["latent", "umap", "umap_self_training"] = "latent"
    # GMM restarts from different starting points; the one of highest likelihood is kept
    gmm_init_restarts: PositiveInt = 3
    # after the first fit, fit the mixture again to the (now better grouped) latent means
    # every this many epochs (0: never); training under the mixture groups the latent, so a
    # later fit finds the groups better than the first one did
    gmm_refit_every: int = Field(default=0, ge=0)
    # after each fit, every training sample's cluster in that fit (the component the fit
    # starts from its group) becomes its target, and each step adds this weight x the
    # cross-entropy of p(component | z) against it: the encoder learns to put each sample
    # into its fit's component (the self-training of DEC, Xie et al. 2016, with the fit's
    # clusters as targets; 0: off). A sample the fit did not see (beyond the 20,000 a UMAP
    # fit embeds) has no target
    gmm_cluster_weight: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_mixture_fit(self) -> TrainConfig:
        if not self.gmm_init_epochs and (
            self.gmm_pretrain_prior == "gaussian" or self.gmm_refit_every or self.gmm_cluster_weight
        ):
            raise ValueError(
                "gmm_pretrain_prior: gaussian, gmm_refit_every and gmm_cluster_weight need "
                "gmm_init_epochs > 0 (the epoch the mixture is first fitted)"
            )
        return self

    # semi-supervised models: every step also trains the classifier on this many labelled
    # samples, drawn class-balanced with replacement from the labelled ones (0: labels count
    # only where they happen to fall in a batch)
    labelled_batch_size: int = Field(default=32, ge=0)
    # ... each turned by a random one of the 8 flips/quarter turns (patches have no upright)
    augment_labelled: bool = True
    # samples shuffled together: a training set up to this size is shuffled as a whole; a
    # larger one in windows of this size over blocks of 64 contiguous samples (what a stream
    # from the store can read fast). Part of the order, so of the numbers.
    shuffle_window: PositiveInt = 65536
    # patch runs: training and validation patches up to this size (MB, float32) are held in
    # memory, larger ones streamed from the store window by window (same numbers either way)
    in_memory_mb: float = Field(default=1024, ge=0)
    # DataLoader workers reading the store when streaming (0: the training process reads)
    loader_workers: int = Field(default=0, ge=0)
    # arithmetic of the training steps: auto is fp32 (bf16 autocast was measured slower for
    # these networks on an H200, see README); bf16 and fp16 (a gradient scaler) on request
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # what torch.compile compiles (a few seconds at the start, cached after; needs a C++
    # compiler on the CPU; where compiling fails, training goes on eagerly after one warning):
    # "optimizer": the optimiser's update, fused into one kernel (+13-19 % at batch 100 for
    # keras2016 on this project's 2-core CPU); "step": the whole step (forward pass, gradients
    # by torch.func, the optimiser's update) as one graph, as JAX runs a step (+50-60 % there).
    # "step" runs in one process at fp32 without per-batch labels; elsewhere it falls back to
    # "optimizer" with a warning. Off by default: fused arithmetic rounds differently, so the
    # numbers differ slightly from an eager run's
    compile: Literal["off", "optimizer", "step"] = "off"
    # stop when the validation loss has not improved for this many epochs (0: never)
    early_stopping: int = Field(default=0, ge=0)
    # also keep the checkpoint of the epoch with the lowest validation loss (best.pt)
    keep_best: bool = False
    # also write the curves for TensorBoard into RUN/tensorboard/ (needs: pip install tensorboard)
    tensorboard: bool = False
    # training on data that hold lesions (contaminated): each step ignores this fraction of
    # its batch, the samples of highest loss (a trimmed loss; 0: every sample counts)
    trim_fraction: float = Field(default=0.0, ge=0, lt=0.5)


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
    # then learn the UMAP view's clusters (its Gaussian mixture's) again from the images with
    # a small conv classifier, out of fold, and read the test images' clusters off it
    # (``self_training_*`` in metrics.json; no labels used). Needs ``umap: true``
    self_training: bool = False

    @model_validator(mode="after")
    def _self_training_needs_umap(self) -> MnistStudyConfig:
        if self.self_training and not self.umap:
            raise ValueError("self_training learns the UMAP view's clusters: set umap: true too")
        return self

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
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        parts.append(
            f"{where}: {message} (got {shown})"
            if not isinstance(got, dict)
            else f"{where}: {message}"
        )
    return "; ".join(parts)


def as_read_today(cls: type[BaseModel], saved: dict[str, Any]) -> dict[str, Any]:
    """Settings saved by an earlier version, as this one reads them: a setting added since
    takes its default (what the run did before the setting existed). Settings this version
    cannot read are returned as saved, so comparing them names the difference."""
    try:
        return cls.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return saved


def build_config(cls: type[M], values: dict[str, Any]) -> M:
    """Validate ``values`` into ``cls``, turning a validation error into a :class:`ConfigError`."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {validation_message(exc)}") from None


def parse_yaml(text: str, path: str | Path) -> Any:
    """Parse a settings file's text. Anchors and aliases are refused: a settings file needs
    none, and nested aliases can expand a kilobyte into gigabytes ("billion laughs").

    Example
    -------
    >>> parse_yaml("train: {epochs: 3}", "s.yaml")
    {'train': {'epochs': 3}}
    """
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(f"{path}: YAML anchors and aliases (& and *) are not accepted")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ").strip()
        raise ConfigError(f"{path}: not valid YAML ({' '.join(reason.split())[:200]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None


# settings that name files: in a settings or grid file, relative to that file's folder
PATH_FIELDS = ("patches", "data_dir", "root")


def load_yaml_config(cls: type[M], path: str | Path, given: dict[str, Any] | None = None) -> M:
    """Read a YAML settings file into ``cls``; any problem is a one-line error naming it.

    Paths in it (``patches``, ``data_dir``, ``root``) are relative to the file's own folder, so
    a grid or settings file works from wherever the command is started. ``given``: top-level
    values from the command line, which a recipe may leave out (the store, say) and which
    replace the file's."""
    path = Path(path)
    try:
        text = read_text(path, "settings file")
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    values = parse_yaml(text, path)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    if isinstance(values.get("model"), dict):
        from patchvae.config.model import upgrade_saved_model

        values["model"] = upgrade_saved_model(values["model"])
    for key in PATH_FIELDS:
        value = values.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            values[key] = str(path.parent / value)
    values.update({k: v for k, v in (given or {}).items() if v is not None})
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
    modalities: list[Annotated[str, Field(pattern=PLAIN_NAME)]] = Field(
        default_factory=lambda: ["DWI"], min_length=1
    )
    patch_size: PositiveInt = 28
    stride: PositiveInt | None = None  # None: the patch size (non-overlapping grid)
    # isotropic resampling, mm; below 0.1 mm no MR volume has detail and memory explodes
    spacing: float | None = Field(default=None, ge=0.1, le=100)
    n4: bool = False
    brain_mask: Literal["auto", "nonzero", "otsu"] = "auto"  # used when no brain-mask file
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    min_brain: float = Field(default=0.5, ge=0, le=1)
    lesion_threshold: float = Field(default=0.0, ge=0, lt=1)  # label = lesion fraction > this
    # other channels and masks on another grid than the first channel's: resampled onto it by
    # physical position (True), or refused (False)
    reference: bool = False
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
    # one case (a split by slabs): which interleaved set of slabs is held out, 0 to
    # 1 / val_fraction - 1 (None: the middle one); slab cross-validation runs every fold
    val_fold: NonNegativeInt | None = None
    preset: str | None = "keras2016"
    model: VAEConfig = Field(default_factory=VAEConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # semi-supervised models: how many training patches keep their label (None: all)
    label_budget: PositiveInt | None = None
    # weak supervision, for a model without a classifier: the analysis (and ``score``) fits
    # a linear score (``p_lesion_weak``) to this many labelled training patches and to
    # pseudo-labels from the label-free fusion; training itself uses no label
    weak_labels: PositiveInt | None = None
    # a CSV of the user's own patch labels (case_id, slice, row, col, label) for the
    # weak_labels or label_budget patches, instead of labels drawn from the store's lesion
    # masks: at most that many, training patches only
    patch_labels: str | None = None
    # train only on the training patches without lesion (needs lesion masks: labels are used,
    # and the report says so); validation keeps every patch
    healthy_only: bool = False

    @model_validator(mode="before")
    @classmethod
    def _label_budget_needs_a_classifier(cls, values: Any) -> Any:
        """A label budget trains a lesion/healthy classifier: without one named in the model
        settings, it gets the two-class classifier (it would otherwise train unsupervised)."""
        if not isinstance(values, dict) or not values.get("label_budget"):
            return values
        if values.get("weak_labels"):
            raise ValueError(
                "weak_labels and label_budget: give one (weak_labels fits a linear score "
                "after training; label_budget trains a classifier with the labels)"
            )
        model = values.get("model")
        if isinstance(model, VAEConfig):
            if not model.classifier_classes:
                values = {**values, "model": model.model_copy(update={"classifier_classes": 2})}
        elif isinstance(model, dict) and not model.get("classifier_classes"):
            values = {**values, "model": {**model, "classifier_classes": 2}}
        elif model is None:
            values = {**values, "model": {"classifier_classes": 2}}
        return values

    @model_validator(mode="after")
    def _patch_labels_need_a_use(self) -> PatchTrainConfig:
        if self.patch_labels and not (self.weak_labels or self.label_budget):
            raise ValueError(
                "patch_labels: give weak_labels (or label_budget) too: how many labelled "
                "patches the run may use, and how (docs/recipes/lesion-20-labels-weak.yaml)"
            )
        return self

    @model_validator(mode="after")
    def _weak_labels_without_a_classifier(self) -> PatchTrainConfig:
        if self.weak_labels and self.model.classifier_classes:
            raise ValueError(
                "weak_labels: for a model without a classifier (model.classifier_classes "
                "trains one with label_budget's labels)"
            )
        return self
