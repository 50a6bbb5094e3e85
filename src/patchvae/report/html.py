"""`patchvae report`: one self-contained HTML page per run.

Figures are embedded as base64 PNG and the style is inline, so the page makes no request:
it can be mailed, archived or opened offline.
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
    METRICS_FILE,
    REPORT_FILE,
    SETTINGS_FILE,
    TRAINING_FILE,
)
from patchvae.errors import DataError
from patchvae.io import read_json, write_text_atomic
from patchvae.locks import lock_folder

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


def _staleness(made_from: dict[str, Any] | None, epochs: int) -> str:
    """A warning when an analysis was made from another checkpoint than the run's last."""
    if not made_from:
        return (
            '<p class="stale">This analysis does not record the checkpoint it was made from '
            "(made by an older patchvae); run <code>patchvae analyze</code> again.</p>"
        )
    if made_from.get("epoch") != epochs:
        return (
            f'<p class="stale">Stale: this analysis was made from the checkpoint of epoch '
            f"{made_from.get('epoch')}; the run now holds {epochs} epochs. Run "
            "<code>patchvae analyze</code> again for current numbers.</p>"
        )
    return ""


def _analysis_section(folder: Path, epochs: int) -> str:
    result = read_json(folder / ANALYSIS_FILE, "analysis")
    parts = [
        f"<h2>Analysis: {html.escape(Path(result['store']['path']).name)}</h2>",
        _staleness(result.get("checkpoint"), epochs),
        f"<p>{result['n_patches']} patches ({result['n_lesion']} with lesion) of case(s) "
        f"{html.escape(', '.join(result['cases']))}; "
        f"evaluated on {html.escape(result['evaluation_set'])}.</p>",
        "<h3>Anomaly scores, patch and voxel level (baseline in grey)</h3>",
    ]
    rows, classes = [], []
    for name, m in result["patch_scores"].items():
        voxel = result["voxel_scores"][name]
        rows.append(
            [
                name,
                m["kind"],
                m["auroc"],
                m["auprc"],
                voxel["auroc"],
                voxel["auprc"],
                voxel["best_dice"],
            ]
        )
        classes.append("baseline" if m["kind"] == "baseline" else "")
    parts.append(
        _table(
            [
                "score",
                "kind",
                "patch AUROC",
                "patch AUPRC",
                "voxel AUROC",
                "voxel AUPRC",
                "best Dice",
            ],
            rows,
            classes,
        )
    )
    parts.append("<h3>Clustering of the latent space against the lesion label</h3>")
    parts.append(
        _table(
            ["method", "Hungarian accuracy", "NMI", "ARI", "silhouette"],
            [
                [k, v["accuracy"], v["nmi"], v["ari"], v["silhouette"]]
                for k, v in result["clustering"].items()
            ],
        )
    )
    parts.append("<h3>A few labels: AUROC on the other patches (mean &plusmn; sd over draws)</h3>")
    few = result["few_labels"]
    ks = list(next(iter(few.values())))
    parts.append(
        _table(
            ["features", *[f"k = {k}" for k in ks]],
            [
                [
                    name,
                    *[
                        ("n/a" if r is None else f"{r['mean']:.3f} ± {r['sd']:.3f}")
                        for r in by_k.values()
                    ],
                ]
                for name, by_k in few.items()
            ],
        )
    )
    parts += [_figure(p) for p in sorted(folder.glob("*.png"))]
    parts.append(f"<pre>{html.escape(result['reproduce'])}</pre>")
    return "\n".join(parts)


def build_report(run: str | Path) -> Path:
    """Write ``RUN/report.html`` from what the run folder holds; return its path."""
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
        return _write_report(run, settings_path, training_path, metrics_path)


def _write_report(run: Path, settings_path: Path, training_path: Path, metrics_path: Path) -> Path:
    sections = [f"<h1>patchvae report: {html.escape(run.name)}</h1>"]
    record_path = training_path if training_path.is_file() else metrics_path
    record = read_json(record_path, "run record")
    try:
        return _page(run, settings_path, training_path, record, sections)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            record_path, f"damaged run record ({type(exc).__name__}: {exc}); re-create it"
        ) from None


def _page(
    run: Path,
    settings_path: Path,
    training_path: Path,
    record: dict[str, Any],
    sections: list[str],
) -> Path:
    sections.append(
        f"<p>Made with {html.escape(json.dumps(record['provenance']['versions']))}.</p>"
    )
    sections.append("<h2>Data</h2>")
    if training_path.is_file():
        split = record["split"]
        sections.append(
            f"<p>Patch store {html.escape(record['store']['path'])} "
            f"(sha256 {record['store']['sha256'][:16]}…). "
            f"Split by {html.escape(split['method'])}: {split['n_train']} training patches from "
            f"{html.escape(', '.join(split['train_cases']))}; "
            f"{split['n_val']} validation patches from "
            f"{html.escape(', '.join(split['val_cases']))}"
            + (f", slices {split['val_slices']}" if split.get("val_slices") else "")
            + ".</p>"
        )
    else:
        sections.append(
            f"<p>MNIST digits {record['digits']}: {record['n_train']} training and "
            f"{record['n_test']} test images.</p>"
        )
        keys = ["kmeans_accuracy", "nmi", "ari", "silhouette", "logreg_accuracy", "test_loss"]
        sections.append(_table(["metric", "value"], [[k, float(record[k])] for k in keys]))
    sections.append(
        f"<p>{record['epochs']} epochs in {record['train_seconds']:.1f} s. This page shows the "
        f"run as it was at epoch {record['epochs']}; if the run is resumed, write it again.</p>"
    )
    sections.append("<h2>Training and latent space</h2>")
    sections += [_figure(run / name) for name in _FIGURE_CAPTIONS if (run / name).is_file()]
    for folder in sorted(run.glob(f"{ANALYSIS_PREFIX}*")):
        if (folder / ANALYSIS_FILE).is_file():
            sections.append(_analysis_section(folder, int(record["epochs"])))
    sections.append("<h2>Settings</h2>")
    sections.append(f"<pre>{html.escape(settings_path.read_text())}</pre>")
    sections.append("<h2>Reproduce</h2>")
    sections.append(f"<pre>{html.escape(record['reproduce'])}</pre>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>patchvae report: {html.escape(run.name)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
    return write_text_atomic(run / REPORT_FILE, page)
