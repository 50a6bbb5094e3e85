"""The training stage: a patch store -> a run folder (``checkpoint.pt``, ``training.json``).

The reference study's second part: the same network trained on image patches, with a by-case
split (:mod:`patchvae.splits`). The report draws the loss curves from ``training.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from patchvae.artefacts import (
    CHECKPOINT_FILE,
    SETTINGS_FILE,
    TRAINING_FILE,
    FileRef,
    TrainingRecord,
    read_record,
)
from patchvae.checkpoint import load_checkpoint
from patchvae.config import PatchTrainConfig
from patchvae.errors import ConfigError, DataError, RunDirError
from patchvae.feed import ArrayRows, Rows, StoreRows
from patchvae.io import write_json_atomic
from patchvae.rundir import open_run_dir
from patchvae.runtime import provenance, ranks, select_device, start_distributed
from patchvae.splits import Split, draw_labelled, read_patch_labels, split_patches
from patchvae.store import PatchStore, file_sha256
from patchvae.train import fit


def train_on_store(
    config: PatchTrainConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> TrainingRecord:
    """Train a VAE on the training part of a patch store; write the run folder.

    Returns the training record (split, history, seconds) also written to ``training.json``.
    """
    store = PatchStore(config.patches)
    if store.n_patches == 0:
        raise DataError(store.path, "the patch store holds no patches")
    expected = store.input_shape
    if tuple(config.model.input_shape) != expected:
        raise ConfigError(
            f"model.input_shape: {tuple(config.model.input_shape)} does not match the store's "
            f"patches {expected}"
        )
    # the run must find its store (and labels) from any folder: record them absolute
    config = config.model_copy(update={"patches": str(store.path.resolve())})
    if config.patch_labels:
        config = config.model_copy(
            update={"patch_labels": str(Path(config.patch_labels).resolve())}
        )
    select_device(config.train.device)  # refuse an unusable device before writing anything
    table = store.table()
    split = split_patches(
        table, config.val_cases, config.val_fraction, config.train.seed, fold=config.val_fold
    )
    if config.healthy_only:
        split = split.without_lesion(table.label.to_numpy())
    given = user_labels(config, table, split)
    train_labels = table.label.to_numpy()[split.train_rows]
    y_train, labelled = _training_labels(
        config, train_labels, None if given is None else given[split.train_rows]
    )
    if config.weak_labels and given is None and not (train_labels >= 0).any():
        raise ConfigError(
            "weak_labels: no training patch has a label (no lesion masks?); label some "
            "yourself with patch_labels (--labels FILE.csv)"
        )
    out = Path(out)
    if resume:
        _check_same_store(out / CHECKPOINT_FILE, file_sha256(store.path))
    here, _ = start_distributed(config.train.device)  # a torchrun job: join it first
    if not here.main:  # the other processes train their parts and write nothing
        return _train(
            config, out, _resuming_as_main(None), store, split, y_train, labelled, progress
        )
    with open_run_dir(out, config, resume) as resuming:
        _resuming_as_main(resuming)
        record = _train(config, out, resuming, store, split, y_train, labelled, progress)
        write_json_atomic(out / TRAINING_FILE, record.model_dump(mode="json"))
    return record


def _resuming_as_main(resuming: bool | None) -> bool:
    """In a torchrun job, every process learns from the main one (which checked the run
    folder) whether there is a checkpoint to continue from."""
    if ranks().world == 1:
        return bool(resuming)
    import torch.distributed as dist

    box = [resuming]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _train(
    config: PatchTrainConfig,
    out: Path,
    resuming: bool,
    store: PatchStore,
    split: Split,
    y_train: torch.Tensor | None,
    labelled: int,
    progress: bool,
) -> TrainingRecord:
    store_record = FileRef(path=str(store.path.resolve()), sha256=file_sha256(store.path))
    labels_record = None
    if config.patch_labels:
        path = Path(config.patch_labels)
        labels_record = FileRef(path=str(path), sha256=file_sha256(path))
    x_train, x_val = training_rows(store, split, config.train.in_memory_mb)
    result = fit(
        config.model,
        config.train,
        x_train,
        x_val,
        checkpoint_path=out / CHECKPOINT_FILE,
        resume=resuming,
        progress=progress,
        metadata={"split": split.record(), "store": store_record.model_dump()},
        y_train=y_train,
    )
    return TrainingRecord(
        split=split.record(),
        store=store_record,
        labelled_training_patches=labelled,
        patch_labels=labels_record,
        history=result.history,
        epochs=len(result.history),
        train_seconds=round(result.train_seconds, 3),
        settings=config.model_dump(mode="json"),
        provenance={**provenance(result.device), **result.extra},
        reproduce=f"patchvae train --config {out / SETTINGS_FILE} --out NEW_RUN_DIR",
        extraction=store.settings,
    )


def training_rows(store: PatchStore, split: Split, in_memory_mb: float) -> tuple[Rows, Rows]:
    """The training and validation patches: read into memory when together they take at most
    ``in_memory_mb``, else streamed from the store window by window (the same numbers)."""
    train, val = (
        StoreRows(store.path, rows, store.input_shape)
        for rows in (split.train_rows, split.val_rows)
    )
    if train.nbytes + val.nbytes > in_memory_mb * 2**20:
        return train, val
    return ArrayRows(train.read(np.arange(train.n))), ArrayRows(val.read(np.arange(val.n)))


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


def user_labels(config: PatchTrainConfig, table: pd.DataFrame, split: Split) -> np.ndarray | None:
    """The user's patch labels (``patch_labels``), one per row of the store's ``table`` (-1
    where none), checked against the run: training patches only (a labelled held-out patch
    would be scored by a model that learnt its label), at most the run's budget, lesion and
    healthy both; None without a file."""
    if not config.patch_labels:
        return None
    path = config.patch_labels
    found = read_patch_labels(path, table)
    held = int((found[split.val_rows] >= 0).sum())
    if held:
        raise DataError(
            path,
            f"{held} labelled patch(es) lie in the held-out part of the split; label "
            "training patches only (their scores would be read as unseen)",
        )
    budget = config.weak_labels or config.label_budget
    n = int((found >= 0).sum())
    if budget is not None and n > budget:
        name = "weak_labels" if config.weak_labels else "label_budget"
        raise DataError(path, f"{n} labelled patches, more than {name} ({budget}) allows")
    if not {0, 1} <= set(found[found >= 0].tolist()):
        raise DataError(path, "needs lesion (1) and healthy (0) patches, at least one of each")
    return found


def _training_labels(
    config: PatchTrainConfig, labels: np.ndarray, given: np.ndarray | None = None
) -> tuple[torch.Tensor | None, int]:
    """Labels for a semi-supervised model: the user's labels of the training patches
    (``given``, from ``patch_labels``), else the store's labels of ``label_budget`` training
    patches drawn at random (at least one of each class); -1 for the others."""
    if not config.model.classifier_classes:
        return None, 0
    if config.model.classifier_classes != 2:
        raise ConfigError("model.classifier_classes: patch labels are lesion/healthy; use 2")
    if given is not None:
        return torch.from_numpy(given.copy()), int((given >= 0).sum())
    kept = draw_labelled(labels, config.label_budget, config.train.seed)
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
        split = read_record(TrainingRecord, path, "training record").split
        return Split(
            split["method"],
            np.zeros(0),
            np.zeros(0),
            list(split["train_cases"]),
            list(split["val_cases"]),
            split["val_slices"],
            bool(split.get("healthy_only", False)),
        )
    except (KeyError, TypeError):
        raise DataError(path, "training record is damaged (no valid split)") from None
