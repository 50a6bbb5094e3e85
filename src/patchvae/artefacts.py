"""patchvae's artefacts: every file name of a run folder, and the typed records stages hand on.

A run folder holds ``settings.yaml`` (written first), ``checkpoint.pt`` (after every epoch),
the stage records (``training.json`` or ``metrics.json``), the embeddings
(``embedding-<store>.parquet``), ``analysis-<store>/`` folders (``analysis.json`` and
``figure-data.npz``), and what the report draws from them (figures, ``report.html``). Only
files named here are ever removed by patchvae (when the demo replaces its own earlier output).

Stages hand results on as the records below (pydantic models, read back with
:func:`read_record`): the report and ``compare`` read these, never a stage's in-memory dicts.
Records accept fields they do not name, so an older patchvae reads a newer file.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from patchvae.errors import DataError
from patchvae.io import read_json

SETTINGS_FILE = "settings.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_CHECKPOINT_FILE = "best.pt"  # with train.keep_best: the epoch of lowest validation loss
HISTORY_CSV_FILE = "history.csv"  # the losses per epoch, for a spreadsheet or a plot
STEPS_DIR = "steps"  # the losses of every training step, one CSV per epoch
STEPS_FILE = "epoch-{epoch:04d}.csv"
STEPS_PATTERN = "epoch-*.csv"
TENSORBOARD_DIR = "tensorboard"  # with train.tensorboard: TensorBoard's event files
TENSORBOARD_PATTERN = "events.out.tfevents.*"
TRAINING_FILE = "training.json"
METRICS_FILE = "metrics.json"
ANALYSIS_FILE = "analysis.json"
REPORT_FILE = "report.html"
COMPARE_ROW_FILE = "compare-row.json"
DEMO_MARKER = "patchvae-demo.json"
ANALYSIS_PREFIX = "analysis-"
EMBEDDING_PREFIX = "embedding-"
FIGURE_DATA_FILE = "figure-data.npz"  # the arrays the report draws a stage's figures from
EMBEDDING_FORMAT = "patchvae-embedding/1"  # Parquet key-value metadata "patchvae"
SCORE_FILE = "score.json"  # ``patchvae score``'s record, in its output folder
SCORE_FORMAT = "patchvae-score/1"
PATCH_SCORES_FILE = "patch-scores.parquet"  # one row per scored patch: place and scores
COVERAGE_MAP = "coverage"  # per voxel: how many scored patches cover it

# every score's name in words: (short title, what it measures)
SCORE_WORDS: dict[str, tuple[str, str]] = {
    "recon_error": (
        "reconstruction error",
        "how badly the model redraws the patch from its own latent code",
    ),
    "kl": ("KL to the prior", "how far the patch's latent code lies from the prior"),
    "residual_p95": (
        "local residual",
        "the 95th percentile of the median-filtered difference between the patch and its "
        "restoration, inside the brain: where the model fails to redraw a spot",
    ),
    "neg_elbo": (
        "negative ELBO",
        "reconstruction error plus KL: the model's bound on how unlikely the patch is",
    ),
    "latent_nll": (
        "latent rarity",
        "how rare the patch's latent code is among the training patches' codes",
    ),
    "p_lesion": (
        "lesion probability",
        "the semi-supervised classifier's probability that the patch holds lesion",
    ),
    "p_lesion_weak": (
        "weakly supervised lesion probability",
        "a linear score of the patch's intensities, latent code and unsupervised scores, "
        "fitted to a few labelled training patches and to pseudo-labels from the label-free "
        "fusion",
    ),
    "p_lesion_weak_context": (
        "weakly supervised lesion probability in context",
        "the weakly supervised probability's rank plus half the rank of the largest among "
        "the 26 patches around it, read as the bright-spot count in context is",
    ),
    "intensity_p95": (
        "intensity baseline",
        "the patch's 95th-percentile intensity: no learning at all, the level to beat",
    ),
    "intensity_histeq": (
        "equalised intensity baseline",
        "the intensity baseline after histogram equalisation of each case (Meissen et al. "
        "2021): the same order within a case, one scale across cases",
    ),
    "intensity_spots": (
        "bright-spot count",
        "how many of the patch's voxels deeper than 12 pixels inside the brain are among "
        "its case's brightest 1 % and bright in an adjacent slice too: small bright lesions that "
        "move no percentile; no learning",
    ),
    "intensity_spots_context": (
        "bright-spot count in context",
        "the bright-spot count's rank plus half the rank of the largest count among the 26 "
        "patches around it (one patch away in-plane, one slice across): a lesion runs on "
        "into its neighbours, so an edge patch sits next to a full one; no learning",
    ),
    "latent_mahalanobis": (
        "latent Mahalanobis",
        "the distance of the patch's latent mean from the training patches' (a Gaussian fit)",
    ),
    "feature_mahalanobis": (
        "feature Mahalanobis",
        "the distance of the encoder's features of the patch from the training patches' "
        "(a Gaussian fit with Ledoit-Wolf shrinkage)",
    ),
    "fused_label_free": (
        "label-free fused score",
        "the bright-spot count in context (the intensity baseline where the patches' places "
        "are unknown) and the model's own score (a classifier's lesion probability, a DAE's "
        "local residual, any other VAE's negative ELBO) averaged by rank with equal weights: "
        "no label chooses anything",
    ),
    "fused": (
        "fused score",
        "a score with no learning (the intensity baseline or the bright-spot count) and one "
        "model score averaged by rank, the pair and the weight chosen on the training patches",
    ),
}


def score_title(name: str) -> str:
    """A score's short name in words (the code name for a score without one)."""
    return SCORE_WORDS.get(name, (name, ""))[0]


FIGURES = (
    "loss.png",
    "latent.png",
    "latent_umap.png",
    "manifold.png",
    "reconstructions.png",
    "latent_lesion.png",
    "latent_lesion_fraction.png",
    "heatmaps.png",
    "few_labels.png",
)
RUN_FILES = (
    SETTINGS_FILE,
    CHECKPOINT_FILE,
    BEST_CHECKPOINT_FILE,
    HISTORY_CSV_FILE,
    TRAINING_FILE,
    METRICS_FILE,
    FIGURE_DATA_FILE,
    REPORT_FILE,
    COMPARE_ROW_FILE,
    *FIGURES,
)
RUN_FILE_PATTERNS = (f"{EMBEDDING_PREFIX}*.csv", f"{EMBEDDING_PREFIX}*.parquet")
EXPLORER_FILE = "explorer.html"  # an analysis's latent explorer, written by the report
MAPS_DIR = "maps"  # an analysis's score maps: MAPS_DIR/<case>/<score>.nii.gz
ANALYSIS_FILES = (
    ANALYSIS_FILE,
    FIGURE_DATA_FILE,
    PATCH_SCORES_FILE,
    MAPS_DIR,
    EXPLORER_FILE,
    *FIGURES,
)


def is_run_file(name: str) -> bool:
    """Whether ``name`` is a file name patchvae writes at the top of a run folder.

    Example
    -------
    >>> is_run_file("checkpoint.pt"), is_run_file("embedding-s.csv"), is_run_file("notes.txt")
    (True, True, False)
    """
    return name in RUN_FILES or any(fnmatch.fnmatch(name, p) for p in RUN_FILE_PATTERNS)


def analysis_dir(run: str | Path, store: str | Path) -> Path:
    """Where ``patchvae analyze RUN --patches STORE`` writes: ``RUN/analysis-<store name>/``."""
    return Path(run) / f"{ANALYSIS_PREFIX}{Path(store).stem}"


def embedding_path(run: str | Path, store: str | Path) -> Path:
    """The run's own embedding of a store, written by ``patchvae embed`` (and by ``analyze``
    when it is missing or older than the checkpoint): ``RUN/embedding-<store name>.parquet``."""
    return Path(run) / f"{EMBEDDING_PREFIX}{Path(store).stem}.parquet"


class Record(BaseModel):
    """Base of the records: unknown fields are kept (a newer patchvae may add some)."""

    model_config = ConfigDict(extra="allow")


class FileRef(Record):
    """A file an artefact was made from, and its SHA-256 at the time."""

    path: str
    sha256: str


class CheckpointRef(Record):
    """The checkpoint an artefact was made from: its epoch count and SHA-256."""

    epoch: int
    sha256: str


class TrainingRecord(Record):
    """``training.json``: what ``patchvae train`` did (the split, the losses per epoch)."""

    split: dict[str, Any]
    store: FileRef
    labelled_training_patches: int = 0
    # the user's patch labels file (settings' patch_labels), as it was when training began
    patch_labels: FileRef | None = None
    history: list[dict[str, float]]
    epochs: int
    train_seconds: float
    settings: dict[str, Any]
    provenance: dict[str, Any]
    reproduce: str
    # the training store's extraction settings (``patchvae score`` preprocesses new volumes
    # with them); None for runs of patchvae 0.2 and earlier, which read them from the store
    extraction: dict[str, Any] | None = None


class ScoreRecord(Record):
    """``score.json``: a run applied to volumes; where each score map and patch table lies."""

    format: str
    run: str
    checkpoint: CheckpointRef
    stride: int
    extraction: dict[str, Any]
    scores: dict[str, str]  # score name -> what it means, in words
    cases: list[dict[str, Any]]  # per case: its files, maps, patch count, voxel metrics
    provenance: dict[str, Any]
    reproduce: str


# the optional clusterings of an MNIST run, each an accuracy against the digits, in the
# order a summary lists them (present only when the run's settings asked for them)
CLUSTER_READ_OFFS = (
    "umap_kmeans_accuracy",
    "umap_gmm_accuracy",
    "prior_cluster_accuracy",
    "self_training_accuracy",
)


class MnistRecord(Record):
    """``metrics.json`` of an MNIST run: clustering of the test latents, losses, the history.
    Optional scores (``umap_*``, ``prior_cluster_*``) are extra fields."""

    kmeans_accuracy: float
    nmi: float
    ari: float
    silhouette: float
    logreg_accuracy: float
    test_loss: float
    test_recon: float
    test_kl: float
    epochs: int
    seed: int
    train_seconds: float
    n_train: int
    n_test: int
    digits: list[int]
    latent_dim: int
    parameters: int
    device: str
    projection: dict[str, Any]
    history: list[dict[str, float]]
    settings: dict[str, Any]
    data_dir: str
    data_sources: dict[str, Any]
    split: dict[str, Any]
    provenance: dict[str, Any]
    reproduce: str
    command: str = ""

    def scores(self) -> dict[str, float]:
        """Every number of the run (the named scores and the optional extra ones)."""
        return {
            k: v
            for k, v in self.model_dump().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }


class EmbeddingInfo(Record):
    """What an embedding table was made from (Parquet metadata ``patchvae``)."""

    format: str
    run: str
    checkpoint: CheckpointRef
    store: FileRef
    provenance: dict[str, Any]


class AnalysisResult(Record):
    """``analysis.json``: lesion against healthy on held-out patches, beside the baseline."""

    store: FileRef
    run: str
    checkpoint: CheckpointRef | None = None
    embeddings: dict[str, str] = {}
    seed: int
    evaluation_set: str
    n_patches: int
    n_lesion: int
    cases: list[str]
    patch_scores: dict[str, dict[str, Any]]
    voxel_scores: dict[str, dict[str, Any]]
    clustering: dict[str, dict[str, float]]
    few_labels: dict[str, dict[str, dict[str, float] | None]]
    projection: dict[str, Any] = {}
    heatmaps: dict[str, Any] = {}
    maps: dict[str, dict[str, str]] = {}  # case -> score -> NIfTI map, relative to the folder
    settings: dict[str, Any]
    extraction: dict[str, Any] = {}  # the analysed store's extraction settings
    # the fused score: the score with no learning ("base") and the model score ("partner")
    # fused, and the base's weight, chosen on the training patches (empty without lesion
    # labels there)
    fusion: dict[str, Any] = {}
    # a run with weak labels: how many training patches its weakly supervised score was
    # fitted on, labelled (and how many of them lesion) and pseudo-labelled (empty for others)
    weak_labels: dict[str, int] = {}
    provenance: dict[str, Any]
    reproduce: str

    @property
    def baseline(self) -> str | None:
        """The name of the intensity baseline every score is set beside: the first score of
        kind ``baseline`` (the plain p95; the equalised one comes after it)."""
        return next((n for n, m in self.patch_scores.items() if m["kind"] == "baseline"), None)


R = TypeVar("R", bound=Record)


def read_record(cls: type[R], path: str | Path, what: str) -> R:
    """Read a record back; missing or damaged is one line naming the file."""
    try:
        return cls.model_validate(read_json(path, what))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise DataError(
            path, f"{what} is damaged ({where}: {first['msg']}); re-create it"
        ) from None
