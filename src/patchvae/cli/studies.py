"""The study commands: ``mnist``, ``compare``, ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from patchvae.artefacts import CLUSTER_READ_OFFS, MnistRecord
from patchvae.cli.app import (
    ARCHITECTURE,
    BATCH_SIZE,
    BETA,
    COMPILE,
    CONV_CHANNELS,
    DEVICE,
    EPOCHS,
    HIDDEN_DIM,
    KL_WARMUP,
    LATENT_DIM,
    LR,
    OPTIMIZER,
    PRESET,
    QUIET,
    RESUME,
    SEED,
    app,
    base_settings,
    model_and_training,
)
from patchvae.config import MnistStudyConfig, build_config, load_yaml_config
from patchvae.config.presets import build_settings


@app.command()
def mnist(
    out: Path = typer.Option(..., "--out", help="Run folder to create (or to --resume)."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with the official MNIST IDX files (gzip or not)."
    ),
    download: bool = typer.Option(
        False, "--download", help="Fetch the official files once into the cache (needs network)."
    ),
    sample: bool = typer.Option(
        False, "--sample", help="Use the MNIST sample bundled with patchvae."
    ),
    digits: list[int] | None = typer.Option(None, "--digits", help="Digits to keep (default 7 9)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="settings.yaml of an earlier run (options given here override it)."
    ),
    preset: str | None = PRESET,
    epochs: int | None = EPOCHS,
    batch_size: int | None = BATCH_SIZE,
    latent_dim: int | None = LATENT_DIM,
    architecture: str | None = ARCHITECTURE,
    conv_channels: list[int] | None = CONV_CHANNELS,
    beta: float | None = BETA,
    kl_warmup: int | None = KL_WARMUP,
    hidden_dim: list[int] | None = HIDDEN_DIM,
    optimizer: str | None = OPTIMIZER,
    learning_rate: float | None = LR,
    seed: int | None = SEED,
    device: str | None = DEVICE,
    compile_mode: str | None = COMPILE,
    umap: bool = typer.Option(
        False, "--umap", help="Also cluster a 2-D UMAP of the latent (needs umap-learn)."
    ),
    self_training: bool = typer.Option(
        False,
        "--self-training",
        help="With --umap: learn the UMAP view's clusters again from the images "
        "(a small conv classifier; no labels).",
    ),
    resume: bool = RESUME,
    quiet: bool = QUIET,
) -> None:
    """Train a VAE on MNIST digits and analyse its latent space on the test split."""
    base = base_settings(MnistStudyConfig, config_file, out, resume and not data_dir)
    if base is not None and preset is not None:
        raise typer.BadParameter("give --config or --preset, not both")
    config = build_settings(
        MnistStudyConfig,
        base,
        preset,
        model_and_training(locals()),
        {
            "digits": digits or None,
            "data_dir": str(data_dir) if data_dir else None,
            "use_bundled_sample": True if sample else None,
            "umap": True if umap else None,
            "self_training": True if self_training else None,
        },
    )
    record = _run_mnist(config, out, resume, download, not quiet)
    typer.echo(f"wrote {out}/ (metrics.json, figure-data.npz; figures: patchvae report {out})")
    _print_metrics(record)


def _run_mnist(
    config: MnistStudyConfig, out: Path, resume: bool, download: bool, progress: bool
) -> MnistRecord:
    from patchvae.studies.mnist import run_mnist_study  # torch import deferred past parsing

    return run_mnist_study(config, out, resume=resume, download=download, progress=progress)


def _print_metrics(record: MnistRecord) -> None:
    scores = record.scores()
    keys = ("kmeans_accuracy", "nmi", "ari", "silhouette", "logreg_accuracy", "test_loss")
    typer.echo("  " + "  ".join(f"{k}={scores[k]:.4g}" for k in keys))
    found = [k for k in CLUSTER_READ_OFFS if k in scores]
    if found:
        typer.echo("  " + "  ".join(f"{k}={scores[k]:.4g}" for k in found))
    typer.echo(
        f"  epochs={record.epochs} train={record.n_train} test={record.n_test} "
        f"train_seconds={record.train_seconds:.1f} device={record.device}"
    )


@app.command()
def compare(
    config_file: Path = typer.Option(..., "--config", help="Grid YAML: dataset, seeds, models."),
    out: Path = typer.Option(..., "--out", help="Folder for the runs and the table."),
    seeds: list[int] | None = typer.Option(
        None, "--seeds", help="Seeds to run instead of the grid's (e.g. --seeds 0 1)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Train every model this many epochs (a quick look)."
    ),
    val_fold: int | None = typer.Option(
        None,
        "--val-fold",
        help="A store of one case: hold out this fold's slabs instead of the grid's (slab "
        "cross-validation: one grid folder per fold).",
    ),
    reanalyse: bool = typer.Option(
        False,
        "--reanalyse",
        help="Analyse finished runs again (new scores; MNIST grids: the grid's umap and "
        "self_training) without training them; unfinished runs train as usual.",
    ),
) -> None:
    """Train several model settings with several seeds each; one table (CSV, Markdown) and a
    figure, with the keras2016 network and a no-training baseline always as rows."""
    from patchvae.config.compare import CompareConfig
    from patchvae.studies.compare import run_comparison

    grid = load_yaml_config(CompareConfig, config_file).model_dump()
    for entry in grid["models"]:  # recipes are named relative to the grid file
        if entry.get("recipe"):
            entry["recipe"] = str((config_file.parent / entry["recipe"]).resolve())
    given = {"seeds": seeds or None, "epochs": epochs, "val_fold": val_fold}
    config = build_config(
        CompareConfig, {**grid, **{k: v for k, v in given.items() if v is not None}}
    )
    table = run_comparison(config, out, echo=typer.echo, reanalyse=reanalyse)
    typer.echo(f"wrote {out}/comparison.csv, comparison.md, comparison.png ({len(table)} rows)")
    typer.echo((out / "comparison.md").read_text())


@app.command()
def demo(
    out: Path = typer.Option(Path("patchvae-demo"), "--out", help="Folder for the demo's runs."),
    epochs: int | None = typer.Option(None, "--epochs", help="Fewer epochs for a quicker look."),
    quiet: bool = QUIET,
) -> None:
    """Run the study on the data bundled with patchvae: no download, no data needed.

    MNIST 7 vs 9 with the keras2016 network, then the stroke pipeline on the bundled ISLES'22
    case: extract, train, analyze, report. Re-running it replaces only the files an earlier
    demo wrote."""
    from patchvae.studies.demo import run_demo

    stroke = run_demo(out, epochs, not quiet, typer.echo, _print_metrics)
    split = stroke["split"]
    typer.echo(
        f"  {stroke['patches']} patches ({stroke['lesion_patches']} lesion); trained on "
        f"{split['n_train']}, analysed {split['n_val']} held-out patches (slabs of slices)"
    )
    for name, m in stroke["analysis"].patch_scores.items():
        typer.echo(f"  {name:<20} patch AUROC {m['auroc']:.3f} ({m['kind']})")
    typer.echo(f"demo done: open {stroke['report']} (MNIST: {stroke['mnist_report']})")
