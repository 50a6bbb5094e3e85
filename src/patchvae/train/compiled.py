"""Training steps compiled by ``torch.compile``: the optimiser's update alone, or the whole
step (forward pass, gradients, update) as one graph.

Eager PyTorch pays a fixed cost per operation and per autograd node; at the small batches of
patch models that cost, not the arithmetic, sets the pace. The whole-step graph removes it
the way JAX does: the gradients come from ``torch.func.grad_and_value`` (no autograd graph
at run time) and the update from the optimiser's own functional form
(``torch.optim.rmsprop.rmsprop``, ``adam.adam``, ``sgd.sgd``) acting on the optimiser's own
state, so checkpoints, resuming and a change back to eager steps are unaffected.

On CUDA the graph is also recorded as a CUDA graph (``mode="reduce-overhead"``) and replayed
at every step: one launch instead of one per kernel, which is what a network of this size
waits for on a GPU. The parameters and the optimiser's state are marked as static inputs (the
graph updates them in place, at fixed addresses), the optimiser keeps its step counts on the
device (``capturable``), and each step's outputs are copied out before the next replay
overwrites them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad_and_value
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop
from torch.optim.sgd import sgd

from patchvae.models.base import VAE


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _compile_failed(what: str, exc: BaseException, then: str) -> None:
    warnings.warn(
        f"compile: compiling the {what} failed ({_first_line(exc)}); training on with {then}",
        stacklevel=3,
    )


class CompiledOptimizer:
    """An optimiser's step compiled by ``torch.compile`` (its update becomes one fused kernel
    instead of several per parameter tensor), falling back to the eager step, with one
    warning line, where compiling fails (no C++ compiler, an unsupported platform)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.eager = optimizer.step
        self.step: Any = torch.compile(self.eager)
        self.compiled = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.step(*args, **kwargs)
        except Exception as exc:  # dynamo and inductor raise many kinds
            if not self.compiled:
                raise
            _compile_failed("optimiser step", exc, "the eager step")
            self.step, self.compiled = self.eager, False
            return self.eager(*args, **kwargs)


# torch's functional form of each optimiser: it takes the parameters, their gradients, the
# optimiser's state (lists, one tensor per parameter, given by position: the functions look
# for the step counts there when compiled) and its settings
_FUNCTIONAL: dict[str, Callable[..., None]] = {"rmsprop": rmsprop, "adam": adam, "sgd": sgd}


def _optimizer_inputs(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> tuple[str, list[list[Any]], dict[str, Any]]:
    """Which functional update ``optimizer`` takes, with its state lists and settings: what
    ``optimizer.step()`` would use (one param group)."""
    group, state = optimizer.param_groups[0], optimizer.state

    def listed(key: str, when: bool = True) -> list[Any]:
        return [state[p][key] for p in params] if when else []

    # The compiler fuses the updates of the tensors either way, but which form traces
    # correctly differs (torch 2.13, CPU): Adam's foreach form fails to trace with its step
    # counts on the CPU, and SGD's single-tensor form, compiled, left out the learning rate
    # on weight matrices (the tests compare each with the eager step)
    foreach = isinstance(optimizer, torch.optim.SGD)
    common = {"foreach": foreach, "maximize": group["maximize"], "lr": group["lr"]}
    common["weight_decay"] = group["weight_decay"]
    if isinstance(optimizer, torch.optim.RMSprop):
        lists = [  # square_avgs, grad_avgs, momentum_buffer_list, state_steps
            listed("square_avg"),
            listed("grad_avg", group["centered"]),
            listed("momentum_buffer", group["momentum"] > 0),
            listed("step"),
        ]
        keys = ("alpha", "eps", "momentum", "centered", "capturable")
        return "rmsprop", lists, {**common, **{key: group[key] for key in keys}}
    if isinstance(optimizer, torch.optim.Adam):
        lists = [  # exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps
            listed("exp_avg"),
            listed("exp_avg_sq"),
            listed("max_exp_avg_sq", group["amsgrad"]),
            listed("step"),
        ]
        beta1, beta2 = group["betas"]
        settings = {key: group[key] for key in ("amsgrad", "eps", "capturable")}
        settings["decoupled_weight_decay"] = group.get("decoupled_weight_decay", False)
        return "adam", lists, {**common, **settings, "beta1": beta1, "beta2": beta2}
    if isinstance(optimizer, torch.optim.SGD):
        buffers = [state[p].get("momentum_buffer") for p in params]
        settings = {key: group[key] for key in ("momentum", "dampening", "nesterov")}
        return "sgd", [buffers], {**common, **settings}
    raise TypeError(f"compile: step has no functional update for {type(optimizer).__name__}")


def step_loss(
    out: Any, weight: float | torch.Tensor, trim_fraction: float, classifier_weight: float
) -> torch.Tensor:
    """The loss a step optimises: the batch's mean (``out.loss``), or with ``trim_fraction``
    the ELBO's mean over all but that fraction of samples of highest ELBO loss (lesions in
    the training data are the samples a healthy model fits worst); ``weight`` is the step's
    KL weight. A classifier's loss in the batch (labels met in the training batches,
    ``labelled_batch_size: 0``) is never trimmed but averaged over the whole batch: the few
    labelled lesion patches are the very samples trimming drops."""
    if not trim_fraction:
        return out.loss
    per_sample = out.recon + weight * out.kl
    keep = max(1, math.ceil((1 - trim_fraction) * per_sample.shape[0]))
    loss = torch.topk(per_sample, keep, largest=False, sorted=False).values.mean()
    if out.class_loss is not None:
        loss = loss + classifier_weight * out.class_loss.mean()
    return loss


def batch_sums(out: Any, size: int) -> torch.Tensor:
    """A step's record of its batch: (mean loss * batch size, recon sum, KL sum)."""
    return torch.stack([out.loss * size, out.recon.sum(), out.kl.sum()])


def validation_sums(out: Any, beta: float) -> torch.Tensor:
    """A validation batch's record: (sum of recon + ``beta`` * KL, recon sum, KL sum)."""
    per_sample = out.recon + beta * out.kl
    return torch.stack([per_sample.sum(), out.recon.sum(), out.kl.sum()])


def _loss_and_part(
    params: dict[str, torch.Tensor],
    model: VAE,
    batch: torch.Tensor,
    noise: torch.Tensor,
    beta: torch.Tensor,
    trim_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    out = functional_call(model, params, (batch,), {"noise": noise, "beta": beta})
    return step_loss(out, beta, trim_fraction, 0.0), batch_sums(out, batch.shape[0]).detach()


def _train_step(
    model: VAE,
    params: dict[str, torch.Tensor],
    batch: torch.Tensor,
    noise: torch.Tensor,
    beta: torch.Tensor,
    trim_fraction: float,
    kind: str,
    lists: list[list[Any]],
    settings: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, gradients (``torch.func``) and the optimiser's functional update, in place.
    Everything it touches comes in as an argument, so one compiled graph serves every run
    of the same network (no recompiling for a new model or optimiser object)."""
    detached = {name: p.detach() for name, p in params.items()}
    grads, (loss, part) = grad_and_value(_loss_and_part, has_aux=True)(
        detached, model, batch, noise, beta, trim_fraction
    )
    with torch.no_grad():
        _FUNCTIONAL[kind](list(params.values()), list(grads.values()), *lists, **settings)
    return loss.detach(), part


# each function compiled once per process and kind (plain, or CUDA graphs), on first use
_compiled_functions: dict[tuple[Callable[..., Any], bool], Any] = {}


def _compiled(function: Callable[..., Any], graphs: bool = False) -> Any:
    """``function`` compiled for the one (full) batch size (``dynamic=False``), as a CUDA
    graph with ``graphs``; one compiled function per process serves every run."""
    key = (function, graphs)
    if key not in _compiled_functions:
        mode = "reduce-overhead" if graphs else None
        _compiled_functions[key] = torch.compile(function, dynamic=False, mode=mode)
    return _compiled_functions[key]


def set_capturable(optimizer: torch.optim.Optimizer, on: bool) -> None:
    """Keep the optimiser's step counts on the parameters' device (``capturable``, which a
    CUDA graph needs) or on the CPU (as a new optimiser keeps them), whatever the checkpoint
    it was restored from did."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = on
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[param]["step"] = step.to(param.device if on else "cpu")


class CompiledTrainStep:
    """One training step as one compiled graph: the forward pass with given noise, the
    gradients of the loss by ``torch.func``, and the optimiser's functional update on the
    optimiser's own state.

    ``__call__`` returns the loss and the batch's (loss * size, recon sum, KL sum), or
    ``None`` where the step must run eagerly instead: for a batch smaller than the full
    batch (the last of an epoch: a graph of its own would cost more than it saves), while
    the optimiser holds no state for some parameter (the first step of a run, or after a
    mixture fit resets the prior's state; the eager step creates it), and for good once
    compiling has failed (after one warning line). ``graphs``: replay the step as a CUDA
    graph (the optimiser must be ``capturable``: :func:`set_capturable`)."""

    def __init__(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        trim_fraction: float,
        graphs: bool = False,
    ) -> None:
        if len(optimizer.param_groups) != 1:
            raise ValueError("compile: step expects an optimiser with one parameter group")
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.trim_fraction = batch_size, trim_fraction
        self.params = dict(model.named_parameters())
        self.stateful = not isinstance(optimizer, torch.optim.SGD) or any(
            group["momentum"] for group in optimizer.param_groups
        )
        _optimizer_inputs(optimizer, [])  # an optimiser it cannot update: refused now
        self.graphs, self.compiled = graphs, True

    def ready(self, batch: torch.Tensor) -> bool:
        """Whether the step on ``batch`` can run compiled."""
        state = self.optimizer.state
        return (
            self.compiled
            and batch.shape[0] == self.batch_size
            and (not self.stateful or all(p in state for p in self.params.values()))
        )

    def __call__(
        self, batch: torch.Tensor, noise: torch.Tensor, beta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        kind, lists, settings = _optimizer_inputs(self.optimizer, list(self.params.values()))
        if self.graphs:
            # the tensors the graph updates in place stay where they are between replays
            for tensor in [*self.params.values(), *(t for part in lists for t in part)]:
                if isinstance(tensor, torch.Tensor):
                    torch._dynamo.mark_static_address(tensor)
            torch.compiler.cudagraph_mark_step_begin()
        try:
            loss, part = _compiled(_train_step, self.graphs)(
                self.model,
                self.params,
                batch,
                noise,
                beta,
                self.trim_fraction,
                kind,
                lists,
                settings,
            )
        except Exception as exc:  # dynamo and inductor raise many kinds
            _compile_failed("training step", exc, "eager steps")
            self.compiled = False
            return None
        # a CUDA graph's outputs live in its memory pool until the next replay overwrites them
        return (loss.clone(), part.clone()) if self.graphs else (loss, part)


def _eval_sums(
    model: VAE, params: dict[str, torch.Tensor], batch: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """A validation batch's (loss sum, recon sum, KL sum), the latent drawn from ``noise``."""
    out = functional_call(model, params, (batch,), {"noise": noise})
    return validation_sums(out, model.config.beta)


class CompiledEval:
    """The validation pass of a compiled-step run, compiled too: the forward pass and the
    batch's sums as one graph (no gradients, no CUDA graph), the noise drawn outside it as
    the eager pass draws it. ``__call__`` returns ``None`` where the batch must run eagerly:
    one smaller than the full batch, and every batch once compiling has failed."""

    def __init__(self, model: VAE, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self.params = dict(model.named_parameters())
        self.compiled = True

    def __call__(self, batch: torch.Tensor, noise: torch.Tensor) -> torch.Tensor | None:
        if not self.compiled or batch.shape[0] != self.batch_size:
            return None
        try:
            sums: torch.Tensor = _compiled(_eval_sums)(self.model, self.params, batch, noise)
        except Exception as exc:  # dynamo and inductor raise many kinds
            _compile_failed("validation pass", exc, "an eager one")
            self.compiled = False
            return None
        return sums
