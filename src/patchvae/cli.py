"""The ``patchvae`` command: one sub-command per stage, plus ``demo``.

Thin by design: it parses, validates, calls library functions and prints. Any
:class:`~patchvae.errors.PatchvaeError` becomes one line on stderr and exit status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from patchvae.artefacts import SETTINGS_FILE, MnistRecord
from patchvae.config import M, MnistStudyConfig, PatchTrainConfig, build_config, load_yaml_config
from patchvae.config.presets import PRESETS, build_settings
from patchvae.errors import Interrupted, PatchvaeError, RunDirError, one_line
from patchvae.io import oserror_message, raise_or_defer, remove_live_temporaries

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Variational autoencoders for unlabelled medical image patches.",
)
_state = {"debug": False}

# Model and training options shared by `mnist` and `train`.
_PRESET = typer.Option(None, "--preset", help=f"One of: {', '.join(PRESETS)}.")
_EPOCHS = typer.Option(None, "--epochs")
_BATCH_SIZE = typer.Option(None, "--batch-size")
_LATENT_DIM = typer.Option(None, "--latent-dim")
_ARCHITECTURE = typer.Option(None, "--architecture", help="mlp or conv.")
_CONV_CHANNELS = typer.Option(
    None, "--conv-channels", help="conv: channels per stride-2 layer; repeat."
)
_BETA = typer.Option(None, "--beta", help="KL weight (beta-VAE); 1 is the ELBO.")
_KL_WARMUP = typer.Option(None, "--kl-warmup", help="Epochs of linear KL warm-up.")
_HIDDEN_DIM = typer.Option(None, "--hidden-dim", help="Hidden layer width; repeat for several.")
_OPTIMIZER = typer.Option(None, "--optimizer", help="rmsprop, adam or sgd.")
_LR = typer.Option(None, "--lr")
_SEED = typer.Option(None, "--seed")
_DEVICE = typer.Option(None, "--device", help="auto (default), cpu or cuda.")
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out.")
_QUIET = typer.Option(False, "--quiet", help="No progress bar.")


def _model_and_training(
    latent_dim: int | None,
    hidden_dim: list[int] | None,
    architecture: str | None,
    conv_channels: list[int] | None,
    beta: float | None,
    epochs: int | None,
    batch_size: int | None,
    optimizer: str | None,
    learning_rate: float | None,
    kl_warmup: int | None,
    seed: int | None,
    device: str | None,
) -> dict[str, dict[str, Any]]:
    """The model and training overrides that the command line gave (None: not given)."""
    return {
        "model": {
            "latent_dim": latent_dim,
            "hidden_dims": hidden_dim or None,
            "architecture": architecture,
            "conv_channels": conv_channels or None,
            "beta": beta,
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "kl_warmup_epochs": kl_warmup,
            "seed": seed,
            "device": device,
        },
    }


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
    _state["debug"] = debug


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
    preset: str | None = _PRESET,
    epochs: int | None = _EPOCHS,
    batch_size: int | None = _BATCH_SIZE,
    latent_dim: int | None = _LATENT_DIM,
    architecture: str | None = _ARCHITECTURE,
    conv_channels: list[int] | None = _CONV_CHANNELS,
    beta: float | None = _BETA,
    kl_warmup: int | None = _KL_WARMUP,
    hidden_dim: list[int] | None = _HIDDEN_DIM,
    optimizer: str | None = _OPTIMIZER,
    learning_rate: float | None = _LR,
    seed: int | None = _SEED,
    device: str | None = _DEVICE,
    umap: bool = typer.Option(
        False, "--umap", help="Also cluster a 2-D UMAP of the latent (needs umap-learn)."
    ),
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Train a VAE on MNIST digits and analyse its latent space on the test split."""
    base = _base_settings(MnistStudyConfig, config_file, out, resume and not data_dir)
    if base is not None and preset is not None:
        raise typer.BadParameter("give --config or --preset, not both")
    config = build_settings(
        MnistStudyConfig,
        base,
        preset,
        _model_and_training(
            latent_dim,
            hidden_dim,
            architecture,
            conv_channels,
            beta,
            epochs,
            batch_size,
            optimizer,
            learning_rate,
            kl_warmup,
            seed,
            device,
        ),
        {
            "digits": digits or None,
            "data_dir": str(data_dir) if data_dir else None,
            "use_bundled_sample": True if sample else None,
            "umap": True if umap else None,
        },
    )
    record = _run_mnist(config, out, resume, download, not quiet)
    typer.echo(f"wrote {out}/ (metrics.json, figure-data.npz; figures: patchvae report {out})")
    _print_metrics(record)


def _base_settings(cls: type[M], config_file: Path | None, out: Path, from_run: bool) -> M | None:
    """The settings to start from: a settings file, or with ``--resume`` alone the run's own."""
    if config_file is not None:
        return load_yaml_config(cls, config_file)
    if from_run:
        if not (out / SETTINGS_FILE).is_file():
            raise RunDirError(f"{out}: no run to resume here (no {SETTINGS_FILE})")
        return load_yaml_config(cls, out / SETTINGS_FILE)
    return None


def _run_mnist(
    config: MnistStudyConfig, out: Path, resume: bool, download: bool, progress: bool
) -> MnistRecord:
    from patchvae.studies.mnist import run_mnist_study  # torch import deferred past parsing

    return run_mnist_study(config, out, resume=resume, download=download, progress=progress)


def _print_metrics(record: MnistRecord) -> None:
    scores = record.scores()
    keys = ("kmeans_accuracy", "nmi", "ari", "silhouette", "logreg_accuracy", "test_loss")
    typer.echo("  " + "  ".join(f"{k}={scores[k]:.4g}" for k in keys))
    typer.echo(
        f"  epochs={record.epochs} train={record.n_train} test={record.n_test} "
        f"train_seconds={record.train_seconds:.1f} device={record.device}"
    )


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
    workers: int = typer.Option(1, "--workers"),
    on_error: str = typer.Option(
        "fail", "--on-error", help="fail (default) or skip a case that cannot be used."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing patch store (never any other file)."
    ),
) -> None:
    """Preprocess volumes and cut them into a patch store (HDF5)."""
    from patchvae.config import ExtractConfig
    from patchvae.extract import CaseResult, extract_dataset

    settings = build_config(
        ExtractConfig,
        {
            "layout": layout,
            "root": str(root),
            "modalities": modality or ["DWI"],
            "patch_size": patch_size,
            "stride": stride,
            "spacing": spacing,
            "n4": n4,
            "brain_mask": brain_mask,
            "clip_percentiles": clip,
            "min_brain": min_brain,
            "lesion_threshold": lesion_threshold,
            "workers": workers,
            "on_error": on_error,
        },
    )

    def report(result: CaseResult) -> None:
        if result.error is not None:
            typer.echo(
                f"  {result.case_id}: {'SKIPPED' if settings.on_error == 'skip' else 'FAILED'}: "
                f"{result.error}"
            )
        elif result.batch is not None:
            b = result.batch
            typer.echo(
                f"  {result.case_id}: {len(b)} patches kept of {b.grid_patches} on the grid, "
                f"{int((b.label == 1).sum())} with lesion"
            )

    if root.is_file() and layout in ("auto", "csv"):
        from patchvae.data.volumes import unread_columns

        unread = unread_columns(root, settings.modalities)
        if unread:
            typer.echo(f"  manifest columns not read (not asked for): {', '.join(unread)}")
    summary = extract_dataset(settings, out, on_case=report, force=force)
    typer.echo(
        f"wrote {out}: {summary.patches} patches, {summary.lesion_patches} with lesion, "
        f"from {len(summary.written)} case(s); {len(summary.skipped)} skipped"
    )
    for case_id, reason in summary.skipped:
        typer.echo(f"  skipped {case_id}: {reason}")


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
    preset: str | None = _PRESET,
    val_cases: list[str] | None = typer.Option(
        None, "--val-cases", help="Cases held out for validation (names or a comma list)."
    ),
    label_budget: int | None = typer.Option(
        None,
        "--label-budget",
        help="Semi-supervised: train a lesion classifier on the latent with this many labels.",
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
    epochs: int | None = _EPOCHS,
    batch_size: int | None = _BATCH_SIZE,
    latent_dim: int | None = _LATENT_DIM,
    architecture: str | None = _ARCHITECTURE,
    conv_channels: list[int] | None = _CONV_CHANNELS,
    beta: float | None = _BETA,
    kl_warmup: int | None = _KL_WARMUP,
    hidden_dim: list[int] | None = _HIDDEN_DIM,
    optimizer: str | None = _OPTIMIZER,
    learning_rate: float | None = _LR,
    seed: int | None = _SEED,
    device: str | None = _DEVICE,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Train a VAE on a patch store, holding out whole cases (or slabs of slices of one case)."""
    from patchvae.stages.training import train_on_store
    from patchvae.store import PatchStore

    base = _base_settings(PatchTrainConfig, config_file, out, resume and patches is None)
    if base is None and patches is None:
        raise typer.BadParameter("give --patches STORE (or --config settings.yaml)")
    store_path = Path(patches) if patches is not None else Path(base.patches)  # type: ignore[union-attr]
    store = PatchStore(store_path)
    cases = [c for item in val_cases or [] for c in item.split(",") if c]
    overrides = _model_and_training(
        latent_dim,
        hidden_dim,
        architecture,
        conv_channels,
        beta,
        epochs,
        batch_size,
        optimizer,
        learning_rate,
        kl_warmup,
        seed,
        device,
    )
    overrides["model"]["classifier_input"] = classifier_input
    overrides["model"]["classifier_weight"] = classifier_weight
    shape = (len(store.channels), store.patch_size, store.patch_size)
    overrides["model"]["input_shape"] = None if base else shape
    config = build_settings(
        PatchTrainConfig,
        base,
        preset,
        overrides,
        {
            "patches": str(store_path),
            "val_cases": cases or None,
            "val_fraction": val_fraction,
            "label_budget": label_budget,
        },
    )
    record = train_on_store(config, out, resume=resume, progress=not quiet)
    split = record.split
    last = record.history[-1]
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
    seed: int = typer.Option(0, "--seed", help="Seed of clustering, density subsampling, draws."),
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
            f"  {name:<14} patch AUROC {metrics['auroc']:.3f}  "
            f"AUPRC {metrics['auprc']:.3f}  ({metrics['kind']})"
        )
    for name, metrics in result.clustering.items():
        typer.echo(
            f"  {name:<14} accuracy {metrics['accuracy']:.3f}  "
            f"NMI {metrics['nmi']:.3f}  ARI {metrics['ari']:.3f}"
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
) -> None:
    """Train several model settings with several seeds each; one table (CSV, Markdown) and a
    figure, with the keras2016 network and a no-training baseline always as rows."""
    from patchvae.config.compare import CompareConfig
    from patchvae.studies.compare import run_comparison

    grid = load_yaml_config(CompareConfig, config_file).model_dump()
    given = {"seeds": seeds or None, "epochs": epochs}
    config = build_config(
        CompareConfig, {**grid, **{k: v for k, v in given.items() if v is not None}}
    )
    table = run_comparison(config, out, echo=typer.echo)
    typer.echo(f"wrote {out}/comparison.csv, comparison.md, comparison.png ({len(table)} rows)")
    typer.echo((out / "comparison.md").read_text())


@app.command()
def demo(
    out: Path = typer.Option(Path("patchvae-demo"), "--out", help="Folder for the demo's runs."),
    epochs: int | None = typer.Option(None, "--epochs", help="Fewer epochs for a quicker look."),
    quiet: bool = _QUIET,
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
        typer.echo(f"  {name:<14} patch AUROC {m['auroc']:.3f} ({m['kind']})")
    typer.echo(f"demo done: open {stroke['report']} (MNIST: {stroke['mnist_report']})")


def expand_multi_value_options(
    argv: list[str], options: tuple[str, ...] = ("--digits", "--val-cases", "--seeds")
) -> list[str]:
    """Turn ``--digits 7 9`` into ``--digits 7 --digits 9``: click options take one value each.

    Example
    -------
    >>> expand_multi_value_options(["mnist", "--digits", "7", "9", "--out", "r"])
    ['mnist', '--digits', '7', '--digits', '9', '--out', 'r']
    """
    expanded: list[str] = []
    pending: str | None = None  # the multi-value option whose values are being read
    taken = 0
    for token in argv:
        if pending is not None and not token.startswith("--"):
            expanded += [pending, token]
            taken += 1
            continue
        if pending is not None and taken == 0:
            expanded.append(pending)  # no value: click reports it
        pending = None
        if token in options:
            pending, taken = token, 0
            continue
        expanded.append(token)
    if pending is not None and taken == 0:
        expanded.append(pending)
    return expanded


def _raise_interrupted(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    raise_or_defer(Interrupted(name, 128 + signum))


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (not KeyboardInterrupt, which typer turns
    into a silent exit), so temporary files are removed on the way out and one line is said."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(message: str, code: int) -> None:
    typer.echo(f"patchvae: {one_line(message)}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    _state["debug"] = "--debug" in args[:1]
    hook = sys.unraisablehook
    if not _state["debug"]:
        # h5py reports errors of objects closed during a failure (a full disk) through this
        # hook, hundreds of lines; the error that caused them is said in one line below
        sys.unraisablehook = lambda unraisable: None
    try:
        with _signals_raise():
            # standalone mode: typer reports usage errors itself (exit 2) and exits with the status
            app(args=args, prog_name="patchvae")
    except Interrupted as stop:
        remove_live_temporaries()
        what = "interrupted" if stop.signal_name == "SIGINT" else "terminated"
        _fail(
            f"{what} ({stop.signal_name}); no half-written file was kept; run the same command "
            "again (a training run continues from its last epoch with --resume)",
            stop.exit_code,
        )
    except PatchvaeError as exc:
        if _state["debug"]:
            raise
        _fail(f"error: {exc}", 2)
    except OSError as exc:
        if _state["debug"]:
            raise
        _fail(f"error: {oserror_message(exc)}", 2)
    except MemoryError:
        if _state["debug"]:
            raise
        _fail("error: out of memory (the input is larger than this machine can hold)", 2)
    except Exception as exc:
        if _state["debug"]:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1)
    finally:
        sys.unraisablehook = hook
