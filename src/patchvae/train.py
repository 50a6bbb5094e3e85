"""Training loop: seeded, resumable, any batch size, CPU or CUDA, with a progress bar.

Data are in-memory tensors (N, C, H, W) in [0, 1]; every batch is drawn from a seeded
permutation and the last, smaller batch of an epoch is kept, so any batch size works with any
dataset size. After each epoch a checkpoint is written atomically; ``resume=True`` continues
from it with the same weights, optimiser state and random streams, so an interrupted and
resumed run gives the losses of an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from patchvae.checkpoint import load_checkpoint, save_checkpoint
from patchvae.config import TrainConfig
from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError, TrainingDiverged
from patchvae.models.inference import infer
from patchvae.models.vae import VAE, build_model
from patchvae.runtime import provenance, seed_everything, select_device

# Offsets keep the random streams apart: weights, shuffling, training noise, evaluation noise.
_SHUFFLE_STREAM, _NOISE_STREAM, _EVAL_STREAM = 1, 2, 3


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model and its per-epoch history."""

    model: VAE
    history: list[dict[str, float]]
    train_seconds: float
    device: torch.device
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a seeded permutation of range(n) cut into ``batch_size`` pieces; the
    last piece keeps the remainder, so every sample is seen once whatever ``batch_size`` is.

    Example
    -------
    >>> [len(b) for b in batch_indices(37, 10, torch.Generator().manual_seed(0))]
    [10, 10, 10, 7]
    """
    return list(torch.randperm(n, generator=generator).split(batch_size))


class LabelledBatches:
    """The few labelled samples of a semi-supervised run, served to every training step.

    With a handful of labels among thousands of samples, a random batch rarely holds one, so
    the classifier would hardly learn. Instead each step draws ``size`` labelled samples,
    class-balanced and with replacement, optionally under a random flip/quarter turn, and
    returns the classifier's mean cross-entropy on them.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int, augment: bool) -> None:
        known = torch.nonzero(y >= 0).flatten()
        self.x, self.y = x[known], y[known]
        classes = torch.unique(self.y)
        self.by_class = [torch.nonzero(self.y == c).flatten().cpu() for c in classes]
        self.size, self.augment = size, augment

    def loss(self, model: VAE, generator: torch.Generator) -> torch.Tensor:
        if not self.by_class:
            return torch.zeros((), device=self.x.device)
        pick = torch.randint(len(self.by_class), (self.size,), generator=generator)
        index = torch.stack(
            [
                members[torch.randint(len(members), (1,), generator=generator)[0]]
                for members in (self.by_class[int(c)] for c in pick)
            ]
        ).to(self.x.device)
        x = self.x[index]
        if self.augment:
            which = torch.randint(8, (self.size,), generator=generator)
            if x.shape[2] != x.shape[3]:  # not square: half turns and flips only
                which = which // 2 * 2
            x = dihedral(x, which)
        return F.cross_entropy(model.classify(x), self.y[index])


def dihedral(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Turn each image ``x[i]`` (N, C, H, W) by the element ``which[i]`` (0-7) of the square's
    symmetry group: ``which % 4`` quarter turns, then a left-right flip if ``which >= 4`` (odd
    quarter turns need H = W).

    Example
    -------
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> dihedral(x, torch.tensor([4])).flatten().tolist()
    [1.0, 0.0, 3.0, 2.0]
    """
    out = torch.empty_like(x)
    for k in range(8):
        chosen = torch.nonzero(which.to(x.device) == k).flatten()
        if chosen.numel():
            turned = torch.rot90(x[chosen], k % 4, dims=(2, 3))
            out[chosen] = torch.flip(turned, dims=(3,)) if k >= 4 else turned
    return out


class PlainProgress:
    """Progress as a few plain lines (about ten per run) for a log file or a pipe, where a
    progress bar would write thousands of carriage-return updates."""

    def __init__(self, total: int, initial: int, lines: int = 10) -> None:
        self.total, self.done = total, initial
        self.every = max(1, total // lines)
        self.postfix: dict[str, Any] = {}
        self.due = False  # a line is owed: printed with the next figures, or at the end

    def update(self, steps: int = 1) -> None:
        before, self.done = self.done, self.done + steps
        self.due |= self.done // self.every > before // self.every

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.due:
            self._print()

    def _print(self) -> None:
        shown = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"  step {self.done}/{self.total} {shown}".rstrip(), file=sys.stderr, flush=True)
        self.due = False

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.due and exc[0] is None:
            self._print()


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal, a few plain lines otherwise, nothing when disabled."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial)
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )


def make_optimizer(params: Any, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=config.learning_rate, alpha=config.rho, eps=config.epsilon
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, eps=config.epsilon)
    return torch.optim.SGD(params, lr=config.learning_rate)


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor,
    batch_size: int,
    seed: int | None = None,
    sample: bool = True,
) -> dict[str, float]:
    """Mean per-sample loss, reconstruction and KL of ``model`` on ``x``.

    With ``sample=True`` the latent is drawn as in training, from a generator seeded with
    ``seed`` (so the figure is repeatable); with ``sample=False`` the posterior mean is decoded.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device)
        out = model(batch, generator=generator, sample=sample)
        per_sample = out.recon_loss + model.config.beta * out.reg_loss
        totals += torch.stack([per_sample.sum(), out.recon_loss.sum(), out.reg_loss.sum()]).double()
    model.train(was_training)
    loss, recon, kl = (totals / max(x.shape[0], 1)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl}


def fit(
    model_config: VAEConfig,
    train_config: TrainConfig,
    x_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
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
        Float tensors (N, C, H, W) in [0, 1]; ``x_val`` is scored after every epoch.
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
    if tuple(x_train.shape[1:]) != tuple(model_config.input_shape):
        raise ConfigError(
            f"input_shape: model expects {tuple(model_config.input_shape)}, "
            f"data are {tuple(x_train.shape[1:])}"
        )
    if x_train.shape[0] == 0:
        raise ConfigError("training data: no samples to train on")
    device = select_device(train_config.device)
    seed_everything(train_config.seed)
    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model.parameters(), train_config)
    shuffle_gen = torch.Generator().manual_seed(train_config.seed + _SHUFFLE_STREAM)
    noise_gen = torch.Generator(device=device).manual_seed(train_config.seed + _NOISE_STREAM)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        if checkpoint_path is None:
            raise ConfigError("resume: no checkpoint path given")
        state = load_checkpoint(checkpoint_path, map_location=device)
        _check_resumable(state, model_config, train_config)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        shuffle_gen.set_state(state["shuffle_rng"].cpu())
        if state.get("noise_device") == device.type:
            noise_gen.set_state(state["noise_rng"].cpu())
        else:  # CPU and CUDA generators do not share a state format: start a new stream
            noise_gen.manual_seed(train_config.seed + _NOISE_STREAM + 1000 * int(state["epoch"]))
        history = list(state["history"])
        start_epoch = int(state["epoch"])
    x_train = x_train.to(device)
    if y_train is not None:
        if y_train.shape != (x_train.shape[0],):
            raise ConfigError(
                f"y_train: expected {x_train.shape[0]} labels, got {tuple(y_train.shape)}"
            )
        y_train = y_train.to(device=device, dtype=torch.long)
    labelled = None
    if y_train is not None and model_config.classifier_classes and train_config.labelled_batch_size:
        labelled = LabelledBatches(
            x_train, y_train, train_config.labelled_batch_size, train_config.augment_labelled
        )
    n_train = x_train.shape[0]
    batch_size = train_config.batch_size
    steps_per_epoch = -(-n_train // batch_size)
    bar = progress_bar(
        steps_per_epoch * train_config.epochs, steps_per_epoch * start_epoch, progress
    )
    model.train()
    warmup_steps = train_config.kl_warmup_epochs * steps_per_epoch
    with bar:  # closed on any exit, so no bar line follows an error
        for epoch in range(start_epoch, train_config.epochs):
            t0 = time.perf_counter()
            beta: float | None = None
            totals = torch.zeros(3, dtype=torch.float64, device=device)
            seen = 0
            for step, index in enumerate(batch_indices(n_train, batch_size, shuffle_gen)):
                index = index.to(device)
                batch = x_train[index]
                seen += batch.shape[0]
                if warmup_steps:
                    done = epoch * steps_per_epoch + step + 1
                    beta = model_config.beta * min(1.0, done / warmup_steps)
                labels = None if y_train is None or labelled is not None else y_train[index]
                out = model(batch, generator=noise_gen, beta=beta, labels=labels)
                loss = out.loss
                if labelled is not None:
                    loss = loss + model_config.classifier_weight * labelled.loss(model, shuffle_gen)
                if not torch.isfinite(loss):
                    raise _diverged(epoch, step, steps_per_epoch, "training loss", train_config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    totals += torch.stack(
                        [out.loss * batch.shape[0], out.recon_loss.sum(), out.reg_loss.sum()]
                    ).double()
                bar.update(1)
                if progress and (step % 20 == 0 or seen == n_train):
                    bar.set_postfix(epoch=epoch + 1, loss=f"{totals[0].item() / seen:.2f}")
            train_loss, train_recon, train_kl = (totals / n_train).tolist()
            record = {
                "epoch": float(epoch + 1),
                "train_loss": train_loss,
                "train_recon": train_recon,
                "train_kl": train_kl,
                "beta": model_config.beta if beta is None else beta,
            }
            if x_val is not None and x_val.shape[0] > 0:
                val = evaluate(model, x_val, batch_size, seed=train_config.seed + _EVAL_STREAM)
                record.update({f"val_{k}": v for k, v in val.items()})
                bar.set_postfix(epoch=epoch + 1, loss=f"{train_loss:.2f}", val=f"{val['loss']:.2f}")
            if model_config.prior == "gmm" and epoch + 1 == train_config.gmm_init_epochs:
                record["prior_init_bic"] = init_prior_from_gmm(
                    model, x_train, batch_size, train_config.seed, optimizer
                )
            record["seconds"] = time.perf_counter() - t0
            checks = {
                "training loss": record["train_loss"],
                "validation loss": record.get("val_loss", 0.0),
                "weights": sum(float(p.detach().sum()) for p in model.parameters()),
            }
            for what, value in checks.items():
                if not np.isfinite(value):
                    raise _diverged(epoch, None, steps_per_epoch, what, train_config)
            history.append(record)
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path,
                    {
                        "model_config": model_config.model_dump(mode="json"),
                        "train_config": train_config.model_dump(mode="json"),
                        "model_state": model.state_dict(),
                        "optimizer_state": optimizer.state_dict(),
                        "shuffle_rng": shuffle_gen.get_state(),
                        "noise_rng": noise_gen.get_state(),
                        "noise_device": device.type,
                        "epoch": epoch + 1,
                        "history": history,
                        "metadata": {**(metadata or {}), **provenance(device)},
                    },
                )
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        train_seconds=sum(h["seconds"] for h in history),
        device=device,
        resumed_from_epoch=start_epoch,
    )


def _diverged(
    epoch: int, step: int | None, steps: int, what: str, config: TrainConfig
) -> TrainingDiverged:
    where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step + 1} of {steps}")
    kept = f"epoch {epoch}" if epoch else "none: no epoch had finished"
    rate = f"{config.learning_rate:g}"
    return TrainingDiverged(
        f"training diverged: the {what} became NaN or infinite at {where}; the checkpoint "
        f"keeps the last good epoch ({kept}); try a smaller learning rate (now {rate})"
    )


@torch.no_grad()
def init_prior_from_gmm(
    model: VAE,
    x: torch.Tensor,
    batch_size: int,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> float:
    """Start a mixture prior from a Gaussian mixture fitted to the latent means of ``x`` (the
    VaDE recipe); the optimiser forgets its moments for the prior's parameters. Returns the
    mixture's BIC on those means."""
    from sklearn.mixture import GaussianMixture

    (mu,) = infer(model, x, lambda m, b: (m.encode(b)[0],), batch_size)
    data = mu.astype(np.float64)
    mixture = GaussianMixture(
        model.config.n_clusters, covariance_type="diag", n_init=3, random_state=seed
    ).fit(data)
    fitted = {
        "prior_logits": np.log(mixture.weights_),
        "prior_mu": mixture.means_,
        "prior_logvar": np.log(mixture.covariances_),
    }
    for name, value in fitted.items():
        parameter = getattr(model, name)
        parameter.copy_(torch.as_tensor(value, dtype=parameter.dtype))
        if optimizer is not None:
            optimizer.state.pop(parameter, None)
    return float(mixture.bic(data))


def _check_resumable(
    state: dict[str, Any], model_config: VAEConfig, train_config: TrainConfig
) -> None:
    if state.get("model_config") != model_config.model_dump(mode="json"):
        raise ConfigError("resume: the checkpoint was made with other model settings")
    saved = dict(state.get("train_config") or {})
    asked = train_config.model_dump(mode="json")
    # The number of epochs may grow; where the run goes (device) may change.
    for key in ("epochs", "device"):
        saved.pop(key, None)
        asked.pop(key, None)
    if saved != asked:
        raise ConfigError("resume: the checkpoint was made with other training settings")
    if int(state["epoch"]) > train_config.epochs:
        raise ConfigError(
            f"epochs: the checkpoint already holds {state['epoch']} epochs, "
            f"more than {train_config.epochs}"
        )
