"""The embedding stage: a run's checkpoint + a patch store -> an embedding table.

Per patch: latent means and log-variances, reconstruction error, KL, negative ELBO, the
classifier's lesion probability (semi-supervised runs), the store's provenance columns and
whether the run trained on the patch. The run's own table, ``RUN/embedding-<store>.parquet``,
records the checkpoint and store it was made from, so later stages need neither the model nor
a second pass over the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from patchvae.analysis.anomaly import MAHALANOBIS_FIT_PATCHES, fit_gaussian, mahalanobis
from patchvae.artefacts import (
    CHECKPOINT_FILE,
    EMBEDDING_FORMAT,
    TRAINING_FILE,
    CheckpointRef,
    EmbeddingInfo,
    FileRef,
    TrainingRecord,
    embedding_path,
    read_record,
)
from patchvae.checkpoint import checkpoint_epoch, load_checkpoint, model_from_payload
from patchvae.embed import encoder_features, score_patches
from patchvae.errors import DataError, RunDirError
from patchvae.io import check_replaceable
from patchvae.locks import lock_file, lock_folder
from patchvae.runtime import provenance
from patchvae.stages.training import run_split
from patchvae.store import PatchStore, file_sha256
from patchvae.tables import (
    check_table_name,
    is_embedding_table,
    read_embedding_info,
    write_table,
)

# columns every embedding has since patchvae 0.3; an older table is made again when it can be
CURRENT_COLUMNS = ("residual_p95", "trained_on")


def checkpoint_record(run: str | Path, payload: dict[str, Any] | None = None) -> CheckpointRef:
    """Which checkpoint a derived artefact (embedding, analysis) is made from: its epoch and
    SHA-256, so a report can tell when the run has moved on since (``payload``: the
    checkpoint, when already loaded)."""
    path = Path(run) / CHECKPOINT_FILE
    return CheckpointRef(epoch=checkpoint_epoch(path, payload), sha256=file_sha256(path))


def embed_store(
    run: str | Path,
    store_path: str | Path,
    batch_size: int = 1000,
    payload: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Per patch of ``store_path``: latent means and log-variances, reconstruction error, KL,
    negative ELBO, the store's provenance columns, and whether the run trained on the patch
    (``payload``: the run's checkpoint, when already loaded)."""
    run = Path(run)
    split = run_split(run)
    path = run / CHECKPOINT_FILE
    if payload is None:
        if not path.is_file():
            raise DataError(path, "not found: embedding a store needs the run's checkpoint")
        payload = load_checkpoint(path)
    model, epoch = model_from_payload(payload, path), checkpoint_epoch(path, payload)
    store = PatchStore(store_path)
    expected = tuple(model.config.input_shape)
    found = store.input_shape
    if expected != found:
        raise DataError(store.path, f"patches {found} do not fit the run's model {expected}")
    table = store.table()
    scores = score_patches(model, store.patches(), batch_size)
    table["seen_in_training"] = split.seen_in_training(table)
    table["trained_on"] = split.trained_on(table)
    latent = {f"mu_{i}": scores.mu[:, i] for i in range(scores.mu.shape[1])}
    latent.update({f"logvar_{i}": scores.logvar[:, i] for i in range(scores.logvar.shape[1])})
    if scores.class_probability is not None:
        latent["p_lesion"] = scores.class_probability[:, 1]
    if scores.features is not None:
        trained = table["trained_on"].to_numpy()
        mean, precision = _feature_gaussian(run, model, scores.features, trained)
        latent["feature_mahalanobis"] = mahalanobis(scores.features, mean, precision)
    extra = pd.DataFrame(
        {
            **latent,
            "recon_error": scores.recon_error,
            "kl": scores.kl,
            "neg_elbo": scores.recon_error + scores.kl,
            "residual_p95": scores.residual,
            "checkpoint_epoch": np.full(len(table), epoch, dtype=np.int32),
        }
    )
    return pd.concat([table, extra], axis=1)


def _feature_gaussian(
    run: Path, model: Any, features: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian fitted to the encoder features of the patches the run trained on: those of
    this store where it holds them, else (another store) drawn from the training store."""
    record = read_record(TrainingRecord, run / TRAINING_FILE, "training record")
    seed = int(record.settings.get("train", {}).get("seed", 0))
    if seen.any():
        return fit_gaussian(features[seen], seed)
    store = PatchStore(record.store.path)
    rows = np.flatnonzero(run_split(run).trained_on(store.table()))
    if rows.size > MAHALANOBIS_FIT_PATCHES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAHALANOBIS_FIT_PATCHES, False))
    return fit_gaussian(encoder_features(model, store.patches(rows)), seed)


def embed_to_table(
    run: str | Path, store_path: str | Path, out: str | Path | None = None, force: bool = False
) -> tuple[Path, pd.DataFrame]:
    """Embed a store with a run's checkpoint into a table: ``out`` (.csv or .parquet), or by
    default the run's own ``RUN/embedding-<store>.parquet`` (replaced when embedded again).
    An existing ``out`` is replaced only with ``force`` and only if it is an embedding table.
    Parquet tables record the checkpoint and store they were made from."""
    run = Path(run)
    if out is None:
        out, force = embedding_path(run, store_path), True
        check_same_store(out, Path(store_path))
    out = check_table_name(out)  # before any work
    check_replaceable(out, force, is_embedding_table, "embedding table")
    with lock_folder(run, create=False), lock_file(out):
        return _embed(run, Path(store_path), out)


def _embed(run: Path, store_path: Path, out: Path) -> tuple[Path, pd.DataFrame]:
    payload = load_checkpoint(run / CHECKPOINT_FILE)  # read once: model, epoch and record
    made_from = checkpoint_record(run, payload)
    frame = embed_store(run, store_path, payload=payload)
    info = EmbeddingInfo(
        format=EMBEDDING_FORMAT,
        run=str(run.resolve()),
        checkpoint=made_from,
        store=FileRef(path=str(store_path.resolve()), sha256=file_sha256(store_path)),
        provenance=provenance(),
    )
    return write_table(frame, out, info), frame


def check_same_store(path: Path, store: Path) -> None:
    """The run's embedding named after a store is replaced only by an embedding of the same
    store: another store of the same file name (other folder, other content) is refused."""
    if not path.is_file() or not store.is_file():
        return
    try:
        info = read_embedding_info(path)
    except DataError:
        return  # damaged: ours (in the run folder), replaced whole
    same_path = Path(info.store.path) == store.resolve()
    if not same_path and info.store.sha256 != file_sha256(store):
        raise RunDirError(
            f"{path}: holds the embedding of another store ({info.store.path}); rename or "
            f"copy {store.name} to embed it beside that one"
        )


def current_embedding(run: str | Path, store_path: str | Path) -> Path:
    """The run's own embedding of a store, made (again) when it is missing or was made from
    another checkpoint; kept as it is when the checkpoint is gone (the later stages need only
    the table). Returns its path.

    Example: ``analyze`` calls this for the training store and the analysed store, so a run
    whose ``checkpoint.pt`` was deleted after ``embed`` can still be analysed.
    """
    run, store_path = Path(run), Path(store_path)
    path = embedding_path(run, store_path)
    checkpoint = run / CHECKPOINT_FILE
    check_same_store(path, store_path)
    if path.is_file() and not checkpoint.is_file():
        return path
    if path.is_file():
        info = read_embedding_info(path)
        current = set(CURRENT_COLUMNS) <= set(pq.read_schema(path).names)
        if (
            current  # made by an older patchvae: made again with today's scores
            and info.checkpoint.sha256 == file_sha256(checkpoint)
            and info.store.sha256 == file_sha256(store_path)
        ):
            return path
    if not checkpoint.is_file():
        raise DataError(
            checkpoint,
            f"not found, and the run holds no embedding of {store_path.name} ({path.name}); "
            "the embedding needs the checkpoint",
        )
    embed_to_table(run, store_path)
    return path
