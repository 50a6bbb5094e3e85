"""Every figure of a run, drawn from its artefacts alone (records and ``figure-data.npz``).

No stage draws: training, MNIST analysis and lesion analysis write what a figure needs, and
the report draws it here. Nothing here needs the model or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchvae.artefacts import FIGURE_DATA_FILE, AnalysisResult, MnistRecord, score_title
from patchvae.errors import DataError
from patchvae.report.figures import (
    plot_few_labels,
    plot_heatmaps,
    plot_latent_continuous,
    plot_latent_scatter,
    plot_loss_curves,
    plot_manifold,
    plot_reconstructions,
)

LESION_NAMES = {0: "healthy", 1: "lesion", -1: "unlabelled"}


def figure_data(folder: Path) -> dict[str, np.ndarray] | None:
    """The arrays a stage left for its figures, or None when it left none (an older run)."""
    path = folder / FIGURE_DATA_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    except (OSError, ValueError) as exc:
        raise DataError(
            path, f"figure data is damaged ({type(exc).__name__}); re-create it"
        ) from None


def draw_loss(out: Path, history: list[dict[str, float]], patches: bool) -> list[Path]:
    """``out/loss.png`` from the history of ``training.json`` or ``metrics.json``."""
    held_out = "held-out part" if patches else "test split"
    title = f"Loss per {'patch' if patches else 'sample'} (validation: {held_out})"
    return [plot_loss_curves(history, out / "loss.png", title)]


def draw_mnist(run: Path, record: MnistRecord, out: Path) -> list[Path]:
    """``latent.png``, ``manifold.png``, ``reconstructions.png`` (and ``latent_umap.png``)
    into ``out``, from the run's figure data."""
    data = figure_data(run)
    if data is None:
        return []
    facts: dict[str, Any] = record.projection
    axes = tuple(facts["axis_labels"])
    digits = "/".join(str(d) for d in record.digits)
    names = {d: f"digit {d}" for d in record.digits}
    drawn = [
        plot_latent_scatter(
            data["coords"],
            data["label"],
            out / "latent.png",
            f"Test digits {digits}: posterior means (n={record.n_test}); {facts['description']}",
            axes,
            names,
        ),
        plot_manifold(
            data["manifold"],
            data["manifold_xs"],
            data["manifold_ys"],
            out / "manifold.png",
            "Decoded grid over the latent plane (inverse normal CDF); " + facts["description"],
            axis_labels=axes,
        ),
        plot_reconstructions(
            data["originals"],
            data["reconstructions"],
            out / "reconstructions.png",
            "Test digits and their reconstructions (decoded posterior mean)",
        ),
    ]
    if "umap_coords" in data:
        drawn.append(
            plot_latent_scatter(
                data["umap_coords"],
                data["label"],
                out / "latent_umap.png",
                "Test digits: UMAP (fitted on train latents) of the posterior means "
                f"(n={record.n_test})",
                ("UMAP 1", "UMAP 2"),
                names,
            )
        )
    return drawn


def draw_analysis(folder: Path, result: AnalysisResult, out: Path) -> list[Path]:
    """``latent_lesion.png``, ``latent_lesion_fraction.png``, ``heatmaps.png``,
    ``few_labels.png`` of one analysis folder, into ``out``."""
    out.mkdir(exist_ok=True)
    baseline = result.baseline
    assert baseline is not None, "every analysis scores the intensity baseline"
    drawn = [
        plot_few_labels(
            {
                "latent (logistic regression)": result.few_labels["latent"],
                # analyses made before cluster-then-label have no such row
                **{k: v for k, v in result.few_labels.items() if k.startswith("latent groups")},
                f"{baseline} only": result.few_labels[baseline],
            },
            out / "few_labels.png",
            "A few labelled patches: AUROC on the rest (mean +- sd over draws)",
        )
    ]
    data = figure_data(folder)
    if data is None or not result.projection:
        return drawn
    axes = tuple(result.projection["axis_labels"])
    drawn.append(
        plot_latent_scatter(
            data["coords"],
            data["label"],
            out / "latent_lesion.png",
            f"Held-out patches: posterior means (n={result.n_patches}); "
            + result.projection["description"],
            axes,
            LESION_NAMES,
        )
    )
    drawn.append(
        plot_latent_continuous(
            data["coords"],
            data["lesion_fraction"],
            out / "latent_lesion_fraction.png",
            "Held-out patches coloured by the fraction of lesion voxels",
            axes,
        )
    )
    scores = list(result.heatmaps.get("scores", []))
    epoch = result.checkpoint.epoch if result.checkpoint else "unknown"
    panels = [
        {
            "image": data[f"panel{i}_image"],
            "lesion": data[f"panel{i}_lesion"],
            "label": label,
            **{name: data[f"panel{i}_{name}"] for name in scores},
        }
        for i, label in enumerate(result.heatmaps.get("panels", []))
    ]
    if panels:
        drawn.append(
            plot_heatmaps(
                panels,
                scores,
                out / "heatmaps.png",
                "Patch scores on the held-out slices with the most lesion (each voxel: the "
                f"mean over the patches covering it; checkpoint of epoch {epoch})",
                [score_title(name) for name in scores],
            )
        )
    return drawn
