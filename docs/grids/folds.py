"""Slab cross-validation of a grid on a store of one case: run the grid once per fold (each
fold holds out another interleaved set of slabs, ``patchvae compare --val-fold K``), then pool
every fold's held-out patches, so that each patch of the case is scored once by a model that
never trained on its slices.

    python docs/grids/folds.py docs/grids/lesion-recipes-isles-folds.yaml --out runs/folds-isles

Writes OUT/fold-K/ (one grid folder per fold; a finished fold is reused) and prints a markdown
table: per (model, score) the AUROC of the pooled held-out patches (mean +- sd over seeds, the
mean of the seeds' bootstrap 95 % intervals), the mean of the folds' own AUROCs, and the
positives. Pooling reads scores made by different models side by side; the fused and
in-context scores are percentile ranks within each fold, the others raw.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from patchvae.analysis.intervals import auroc_intervals
from patchvae.config import load_yaml_config
from patchvae.config.compare import CompareConfig
from patchvae.splits import slab_folds

SCORES = {
    "unsupervised": ("neg_elbo", "fused", "fused_label_free"),
    "semi20": ("p_lesion", "fused_label_free"),
    "weak20": ("p_lesion_weak", "p_lesion_weak_context", "fused_label_free"),
    "dae": ("residual_p95", "fused_label_free"),
    "healthy-masks": ("neg_elbo", "fused_label_free"),
}
NO_LEARNING = ("intensity_p95", "intensity_histeq", "intensity_spots_context")


def run_folds(grid: Path, out: Path) -> int:
    config = load_yaml_config(CompareConfig, grid)
    folds = slab_folds(config.val_fraction)
    for fold in range(folds):
        command = ["compare", "--config", str(grid), "--val-fold", str(fold)]
        command += ["--out", str(out / f"fold-{fold}")]
        print(f"fold {fold} of {folds}: patchvae {' '.join(command)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "patchvae", *command], check=True, stdout=subprocess.DEVNULL
        )
    return folds


def pooled(out: Path, folds: int, model: str, seed: str) -> pd.DataFrame:
    parts = []
    for fold in range(folds):
        table = next((out / f"fold-{fold}" / model / seed).glob("analysis-*/patch-scores.parquet"))
        parts.append(pd.read_parquet(table).assign(fold=fold))
    return pd.concat(parts, ignore_index=True)


def summary(out: Path, folds: int, models: list[str]) -> list[str]:
    lines = [
        "| model: score | pooled AUROC, mean ± sd of seeds [95 % interval] "
        "| mean of the folds' AUROCs | positives |",
        "|---|---|---|---|",
    ]
    rows: dict[tuple[str, str], list[tuple[float, float, float, float, int]]] = {}
    for model in models:
        seeds = sorted(p.name for p in (out / "fold-0" / model).glob("seed-*"))
        names = [
            *SCORES.get(model, ("fused_label_free",)),
            *(NO_LEARNING if model == models[0] else ()),
        ]
        for seed in seeds:
            table = pooled(out, folds, model, seed)
            known = table[table.label >= 0]
            labels = known.label.to_numpy()
            present = [n for n in names if n in known]
            intervals = auroc_intervals(
                labels,
                {n: known[n].to_numpy() for n in present},
                "intensity_p95" if "intensity_p95" in present else present[0],
                None,
                0,
            )
            for name in present:
                per_fold = [
                    roc_auc_score(f.label, f[name])
                    for _, f in known.groupby("fold")
                    if f.label.nunique() == 2
                ]
                low, high = intervals[name]["by_patch"]["auroc"]
                key = ("no training" if name in NO_LEARNING else model, name)
                rows.setdefault(key, []).append(
                    (
                        roc_auc_score(labels, known[name]),
                        low,
                        high,
                        float(np.mean(per_fold)),
                        int(labels.sum()),
                    )
                )
    for (model, name), found in rows.items():
        v = np.array(found)
        sd = v[:, 0].std(ddof=1) if len(v) > 1 else 0.0
        lines.append(
            f"| {model}: {name} | {v[:, 0].mean():.3f} ± {sd:.3f} "
            f"[{v[:, 1].mean():.2f}, {v[:, 2].mean():.2f}] | {v[:, 3].mean():.3f} "
            f"| {int(v[0, 4])} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folds = run_folds(args.grid, args.out)
    models = [m.name for m in load_yaml_config(CompareConfig, args.grid).models]
    print("\n".join(summary(args.out, folds, models)))


if __name__ == "__main__":
    main()
