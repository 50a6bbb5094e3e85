"""One training run: its state (model, optimiser, random streams, data) and its steps;
the optimiser and the validation score."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchvae.artefacts import (
    BEST_CHECKPOINT_FILE,
    HISTORY_CSV_FILE,
    STEPS_DIR,
    STEPS_FILE,
    TENSORBOARD_DIR,
)
from patchvae.batches import LabelledBatches
from patchvae.checkpoint import load_checkpoint, save_checkpoint
from patchvae.config import TrainConfig
from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError
from patchvae.feed import ArrayRows, Rows, epoch_windows, stream_windows
from patchvae.io import write_atomic
from patchvae.models.losses import cluster_target_loss
from patchvae.models.vae import VAE, build_model
from patchvae.runtime import provenance, seed_everything, start_distributed
from patchvae.train.aids import (
    Curves,
    check_resumable,
    diverged,
    import_umap,
    init_prior_from_gmm,
    resolve_precision,
)
from patchvae.train.compiled import (
    CompiledEval,
    CompiledOptimizer,
    CompiledTrainStep,
    batch_sums,
    set_capturable,
    step_loss,
    validation_sums,
)

# Offsets keep the random streams apart: weights, shuffling, training noise, evaluation noise.
_SHUFFLE_STREAM, _NOISE_STREAM, _EVAL_STREAM = 1, 2, 3


def cuda_graphs(device: torch.device) -> bool:
    """Whether a compiled step on ``device`` is replayed as a CUDA graph."""
    return device.type == "cuda"


def make_optimizer(params: Any, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=config.learning_rate, alpha=config.rho, eps=config.epsilon, foreach=True
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, eps=config.epsilon, foreach=True)
    return torch.optim.SGD(params, lr=config.learning_rate, foreach=True)


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor | Rows,
    batch_size: int,
    seed: int | None = None,
    sample: bool = True,
    compiled: CompiledEval | None = None,
) -> dict[str, float]:
    """Mean per-sample loss, reconstruction and KL of ``model`` on ``x``.

    With ``sample=True`` the latent is drawn as in training, from a generator seeded with
    ``seed`` (so the figure is repeatable); with ``sample=False`` the posterior mean is decoded.
    ``compiled``: the full batches of a sampled pass run through it (the same numbers drawn).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in _batches_in_order(x, batch_size, device):
        noise = None
        if compiled is not None and sample and batch.shape[0] == compiled.batch_size:
            noise = model.draw_noise(batch, generator)  # as the forward pass draws it
            sums = compiled(batch, noise)
            if sums is not None:
                totals += sums.double()
                continue
        out = model(batch, generator=generator, sample=sample, noise=noise)
        totals += validation_sums(out, model.config.beta).double()
    model.train(was_training)
    loss, recon, kl = (totals / max(len(x), 1)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl}


def _batches_in_order(
    x: torch.Tensor | Rows, batch_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """All samples in order, a batch at a time, on ``device``."""
    if isinstance(x, torch.Tensor):
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size].to(device)
    else:
        for chunk in x.chunks(batch_size):
            yield torch.from_numpy(chunk).to(device)


class _Run:
    """The state of one training run: model, optimiser, random streams and data, and the
    steps of an epoch. Random numbers are drawn in a fixed order, so a resumed run repeats an
    uninterrupted one exactly."""

    def __init__(self, model_config: VAEConfig, train_config: TrainConfig) -> None:
        self.model_config, self.config = model_config, train_config
        self.ranks, self.device = start_distributed(train_config.device)
        seed_everything(train_config.seed)  # the same initial weights in every process
        self.model = build_model(model_config).to(self.device)
        if (
            model_config.prior == "gmm"
            and train_config.gmm_init_epochs
            and train_config.gmm_pretrain_prior == "gaussian"
        ):
            self.model.use_mixture(False)  # on once fitted (a resumed run restores the flag)
        if model_config.prior == "gmm" and train_config.gmm_init == "umap":
            import_umap()  # refused now, not after the pretraining epochs
        if train_config.gmm_cluster_weight and model_config.prior != "gmm":
            raise ConfigError("gmm_cluster_weight: only a mixture prior (prior: gmm) has clusters")
        # each training sample's component in the latest fit of the mixture (-1: none), the
        # targets of gmm_cluster_weight; None before the first fit
        self.cluster_targets: torch.Tensor | None = None
        # what takes the training steps: the model, or its DistributedDataParallel wrapper,
        # which averages the gradients of the processes' parts of each batch
        self.step_model: Any = self.model
        if self.ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            self.step_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None
            )
        self.optimizer = make_optimizer(self.model.parameters(), train_config)
        self.compiled_optimizer: CompiledOptimizer | None = None
        self.compiled_step: CompiledTrainStep | None = None
        self.compiled_eval: CompiledEval | None = None  # with the compiled step
        self.precision = resolve_precision(train_config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.shuffle_gen = torch.Generator().manual_seed(train_config.seed + _SHUFFLE_STREAM)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(self._noise_seed(0))
        self.step_log: np.ndarray | None = None  # the last epoch's losses per step
        self.curves: Curves | None = None  # TensorBoard's writer, once there is one

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.curves is not None:
            self.curves.writer.close()

    def _noise_seed(self, epoch: int) -> int:
        """Each process draws its own latent noise; one process continues the one stream."""
        return self.config.seed + _NOISE_STREAM + 1000 * epoch + 7919 * self.ranks.rank

    def restore(self, path: str | Path) -> tuple[list[dict[str, float]], int]:
        """Load weights, optimiser and random streams from a checkpoint; its history and the
        number of epochs it holds."""
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state, self.model_config, self.config)
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.shuffle_gen.set_state(state["shuffle_rng"].cpu())
        if state.get("cluster_targets") is not None:
            self.cluster_targets = state["cluster_targets"].to(self.device)
        same_world = int(state.get("world_size", 1)) == self.ranks.world == 1
        if state.get("noise_device") == self.device.type and same_world:
            self.noise_gen.set_state(state["noise_rng"].cpu())
        else:  # CPU and CUDA streams differ in kind; other processes: start new streams
            self.noise_gen.manual_seed(self._noise_seed(int(state["epoch"])))
        return list(state["history"]), int(state["epoch"])

    def set_data(self, rows: Rows, y_train: torch.Tensor | None) -> None:
        """The training samples: held on the device when in memory, else streamed."""
        self.rows, self.n = rows, len(rows)
        self.x = rows.tensor().to(self.device) if isinstance(rows, ArrayRows) else None
        self.y: torch.Tensor | None = None
        if y_train is not None:
            if y_train.shape != (self.n,):
                raise ConfigError(f"y_train: expected {self.n} labels, got {tuple(y_train.shape)}")
            self.y = y_train.to(device=self.device, dtype=torch.long)
        self.labelled = None
        config = self.config
        if (
            self.y is not None
            and self.model_config.classifier_classes
            and config.labelled_batch_size
        ):
            known = torch.nonzero(self.y >= 0).flatten()
            x_known = torch.from_numpy(rows.read(known.cpu().numpy())).to(self.device)
            self.labelled = LabelledBatches(
                x_known, self.y[known], config.labelled_batch_size, config.augment_labelled
            )
        self.steps = -(-self.n // config.batch_size)
        self._compile()

    def _compile(self) -> None:
        """Compile what ``train.compile`` asks for, once the data (labels or not) are known."""
        mode = self.config.compile
        if mode == "step":
            why_not = [
                what
                for what, applies in (
                    ("more than one process", self.ranks.world > 1),
                    (f"{self.precision} precision", self.precision != "fp32"),
                    ("training with labels", self.y is not None),
                    ("cluster targets (gmm_cluster_weight)", self.config.gmm_cluster_weight > 0),
                )
                if applies
            ]
            if why_not:
                warnings.warn(
                    f"compile: step runs in one process at fp32 without labels, not with "
                    f"{', '.join(why_not)}; compiling the optimiser step only",
                    stacklevel=4,
                )
                mode = "optimizer"
            elif self.compiled_step is None:
                self.compiled_step = CompiledTrainStep(
                    self.model,
                    self.optimizer,
                    self.config.batch_size,
                    self.config.trim_fraction,
                    graphs=cuda_graphs(self.device),
                )
                self.compiled_eval = CompiledEval(self.model, self.config.batch_size)
        # a CUDA graph needs the step counts on the device; elsewhere they stay on the CPU,
        # whatever the checkpoint this run resumed from did
        graphs = self.compiled_step is not None and self.compiled_step.graphs
        set_capturable(self.optimizer, graphs)
        if mode == "optimizer" and self.compiled_optimizer is None:
            self.compiled_optimizer = CompiledOptimizer(self.optimizer)
            self.optimizer.step = self.compiled_optimizer  # type: ignore[method-assign]

    def compiled(self) -> str:
        """What ran compiled: "step" (on CUDA "step (CUDA graphs)"), "optimizer" or "off"
        (also after a fallback)."""
        if self.compiled_step is not None and self.compiled_step.compiled:
            return "step (CUDA graphs)" if self.compiled_step.graphs else "step"
        if self.compiled_optimizer is not None and self.compiled_optimizer.compiled:
            return "optimizer"
        return "off"

    def _epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches (samples, positions) on the device, in the epoch's order."""
        size = self.config.batch_size
        windows = epoch_windows(self.n, size, self.config.shuffle_window, self.shuffle_gen)
        rank, world = self.ranks.rank, self.ranks.world  # each process: its part of a batch
        if self.x is not None:
            for window in windows:
                for index in torch.from_numpy(window).to(self.device).split(size):
                    index = index[rank::world]
                    yield self.x.index_select(0, index), index  # x[index], faster
            return
        pin = self.device.type == "cuda"
        for samples, positions, order in stream_windows(
            self.rows, windows, self.config.loader_workers, pin
        ):
            for chosen in order.split(size):  # gathered batch by batch: one copy of a window
                chosen = chosen[rank::world]
                yield (
                    samples[chosen].to(self.device, non_blocking=pin),
                    positions[chosen].to(self.device, non_blocking=pin),
                )

    def _beta(self, epoch: int, step: int) -> float | None:
        """The KL weight during warm-up (None after it, or without one)."""
        warmup_steps = self.config.kl_warmup_epochs * self.steps
        if not warmup_steps:
            return None
        done = epoch * self.steps + step + 1
        return self.model_config.beta * min(1.0, done / warmup_steps)

    def train_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """One pass over the training data; the epoch's mean loss terms."""
        n = self.n
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        seen, beta = 0, None
        parts: list[torch.Tensor] = []  # each step's sums, for the per-step log
        losses: list[torch.Tensor] = []  # each step's optimised loss, checked once an epoch
        sizes: list[int] = []
        for step, (batch, index) in enumerate(self._epoch_batches()):
            seen += batch.shape[0]
            beta = self._beta(epoch, step)
            loss, part = self._step(batch, index, beta)
            losses.append(loss)
            part = part.double()
            totals += part
            parts.append(part)
            sizes.append(batch.shape[0])
            if bar is not None:
                bar.update(1)
                if step % 20 == 0 or seen == n:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{totals[0].item() / seen:.2f}")
        # one look at the losses an epoch: a check per step would wait for the GPU at every step
        finite = torch.isfinite(torch.stack(losses))
        if not bool(finite.all()):
            first = int(torch.nonzero(~finite)[0, 0])
            raise diverged(epoch, first, self.steps, "training loss", self.config)
        steps = torch.stack(parts)
        counts = torch.tensor(sizes, dtype=torch.float64, device=self.device)
        if self.ranks.world > 1:  # the sums over every process's parts of the batches
            import torch.distributed as dist

            for summed in (totals, steps, counts):
                dist.all_reduce(summed)
        # the mean loss, reconstruction and KL of each step's (global) batch
        self.step_log = (steps / counts[:, None]).cpu().numpy()
        train_loss, train_recon, train_kl = (totals / n).tolist()
        return {
            "epoch": float(epoch + 1),
            "train_loss": train_loss,
            "train_recon": train_recon,
            "train_kl": train_kl,
            "beta": self.model_config.beta if beta is None else beta,
        }

    def _step(
        self, batch: torch.Tensor, index: torch.Tensor, beta: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on ``batch``: its loss and its (loss * size, recon sum, KL sum)."""
        whole = self.compiled_step
        if whole is None or not whole.ready(batch):
            return self._eager_step(batch, index, beta)
        noise = self.model.draw_noise(batch, self.noise_gen)  # as the eager step draws it
        weight = self.model_config.beta if beta is None else beta
        done = whole(batch, noise, torch.tensor(weight, device=self.device))
        return self._eager_step(batch, index, beta, noise) if done is None else done

    def _eager_step(
        self,
        batch: torch.Tensor,
        index: torch.Tensor,
        beta: float | None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = None if self.y is None or self.labelled is not None else self.y[index]
        low = self.precision in ("bf16", "fp16")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype, enabled=low):
            out = self.step_model(
                batch, generator=self.noise_gen, beta=beta, labels=labels, noise=noise
            )
            loss = self._loss_of(out, beta)
            if self.cluster_targets is not None and out.responsibilities is not None:
                targets = self.cluster_targets[index]
                weight = self.config.gmm_cluster_weight
                loss = loss + weight * cluster_target_loss(out.responsibilities, targets)
            if self.labelled is not None:
                weight = self.model_config.classifier_weight
                loss = loss + weight * self.labelled.loss(self.model, self.shuffle_gen)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            part = batch_sums(out, batch.shape[0])
        return loss.detach(), part

    def _loss_of(self, out: Any, beta: float | None) -> torch.Tensor:
        weight = self.model_config.beta if beta is None else beta
        classifier_weight = self.model_config.classifier_weight
        return step_loss(out, weight, self.config.trim_fraction, classifier_weight)

    def epoch(self, epoch: int, bar: Any, x_val: torch.Tensor | Rows | None) -> dict[str, float]:
        """Train one epoch, score the validation data, check; the epoch's record."""
        t0 = time.perf_counter()
        record = self.train_epoch(epoch, bar)
        if x_val is not None and len(x_val) > 0:
            seed = self.config.seed + _EVAL_STREAM
            compiled = self.compiled_eval
            val = evaluate(self.model, x_val, self.config.batch_size, seed, compiled=compiled)
            record.update({f"val_{k}": v for k, v in val.items()})
            if bar is not None:
                loss = f"{record['train_loss']:.2f}"
                bar.set_postfix(epoch=epoch + 1, loss=loss, val=f"{val['loss']:.2f}")
        self.after_epoch(epoch, record)
        record["seconds"] = time.perf_counter() - t0
        self.check_finite(epoch, record)
        return record

    def stopped_early(self, history: list[dict[str, float]]) -> bool:
        """Whether the validation loss has not improved for ``early_stopping`` epochs."""
        patience = self.config.early_stopping
        if not patience or not history:
            return False
        losses = [h["val_loss"] for h in history]
        return len(losses) - 1 - int(np.argmin(losses)) >= patience

    def log(
        self,
        checkpoint: Path,
        epoch: int,
        history: list[dict[str, float]],
        metadata: dict[str, Any] | None,
    ) -> None:
        """Beside the checkpoint: the losses per epoch as CSV, and (``keep_best``) the
        checkpoint of the epoch of lowest validation loss."""
        import pandas as pd

        frame = pd.DataFrame(history)
        write_atomic(checkpoint.with_name(HISTORY_CSV_FILE), lambda t: frame.to_csv(t, index=False))
        log = self.step_log
        if log is not None:  # one file per epoch, written once (again, if an epoch is redone)
            steps = pd.DataFrame(log, columns=["train_loss", "train_recon", "train_kl"])
            steps.insert(0, "step", range(1, len(steps) + 1))
            folder = checkpoint.parent / STEPS_DIR
            folder.mkdir(exist_ok=True)
            write_atomic(
                folder / STEPS_FILE.format(epoch=epoch),
                lambda t: steps.to_csv(t, index=False),
            )
        if self.config.tensorboard:
            self._tensorboard(checkpoint.parent).add_scalars_of(epoch, history[-1])
        if self.config.keep_best:
            losses = [h["val_loss"] for h in history]
            if losses[-1] == min(losses):
                self.save(checkpoint.with_name(BEST_CHECKPOINT_FILE), epoch, history, metadata)

    def _tensorboard(self, run: Path) -> Curves:
        if self.curves is None:
            self.curves = Curves(run / TENSORBOARD_DIR)
        return self.curves

    def after_epoch(self, epoch: int, record: dict[str, float]) -> None:
        """The mixture prior starts from a Gaussian mixture after its warm-up epochs (and is
        fitted again every ``gmm_refit_every`` epochs after that)."""
        first, every = self.config.gmm_init_epochs, self.config.gmm_refit_every
        done = epoch + 1
        refit = bool(first and every and done > first and (done - first) % every == 0)
        if self.model_config.prior == "gmm" and (done == first or refit):
            fit = init_prior_from_gmm(
                self.model,
                self.rows if self.x is None else self.x,
                self.config.batch_size,
                self.config.seed,
                self.optimizer,
                self.config.gmm_init,
                self.config.gmm_init_restarts,
            )
            record["prior_init_bic"] = fit.bic
            if self.config.gmm_cluster_weight:
                self.cluster_targets = torch.from_numpy(fit.clusters).to(self.device)

    def check_finite(self, epoch: int, record: dict[str, float]) -> None:
        checks = {
            "training loss": record["train_loss"],
            "validation loss": record.get("val_loss", 0.0),
            "weights": sum(float(p.detach().sum()) for p in self.model.parameters()),
        }
        for what, value in checks.items():
            if not np.isfinite(value):
                raise diverged(epoch, None, self.steps, what, self.config)

    def save(
        self,
        path: str | Path,
        epoch: int,
        history: list[dict[str, float]],
        metadata: dict[str, Any] | None,
    ) -> None:
        save_checkpoint(
            path,
            {
                "model_config": self.model_config.model_dump(mode="json"),
                "train_config": self.config.model_dump(mode="json"),
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "shuffle_rng": self.shuffle_gen.get_state(),
                "noise_rng": self.noise_gen.get_state(),
                "noise_device": self.device.type,
                "world_size": self.ranks.world,
                "cluster_targets": self.cluster_targets,
                "epoch": epoch,
                "history": history,
                "metadata": {
                    **(metadata or {}),
                    **provenance(self.device),
                    "world_size": self.ranks.world,
                    "precision": self.precision,
                },
            },
        )
