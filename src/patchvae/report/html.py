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
    CLUSTER_READ_OFFS,
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
    score_title,
)
from patchvae.errors import DataError
from patchvae.io import staged_files, write_text_atomic
from patchvae.locks import lock_folder
from patchvae.report.draw import draw_analysis, draw_loss, draw_mnist
from patchvae.report.explorer import build_explorer
from patchvae.report.interpret import (
    auroc_with_interval,
    baseline_sentence,
    difference_with_interval,
    glossary,
    majority_sentence,
    verdict,
    without_paths,
)

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
figure.wide { display: block; }
figure.wide img, figure.wide figcaption { max-width: 100%; }
tr.inverted td { background: #fde2e2; }
ul.verdicts li { margin: .3em 0; }
dl.glossary dt { font-weight: bold; } dl.glossary dd { margin: 0 0 .4em 1.2em; }
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
    "heatmaps.png": "Patch scores put back on the held-out slices with the most lesion, as "
    "percentile ranks among the held-out patches; cyan: lesion outline; R/L/A/P: the "
    "patient's right, left, anterior, posterior.",
    "few_labels.png": "AUROC with a few labelled patches: a logistic regression on the latent, "
    "cluster-then-label (the training latents in 2, 5, 10, 20, 40 and 80 groups, ten k-means "
    "starts each; a patch scores the lesion rate of the labelled patches that share its "
    "groups, each counted once per grouping that groups them together, pulled towards the "
    "overall rate by one pseudo-patch), and the intensity score alone.",
}


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = _FIGURE_CAPTIONS.get(path.name, path.stem)
    wide = ' class="wide"' if path.name in _WIDE_FIGURES else ""
    return (
        f'<figure{wide}><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_WIDE_FIGURES = ("heatmaps.png",)  # shown at the page's full width


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
    scores = result.patch_scores
    baseline = scores[result.baseline] if result.baseline else {}
    rows, classes = [], []
    for name, m in scores.items():
        voxel = result.voxel_scores[name]
        inverted = m["auroc"] == m["auroc"] and m["auroc"] < 0.5
        kind = m["kind"] + (" (INVERTED)" if inverted else "")
        rows.append(
            [
                score_title(name),
                kind,
                auroc_with_interval(m),
                "" if m is baseline else difference_with_interval(m, baseline),
                m["auprc"],
                voxel["auroc"],
                voxel.get("dice", float("nan")),
                voxel.get("oracle_dice", voxel.get("best_dice", float("nan"))),
            ]
        )
        plain = m["kind"] == "baseline"
        classes.append("baseline" if plain else "inverted" if inverted else "")
    header = [
        "score",
        "kind",
        "patch AUROC (95 % CI)",
        "minus baseline (95 % CI)",
        "patch AUPRC",
        "voxel AUROC",
        "Dice, threshold from training cases",
        "oracle Dice (threshold chosen on these patches)",
    ]
    chance = result.n_lesion / max(result.n_patches, 1)
    note = (
        f"<p>AUPRC of a random score: {chance:.3f} (the share of lesion patches). The oracle "
        "Dice picks its threshold on the very patches it is measured on: an upper bound, not "
        "a result.</p>"
    )
    return _table(header, rows, classes) + note


def _verdicts(result: AnalysisResult) -> str:
    scores = result.patch_scores
    if result.baseline is None:
        return ""
    baseline = scores[result.baseline]
    items = [
        f"<li>{html.escape(verdict(name, m, baseline))}</li>"
        for name, m in scores.items()
        if m is not baseline
    ]
    first = baseline_sentence(baseline, result.n_lesion, result.n_patches)
    return f'<p>{html.escape(first)}</p><ul class="verdicts">{"".join(items)}</ul>'


def _glossary(result: AnalysisResult) -> str:
    entries = "".join(
        f"<dt>{html.escape(title)} <code>{html.escape(code)}</code></dt>"
        f"<dd>{html.escape(meaning)}</dd>"
        for title, code, meaning in glossary(list(result.patch_scores))
    )
    return f'<dl class="glossary">{entries}</dl>'


def _extraction(result: AnalysisResult) -> str:
    if not result.extraction:
        return "<p>The extraction settings are not recorded (an older analysis).</p>"
    rows = [[key, json.dumps(value)] for key, value in sorted(result.extraction.items())]
    return _table(["extraction setting", "value"], rows)


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
    clustering = (
        _table(
            ["method", "accuracy", "majority-class level", "NMI", "ARI", "silhouette"],
            [
                [
                    k,
                    v["accuracy"],
                    v.get("majority", float("nan")),
                    v["nmi"],
                    v["ari"],
                    v["silhouette"],
                ]
                for k, v in result.clustering.items()
            ],
        )
        + f"<p>{html.escape(majority_sentence(result.clustering))}</p>"
        + "".join(
            f"<p>{html.escape(k)}: each group named by the commoner label of all the analysed "
            "patches in it, so its accuracy is an upper bound for naming the groups from a "
            "few labels (cluster-then-label, in the few-label table below).</p>"
            for k in result.clustering
            if k.endswith("_majority_named")
        )
    )
    epoch = result.checkpoint.epoch if result.checkpoint else None
    parts = [
        f"<h2>Analysis: {html.escape(Path(result.store.path).name)}</h2>",
        _staleness(result.checkpoint, epochs),
        f"<p>{result.n_patches} patches ({result.n_lesion} with lesion) of case(s) "
        f"{html.escape(', '.join(result.cases))}; "
        f"evaluated on {html.escape(result.evaluation_set)}. Every number and figure below "
        f"comes from the checkpoint of epoch {epoch if epoch is not None else 'unknown'}.</p>",
        _explorer_link(folder, explorer),
        "<h3>Verdicts: each score against the intensity baseline</h3>",
        _verdicts(result),
        "<h3>Anomaly scores, patch and voxel level (baseline in grey, inverted in red)</h3>",
        _score_table(result),
        "<h3>Clustering of the latent space against the lesion label</h3>",
        clustering,
        "<h3>A few labels: AUROC on the other patches (mean &plusmn; sd over draws)</h3>",
        _few_label_table(result),
        *(_figure(p) for p in sorted(figures)),
        _missing_figure_data(folder),
        "<h3>The scores</h3>",
        _glossary(result),
        "<h3>How the patches were made</h3>",
        _extraction(result),
        f"<pre>{html.escape(without_paths(result.reproduce))}</pre>",
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


def _labels_note(record: TrainingRecord) -> str:
    """What the report says of the labels a run used beside its images (empty: none): how
    many, and whether they came from the store's lesion masks or from the user's file."""
    settings = record.settings
    ref = record.patch_labels
    if ref is not None:
        source = (
            f"the patches labelled in {html.escape(Path(ref.path).name)} (sha256 "
            f"{ref.sha256[:16]}…)"
        )
    elif settings.get("weak_labels"):
        source = f"{int(settings['weak_labels'])} labelled training patches (from the lesion masks)"
    else:
        source = f"{record.labelled_training_patches} labelled training patches"
    if settings.get("weak_labels"):
        return (
            "<p><b>Labels were used after training:</b> the weakly supervised score "
            f"(p_lesion_weak) is fitted to {source} and to pseudo-labels from the label-free "
            "fusion, and read in context (p_lesion_weak_context); training used none.</p>"
        )
    if settings.get("label_budget"):
        return (
            f"<p><b>Labels were used in training:</b> the lesion classifier learnt from "
            f"{source}.</p>"
        )
    return ""


def _data_section(record: TrainingRecord | MnistRecord) -> list[str]:
    if isinstance(record, TrainingRecord):
        split = record.split
        return [
            f"<p>Patch store {html.escape(Path(record.store.path).name)} "
            f"(sha256 {record.store.sha256[:16]}…). "
            f"Split by {html.escape(split['method'])}: {split['n_train']} training patches from "
            f"{html.escape(', '.join(split['train_cases']))}; "
            f"{split['n_val']} validation patches from "
            f"{html.escape(', '.join(split['val_cases']))}"
            + (f", slices {split['val_slices']}" if split.get("val_slices") else "")
            + ".</p>"
            + (
                "<p><b>Labels were used in training:</b> the run trained on the lesion-free "
                "training patches only, chosen with the lesion masks.</p>"
                if split.get("healthy_only")
                else ""
            )
            + _labels_note(record)
        ]
    scores = record.scores()
    keys = ["kmeans_accuracy", "nmi", "ari", "silhouette", "logreg_accuracy", "test_loss"]
    keys += [k for k in CLUSTER_READ_OFFS if k in scores]
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
        f"<pre>{html.escape(without_paths(settings_path.read_text()))}</pre>",
        "<h2>Reproduce</h2>",
        f"<pre>{html.escape(without_paths(record.reproduce))}</pre>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>patchvae report: {html.escape(run.name)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
    write_text_atomic(stage / REPORT_FILE, page)
