"""The rule that chooses among lesion scores: AUROC on the training patches, never the scored
ones, the labelled patches left out (BraTS: the mean over its three training cases).

    python docs/grids/training_rule.py runs/recipes-brats runs/recipes-ms runs/recipes-isles

For each grid folder (made by ``patchvae compare`` from docs/grids/lesion-recipes-*.yaml) and
each run of it: the training AUROC of the scores named below, on the training patches that no
20-label run of the seed was given, beside the held-out AUROC and interval of analysis.json.
Prints one row per (model, score): the mean over seeds per set, and the mean of the sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from patchvae.artefacts import SETTINGS_FILE
from patchvae.config import PatchTrainConfig, load_yaml_config
from patchvae.io import read_json
from patchvae.splits import draw_labelled
from patchvae.stages.analysis import _embeddings, _training_side
from patchvae.stages.patch_scores import training_reference
from patchvae.store import PatchStore

SCORES = (
    "fused_label_free",
    "p_lesion",
    "p_lesion_weak",
    "p_lesion_weak_context",
    "intensity_spots_context",
)
BUDGET = 20


def by_case(labels: np.ndarray, score: np.ndarray, cases: np.ndarray) -> float:
    """The mean over cases (with both classes) of the AUROC of the known labels."""
    found = []
    for case in np.unique(cases):
        keep = (cases == case) & (labels >= 0)
        if np.unique(labels[keep]).size == 2:
            found.append(roc_auc_score(labels[keep], score[keep]))
    return float(np.mean(found))


def run_rows(grid: Path) -> list[dict[str, object]]:
    rows = []
    for run in sorted(p for p in grid.glob("*/seed-*") if (p / SETTINGS_FILE).is_file()):
        settings = load_yaml_config(PatchTrainConfig, run / SETTINGS_FILE)
        store = PatchStore(settings.patches)
        _, train_part, _, _ = _embeddings(run, store, Path(settings.patches))
        reference = training_reference(train_part, 0)
        training = _training_side(run, train_part, reference, store, settings)
        labels = training.labels.copy()
        # the patches a 20-label run of this seed was given (one draw for both kinds)
        labels[draw_labelled(labels, BUDGET, settings.train.seed) >= 0] = -1
        cases = train_part.case_id.astype(str).to_numpy()
        analysis = read_json(next(run.glob("analysis-*/analysis.json")), "analysis")
        for name in SCORES:
            if name not in training.scores:
                continue
            held = analysis["patch_scores"][name]
            rows.append(
                {
                    "set": grid.name.removeprefix("recipes-"),
                    "model": run.parent.name,
                    "seed": run.name,
                    "score": name,
                    "train": by_case(labels, training.scores[name], cases),
                    "held": held["auroc"],
                    "low": held["intervals"]["by_patch"]["auroc"][0],
                    "high": held["intervals"]["by_patch"]["auroc"][1],
                }
            )
    return rows


def main(grids: list[str]) -> None:
    frame = pd.DataFrame([row for grid in grids for row in run_rows(Path(grid))])
    table = frame.groupby(["model", "score", "set"])[["train", "held", "low", "high"]].mean()
    wide = table.unstack("set")
    wide[("train", "mean")] = wide["train"].mean(axis=1)
    pd.set_option("display.width", 250)
    print(wide.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1:])
