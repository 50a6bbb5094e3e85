"""`patchvae compare`: several model settings, several seeds each, one table and one figure.

A grid file names the data set (MNIST digits, or a patch store with held-out cases), the seeds,
and the model settings (each a preset plus overrides). The keras2016 preset is always a row, and
so is a baseline that needs no training: k-means on the raw pixels for MNIST, the scores with
no learning for patches (intensity baselines, bright-spot count). Every run keeps its own
folder; a finished run is not trained again when the comparison is re-run (so a long grid can
be resumed).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from patchvae.analysis.fewlabel import LATENT_GROUP_COUNT
from patchvae.analysis.metrics import clustering_scores
from patchvae.artefacts import COMPARE_ROW_FILE, METRICS_FILE, SETTINGS_FILE, TRAINING_FILE
from patchvae.config import (
    MnistStudyConfig,
    PatchTrainConfig,
    load_yaml_config,
)
from patchvae.config.compare import CompareConfig, CompareEntry
from patchvae.config.presets import build_settings
from patchvae.data.mnist import bundled_mnist_dir, load_mnist
from patchvae.errors import RunDirError
from patchvae.io import (
    missing_folders,
    read_json,
    remove_empty,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from patchvae.locks import lock_folder
from patchvae.report.figures import plot_comparison
from patchvae.rundir import ANALYSIS_ONLY
from patchvae.store import PatchStore

_NO_LEARNING = (
    "_intensity_p95",
    "_intensity_histeq",
    "_intensity_spots",
    "_intensity_spots_context",
)
BASELINE_ROW = {
    "mnist": "pixels (k-means, no training)",
    "patches": "no training (intensity, bright spots)",
}


def _entries(config: CompareConfig) -> list[CompareEntry]:
    entries = list(config.models)
    # the 2016 network is always a row (its training settings, e.g. epochs, may be overridden)
    plain = [e for e in entries if e.preset == "keras2016" and not e.model and not e.recipe]
    if config.reference and not plain:
        entries.insert(0, CompareEntry(name="keras2016"))
    return entries


def _overrides(
    config: CompareConfig, entry: CompareEntry, seed: int, input_shape: tuple[int, int, int]
) -> dict[str, dict[str, Any]]:
    train = {**entry.train, "seed": seed}
    if config.epochs is not None:
        train["epochs"] = config.epochs
    return {"model": {"input_shape": input_shape, **entry.model}, "train": train}


def _study_settings(
    config: CompareConfig, entry: CompareEntry, seed: int
) -> MnistStudyConfig | PatchTrainConfig:
    """The settings of one run of the grid (what its ``settings.yaml`` holds)."""
    # paths absolute, as every run records them, so a finished run is recognised again
    if config.dataset == "mnist":
        top: dict[str, Any] = {
            "digits": config.digits,
            "data_dir": str(Path(config.data_dir).resolve()) if config.data_dir else None,
            "use_bundled_sample": config.data_dir is None,
            "umap": entry.umap,
            "self_training": entry.self_training,
        }
        overrides = _overrides(config, entry, seed, (1, 28, 28))
        mnist_base = load_yaml_config(MnistStudyConfig, entry.recipe, top) if entry.recipe else None
        return build_settings(MnistStudyConfig, mnist_base, entry.preset, overrides, top)
    assert config.patches is not None
    store = PatchStore(config.patches)
    shape = store.input_shape
    top = {
        "patches": str(store.path.resolve()),
        "val_cases": config.val_cases,
        "val_fraction": config.val_fraction,
        "val_fold": config.val_fold,
        "label_budget": entry.label_budget,
    }
    base = (
        load_yaml_config(PatchTrainConfig, entry.recipe, {"patches": top["patches"]})
        if entry.recipe
        else None
    )
    return build_settings(
        PatchTrainConfig, base, entry.preset, _overrides(config, entry, seed, shape), top
    )


def _run_mnist(settings: MnistStudyConfig, out: Path) -> dict[str, Any]:
    from patchvae.studies.mnist import run_mnist_study

    return run_mnist_study(settings, out, resume=_started(out), progress=False).scores()


def _run_patches(settings: PatchTrainConfig, out: Path) -> dict[str, Any]:
    from patchvae.stages.training import train_on_store

    record = train_on_store(settings, out, resume=_started(out), progress=False)
    return _patch_row(settings, out, record.train_seconds)


def _reanalyse(settings: MnistStudyConfig | PatchTrainConfig, out: Path) -> dict[str, Any]:
    if isinstance(settings, MnistStudyConfig):  # the analysis of a resumed, finished run
        return _run_mnist(settings, out)
    return _reanalyse_patches(settings, out)


def _reanalyse_patches(settings: PatchTrainConfig, out: Path) -> dict[str, Any]:
    """A finished run's row from a new analysis, its training left as it is."""
    from patchvae.artefacts import TrainingRecord, read_record

    record = read_record(TrainingRecord, out / TRAINING_FILE, "training record")
    return _patch_row(settings, out, record.train_seconds)


def _patch_row(settings: PatchTrainConfig, out: Path, train_seconds: float) -> dict[str, Any]:
    from patchvae.stages.analysis import BASELINE, LATENT_GROUPS
    from patchvae.studies.analyze import analyze

    result = analyze(out, settings.patches)  # seeded as the run
    row: dict[str, Any] = {"train_seconds": train_seconds}
    for name, metrics in result.patch_scores.items():
        row[f"auroc_{name}"] = metrics["auroc"]
        core = metrics.get("auroc_core")
        row[f"auroc_core_{name}"] = float("nan") if core is None else core
        low, high = metrics.get("intervals", {}).get("by_patch", {}).get("auroc", [np.nan] * 2)
        row[f"ci_low_{name}"], row[f"ci_high_{name}"] = low, high
    row["n_positives"] = result.n_lesion
    for key, source in (
        ("few_label_auroc_k20", "latent"),
        ("cluster_label_auroc_k20", LATENT_GROUPS),
        ("baseline_few_label_auroc_k20", BASELINE),
    ):
        few = result.few_labels.get(source, {}).get("20")
        row[key] = few["mean"] if few else float("nan")
    # one level for every clustering of the analysis (the same labels)
    levels = [m["majority"] for m in result.clustering.values() if "majority" in m]
    row["majority_class_level"] = levels[0] if levels else float("nan")
    for method, metrics in result.clustering.items():
        row[f"{method}_accuracy"] = metrics["accuracy"]
        row[f"{method}_nmi"] = metrics["nmi"]
        row[f"{method}_ari"] = metrics["ari"]
    return row


def _started(folder: Path) -> bool:
    """A run of the grid that was stopped part-way continues from its checkpoint."""
    return (folder / SETTINGS_FILE).is_file()


def _baseline(config: CompareConfig, rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if config.dataset == "patches":
        # the scores with no learning (intensity baselines, bright-spot count) are computed
        # on the same held-out patches by every analysis: their figures and intervals
        first = next(iter(rows.values()))
        return [
            {
                **{k: v for k, v in r.items() if k.endswith(_NO_LEARNING)},
                "few_label_auroc_k20": r.get("baseline_few_label_auroc_k20", float("nan")),
            }
            for r in first
        ]
    train, test = load_mnist(config.data_dir or bundled_mnist_dir(), config.digits)
    flat = [split.images.reshape(len(split), -1) / 255.0 for split in (train, test)]
    return [
        clustering_scores(flat[0], flat[1], test.labels, len(config.digits), seed)
        for seed in config.seeds
    ]


def run_comparison(
    config: CompareConfig, out: str | Path, echo: Any = print, reanalyse: bool = False
) -> pd.DataFrame:
    """Train and score every entry for every seed; write ``comparison.csv``, ``.md``, ``.png``.

    ``out`` is held by this process throughout; a grid stopped part-way is continued by running
    it again (finished runs are reused, a started one resumes from its checkpoint). With
    ``reanalyse``, finished runs are analysed again, not reused and not trained again: their
    rows take the analysis as it is now (new scores, say; for MNIST grids, the grid's
    analysis settings, ``umap`` and ``self_training``, may differ from the run's).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder")
    created = missing_folders(out)
    with lock_folder(out):
        try:
            return _run_grid(config, out, echo, reanalyse)
        except BaseException:
            # folders of runs that never started, and out itself, when left empty
            remove_empty([*(p for p in out.iterdir() if p.is_dir()), *created])
            raise


# what a finished run of each kind of grid has written last
_FINISHED_FILE = {"mnist": METRICS_FILE, "patches": TRAINING_FILE}


def _run_grid(config: CompareConfig, out: Path, echo: Any, reanalyse: bool) -> pd.DataFrame:
    rows: dict[str, list[dict[str, Any]]] = {}
    parameters: dict[str, int] = {}
    for entry in _entries(config):
        rows[entry.name] = []
        for seed in config.seeds:
            folder = out / entry.name / f"seed-{seed}"
            settings = _study_settings(config, entry, seed)
            done = folder / COMPARE_ROW_FILE
            if done.is_file() and not reanalyse:
                _check_same_settings(folder, settings)
                rows[entry.name].append(read_json(done, "finished grid row"))
                echo(f"  {entry.name} seed {seed}: done before, reused")
                continue
            if reanalyse and (folder / _FINISHED_FILE[config.dataset]).is_file():
                _check_same_settings(folder, settings, ignore=ANALYSIS_ONLY)
                earlier = read_json(done, "finished grid row") if done.is_file() else {}
                row = _reanalyse(settings, folder)
                if "wall_seconds" in earlier:  # the run's own time, not this analysis'
                    row["wall_seconds"] = earlier["wall_seconds"]
                write_json_atomic(done, row)
                rows[entry.name].append(row)
                echo(f"  {entry.name} seed {seed}: analysed again")
                continue
            t0 = time.perf_counter()
            row = (
                _run_mnist(settings, folder)
                if isinstance(settings, MnistStudyConfig)
                else _run_patches(settings, folder)
            )
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            write_json_atomic(done, row)
            rows[entry.name].append(row)
            echo(f"  {entry.name} seed {seed}: {row['wall_seconds']:.0f} s")
        parameters[entry.name] = _parameter_count(out / entry.name / f"seed-{config.seeds[0]}")
    rows[BASELINE_ROW[config.dataset]] = _baseline(config, rows)
    table = _summarise(rows, parameters)
    write_atomic(out / "comparison.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_text_atomic(out / "comparison.md", _markdown(table, config))
    metrics = _FIGURE_METRICS[config.dataset]
    plot_comparison(
        table, metrics, out / "comparison.png", f"Mean and sd over seeds {config.seeds}"
    )
    return table


def _check_same_settings(
    folder: Path, settings: BaseModel, ignore: frozenset[str] = frozenset()
) -> None:
    """A finished run is reused only if the grid still asks for exactly its settings (those
    in ``ignore`` aside: the analysis' own, when it is done again)."""
    saved = load_yaml_config(type(settings), folder / SETTINGS_FILE).model_dump(mode="json")
    asked = settings.model_dump(mode="json")
    changed = sorted(k for k in {*saved, *asked} - ignore if saved.get(k) != asked.get(k))
    if changed:
        raise RunDirError(
            f"{folder}: holds a finished run with other settings ({', '.join(changed)}); "
            "rename the model in the grid or remove that folder"
        )


def _parameter_count(folder: Path) -> int:
    from patchvae.checkpoint import load_model
    from patchvae.models.vae import count_parameters

    return count_parameters(load_model(folder / "checkpoint.pt"))


def _summarise(rows: dict[str, list[dict[str, Any]]], parameters: dict[str, int]) -> pd.DataFrame:
    records = []
    for name, runs in rows.items():
        record: dict[str, Any] = {
            "model": name,
            "seeds": len(runs),
            "parameters": parameters.get(name, 0),
        }
        for key in sorted({k for run in runs for k in run}):
            values = [float(run[key]) for run in runs if key in run]
            values = [v for v in values if not np.isnan(v)]  # e.g. too few lesions to score
            if not values:
                continue
            record[f"{key}_mean"] = statistics.fmean(values)
            record[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        records.append(record)
    return pd.DataFrame(records)


_FIGURE_METRICS = {
    "mnist": [
        "kmeans_accuracy",
        "umap_kmeans_accuracy",
        "umap_gmm_accuracy",
        "prior_cluster_accuracy",
        "self_training_accuracy",
        "nmi",
    ],
    "patches": ["auroc_neg_elbo", "auroc_p_lesion", "auroc_intensity_p95", "few_label_auroc_k20"],
}
_MD_COLUMNS = {
    "mnist": [
        "kmeans_accuracy",
        "nmi",
        "ari",
        "umap_kmeans_accuracy",
        "umap_nmi",
        "umap_gmm_accuracy",
        "umap_gmm_nmi",
        "prior_cluster_accuracy",
        "prior_cluster_nmi",
        "self_training_accuracy",
        "self_training_nmi",
        "logreg_accuracy",
        "test_loss",
        "train_seconds",
    ],
    "patches": [
        "auroc_recon_error",
        "auroc_kl",
        "auroc_neg_elbo",
        "auroc_residual_p95",
        "auroc_latent_nll",
        "auroc_latent_mahalanobis",
        "auroc_feature_mahalanobis",
        "auroc_p_lesion",
        "auroc_p_lesion_weak",
        "auroc_p_lesion_weak_context",
        "auroc_intensity_p95",
        "auroc_intensity_histeq",
        "auroc_intensity_spots",
        "auroc_intensity_spots_context",
        "auroc_fused",
        "auroc_fused_label_free",
        "few_label_auroc_k20",
        "cluster_label_auroc_k20",
        "gmm_accuracy",
        "gmm_nmi",
        "gmm_ari",
        f"kmeans{LATENT_GROUP_COUNT}_majority_named_accuracy",
        f"kmeans{LATENT_GROUP_COUNT}_majority_named_nmi",
        "majority_class_level",
        "train_seconds",
    ],
}


# scores shown with their 95 % intervals, and on core lesion patches, in a second table
_CI_SCORES = (
    "neg_elbo",
    "residual_p95",
    "p_lesion",
    "p_lesion_weak",
    "p_lesion_weak_context",
    "fused",
    "fused_label_free",
    "intensity_p95",
    "intensity_spots",
    "intensity_spots_context",
)


def _interval_table(table: pd.DataFrame) -> list[str]:
    """Per model and score: mean AUROC over seeds with the mean of each seed's bootstrap 95 %
    interval, and the mean AUROC of core lesion patches (>= 10 % lesion) against lesion-free."""
    names = [n for n in _CI_SCORES if f"ci_low_{n}_mean" in table.columns]
    if not names:
        return []
    lines = [
        "",
        "AUROC (mean over seeds; in brackets the mean of the seeds' bootstrap 95 % intervals) "
        "| core: patches >= 10 % lesion against lesion-free:",
        "",
        "| model | positives | " + " | ".join(f"{n} | {n} core" for n in names) + " |",
        "|---" * (2 + 2 * len(names)) + "|",
    ]
    for _, row in table.iterrows():
        cells = []
        for n in names:
            mean, low, high = (
                row.get(f"{k}_mean") for k in (f"auroc_{n}", f"ci_low_{n}", f"ci_high_{n}")
            )
            core = row.get(f"auroc_core_{n}_mean")
            ok = mean is not None and not np.isnan(mean)
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]" if ok else "")
            cells.append("" if core is None or np.isnan(core) else f"{core:.3f}")
        positives = row.get("n_positives_mean")
        count = "" if positives is None or np.isnan(positives) else f"{positives:.0f}"
        lines.append(f"| {row['model']} | {count} | " + " | ".join(cells) + " |")
    return lines


def _markdown(table: pd.DataFrame, config: CompareConfig) -> str:
    columns = [c for c in _MD_COLUMNS[config.dataset] if f"{c}_mean" in table.columns]
    lines = [
        "| model | seeds | parameters | " + " | ".join(columns) + " |",
        "|---" * (3 + len(columns)) + "|",
    ]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            mean, sd = row.get(f"{c}_mean"), row.get(f"{c}_sd")
            cells.append("" if mean is None or np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}")
        lines.append(
            f"| {row['model']} | {row['seeds']} | {row['parameters']:,} | "
            + " | ".join(cells)
            + " |"
        )
    if config.dataset == "patches":
        lines += _interval_table(table)
    return "\n".join(lines) + "\n"
