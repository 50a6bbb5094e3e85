"""Settings of ``patchvae compare``: a grid of model settings, each trained with several seeds."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from patchvae.config import MAX_SEED, PLAIN_NAME


class CompareEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=PLAIN_NAME)  # a folder name under --out: no "/", no ".."
    preset: str = "keras2016"
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    # MNIST: also cluster a 2-D UMAP of the latent; and learn its clusters from the images
    # (None: the recipe's setting, else off)
    umap: bool | None = None
    self_training: bool | None = None
    label_budget: int | None = None  # patches: semi-supervised with this many labels
    # a settings file (docs/recipes/) the entry starts from, relative to the grid file; the
    # entry's model and train settings apply on top of it
    recipe: str | None = None


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["mnist", "patches"]
    data_dir: str | None = None  # mnist: folder of the official files; None: the bundled sample
    digits: list[int] = Field(default_factory=lambda: [7, 9])
    patches: str | None = None  # patches: the store
    val_cases: list[str] | None = None
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_fold: NonNegativeInt | None = None  # one case: which slabs are held out (see train)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1
    )
    models: list[CompareEntry] = Field(default_factory=list)
    # every model trains this many epochs (overrides the presets and the entries; None: theirs)
    epochs: PositiveInt | None = None
    # add the 2016 network as a row when no entry is it (false: a grid whose data make that
    # row costly and uninformative, e.g. all 60,000 MNIST digits; say so in the grid)
    reference: bool = True

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if self.dataset == "patches" and not self.patches:
            raise ValueError("dataset 'patches' needs 'patches: STORE' (a store from extract)")
        names = [entry.name for entry in self.models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"model names must differ; repeated: {repeated}")
        return self
