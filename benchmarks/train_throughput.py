"""Training throughput of the keras2016 preset: samples per second at batch 100 and 1000.

Prints the median over the epochs after the first (the first pays for warm-up) for:

* patchvae+val: ``patchvae.train.fit`` as the CLI runs it (seeded batches, running loss,
  the test split scored after every epoch, atomic checkpoint), and patchvae: the same without
  the validation;
* bare-torch: a minimal PyTorch loop on the same network, data and optimiser, no validation
  (peer: the floor our trainer's bookkeeping should stay close to);
* patchvae-bf16 (CUDA only): patchvae+val in bf16 mixed precision (``auto`` is fp32);
* compile-opt+val and compile-step+val: patchvae+val with ``train: {compile: optimizer}``
  (the optimiser's update fused by ``torch.compile``) and ``{compile: step}`` (the whole step,
  forward, gradients and update, as one compiled graph); their first epoch pays the compile
  and is left out like every first;
* keras-jax+val and keras-jax: the 2016 Keras example itself in Keras 3 on JAX, with its
  ``validation_data`` (as the example runs) and without (peer: the framework the study came
  from; optional, skipped with a line when keras and jax are not installed:
  ``pip install keras jax``), same network, loss, optimiser, data and batch size.

Runs are interleaved (each runner in turn, ``--repeats`` times) and each figure is the median;
the ratio column is patchvae's rate over the peer's, like for like: patchvae+val over the
peers that validate, patchvae over those that do not.

    python benchmarks/train_throughput.py                 # bundled sample (3,000 images)
    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --epochs 6
    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --cli

``--cli`` instead times the whole CLI run, ``patchvae mnist --preset keras2016`` (50 epochs,
batch 100, validation and a checkpoint every epoch), in a fresh process, beside the bare loop
for the same 50 epochs: the CLI's training seconds (from its ``metrics.json``) against the
loop's, interleaved; and the same CLI run with ``--compile step``, its compiling included
(the first run in a fresh cache pays the most).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def keras_jax(
    x: torch.Tensor, batch_size: int, epochs: int, x_val: torch.Tensor | None = None
) -> list[float] | None:
    """The 2016 Keras example in Keras 3 on JAX: seconds per epoch, or None without keras.
    With ``x_val``, each epoch also scores it, as the example does (``validation_data``)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "jax":
        return None
    flat = x.reshape(x.shape[0], -1).numpy()

    class Sampling(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.seed = keras.random.SeedGenerator(0)

        def call(self, mean, log_var):  # type: ignore[no-untyped-def]
            eps = keras.random.normal(keras.ops.shape(mean), seed=self.seed)
            kl = -0.5 * keras.ops.sum(1 + log_var - mean**2 - keras.ops.exp(log_var), axis=1)
            self.add_loss(keras.ops.mean(kl))
            return mean + keras.ops.exp(0.5 * log_var) * eps

    inputs = keras.Input((784,))
    hidden = keras.layers.Dense(256, activation="relu")(inputs)
    z = Sampling()(keras.layers.Dense(2)(hidden), keras.layers.Dense(2)(hidden))
    decoded = keras.layers.Dense(256, activation="relu")(z)
    outputs = keras.layers.Dense(784, activation="sigmoid")(decoded)
    model = keras.Model(inputs, outputs)

    def reconstruction(y, p):  # type: ignore[no-untyped-def]
        return 784 * keras.losses.binary_crossentropy(y, p)

    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7),
        loss=reconstruction,
    )
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            seconds.append(time.perf_counter() - self.t0)

    val = None if x_val is None else x_val.reshape(x_val.shape[0], -1).numpy()
    model.fit(
        flat,
        flat,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[Timer()],
        validation_data=None if val is None else (val, val),
    )
    return seconds


def patchvae_fit(
    x: torch.Tensor,
    x_val: torch.Tensor | None,
    batch_size: int,
    epochs: int,
    device: torch.device,
    precision: str = "auto",
    compile_mode: str = "off",
) -> list[float]:
    model_config, train_config = get_preset("keras2016")
    config = train_config.model_copy(
        update={
            "batch_size": batch_size,
            "epochs": epochs,
            "device": device.type,
            "precision": precision,
            "compile": compile_mode,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(
            model_config, config, x, x_val, checkpoint_path=Path(tmp) / "c.pt", progress=False
        )
    # each epoch's time includes validation (when x_val is given) and the checkpoint
    return [h["seconds"] for h in result.history]


def cli_seconds(data_dir: Path | None, device: str, *options: str) -> float:
    """Training seconds of ``patchvae mnist --preset keras2016`` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        data = ["--data-dir", str(data_dir)] if data_dir else ["--sample"]
        command = [sys.executable, "-m", "patchvae", "mnist", "--preset", "keras2016", *options]
        subprocess.run(
            [*command, *data, "--out", f"{tmp}/run", "--device", device, "--quiet"],
            check=True,
            capture_output=True,
        )
        metrics = json.loads(Path(f"{tmp}/run/metrics.json").read_text())
    return float(metrics["train_seconds"])


def compare_cli(args: argparse.Namespace, x: torch.Tensor, device: torch.device) -> None:
    """The CLI's 50 epochs beside the bare loop's 50 epochs, interleaved."""
    _, train_config = get_preset("keras2016")
    times: dict[str, list[float]] = {"patchvae mnist (CLI)": [], "bare-torch": []}
    times["CLI --compile step"] = []  # its compiling (cached on disk after) included
    for _ in range(args.repeats):
        times["patchvae mnist (CLI)"].append(cli_seconds(args.data_dir, device.type))
        loop = bare_torch(x, train_config.batch_size, train_config.epochs, device)
        times["bare-torch"].append(sum(loop))
        step = cli_seconds(args.data_dir, device.type, "--compile", "step")
        times["CLI --compile step"].append(step)
    cli = statistics.median(times["patchvae mnist (CLI)"])
    for name, found in times.items():
        seconds = statistics.median(found)
        ratio = cli / seconds
        print(f"{name:<22} {train_config.epochs} epochs: {seconds:7.2f} s  CLI / this {ratio:.2f}x")


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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per runner")
    parser.add_argument("--cli", action="store_true", help="time the whole CLI run instead")
    args = parser.parse_args()
    device = select_device(args.device)
    train, test = load_mnist(args.data_dir or bundled_mnist_dir())
    x, x_val = torch.from_numpy(train.as_float()), torch.from_numpy(test.as_float())
    epochs = get_preset("keras2016")[1].epochs if args.cli else args.epochs  # --cli: the preset's
    print(
        f"keras2016, {len(train)} train images, {epochs} epochs, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.cli:
        compare_cli(args, x, device)
        return
    print(f"{'runner':<16} {'batch':>6} {'samples/s (median, epochs 2..)':>32} {'patchvae /':>11}")
    runners = {  # "+val": the test split scored after every epoch, as the 2016 example does
        "patchvae+val": lambda b: patchvae_fit(x, x_val, b, args.epochs, device),
        "patchvae": lambda b: patchvae_fit(x, None, b, args.epochs, device),
        "bare-torch": lambda b: bare_torch(x, b, args.epochs, device),
        "keras-jax+val": lambda b: keras_jax(x, b, args.epochs, x_val),
        "keras-jax": lambda b: keras_jax(x, b, args.epochs),
        # train: {compile: optimizer} and {compile: step}
        "compile-opt+val": lambda b: patchvae_fit(
            x, x_val, b, args.epochs, device, "auto", "optimizer"
        ),
        "compile-step+val": lambda b: patchvae_fit(
            x, x_val, b, args.epochs, device, "auto", "step"
        ),
    }
    if device.type == "cuda":
        runners["patchvae-bf16"] = lambda b: patchvae_fit(x, x_val, b, args.epochs, device, "bf16")
    for batch_size in args.batch_sizes:
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):  # interleaved: this machine is noisy
            for name, run in runners.items():
                seconds = run(batch_size)
                if seconds is not None:
                    rates[name].append(len(train) / statistics.median(seconds[1:] or seconds))
        for name, found in rates.items():
            if not found:
                print(f"{name:<16} {batch_size:>6} {'not installed (pip install keras jax)':>32}")
                continue
            validates = name.endswith("+val") or name == "patchvae-bf16"
            ours = statistics.median(rates["patchvae+val" if validates else "patchvae"])
            rate = statistics.median(found)
            print(f"{name:<16} {batch_size:>6} {rate:>32,.0f} {ours / rate:>10.2f}x")
        if rates["keras-jax+val"]:
            keras = statistics.median(rates["keras-jax+val"])
            for name in ("compile-opt+val", "compile-step+val"):
                compiled = statistics.median(rates[name])
                print(f"{'':<16} {'':>6} {name} / keras-jax+val: {compiled / keras:.2f}x")


if __name__ == "__main__":
    main()
