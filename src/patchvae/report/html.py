"""`patchvae report`: one self-contained HTML page per run, from its artefacts alone.

It reads the records (``training.json`` or ``metrics.json``, each ``analysis.json``), draws
every figure from them and the stages' ``figure-data.npz`` (:mod:`patchvae.report.draw`),
writes the figures as PNG files beside the records, and embeds them in the page as base64 PNG
with an inline style, so the page makes no request: it can be mailed, archived or opened
offline. The model (``checkpoint.pt``) is never read.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from patchvae.artefacts import (
    ANALYSIS_FILE,
    ANALYSIS_PREFIX,
    EXPLORER_FILE,
    FIGURE_DATA_FILE,
    METRICS_FILE,
    REPORT_FILE,
    SETTINGS_FILE,
    TRAINING_FILE,
    AnalysisResult,
    CheckpointRef,
    MnistRecord,
    TrainingRecord,
    read_record,
)
from patchvae.errors import DataError
from patchvae.io import staged_files, write_text_atomic
from patchvae.locks import lock_folder
from patchvae.report.draw import draw_analysis, draw_loss, draw_mnist
from patchvae.report.explorer import build_explorer

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.baseline td { background: #f4f4f4; font-style: italic; }
p.stale { background: #fff3cd; border: 1px solid #e0c36a; padding: .4em .8em; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; max-width: 520px; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
"""

_FIGURE_CAPTIONS = {
    "loss.png": "Loss per sample (negative ELBO) per epoch, training and validation.",
    "latent.png": "Latent posterior means of the held-out split.",
    "latent_umap.png": "A 2-D UMAP (fitted on training latents) of the held-out posterior means.",
    "manifold.png": "Images decoded from a grid over the latent plane.",
    "reconstructions.png": "Inputs and their decoded posterior means.",
    "latent_lesion.png": "Held-out patches in the latent plane, lesion vs healthy "
    "(the study's picture).",
    "latent_lesion_fraction.png": "The same patches coloured by their fraction of lesion voxels.",
    "heatmaps.png": "Patch scores put back on the slices with the most lesion; "
    "cyan: lesion contour.",
    "few_labels.png": "AUROC with a few labelled patches (logistic regression), "
    "latent vs intensity.",
}


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = _FIGURE_CAPTIONS.get(path.name, path.stem)
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if value != value else f"{value:.3f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{(classes or [""] * len(rows))[i]}">'
        + "".join(f"<td>{cell(v)}</td>" for v in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _staleness(made_from: CheckpointRef | None, epochs: int) -> str:
    """A warning when an analysis was made from another checkpoint than the run's last."""
    if made_from is None:
        return (
            '<p class="stale">This analysis does not record the checkpoint it was made from '
            "(made by an older patchvae); run <code>patchvae analyze</code> again.</p>"
        )
    if made_from.epoch != epochs:
        return (
            f'<p class="stale">Stale: this analysis was made from the checkpoint of epoch '
            f"{made_from.epoch}; the run now holds {epochs} epochs. Run "
            "<code>patchvae analyze</code> again for current numbers.</p>"
        )
    return ""


def _score_table(result: AnalysisResult) -> str:
    rows, classes = [], []
    for name, m in result.patch_scores.items():
        voxel = result.voxel_scores[name]
        patch = [name, m["kind"], m["auroc"], m["auprc"]]
        rows.append([*patch, voxel["auroc"], voxel["auprc"], voxel["best_dice"]])
        classes.append("baseline" if m["kind"] == "baseline" else "")
    header = ["score", "kind", "patch AUROC", "patch AUPRC", "voxel AUROC", "voxel AUPRC"]
    return _table([*header, "best Dice"], rows, classes)


def _few_label_table(result: AnalysisResult) -> str:
    few = result.few_labels
    ks = list(next(iter(few.values())))

    def cell(r: dict[str, float] | None) -> str:
        return "n/a" if r is None else f"{r['mean']:.3f} ± {r['sd']:.3f}"

    return _table(
        ["features", *[f"k = {k}" for k in ks]],
        [[name, *[cell(r) for r in by_k.values()]] for name, by_k in few.items()],
    )


def _missing_figure_data(folder: Path) -> str:
    """One line where a stage left no figure data (made by patchvae 0.1)."""
    if (folder / FIGURE_DATA_FILE).is_file():
        return ""
    return (
        f'<p class="stale">{html.escape(folder.name)} holds no {FIGURE_DATA_FILE} (made by an '
        "older patchvae): its latent and heat-map figures need <code>patchvae analyze</code> "
        "again.</p>"
    )


def _analysis_section(folder: Path, epochs: int, out: Path) -> str:
    result = read_record(AnalysisResult, folder / ANALYSIS_FILE, "analysis")
    figures = draw_analysis(folder, result, out)
    explorer = build_explorer(folder, result, out)
    clustering = _table(
        ["method", "Hungarian accuracy", "NMI", "ARI", "silhouette"],
        [
            [k, v["accuracy"], v["nmi"], v["ari"], v["silhouette"]]
            for k, v in result.clustering.items()
        ],
    )
    parts = [
        f"<h2>Analysis: {html.escape(Path(result.store.path).name)}</h2>",
        _staleness(result.checkpoint, epochs),
        f"<p>{result.n_patches} patches ({result.n_lesion} with lesion) of case(s) "
        f"{html.escape(', '.join(result.cases))}; "
        f"evaluated on {html.escape(result.evaluation_set)}.</p>",
        _explorer_link(folder, explorer),
        "<h3>Anomaly scores, patch and voxel level (baseline in grey)</h3>",
        _score_table(result),
        "<h3>Clustering of the latent space against the lesion label</h3>",
        clustering,
        "<h3>A few labels: AUROC on the other patches (mean &plusmn; sd over draws)</h3>",
        _few_label_table(result),
        *(_figure(p) for p in sorted(figures)),
        _missing_figure_data(folder),
        f"<pre>{html.escape(result.reproduce)}</pre>",
    ]
    return "\n".join(parts)


def _explorer_link(folder: Path, explorer: Path | None) -> str:
    if explorer is None:
        return ""
    href = f"{html.escape(folder.name)}/{EXPLORER_FILE}"
    return (
        f'<p><a href="{href}">Open the latent explorer</a>: every point a patch; hover for its '
        "image and scores, click to see it on its slice, colour by label or any score.</p>"
    )


def build_report(run: str | Path) -> Path:
    """Draw the run's figures and write ``RUN/report.html`` from what the run folder holds;
    return its path. Needs the records only, not the checkpoint."""
    run = Path(run)
    settings_path = run / SETTINGS_FILE
    if not settings_path.is_file():
        raise DataError(run, f"not a run folder (no {SETTINGS_FILE})")
    training_path, metrics_path = run / TRAINING_FILE, run / METRICS_FILE
    if not training_path.is_file() and not metrics_path.is_file():
        raise DataError(
            run,
            f"the run has not finished (no {TRAINING_FILE} or {METRICS_FILE}); continue it with "
            "--resume, then write the report",
        )
    with lock_folder(run, create=False):
        if training_path.is_file():
            record: TrainingRecord | MnistRecord = read_record(
                TrainingRecord, training_path, "training record"
            )
        else:
            record = read_record(MnistRecord, metrics_path, "run record")
        try:
            return _page(run, settings_path, record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                training_path if isinstance(record, TrainingRecord) else metrics_path,
                f"damaged run record ({type(exc).__name__}: {exc}); re-create it",
            ) from None


def _data_section(record: TrainingRecord | MnistRecord) -> list[str]:
    if isinstance(record, TrainingRecord):
        split = record.split
        return [
            f"<p>Patch store {html.escape(record.store.path)} "
            f"(sha256 {record.store.sha256[:16]}…). "
            f"Split by {html.escape(split['method'])}: {split['n_train']} training patches from "
            f"{html.escape(', '.join(split['train_cases']))}; "
            f"{split['n_val']} validation patches from "
            f"{html.escape(', '.join(split['val_cases']))}"
            + (f", slices {split['val_slices']}" if split.get("val_slices") else "")
            + ".</p>"
        ]
    keys = ["kmeans_accuracy", "nmi", "ari", "silhouette", "logreg_accuracy", "test_loss"]
    scores = record.scores()
    return [
        f"<p>MNIST digits {record.digits}: {record.n_train} training and "
        f"{record.n_test} test images.</p>",
        _table(["metric", "value"], [[k, float(scores[k])] for k in keys]),
    ]


def _page(run: Path, settings_path: Path, record: TrainingRecord | MnistRecord) -> Path:
    # the figures and the page appear together, or none of them (a full disk midway)
    with staged_files(run, REPORT_FILE) as stage:
        _write_page(run, settings_path, record, stage)
    return run / REPORT_FILE


def _write_page(
    run: Path, settings_path: Path, record: TrainingRecord | MnistRecord, stage: Path
) -> None:
    """Draw the figures and write the page into ``stage``, laid out as the run folder."""
    patches = isinstance(record, TrainingRecord)
    drawn = draw_loss(stage, record.history, patches)
    if isinstance(record, MnistRecord):
        drawn += draw_mnist(run, record, stage)
    sections = [
        f"<h1>patchvae report: {html.escape(run.name)}</h1>",
        f"<p>Made with {html.escape(json.dumps(record.provenance['versions']))}.</p>",
        "<h2>Data</h2>",
        *_data_section(record),
        f"<p>{record.epochs} epochs in {record.train_seconds:.1f} s. This page shows the "
        f"run as it was at epoch {record.epochs}; if the run is resumed, write it again.</p>",
        "<h2>Training and latent space</h2>",
    ]
    names = {p.name for p in drawn}
    sections += [_figure(stage / name) for name in _FIGURE_CAPTIONS if name in names]
    for folder in sorted(run.glob(f"{ANALYSIS_PREFIX}*")):
        if (folder / ANALYSIS_FILE).is_file():
            sections.append(_analysis_section(folder, record.epochs, stage / folder.name))
    sections += [
        "<h2>Settings</h2>",
        f"<pre>{html.escape(settings_path.read_text())}</pre>",
        "<h2>Reproduce</h2>",
        f"<pre>{html.escape(record.reproduce)}</pre>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>patchvae report: {html.escape(run.name)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
    write_text_atomic(stage / REPORT_FILE, page)
