"""RMSprop and Adam over one flat buffer: torch's optimisers, the same arithmetic, a few kernels
a step.

On the CPU, torch's ``foreach`` optimisers run one kernel per parameter tensor and operation
(its fused multi-tensor kernels are CUDA's). For the keras2016 network that is 50 kernels and
about a sixth of a training step at batch 100 (``benchmarks/train_throughput.py``). Here the
parameters, their running averages and step counts are views into one buffer each, so a step
is a few kernels over every value at once: the same operations as torch's ``foreach`` step,
in the same order, on the same values, hence the same numbers (``tests/test_flat_optimizer.py``
checks them bit for bit). One step is added: the running average of squared gradients is
raised to the smallest normal float before its square root. That changes no result
(``_tiny_is_negligible``), and spares the CPU the subnormal numbers (squared gradients of
pixels that are always 0 sink below the normal range) that made torch's square root ten times
slower here.

The state stays torch's: ``state_dict`` holds the usual entries per parameter, so checkpoints
load into ``torch.optim.RMSprop`` / ``Adam`` and back. Whatever the flat step does not cover
(a parameter without a gradient this step, momentum, centring, AMSGrad, weight decay, tensor
settings, parameters at different steps, mixed devices or dtypes) is left to torch's own
``foreach`` step, on the same state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


class _Flat:
    """One buffer each for the parameters, each state tensor named in ``averages``, the step
    counts, the gradients and the update's denominator; the parameters and their state are
    views into them."""

    def __init__(self, params: list[torch.Tensor], state: Any, averages: Sequence[str]) -> None:
        sizes = [p.numel() for p in params]
        first = params[0]
        self.param = torch.empty(sum(sizes), dtype=first.dtype, device=first.device)
        self.state = {name: torch.zeros_like(self.param) for name in averages}
        self.grad, self.denom = torch.empty_like(self.param), torch.empty_like(self.param)
        # torch keeps step counts on the CPU, as float64 only under a float64 default
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        self.steps = torch.zeros(len(params), dtype=scalar)
        self.params = params
        offset = 0
        for i, (p, size) in enumerate(zip(params, sizes, strict=True)):
            part = slice(offset, offset + size)
            self.param[part].copy_(p.detach().reshape(-1))
            p.data = self.param[part].view_as(p)
            entry = state[p]
            for name, buffer in self.state.items():
                if name in entry:
                    buffer[part].copy_(entry[name].reshape(-1))
                entry[name] = buffer[part].view_as(p)
            if "step" in entry:
                self.steps[i] = entry["step"]
            entry["step"] = self.steps[i]
            offset += size
        self.pointers = [p.data_ptr() for p in params]
        self.views = [[state[p][name] for name in averages] for p in params]

    def holds(self, params: list[torch.Tensor], state: Any) -> bool:
        """Whether the parameters and their state are still the views of these buffers (a
        parameter given new data, or a loaded state, ends that)."""
        return (
            len(params) == len(self.params)
            and all(p is q for p, q in zip(params, self.params, strict=True))
            and all(p.data_ptr() == ptr for p, ptr in zip(params, self.pointers, strict=True))
            and all(
                state[p].get(name) is view
                for p, views in zip(params, self.views, strict=True)
                for name, view in zip(self.state, views, strict=True)
            )
        )

    def gather_grads(self) -> None:
        torch.cat([p.grad.reshape(-1) for p in self.params], out=self.grad)  # type: ignore[union-attr]


def _tiny_is_negligible(eps: float, dtype: torch.dtype, scale: float = 1.0) -> bool:
    """Whether ``scale * sqrt(smallest normal)`` is below half a unit in the last place of
    ``eps``: then ``scale * sqrt(v) + eps`` rounds to eps for every subnormal v, as it does
    for v = tiny, so raising subnormal v to the smallest normal number changes no result
    (float32, scale 1: eps > 1.8e-12)."""
    info = torch.finfo(dtype)
    return dtype.is_floating_point and scale * math.sqrt(info.tiny) < eps * info.eps / 2


def _flat_layout(optimizer: Any, averages: Sequence[str], unsupported: Sequence[str]) -> Any:
    """The optimiser's flat buffers, (re)built where needed, or None where torch's step must
    run: several groups, a setting in ``unsupported`` that is on, a tensor setting, a
    parameter without a gradient, parameters at different steps, mixed devices or dtypes."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    params: list[torch.Tensor] = group["params"]
    if (
        not params
        or any(group[name] for name in unsupported)
        or any(isinstance(value, torch.Tensor) for value in group.values())
        or any(isinstance(value, torch.Tensor) for value in group.get("betas", ()))
        or any(p.grad is None or p.grad.is_sparse for p in params)
        or len({(p.device, p.dtype) for p in params}) != 1
    ):
        return None
    flat = optimizer._flat
    if flat is None or not flat.holds(params, optimizer.state):
        steps = {float(optimizer.state[p].get("step", 0)) for p in params}
        if len(steps) != 1:
            return None
        flat = optimizer._flat = _Flat(params, optimizer.state, averages)
    return flat


class FlatRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with its update over one flat buffer (see the module's text)."""

    def __init__(self, params: Any, lr: float, alpha: float, eps: float) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, foreach=True)
        self._flat: _Flat | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        unsupported = (
            "momentum", "centered", "weight_decay", "maximize", "differentiable", "capturable"
        )  # fmt: skip
        flat = None if closure is not None else _flat_layout(self, ["square_avg"], unsupported)
        group = self.param_groups[0]
        if flat is None or not _tiny_is_negligible(group["eps"], flat.param.dtype):
            return super().step(closure)
        alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
        flat.gather_grads()
        flat.steps += 1
        square_avg = flat.state["square_avg"]
        square_avg.mul_(alpha).addcmul_(flat.grad, flat.grad, value=1 - alpha)
        # sqrt(max(v, tiny)) + eps: the same value as torch's sqrt(v) + eps
        tiny = torch.finfo(flat.denom.dtype).tiny
        torch.clamp_min(square_avg, tiny, out=flat.denom).sqrt_().add_(eps)
        flat.param.addcdiv_(flat.grad, flat.denom, value=-lr)
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._flat = None  # the loaded state is copied into fresh buffers at the next step


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam`` with its update over one flat buffer (see the module's text)."""

    def __init__(self, params: Any, lr: float, eps: float) -> None:
        super().__init__(params, lr=lr, eps=eps, foreach=True)
        self._flat: _Flat | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        unsupported = ("amsgrad", "weight_decay", "maximize", "differentiable", "capturable")
        flat = (
            None
            if closure is not None
            else _flat_layout(self, ["exp_avg", "exp_avg_sq"], unsupported)
        )
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        # the largest 1 / sqrt(bias correction 2): at the first step
        if flat is None or not _tiny_is_negligible(
            group["eps"], flat.param.dtype, 1 / math.sqrt(1 - beta2)
        ):
            return super().step(closure)
        eps, lr = group["eps"], group["lr"]
        flat.gather_grads()
        flat.steps += 1
        step = float(flat.steps[0])
        exp_avg, exp_avg_sq = flat.state["exp_avg"], flat.state["exp_avg_sq"]
        exp_avg.lerp_(flat.grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(flat.grad, flat.grad, value=1 - beta2)
        step_size = (lr / (1 - beta1**step)) * -1
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        tiny = torch.finfo(flat.denom.dtype).tiny  # see FlatRMSprop.step
        torch.clamp_min(exp_avg_sq, tiny, out=flat.denom).sqrt_()
        flat.denom.div_(bias_correction2_sqrt).add_(eps)
        flat.param.addcdiv_(exp_avg, flat.denom, value=step_size)
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._flat = None
