"""The reference study's second part: the same network trained on image patches.

Train on a patch store with a by-case split (:mod:`patchvae.splits`), then embed any store
(seen or held-out cases) with the run's checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from patchvae.artefacts import CHECKPOINT_FILE, SETTINGS_FILE, TRAINING_FILE
from patchvae.checkpoint import checkpoint_epoch, load_checkpoint, model_from_payload
from patchvae.config import PatchTrainConfig
from patchvae.embed import score_patches
from patchvae.errors import ConfigError, DataError, RunDirError
from patchvae.io import atomic_path, check_replaceable, read_json, write_json_atomic
from patchvae.locks import lock_file, lock_folder
from patchvae.report.figures import plot_loss_curves
from patchvae.rundir import open_run_dir
from patchvae.runtime import provenance, select_device
from patchvae.splits import Split, split_patches
from patchvae.store import PatchStore, file_sha256
from patchvae.train import fit


def train_on_store(
    config: PatchTrainConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train a VAE on the training part of a patch store; write the run folder.

    Returns the training record (split, history, seconds) also written to ``training.json``.
    """
    store = PatchStore(config.patches)
    if store.n_patches == 0:
        raise DataError(store.path, "the patch store holds no patches")
    expected = (len(store.channels), store.patch_size, store.patch_size)
    if tuple(config.model.input_shape) != expected:
        raise ConfigError(
            f"model.input_shape: {tuple(config.model.input_shape)} does not match the store's "
            f"patches {expected}"
        )
    # the run must find its store from any folder: record it absolute
    config = config.model_copy(update={"patches": str(store.path.resolve())})
    select_device(config.train.device)  # refuse an unusable device before writing anything
    table = store.table()
    split = split_patches(table, config.val_cases, config.val_fraction, config.train.seed)
    patches = store.patches()
    y_train, labelled = _training_labels(config, table.label.to_numpy()[split.train_rows])
    out = Path(out)
    store_record = {"path": str(store.path.resolve()), "sha256": file_sha256(store.path)}
    if resume:
        _check_same_store(out / CHECKPOINT_FILE, store_record["sha256"])
    with open_run_dir(out, config, resume) as resuming:
        x_train = torch.from_numpy(patches[split.train_rows])
        x_val = torch.from_numpy(patches[split.val_rows])
        del patches
        result = fit(
            config.model,
            config.train,
            x_train,
            x_val,
            checkpoint_path=out / CHECKPOINT_FILE,
            resume=resuming,
            progress=progress,
            metadata={"split": split.record(), "store": store_record},
            y_train=y_train,
        )
        plot_loss_curves(
            result.history, out / "loss.png", "Loss per patch (validation: held-out part)"
        )
        record = {
            "split": split.record(),
            "store": store_record,
            "labelled_training_patches": labelled,
            "history": result.history,
            "epochs": len(result.history),
            "train_seconds": round(result.train_seconds, 3),
            "settings": config.model_dump(mode="json"),
            "provenance": provenance(result.device),
            "reproduce": f"patchvae train --config {out / SETTINGS_FILE} --out NEW_RUN_DIR",
        }
        write_json_atomic(out / TRAINING_FILE, record)
    return record


def _check_same_store(checkpoint: Path, sha256: str) -> None:
    """Resuming on a store whose content changed would train on other data without a word."""
    if not checkpoint.is_file():
        return  # nothing trained yet: any store will do
    recorded = load_checkpoint(checkpoint).get("metadata", {}).get("store", {}).get("sha256")
    if recorded is not None and recorded != sha256:
        raise RunDirError(
            f"{checkpoint.parent}: the patch store changed since this run began (its SHA-256 "
            f"was {recorded[:12]}, is {sha256[:12]}); resuming would train on other data, "
            "start a new run instead"
        )


def _training_labels(
    config: PatchTrainConfig, labels: np.ndarray
) -> tuple[torch.Tensor | None, int]:
    """Labels for a semi-supervised model: the store's labels of ``label_budget`` training
    patches drawn at random (at least one of each class), -1 for the others."""
    if not config.model.classifier_classes:
        return None, 0
    if config.model.classifier_classes != 2:
        raise ConfigError("model.classifier_classes: patch labels are lesion/healthy; use 2")
    kept = np.full(labels.shape, -1, dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    budget = known.size if config.label_budget is None else min(config.label_budget, known.size)
    rng = np.random.default_rng(config.train.seed)
    chosen = [rng.choice(np.flatnonzero(labels == c)) for c in (0, 1) if (labels == c).any()]
    rest = np.setdiff1d(known, chosen)
    chosen += rng.choice(rest, size=max(0, budget - len(chosen)), replace=False).tolist()
    kept[chosen] = labels[chosen]
    if (kept >= 0).sum() == 0:
        raise ConfigError("label_budget: no training patch has a label (no lesion masks?)")
    return torch.from_numpy(kept), int((kept >= 0).sum())


def run_split(run: str | Path) -> Split:
    """The split a run was trained with, rebuilt from its ``training.json``."""
    path = Path(run) / TRAINING_FILE
    if not path.is_file():
        raise DataError(
            path,
            "not found: the run has not finished training (resume it with `patchvae train "
            "--out RUN --resume`), or this is not a folder made by `patchvae train`",
        )
    try:
        split = read_json(path, "training record")["split"]
        return Split(
            split["method"],
            np.zeros(0),
            np.zeros(0),
            list(split["train_cases"]),
            list(split["val_cases"]),
            split["val_slices"],
        )
    except (KeyError, TypeError):
        raise DataError(path, "training record is damaged (no valid split)") from None


def checkpoint_record(run: str | Path) -> dict[str, Any]:
    """Which checkpoint a derived artefact (embedding, analysis) is made from: its epoch and
    SHA-256, so a report can tell when the run has moved on since."""
    path = Path(run) / CHECKPOINT_FILE
    return {"epoch": checkpoint_epoch(path), "sha256": file_sha256(path)}


def embed_store(run: str | Path, store_path: str | Path, batch_size: int = 1000) -> pd.DataFrame:
    """Per patch of ``store_path``: latent means and log-variances, reconstruction error, KL,
    negative ELBO, the store's provenance columns, and whether the run trained on the patch."""
    run = Path(run)
    split = run_split(run)
    path = run / CHECKPOINT_FILE
    payload = load_checkpoint(path)
    model, epoch = model_from_payload(payload, path), checkpoint_epoch(path, payload)
    store = PatchStore(store_path)
    expected = tuple(model.config.input_shape)
    found = (len(store.channels), store.patch_size, store.patch_size)
    if expected != found:
        raise DataError(store.path, f"patches {found} do not fit the run's model {expected}")
    table = store.table()
    scores = score_patches(model, store.patches(), batch_size)
    table["seen_in_training"] = split.seen_in_training(table)
    latent = {f"mu_{i}": scores.mu[:, i] for i in range(scores.mu.shape[1])}
    latent.update({f"logvar_{i}": scores.logvar[:, i] for i in range(scores.logvar.shape[1])})
    if scores.class_probability is not None:
        latent["p_lesion"] = scores.class_probability[:, 1]
    extra = pd.DataFrame(
        {
            **latent,
            "recon_error": scores.recon_error,
            "kl": scores.kl,
            "neg_elbo": scores.recon_error + scores.kl,
            "checkpoint_epoch": np.full(len(table), epoch, dtype=np.int32),
        }
    )
    return pd.concat([table, extra], axis=1)


EMBEDDING_HEAD = ("case_id", "slice", "row", "col")


def is_embedding_table(path: str | Path) -> bool:
    """Whether ``path`` is an embedding table ``patchvae embed`` wrote (by its columns)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            with path.open(encoding="utf-8") as handle:
                names = handle.readline().strip().split(",")
    except Exception:  # unreadable, binary, no pyarrow: not recognisably ours
        return False
    return tuple(names[:4]) == EMBEDDING_HEAD and "mu_0" in names and "neg_elbo" in names


def embed_to_table(
    run: str | Path, store_path: str | Path, out: str | Path | None = None, force: bool = False
) -> tuple[Path, pd.DataFrame]:
    """Embed a store with a run's checkpoint into a table: ``out``, or by default
    ``RUN/embedding-<store>.csv`` (replaced when embedded again). An existing ``out`` is
    replaced only with ``force`` and only if it is an embedding table."""
    run = Path(run)
    if out is None:
        out, force = run / f"embedding-{Path(store_path).stem}.csv", True
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"out: expected a .csv or .parquet file name, got {out.name!r}")
    check_replaceable(out, force, is_embedding_table, "embedding table")
    with lock_folder(run, create=False), lock_file(out):
        frame = embed_store(run, store_path)
        return write_table(frame, out), frame


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``, needs pyarrow) or CSV, atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"out: expected a .csv or .parquet file name, got {out.name!r}")
    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise ConfigError(
                    "out: .parquet needs pyarrow (pip install pyarrow); use .csv"
                ) from None
        else:
            frame.to_csv(tmp, index=False)
    return out
