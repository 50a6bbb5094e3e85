"""The stage commands: ``extract``, ``inspect``, ``train``, ``embed``, ``analyze``, ``score``,
``report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from patchvae.artefacts import TrainingRecord
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
from patchvae.config import PatchTrainConfig, build_config
from patchvae.config.presets import build_settings

if TYPE_CHECKING:
    from patchvae.extract import CaseResult


@app.command()
def extract(
    root: Path = typer.Option(
        ..., "--root", help="Dataset folder (or the manifest .csv for --layout csv)."
    ),
    out: Path = typer.Option(..., "--out", help="Patch store file to write (.h5)."),
    layout: str = typer.Option("auto", "--layout", help="auto, isles2015, isles2022 or csv."),
    modality: list[str] | None = typer.Option(
        None,
        "--modality",
        help="Sequence(s) to keep (default DWI); several give multi-channel patches.",
    ),
    patch_size: int = typer.Option(28, "--patch-size"),
    stride: int | None = typer.Option(
        None, "--stride", help="Grid step (default: the patch size)."
    ),
    spacing: float | None = typer.Option(
        None, "--spacing", help="Resample to this isotropic spacing (mm)."
    ),
    n4: bool = typer.Option(False, "--n4", help="N4 bias-field correction before scaling."),
    brain_mask: str = typer.Option(
        "auto", "--brain-mask", help="When no brain-mask file: auto, nonzero or otsu."
    ),
    clip: tuple[float, float] = typer.Option(
        (0.5, 99.5), "--clip", help="Intensity percentiles inside the brain mapped to 0 and 1."
    ),
    min_brain: float = typer.Option(
        0.5, "--min-brain", help="Keep patches with at least this brain fraction."
    ),
    lesion_threshold: float = typer.Option(
        0.0,
        "--lesion-threshold",
        help="Label 1 when the lesion fraction exceeds this (0: any voxel).",
    ),
    reference: bool = typer.Option(
        False,
        "--reference",
        help="Resample other channels and masks onto the first channel's grid by physical "
        "position (default: refuse files on another grid).",
    ),
    workers: int = typer.Option(
        1, "--workers", help="Cases preprocessed at once, by threads (default 1); up to the cores."
    ),
    on_error: str = typer.Option(
        "fail", "--on-error", help="fail (default) or skip a case that cannot be used."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing patch store (never any other file)."
    ),
) -> None:
    """Preprocess volumes and cut them into a patch store (HDF5)."""
    # the options are the settings, by name (taken before anything else is defined here)
    given = {k: v for k, v in locals().items() if k not in ("out", "force", "modality", "clip")}
    from patchvae.config import ExtractConfig
    from patchvae.extract import extract_dataset

    given.update(root=str(root), modalities=modality or ["DWI"], clip_percentiles=clip)
    settings = build_config(ExtractConfig, given)
    if root.is_file() and layout in ("auto", "csv"):
        from patchvae.data.volumes import unread_columns

        unread = unread_columns(root, settings.modalities)
        if unread:
            typer.echo(f"  manifest columns not read (not asked for): {', '.join(unread)}")
    summary = extract_dataset(
        settings, out, on_case=lambda r: _print_case(r, settings.on_error), force=force
    )
    typer.echo(
        f"wrote {out}: {summary.patches} patches, {summary.lesion_patches} with lesion, "
        f"from {len(summary.written)} case(s); {len(summary.skipped)} skipped"
    )
    for case_id, reason in summary.skipped:
        typer.echo(f"  skipped {case_id}: {reason}")


def _print_case(result: CaseResult, on_error: str) -> None:
    if result.error is not None:
        what = "SKIPPED" if on_error == "skip" else "FAILED"
        typer.echo(f"  {result.case_id}: {what}: {result.error}")
    elif result.batch is not None:
        b = result.batch
        typer.echo(
            f"  {result.case_id}: {len(b)} patches kept of {b.grid_patches} on the grid, "
            f"{int((b.label == 1).sum())} with lesion"
        )


@app.command()
def inspect(store: Path = typer.Argument(..., help="A patch store written by extract.")) -> None:
    """Print what a patch store holds."""
    from patchvae.store import PatchStore

    opened = PatchStore(store)
    table = opened.table()
    typer.echo(
        f"{store}: {opened.n_patches} patches of {len(opened.channels)} channel(s) "
        f"{opened.channels}, {opened.patch_size}x{opened.patch_size}"
    )
    labelled = table[table.label >= 0]
    typer.echo(f"  lesion patches: {int((labelled.label == 1).sum())} of {len(labelled)} labelled")
    typer.echo("  cases:")
    for case in opened.cases:
        typer.echo(
            f"    {case['case_id']}: {case['patches']} patches "
            f"({case['lesion_patches']} lesion) of "
            f"{case['grid_patches']} on the grid; volume z,y,x {case['shape_zyx']} at "
            f"{', '.join(f'{v:g}' for v in case['spacing_xyz_mm'])} mm"
        )
    settings = ", ".join(f"{k}={v}" for k, v in opened.settings.items())
    typer.echo(f"  settings: {settings}")
    typer.echo(f"  versions: {opened.provenance.get('versions')}")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Run folder to create (or to --resume)."),
    patches: Path | None = typer.Option(None, "--patches", help="Patch store (from extract)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="settings.yaml of an earlier run."
    ),
    preset: str | None = PRESET,
    val_cases: list[str] | None = typer.Option(
        None, "--val-cases", help="Cases held out for validation (names or a comma list)."
    ),
    label_budget: int | None = typer.Option(
        None,
        "--label-budget",
        help="Semi-supervised: train a lesion classifier on the latent with this many labels.",
    ),
    weak_labels: int | None = typer.Option(
        None,
        "--weak-labels",
        help="Weak labels: after training, fit a linear lesion score (p_lesion_weak) to this "
        "many labelled training patches and pseudo-labels from the label-free fusion.",
    ),
    patch_labels: Path | None = typer.Option(
        None,
        "--labels",
        help="Your own patch labels: a CSV of case_id, slice, row, col, label (1 lesion, 0 "
        "healthy) for --weak-labels (or --label-budget), instead of labels from lesion masks.",
    ),
    classifier_input: str | None = typer.Option(
        None,
        "--classifier-input",
        help="Semi-supervised: latent, or pooled (conv: also the pooled encoder maps).",
    ),
    classifier_weight: float | None = typer.Option(
        None, "--classifier-weight", help="Semi-supervised: weight of the classifier's loss."
    ),
    val_fraction: float | None = typer.Option(
        None,
        "--val-fraction",
        help="Fraction of cases held out (default 0.2); slabs of slices for one case.",
    ),
    val_fold: int | None = typer.Option(
        None,
        "--val-fold",
        help="One case: which interleaved slabs are held out, 0 to 1/val-fraction - 1 "
        "(default the middle); run each for slab cross-validation.",
    ),
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
    in_memory_mb: float | None = typer.Option(
        None,
        "--in-memory-mb",
        help="Hold the patches in memory up to this size (default 1024), else stream them.",
    ),
    loader_workers: int | None = typer.Option(
        None, "--loader-workers", help="Processes reading the store when streaming (default 0)."
    ),
    early_stopping: int | None = typer.Option(
        None, "--early-stopping", help="Stop after this many epochs without a better val loss."
    ),
    keep_best: bool | None = typer.Option(
        None, "--keep-best", help="Also keep best.pt: the epoch of lowest validation loss."
    ),
    tensorboard: bool | None = typer.Option(
        None, "--tensorboard", help="Also write the curves for TensorBoard (RUN/tensorboard/)."
    ),
    compile_mode: str | None = COMPILE,
    healthy_only: bool | None = typer.Option(
        None,
        "--healthy-only",
        help="Train on the lesion-free training patches only (uses the lesion masks).",
    ),
    trim_fraction: float | None = typer.Option(
        None,
        "--trim-fraction",
        help="Label-free: each step ignores this fraction of its batch, the highest losses.",
    ),
    resume: bool = RESUME,
    quiet: bool = QUIET,
) -> None:
    """Train a VAE on a patch store, holding out whole cases (or slabs of slices of one case)."""
    from patchvae.stages.training import train_on_store
    from patchvae.store import PatchStore

    base = base_settings(
        PatchTrainConfig,
        config_file,
        out,
        resume and patches is None,
        {"patches": None if patches is None else str(patches)},
    )
    if base is None and patches is None:
        raise typer.BadParameter("give --patches STORE (or --config settings.yaml)")
    store_path = Path(patches) if patches is not None else Path(base.patches)  # type: ignore[union-attr]
    cases = [c for item in val_cases or [] for c in item.split(",") if c]
    overrides = model_and_training(locals())
    # the store's patches fix the model's input shape (a recipe names no store)
    given_store = patches is not None or base is None
    overrides["model"]["input_shape"] = PatchStore(store_path).input_shape if given_store else None
    top: dict[str, Any] = {"patches": str(store_path), "val_cases": cases or None}
    top.update(val_fraction=val_fraction, label_budget=label_budget, healthy_only=healthy_only)
    top.update(weak_labels=weak_labels, val_fold=val_fold)
    top.update(patch_labels=None if patch_labels is None else str(patch_labels))
    config = build_settings(PatchTrainConfig, base, preset, overrides, top)
    record = train_on_store(config, out, resume=resume, progress=not quiet)
    from patchvae.runtime import ranks

    if ranks().main:  # in a torchrun job, one process speaks
        _print_training(out, record)


def _print_training(out: Path, record: TrainingRecord) -> None:
    split, last = record.split, record.history[-1]
    typer.echo(
        f"wrote {out}/: {split['n_train']} training patches ({', '.join(split['train_cases'])}), "
        f"{split['n_val']} validation ({split['method']}: {', '.join(split['val_cases'])})"
    )
    typer.echo(
        f"  epochs={record.epochs} train_loss={last['train_loss']:.2f} "
        f"val_loss={last.get('val_loss', float('nan')):.2f} "
        f"train_seconds={record.train_seconds:.1f}"
    )


@app.command()
def embed(
    run: Path = typer.Argument(..., help="Run folder from `patchvae train`."),
    patches: Path = typer.Option(..., "--patches", help="Patch store to embed (any cases)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Table to write: .csv or .parquet (default RUN/embedding-STORE.parquet, which "
        "analyze reads).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing embedding table (never any other file)."
    ),
) -> None:
    """Per patch: latent means and log-variances, reconstruction error, KL, ELBO, provenance."""
    from patchvae.stages.embedding import embed_to_table

    target, frame = embed_to_table(run, patches, out, force)
    typer.echo(
        f"wrote {target}: {len(frame)} patches, "
        f"{int((~frame.seen_in_training).sum())} not seen in training"
    )


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="Run folder from `patchvae train`."),
    patches: Path = typer.Option(..., "--patches", help="Patch store to analyse (held-out cases)."),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help="Seed of clustering, density subsampling, draws (default: the run's training seed).",
    ),
) -> None:
    """Lesion vs healthy in the latent space: clusters, anomaly scores beside an intensity
    baseline, few-label AUROC, heat-map data; writes RUN/analysis-<store>/ from the run's
    embeddings (made first where missing or older than the checkpoint)."""
    from patchvae.artefacts import ANALYSIS_FILE, analysis_dir
    from patchvae.studies.analyze import analyze as analyze_store

    result = analyze_store(run, patches, seed)
    typer.echo(
        f"wrote {analysis_dir(run, patches) / ANALYSIS_FILE}: {result.n_patches} patches "
        f"({result.n_lesion} lesion), {result.evaluation_set}"
    )
    for name, metrics in result.patch_scores.items():
        typer.echo(
            f"  {name:<20} patch AUROC {metrics['auroc']:.3f}  "
            f"AUPRC {metrics['auprc']:.3f}  ({metrics['kind']})"
        )
    for name, metrics in result.clustering.items():
        typer.echo(
            f"  {name:<20} accuracy {metrics['accuracy']:.3f}  "
            f"NMI {metrics['nmi']:.3f}  ARI {metrics['ari']:.3f}"
        )


@app.command()
def score(
    run: Path = typer.Argument(..., help="Run folder from `patchvae train`."),
    inputs: list[Path] = typer.Argument(
        ..., help="Volumes to score: image files, or dataset folders / CSV manifests."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the maps and tables into."),
    stride: int | None = typer.Option(
        None, "--stride", help="Sliding-window step in voxels (default: a quarter of the patch)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an earlier output of `patchvae score` (nothing else)."
    ),
) -> None:
    """Score new volumes with a trained run: one NIfTI map per score on each input's own grid
    (mean over the sliding-window patches covering each voxel), a per-patch table, and
    score.json. Preprocessing is the run's training store's."""
    from patchvae.stages.scoring import score_inputs

    def said(case_id: str, patches: int) -> None:
        typer.echo(f"  {case_id}: {patches} patches scored")

    record = score_inputs(run, inputs, out, stride, force, on_case=said)
    typer.echo(
        f"wrote {out}/: {len(record.cases)} case(s), maps of {', '.join(record.scores)} "
        f"(stride {record.stride})"
    )


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder (from train + analyze, or mnist)."),
) -> None:
    """Draw the figures and write RUN/report.html: one self-contained page with settings,
    data, curves, figures, metrics beside the baseline, and the commands that reproduce them.
    Reads the run's records only (not the checkpoint)."""
    from patchvae.report.html import build_report

    typer.echo(f"wrote {build_report(run)}")
