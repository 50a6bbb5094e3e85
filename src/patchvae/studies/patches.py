"""The reference study's second part: the same network trained on image patches.

Train on a patch store with a by-case split (:mod:`patchvae.splits`), then embed any store
(seen or held-out cases) with the run's checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from patchvae.checkpoint import load_model
from patchvae.config import PatchTrainConfig
from patchvae.embed import score_patches
from patchvae.errors import ConfigError, DataError
from patchvae.io import write_json_atomic
from patchvae.report.figures import plot_loss_curves
from patchvae.rundir import CHECKPOINT_FILE, SETTINGS_FILE, prepare_run_dir
from patchvae.runtime import provenance
from patchvae.splits import Split, split_patches
from patchvae.store import PatchStore, file_sha256
from patchvae.train import fit

TRAINING_FILE = "training.json"


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
    table = store.table()
    split = split_patches(table, config.val_cases, config.val_fraction, config.train.seed)
    out = prepare_run_dir(out, config, resume)
    patches = store.patches()
    x_train = torch.from_numpy(patches[split.train_rows])
    x_val = torch.from_numpy(patches[split.val_rows])
    store_record = {"path": str(store.path.resolve()), "sha256": file_sha256(store.path)}
    y_train, labelled = _training_labels(config, table.label.to_numpy()[split.train_rows])
    result = fit(
        config.model,
        config.train,
        x_train,
        x_val,
        checkpoint_path=out / CHECKPOINT_FILE,
        resume=resume,
        progress=progress,
        metadata={"split": split.record(), "store": store_record},
        y_train=y_train,
    )
    plot_loss_curves(result.history, out / "loss.png", "Loss per patch (validation: held-out part)")
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
        raise DataError(path, "not found: is this a run folder made by `patchvae train`?")
    split = json.loads(path.read_text())["split"]
    return Split(
        split["method"],
        np.zeros(0),
        np.zeros(0),
        split["train_cases"],
        split["val_cases"],
        split["val_slices"],
    )


def embed_store(run: str | Path, store_path: str | Path, batch_size: int = 1000) -> pd.DataFrame:
    """Per patch of ``store_path``: latent means and log-variances, reconstruction error, KL,
    negative ELBO, the store's provenance columns, and whether the run trained on the patch."""
    run = Path(run)
    model = load_model(run / CHECKPOINT_FILE)
    store = PatchStore(store_path)
    expected = tuple(model.config.input_shape)
    found = (len(store.channels), store.patch_size, store.patch_size)
    if expected != found:
        raise DataError(store.path, f"patches {found} do not fit the run's model {expected}")
    table = store.table()
    scores = score_patches(model, store.patches(), batch_size)
    table["seen_in_training"] = run_split(run).seen_in_training(table)
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
        }
    )
    return pd.concat([table, extra], axis=1)


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``, needs pyarrow) or CSV, atomically."""
    from patchvae.io import atomic_path

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
