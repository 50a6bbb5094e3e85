"""The typer application, its shared options and the settings every training command builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from patchvae.artefacts import SETTINGS_FILE
from patchvae.config import M, load_yaml_config
from patchvae.config.presets import PRESETS
from patchvae.errors import RunDirError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Variational autoencoders for unlabelled medical image patches.",
)
state = {"debug": False}

# Model and training options shared by `mnist` and `train`.
PRESET = typer.Option(None, "--preset", help=f"One of: {', '.join(PRESETS)}.")
EPOCHS = typer.Option(None, "--epochs")
BATCH_SIZE = typer.Option(None, "--batch-size")
LATENT_DIM = typer.Option(None, "--latent-dim")
ARCHITECTURE = typer.Option(None, "--architecture", help="mlp or conv.")
CONV_CHANNELS = typer.Option(
    None, "--conv-channels", help="conv: channels per stride-2 layer; repeat."
)
BETA = typer.Option(None, "--beta", help="KL weight (beta-VAE); 1 is the ELBO.")
KL_WARMUP = typer.Option(None, "--kl-warmup", help="Epochs of linear KL warm-up.")
HIDDEN_DIM = typer.Option(None, "--hidden-dim", help="Hidden layer width; repeat for several.")
OPTIMIZER = typer.Option(None, "--optimizer", help="rmsprop, adam or sgd.")
LR = typer.Option(None, "--lr")
SEED = typer.Option(None, "--seed")
DEVICE = typer.Option(None, "--device", help="auto (default), cpu or cuda.")
COMPILE = typer.Option(
    None,
    "--compile",
    help="off (default), optimizer or step: what torch.compile compiles (faster; numbers "
    "differ slightly).",
)
RESUME = typer.Option(False, "--resume", help="Continue the run in --out.")
QUIET = typer.Option(False, "--quiet", help="No progress bar.")


# command-line option -> (settings section, setting)
_MODEL_AND_TRAINING = {
    "latent_dim": ("model", "latent_dim"),
    "hidden_dim": ("model", "hidden_dims"),
    "architecture": ("model", "architecture"),
    "conv_channels": ("model", "conv_channels"),
    "beta": ("model", "beta"),
    "classifier_input": ("model", "classifier_input"),
    "classifier_weight": ("model", "classifier_weight"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "optimizer": ("train", "optimizer"),
    "learning_rate": ("train", "learning_rate"),
    "kl_warmup": ("train", "kl_warmup_epochs"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "in_memory_mb": ("train", "in_memory_mb"),
    "loader_workers": ("train", "loader_workers"),
    "early_stopping": ("train", "early_stopping"),
    "keep_best": ("train", "keep_best"),
    "tensorboard": ("train", "tensorboard"),
    "compile_mode": ("train", "compile"),
    "trim_fraction": ("train", "trim_fraction"),
}


def model_and_training(given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The model and training overrides among a command's parameters (None or an empty list:
    not given), by section, for :func:`~patchvae.config.presets.build_settings`.

    Example
    -------
    >>> model_and_training({"latent_dim": 8, "hidden_dim": [], "epochs": None, "out": "r"})
    {'model': {'latent_dim': 8}, 'train': {}}
    """
    found: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for option, (section, name) in _MODEL_AND_TRAINING.items():
        value = given.get(option)
        if value is not None and value != []:
            found[section][name] = value
    return found


def _print_version(given: bool) -> None:
    if given:
        from patchvae.versions import versions

        found = versions("SimpleITK", "h5py")
        typer.echo(
            f"patchvae {found.pop('patchvae')} ("
            + ", ".join(f"{name} {version}" for name, version in found.items())
            + ")"
        )
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    state["debug"] = debug


def base_settings(
    cls: type[M],
    config_file: Path | None,
    out: Path,
    from_run: bool,
    given: dict[str, Any] | None = None,
) -> M | None:
    """The settings to start from: a settings file (a recipe may leave out what ``given``
    holds: the command line's store, say), or with ``--resume`` alone the run's own."""
    if config_file is not None:
        return load_yaml_config(cls, config_file, given)
    if from_run:
        if not (out / SETTINGS_FILE).is_file():
            raise RunDirError(f"{out}: no run to resume here (no {SETTINGS_FILE})")
        return load_yaml_config(cls, out / SETTINGS_FILE)
    return None
