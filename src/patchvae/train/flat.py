"""RMSprop over one flat buffer: torch's RMSprop, the same arithmetic, in five kernels a step.

On the CPU, torch's ``foreach`` optimisers run one kernel per parameter tensor and operation
(its fused multi-tensor kernels are CUDA's). For the keras2016 network that is 50 kernels and
about a sixth of a training step at batch 100 (``benchmarks/train_throughput.py``). Here the
parameters, their running averages and step counts are views into one buffer each, so a step
is a few kernels over every value at once: the same operations as ``torch.optim.RMSprop``,
in the same order, on the same values, hence the same numbers (``tests/test_train.py``
checks them bit for bit). One step is added: the running average is raised to the smallest
normal float before its square root. That changes no result (``_tiny_is_negligible``), and
spares the CPU the subnormal numbers that made torch's square root ten times slower here.

The state stays torch's: ``state_dict`` holds one ``square_avg`` and ``step`` per parameter, so
checkpoints load into ``torch.optim.RMSprop`` and back. Whatever the flat step does not cover
(a parameter without a gradient this step, momentum, centring, weight decay, a tensor learning
rate, mixed devices or dtypes) is left to torch's own step, on the same state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


class _Flat:
    """One buffer each for the parameters, their running averages, step counts, gradients and
    the update's denominator; the parameters and their state are views into them."""

    def __init__(self, params: list[torch.Tensor], state: Any) -> None:
        sizes = [p.numel() for p in params]
        first = params[0]
        self.param = torch.empty(sum(sizes), dtype=first.dtype, device=first.device)
        self.square_avg = torch.zeros_like(self.param)
        self.grad, self.avg = torch.empty_like(self.param), torch.empty_like(self.param)
        # torch keeps step counts on the CPU, as float64 only under a float64 default
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        self.steps = torch.zeros(len(params), dtype=scalar)
        self.params = params
        offset = 0
        for i, (p, size) in enumerate(zip(params, sizes, strict=True)):
            view = slice(offset, offset + size)
            self.param[view].copy_(p.detach().reshape(-1))
            p.data = self.param[view].view_as(p)
            entry = state[p]
            if "square_avg" in entry:
                self.square_avg[view].copy_(entry["square_avg"].reshape(-1))
            if "step" in entry:
                self.steps[i] = entry["step"]
            entry["square_avg"] = self.square_avg[view].view_as(p)
            entry["step"] = self.steps[i]
            offset += size
        self.pointers = [p.data_ptr() for p in params]
        self.averages = [state[p]["square_avg"] for p in params]

    def holds(self, params: list[torch.Tensor], state: Any) -> bool:
        """Whether the parameters and their state are still the views of these buffers (a
        parameter given new data, or a loaded state, ends that)."""
        return (
            len(params) == len(self.params)
            and all(p is q for p, q in zip(params, self.params, strict=True))
            and all(p.data_ptr() == ptr for p, ptr in zip(params, self.pointers, strict=True))
            and all(
                state[p].get("square_avg") is avg
                for p, avg in zip(params, self.averages, strict=True)
            )
        )


def _tiny_is_negligible(eps: float, dtype: torch.dtype) -> bool:
    """Whether sqrt(smallest normal) is below half a unit in the last place of ``eps``: then
    sqrt(v) + eps rounds to eps for every subnormal v, as it does for sqrt(tiny), so raising
    subnormal v to the smallest normal number changes no result (float32: eps > 1.8e-12)."""
    info = torch.finfo(dtype)
    return dtype.is_floating_point and math.sqrt(info.tiny) < eps * info.eps / 2


class FlatRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with its update over one flat buffer (see the module's text)."""

    def __init__(self, params: Any, lr: float, alpha: float, eps: float) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, foreach=False)
        self._flat: _Flat | None = None

    def _flat_layout(self) -> _Flat | None:
        """The flat buffers, (re)built where needed, or None where torch's step must run."""
        if len(self.param_groups) != 1:
            return None
        group = self.param_groups[0]
        params: list[torch.Tensor] = group["params"]
        if (
            not params
            or isinstance(group["lr"], torch.Tensor)
            or group["momentum"]
            or group["centered"]
            or group["weight_decay"]
            or group["maximize"]
            or group["differentiable"]
            or group["capturable"]
            or any(p.grad is None or p.grad.is_sparse for p in params)
            or len({(p.device, p.dtype) for p in params}) != 1
            or not _tiny_is_negligible(group["eps"], params[0].dtype)
        ):
            return None
        if self._flat is None or not self._flat.holds(params, self.state):
            self._flat = _Flat(params, self.state)
        return self._flat

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        flat = None if closure is not None else self._flat_layout()
        if flat is None:
            return super().step(closure)
        group = self.param_groups[0]
        alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
        torch.cat([p.grad.reshape(-1) for p in flat.params], out=flat.grad)  # type: ignore[union-attr]
        flat.steps += 1
        flat.square_avg.mul_(alpha).addcmul_(flat.grad, flat.grad, value=1 - alpha)
        # sqrt(max(v, tiny)) + eps: the same value as torch's sqrt(v) + eps (see
        # _tiny_is_negligible), without the subnormal v that slow the CPU's sqrt tenfold
        # (squared gradients of pixels that are always 0 sink below the normal range)
        tiny = torch.finfo(flat.avg.dtype).tiny
        torch.clamp_min(flat.square_avg, tiny, out=flat.avg).sqrt_().add_(eps)
        flat.param.addcdiv_(flat.grad, flat.avg, value=-lr)
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._flat = None  # the loaded state is copied into fresh buffers at the next step
