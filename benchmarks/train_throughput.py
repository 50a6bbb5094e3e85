"""Training throughput of the keras2016 preset: samples per second at batch 100 and 1000.

Prints the median over the epochs after the first (the first pays for warm-up) for:

* patchvae: ``patchvae.train.fit`` (the trainer the CLI uses: seeded batches, running loss,
  per-epoch validation and atomic checkpoint), and
* bare-torch: a minimal PyTorch loop on the same network, data and optimiser (peer: the floor
  our trainer's bookkeeping should stay close to).

    python benchmarks/train_throughput.py                 # bundled sample (3,000 images)
    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --epochs 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from patchvae.config.presets import get_preset
from patchvae.data.mnist import bundled_mnist_dir, load_mnist
from patchvae.models import build_model
from patchvae.runtime import select_device
from patchvae.train import fit


def bare_torch(x: torch.Tensor, batch_size: int, epochs: int, device: torch.device) -> list[float]:
    model_config, _ = get_preset("keras2016")
    torch.manual_seed(0)
    model = build_model(model_config).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    x = x.to(device)
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for index in torch.randperm(x.shape[0]).split(batch_size):
            loss = model(x[index.to(device)]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return seconds


def patchvae_fit(
    x: torch.Tensor, x_val: torch.Tensor, batch_size: int, epochs: int, device: torch.device
) -> list[float]:
    model_config, train_config = get_preset("keras2016")
    config = train_config.model_copy(
        update={"batch_size": batch_size, "epochs": epochs, "device": device.type}
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(
            model_config, config, x, x_val, checkpoint_path=Path(tmp) / "c.pt", progress=False
        )
    # each epoch's time includes validation and the checkpoint: the full cost per epoch
    return [h["seconds"] for h in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="MNIST folder (default: bundled sample)"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    train, test = load_mnist(args.data_dir or bundled_mnist_dir())
    x, x_val = torch.from_numpy(train.as_float()), torch.from_numpy(test.as_float())
    print(
        f"keras2016, {len(train)} train images, {args.epochs} epochs, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'runner':<12} {'batch':>6} {'samples/s (median, epochs 2..)':>32} {'first epoch s':>14}"
    )
    for batch_size in args.batch_sizes:
        for name, seconds in (
            ("patchvae", patchvae_fit(x, x_val, batch_size, args.epochs, device)),
            ("bare-torch", bare_torch(x, batch_size, args.epochs, device)),
        ):
            rate = len(train) / statistics.median(seconds[1:] or seconds)
            print(f"{name:<12} {batch_size:>6} {rate:>32,.0f} {seconds[0]:>14.2f}")


if __name__ == "__main__":
    main()
