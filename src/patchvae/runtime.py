"""Device choice, seeding, and the device an artefact was made on."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from patchvae.errors import ConfigError
from patchvae.versions import made_by


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` fails clearly without a GPU.

    On the CPU, denormal floats are flushed to zero: without it the keras2016 network trains
    markedly slower once its small weights drift into the denormal range.
    """
    import torch  # deferred: extraction and inspection need no torch

    if requested not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    return device


@dataclass(frozen=True)
class Ranks:
    """This process among those of a ``torchrun`` job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """The one process that writes artefacts and prints."""
        return self.rank == 0


def ranks() -> Ranks:
    """Where this process stands, from the variables ``torchrun`` sets."""
    try:
        return Ranks(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None


def start_distributed(requested: str = "auto") -> tuple[Ranks, torch.device]:
    """Join the ``torchrun`` job when there is one (gloo on the CPU, NCCL on CUDA: PyTorch's
    own engine, nothing launched here) and choose this process's device: with CUDA, the GPU
    of its local rank."""
    import torch
    import torch.distributed as dist

    found = ranks()
    device = select_device(requested)
    if device.type == "cuda":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        if found.world > 1 and per_node > torch.cuda.device_count():
            # NCCL refuses two processes on one GPU, deep inside its first collective
            raise ConfigError(
                f"torchrun started {per_node} processes on this node but it has "
                f"{torch.cuda.device_count()} CUDA device(s): use --nproc-per-node "
                f"{torch.cuda.device_count()}, or --device cpu to train with gloo on the CPU"
            )
        device = torch.device("cuda", found.local)
        torch.cuda.set_device(device)
    if found.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return found, device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


@contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CUDA, cuDNN's deterministic algorithms and no benchmark search while training, so
    a seed fixes a run on one machine there as on the CPU (whose kernels already are);
    the settings are restored after."""
    if device.type != "cuda":
        yield
        return
    import torch

    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    """What made an artefact: versions, time, machine, and the device it ran on."""
    if device is None:
        return made_by()
    name = None
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    return made_by(str(device), name)
