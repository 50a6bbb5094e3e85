"""The analysis stage: a run's embeddings + the store -> ``RUN/analysis-<store>/``.

How well a run's latent space and scores separate lesion from healthy patches, on patches the
model never trained on, always beside an intensity-only baseline. It reads the embedding
tables (``RUN/embedding-<store>.parquet``), never the model: ``analysis.json`` holds the
numbers, ``figure-data.npz`` what the report draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from patchvae.analysis.anomaly import (
    CORE_FRACTION,
    core_auroc,
    detection_metrics,
    fuse_by_rank,
)
from patchvae.analysis.fewlabel import (
    LATENT_GROUP_COUNT,
    LATENT_GROUP_COUNTS,
    LATENT_GROUP_RESTARTS,
    WeakScore,
    cluster_label_auroc,
    few_label_auroc,
)
from patchvae.analysis.heatmap import (
    best_threshold,
    patch_voxels,
    voxel_metrics,
)
from patchvae.analysis.intervals import auroc_intervals
from patchvae.analysis.metrics import agreement, cluster_agreement, silhouette
from patchvae.artefacts import (
    ANALYSIS_FILE,
    ANALYSIS_FILES,
    FIGURE_DATA_FILE,
    MAPS_DIR,
    PATCH_SCORES_FILE,
    SETTINGS_FILE,
    TRAINING_FILE,
    AnalysisResult,
    EmbeddingInfo,
    FileRef,
    TrainingRecord,
    analysis_dir,
    embedding_path,
    read_record,
)
from patchvae.config import PatchTrainConfig, load_yaml_config
from patchvae.errors import DataError, RunDirError
from patchvae.io import atomic_folder, read_json, write_arrays_atomic, write_json_atomic
from patchvae.locks import lock_folder
from patchvae.stages.analysis_files import figure_data, write_case_maps
from patchvae.stages.patch_scores import (
    BASELINE,
    LABEL_FREE,
    SPOTS,
    SPOTS_CONTEXT,
    WEAK,
    WEAK_CONTEXT,
    Reference,
    at_most,
    own_score,
    patch_scores,
    recorded_patch_labels,
    training_reference,
    training_scores,
)
from patchvae.store import PatchStore, file_sha256
from patchvae.tables import latent_columns, read_embedding
from patchvae.versions import made_by

FEW_LABEL_KS = (5, 10, 20, 50)
LATENT_GROUPS = "latent groups (cluster-then-label)"
_KINDS = {
    BASELINE: "baseline",
    "intensity_histeq": "baseline",
    SPOTS: "baseline",
    SPOTS_CONTEXT: "baseline",
    "p_lesion": "semi-supervised",
    WEAK: "semi-supervised",
    WEAK_CONTEXT: "semi-supervised",
    "fused": "fused",
    LABEL_FREE: "fused",
}
FUSION_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the baseline's share


def analyze_run(run: str | Path, store_path: str | Path, seed: int = 0) -> AnalysisResult:
    """Write ``analysis.json`` and ``figure-data.npz`` into ``RUN/analysis-<store>/`` from the
    run's embeddings of this store and of its training store; return the result.

    The run folder is held for the whole analysis. An analysis folder that holds the analysis
    of another store (same file name, other path) is not replaced.
    """
    run = Path(run)
    if not (run / SETTINGS_FILE).is_file():
        raise DataError(run, f"not a run folder made by `patchvae train` (no {SETTINGS_FILE})")
    with lock_folder(run, create=False):
        return _analyze(run, PatchStore(store_path), seed)


def check_analysis_target(out: Path, store: PatchStore) -> None:
    """``out`` may receive this store's analysis: a folder patchvae made for this store."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RunDirError(f"{out}: is not a folder patchvae made; it is never replaced")
    if out.is_dir():
        strange = sorted(p.name for p in out.iterdir() if p.name not in ANALYSIS_FILES)
        if strange:
            raise RunDirError(
                f"{out / strange[0]}: was not written by patchvae; the analysis folder holding "
                "it is never replaced (move the file)"
            )
    earlier = out / ANALYSIS_FILE
    if not earlier.is_file():
        return
    try:
        other = Path(read_json(earlier, "analysis")["store"]["path"])
    except (DataError, KeyError, TypeError):
        return  # damaged: ours (it is in our run folder), and replaced whole
    if other != store.path.resolve():
        raise RunDirError(
            f"{out}: holds the analysis of another store ({other}); rename or copy "
            f"{store.path.name} to analyse it beside that one"
        )


def _check_training_store(run: Path, path: Path) -> str:
    """The analysis compares held-out patches with the training patches' latents: the
    training store must still be the one the run trained on. Returns its SHA-256."""
    recorded = read_record(TrainingRecord, run / TRAINING_FILE, "training record").store.sha256
    if not path.is_file():
        raise DataError(path, "the run's training store is gone; the analysis needs it")
    sha256 = file_sha256(path)
    if recorded != sha256:
        raise DataError(
            path,
            "the run's training store changed since training (SHA-256 differs from "
            f"{TRAINING_FILE}); extract it again with the run's settings, or train anew",
        )
    return sha256


def _embedding(run: Path, store: Path, sha256: str) -> tuple[pd.DataFrame, EmbeddingInfo]:
    """The run's embedding of ``store``, which must be of the store as it is now."""
    path = embedding_path(run, store)
    if not path.is_file():
        raise DataError(
            path, f"not found: embed the store first (patchvae embed {run} --patches {store})"
        )
    frame, info = read_embedding(path)
    if info.store.sha256 != sha256:
        raise DataError(
            path,
            f"was made from another version of {store.name} (SHA-256 differs); embed again "
            "(needs the run's checkpoint)",
        )
    return frame, info


def _analyze(run: Path, store: PatchStore, seed: int) -> AnalysisResult:
    settings = load_yaml_config(PatchTrainConfig, run / SETTINGS_FILE)
    out = analysis_dir(run, store.path)
    check_analysis_target(out, store)
    training_store = Path(settings.patches)
    frame, train_part, info, store_sha256 = _embeddings(run, store, training_store)
    held_out = ~frame.seen_in_training.to_numpy()
    evaluation = "patches the model never trained on"
    if not held_out.any():
        held_out[:] = True
        evaluation = "ALL patches (every patch of this store was seen in training)"
    rows = np.flatnonzero(held_out)
    part = frame.iloc[rows].reset_index(drop=True)
    labels = part.label.to_numpy()
    lesion_fraction = np.nan_to_num(part.lesion_fraction.to_numpy())
    labelled = labels >= 0
    if not labelled.any():
        raise DataError(
            store.path, "no patch has a lesion label (no lesion masks): nothing to score"
        )
    # the patches the model trained on (without lesion ones for a healthy-only run): the
    # reference the latent scores and the clusters are fitted on
    reference = training_reference(train_part, seed)
    mu, train_mu = latent_columns(part, "mu"), reference.mu
    patches = store.patches(rows)
    masks_lesion, masks_brain = store.masks("lesion", rows), store.masks("brain", rows)
    classifier = bool(settings.model.classifier_classes)
    unsupervised = own_score(settings.model.architecture, classifier)
    training = _training_side(run, train_part, reference, PatchStore(training_store), settings)
    # a run's weak score is fitted on the training patches and applied here
    scores = patch_scores(part, mu, reference, patches, masks_brain, unsupervised, training.weak)
    fusion = _fusion(training, scores)
    thresholds = {
        name: best_threshold(s, training.positives, training.negatives)[1]
        for name, s in training.scores.items()
    }
    intervals = auroc_intervals(
        labels[labelled],
        {name: s[labelled] for name, s in scores.items()},
        BASELINE,
        part.case_id.to_numpy()[labelled],
        seed,
    )
    groups = _latent_groups(train_mu, mu[labelled], seed)
    arrays, drawn = figure_data(part, mu, train_mu, scores, patches, masks_lesion, store)
    result = AnalysisResult(
        store=FileRef(path=str(store.path.resolve()), sha256=store_sha256),
        run=str(run.resolve()),
        checkpoint=info.checkpoint,
        embeddings={
            "analysed": str(embedding_path(run, store.path).resolve()),
            "training": str(embedding_path(run, training_store).resolve()),
        },
        seed=seed,
        evaluation_set=evaluation,
        n_patches=len(part),
        n_lesion=int((labels == 1).sum()),
        cases=sorted(part.case_id.unique().tolist()),
        patch_scores={
            name: {
                **detection_metrics(labels[labelled], s[labelled]),
                # None (JSON null) without core lesion patches
                "auroc_core": _finite_or_none(core_auroc(lesion_fraction[labelled], s[labelled])),
                "n_positives": int((labels == 1).sum()),
                "n_core": int((lesion_fraction[labelled] >= CORE_FRACTION).sum()),
                "kind": _KINDS.get(name, "vae"),
                "intervals": intervals[name],
            }
            for name, s in scores.items()
        },
        voxel_scores={
            name: voxel_metrics(s, masks_lesion, masks_brain, thresholds.get(name))
            for name, s in scores.items()
        },
        clustering=_clustering(train_mu, mu[labelled], labels[labelled], seed),
        few_labels={
            "latent": _few(mu[labelled], labels[labelled], seed),
            LATENT_GROUPS: {
                str(k): cluster_label_auroc(groups, labels[labelled], k, seed=seed)
                for k in FEW_LABEL_KS
            },
            BASELINE: _few(scores[BASELINE][labelled, None], labels[labelled], seed),
        },
        **drawn,
        settings=settings.model_dump(mode="json"),
        fusion=fusion,
        weak_labels={} if training.weak is None else training.weak.record(),
        extraction={
            k: v for k, v in store.settings.items() if k not in ("root", "workers", "on_error")
        },
        provenance=made_by(),
        reproduce=f"patchvae analyze {run} --patches {store.path} --seed {seed}",
    )
    # all files of the analysis appear together, replacing an earlier one whole
    table = part[["case_id", "slice", "row", "col", "lesion_fraction", "label"]].assign(**scores)
    with atomic_folder(out) as folder:
        write_arrays_atomic(folder / FIGURE_DATA_FILE, arrays)
        table.to_parquet(folder / PATCH_SCORES_FILE, index=False)
        result.maps = write_case_maps(folder / MAPS_DIR, table, list(scores), store)
        write_json_atomic(folder / ANALYSIS_FILE, result.model_dump(mode="json"))
    return result


def _embeddings(
    run: Path, store: PatchStore, training_store: Path
) -> tuple[pd.DataFrame, pd.DataFrame, EmbeddingInfo, str]:
    """The embedding of the analysed store, the training patches' rows of the training
    store's embedding, what they were made from, and the analysed store's SHA-256."""
    training_sha256 = _check_training_store(run, training_store)
    same_store = training_store.resolve() == store.path.resolve()
    # a store of many GB is read once for its checksum, not twice
    store_sha256 = training_sha256 if same_store else file_sha256(store.path)
    frame, info = _embedding(run, store.path, store_sha256)
    train_frame, train_info = (
        (frame, info) if same_store else _embedding(run, training_store, training_sha256)
    )
    if train_info.checkpoint.sha256 != info.checkpoint.sha256:
        raise DataError(
            embedding_path(run, store.path),
            f"and {embedding_path(run, training_store).name} were made from different "
            "checkpoints; embed both stores again",
        )
    train_part = train_frame[train_frame.seen_in_training]
    if len(train_part) < 2:
        raise DataError(
            training_store,
            f"the run trained on {len(train_part)} patch(es) of this store; the analysis fits "
            "its clusters and densities on training patches and needs at least 2",
        )
    return frame, train_part, info, store_sha256


@dataclass
class _TrainingSide:
    """The scores of (up to ``THRESHOLD_PATCHES`` of) the patches the run trained on, with
    their labels and lesion and other brain voxels: where thresholds and fusion weights are
    chosen, never on the analysed patches."""

    scores: dict[str, np.ndarray]
    labels: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    weak: WeakScore | None = None  # a run with weak labels: its score, fitted here


def _training_side(
    run: Path,
    train_part: pd.DataFrame,
    reference: Reference,
    training_store: PatchStore,
    settings: PatchTrainConfig,
) -> _TrainingSide:
    """The training patches' scores (with a run's weak labels: its weakly supervised score,
    fitted on them). The latent scores of a training patch are measured against a reference
    that includes it, so they run a little low; the other scores are what they would be on
    new patches."""
    found = training_scores(
        train_part,
        reference,
        training_store,
        settings.model.architecture,
        bool(settings.model.classifier_classes),
        settings.weak_labels,
        settings.train.seed,
        recorded_patch_labels(
            read_record(TrainingRecord, run / TRAINING_FILE, "training record"), training_store
        ),
    )
    positives, negatives = patch_voxels(training_store.masks("lesion", found.rows), found.brain)
    return _TrainingSide(found.scores, found.labels, positives, negatives, found.weak)


def _fusion(training: _TrainingSide, scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """A score with no learning (the intensity baseline or the bright-spot count) fused with
    one unsupervised model score by rank, the pair and the weight chosen by AUROC on the
    training patches (no partner, weight 1, where none helps there); adds ``fused`` to
    ``scores``. Nothing is chosen (and nothing added) without lesion labels on the training
    patches."""
    labels = training.labels
    if np.unique(labels[labels >= 0]).size < 2:
        return {}
    known = labels >= 0
    bases = [n for n in (BASELINE, SPOTS, SPOTS_CONTEXT) if n in scores and n in training.scores]
    partners = [
        n
        for n in scores
        if _KINDS.get(n, "vae") == "vae"
        and n in training.scores
        and np.ptp(training.scores[n]) > 0  # a constant (a DAE's KL) would be the base alone
    ]
    best: tuple[float, str, str | None, float] = (-1.0, "", None, 1.0)
    for base in bases:
        alone = detection_metrics(labels[known], training.scores[base][known])["auroc"]
        if alone > best[0]:  # no partner at all: the base's rank
            best = (alone, base, None, 1.0)
        for name in partners:
            for weight in FUSION_WEIGHTS:
                fused = fuse_by_rank(training.scores[base], training.scores[name], weight)
                auroc = detection_metrics(labels[known], fused[known])["auroc"]
                if auroc > best[0]:
                    best = (auroc, base, name, weight)
    auroc, base, partner, weight = best
    scores["fused"] = fuse_by_rank(scores[base], scores[partner or base], weight)
    return {"base": base, "partner": partner, "baseline_weight": weight, "training_auroc": auroc}


# the groupings of cluster-then-label are fitted on at most this many training latents (a
# sample drawn with the seed): k-means with 80 groups on 100,000 latents takes a minute. A
# sample names groups about as well: on BraTS, groupings fitted on 2,000 of the 5,691
# training latents gave 0.724 against 0.730 on the training patches (seeds 0-2). The dev
# sets' training parts (1,400-5,700 patches) are used whole
LATENT_GROUP_FIT_MAX = 20_000


def _latent_groups(train_mu: np.ndarray, mu: np.ndarray, seed: int) -> list[np.ndarray]:
    """k-means with each of ``LATENT_GROUP_COUNTS`` groups, from each of
    ``LATENT_GROUP_RESTARTS`` starts (one initialisation each), fitted on the training
    latents (at most ``LATENT_GROUP_FIT_MAX`` of them): per grouping, the group of each
    analysed patch (cluster-then-label)."""
    train_mu = train_mu[at_most(len(train_mu), LATENT_GROUP_FIT_MAX, seed)]
    found = []
    for count in LATENT_GROUP_COUNTS:
        k = min(count, len(train_mu))
        for restart in range(LATENT_GROUP_RESTARTS):
            kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed + 1000 * restart)
            found.append(kmeans.fit(train_mu).predict(mu))
    return found


def _clustering(
    train_mu: np.ndarray,
    mu: np.ndarray,
    labels: np.ndarray,
    seed: int,
) -> dict[str, dict[str, float]]:
    """k-means and a 2-component Gaussian mixture fitted on training latents, applied here;
    and ``LATENT_GROUP_COUNT`` k-means groups of them, named by majority (with every analysed
    label: an upper bound) and measured by NMI."""
    models = {
        "kmeans": KMeans(n_clusters=2, n_init=10, random_state=seed),
        "gmm": GaussianMixture(n_components=2, covariance_type="full", random_state=seed),
    }
    # the accuracy of calling every patch the commoner class: what an accuracy must beat
    majority = float(max(np.mean(labels == 1), np.mean(labels == 0)))
    found = {
        name: {**cluster_agreement(model, train_mu, mu, labels, seed), "majority": majority}
        for name, model in models.items()
    }
    n_groups = min(LATENT_GROUP_COUNT, len(train_mu))
    kmeans = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit(train_mu)
    assigned = kmeans.predict(mu)
    many = agreement(labels, assigned, n_clusters=n_groups)
    del many["matching"]  # majority-named: more groups than classes
    found[f"kmeans{n_groups}_majority_named"] = {
        **many,
        "silhouette": silhouette(mu, assigned, seed),
        "majority": majority,
    }
    return found


def _few(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, dict[str, float] | None]:
    return {str(k): few_label_auroc(features, labels, k, seed=seed) for k in FEW_LABEL_KS}


def _finite_or_none(value: float) -> float | None:
    return None if np.isnan(value) else value
