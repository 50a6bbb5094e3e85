"""The table of docs/models.md "Lesions without labels: the recipes", from the grids' runs.

    python docs/grids/recipes_table.py runs/recipes-brats runs/recipes-ms runs/recipes-isles

Each cell: the held-out patch AUROC, mean ± sd over the seeds, the mean of the seeds'
bootstrap 95 % intervals in brackets, and the mean AUROC of core lesion patches (>= 10 %
lesion) against lesion-free ones where the set has such patches. Scores with no training take
the same value in every run; they are read from the keras2016 runs.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from patchvae.io import read_json

ROWS = [  # label, model (grid entry), score
    ("intensity p95 (no training)", "keras2016", "intensity_p95"),
    ("histogram-equalised intensity p95 (no training)", "keras2016", "intensity_histeq"),
    ("bright-spot count (no training; `intensity_spots`, below)", "keras2016", "intensity_spots"),
    (
        "**bright-spot count in context** (no training; `intensity_spots_context`, below)",
        "keras2016",
        "intensity_spots_context",
    ),
    ("keras2016 (all patches, plain loss): negative ELBO", "keras2016", "neg_elbo"),
    ("**lesion-unsupervised** (trimmed loss): negative ELBO", "unsupervised", "neg_elbo"),
    ("**lesion-dae** (trimmed loss): local residual", "dae", "residual_p95"),
    ("lesion-dae: reconstruction error", "dae", "recon_error"),
    ("lesion-unsupervised: feature Mahalanobis", "unsupervised", "feature_mahalanobis"),
    (
        "fused: a score with no learning + one model score (or none), chosen on the training "
        "patches (uses their labels)",
        "unsupervised",
        "fused",
    ),
    (
        "**label-free fused**: the count in context + lesion-unsupervised's negative ELBO, "
        "equal rank weights, no label",
        "unsupervised",
        "fused_label_free",
    ),
    (
        "label-free fused: the count in context + keras2016's negative ELBO",
        "keras2016",
        "fused_label_free",
    ),
    (
        "label-free fused: the count in context + lesion-dae's local residual",
        "dae",
        "fused_label_free",
    ),
    ("**lesion-healthy-masks** (training masks): negative ELBO", "healthy-masks", "neg_elbo"),
    ("**lesion-20-labels**: p(lesion)", "semi20", "p_lesion"),
    (
        "lesion-20-labels: the count in context + p(lesion), equal rank weights "
        "(`fused_label_free`)",
        "semi20",
        "fused_label_free",
    ),
    ("**lesion-20-labels-weak**: p_lesion_weak", "weak20", "p_lesion_weak"),
    ("lesion-20-labels-weak: p_lesion_weak in context", "weak20", "p_lesion_weak_context"),
    (
        "lesion-20-labels-weak: the count in context + p_lesion_weak, equal rank weights "
        "(`fused_label_free`, the recipe's score)",
        "weak20",
        "fused_label_free",
    ),
]


def cell(grid: Path, model: str, score: str, no_training: bool) -> str:
    runs = sorted((grid / model).glob("seed-*/analysis-*/analysis.json"))
    if not runs:
        return ""
    found = [read_json(p, "analysis")["patch_scores"].get(score) for p in runs]
    if any(f is None for f in found):
        return ""
    aurocs = [f["auroc"] for f in found]
    mean = statistics.fmean(aurocs)
    spread = "" if no_training else f" ± {statistics.stdev(aurocs):.3f}"
    if mean < 0.45:
        return f"{mean:.3f}{spread} (inverted)"
    low = statistics.fmean(f["intervals"]["by_patch"]["auroc"][0] for f in found)
    high = statistics.fmean(f["intervals"]["by_patch"]["auroc"][1] for f in found)
    text = f"{mean:.3f}{spread} [{low:.2f}, {high:.2f}]"
    cores = [f["auroc_core"] for f in found if f.get("auroc_core") is not None]
    return text + (f"; core {statistics.fmean(cores):.3f}" if cores else "")


def main(grids: list[str]) -> None:
    print("| score | BraTS FLAIR | MS FLAIR | ISLES'22 DWI |")
    print("|---|---|---|---|")
    for label, model, score in ROWS:
        no_training = score.startswith("intensity_")
        cells = [cell(Path(g), model, score, no_training) for g in grids]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
