"""Training loop: seeded, resumable, any batch size, CPU or CUDA, with a progress bar.

Data are in-memory tensors (N, C, H, W) in [0, 1]; every batch is drawn from a seeded
permutation and the last, smaller batch of an epoch is kept, so any batch size works with any
dataset size. After each epoch a checkpoint is written atomically; ``resume=True`` continues
from it with the same weights, optimiser state and random streams, so an interrupted and
resumed run gives the losses of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from patchvae.config import TrainConfig
from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError
from patchvae.feed import ArrayRows, Rows
from patchvae.models.vae import VAE
from patchvae.progress import progress_bar
from patchvae.runtime import deterministic_kernels
from patchvae.train.aids import Curves, init_prior_from_gmm, resolve_precision
from patchvae.train.steps import _Run, evaluate, make_optimizer

__all__ = [
    "TrainResult",
    "evaluate",
    "fit",
    "init_prior_from_gmm",
    "make_optimizer",
    "resolve_precision",
]


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model and its per-epoch history."""

    model: VAE
    history: list[dict[str, float]]
    train_seconds: float
    device: torch.device
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def fit(
    model_config: VAEConfig,
    train_config: TrainConfig,
    x_train: torch.Tensor | Rows,
    x_val: torch.Tensor | Rows | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    y_train: torch.Tensor | None = None,
) -> TrainResult:
    """Train a VAE built from ``model_config`` on ``x_train`` for ``train_config.epochs``.

    Parameters
    ----------
    model_config, train_config
        Model and optimisation settings (both saved in the checkpoint).
    x_train, x_val
        Float tensors (N, C, H, W) in [0, 1], or :class:`~patchvae.feed.Rows` (a store's
        rows, streamed); ``x_val`` is scored after every epoch.
    checkpoint_path
        Where the checkpoint goes after every epoch (atomically); ``None`` keeps none.
    resume
        Continue from ``checkpoint_path`` (same settings; ``epochs`` may be raised).
    progress
        Show a progress bar with the running loss.
    metadata
        Extra JSON-able facts stored in the checkpoint (data sources, the split, ...).
    y_train
        Class labels (N,) for a semi-supervised model, -1 where unlabelled.

    Returns
    -------
    TrainResult with the model (eval mode) and the history: one dict per epoch with
    ``train_loss``, ``train_recon``, ``train_kl``, ``val_*`` (when ``x_val`` is given), ``seconds``.
    """
    train_rows = x_train if isinstance(x_train, Rows) else ArrayRows(x_train)
    if tuple(train_rows.shape) != tuple(model_config.input_shape):
        raise ConfigError(
            f"input_shape: model expects {tuple(model_config.input_shape)}, "
            f"data are {tuple(train_rows.shape)}"
        )
    if len(train_rows) == 0:
        raise ConfigError("training data: no samples to train on")
    if train_config.tensorboard:
        Curves.check_available()
    if (train_config.early_stopping or train_config.keep_best) and (
        x_val is None or not len(x_val)
    ):
        raise ConfigError("early_stopping and keep_best need validation data")
    run = _Run(model_config, train_config)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        if checkpoint_path is None:
            raise ConfigError("resume: no checkpoint path given")
        history, start_epoch = run.restore(checkpoint_path)
    run.set_data(train_rows, y_train)
    progress = progress and run.ranks.main
    bar = progress_bar(run.steps * train_config.epochs, run.steps * start_epoch, progress)
    run.model.train()
    # the bar is closed on any exit, so no bar line follows an error; so are the curves
    with bar, run, deterministic_kernels(run.device):
        for epoch in range(start_epoch, train_config.epochs):
            if run.stopped_early(history):  # also right after a resume
                break
            history.append(run.epoch(epoch, bar if progress else None, x_val))
            if checkpoint_path is not None and run.ranks.main:  # one process writes
                run.save(checkpoint_path, epoch + 1, history, metadata)
                run.log(Path(checkpoint_path), epoch + 1, history, metadata)
    run.model.eval()
    return TrainResult(
        model=run.model,
        history=history,
        train_seconds=sum(h["seconds"] for h in history),
        device=run.device,
        resumed_from_epoch=start_epoch,
        extra={
            "precision": run.precision,
            "world_size": run.ranks.world,
            # what ran compiled: "step" ("step (CUDA graphs)"), "optimizer" or "off" (also
            # after a fallback)
            "compiled": run.compiled(),
        },
    )
