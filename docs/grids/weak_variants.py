"""The weak-labels recipe's variants, measured as its settings were chosen: the training AUROC
(the 20 labelled patches left out; BraTS: the mean over its three training cases) beside the
held-out AUROC, mean over seeds, for each set.

    python docs/grids/weak_variants.py runs/recipes-brats runs/recipes-ms runs/recipes-isles

Reads the ``weak20`` runs of each grid folder (made by ``patchvae compare`` from
docs/grids/lesion-recipes-*.yaml) and their embeddings; refits the weak score per variant from
the training patches alone. Prints a markdown table (docs/models.md, "The weak score read in
context"). The held-out column is printed beside and chose nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

import patchvae.analysis.fewlabel as fewlabel
from patchvae.analysis.anomaly import fuse_by_rank, in_context
from patchvae.artefacts import SETTINGS_FILE
from patchvae.config import PatchTrainConfig, load_yaml_config
from patchvae.splits import draw_labelled
from patchvae.stages import patch_scores as ps
from patchvae.stages.analysis import _embeddings
from patchvae.store import PatchStore
from patchvae.tables import latent_columns

BUDGET = 20


class Side:
    """One side of a run (its training sample or its held-out patches): the embedding's rows
    ``rows`` of the store, their labels, scores with no weak score, the weak score's features
    and the patches around each."""

    def __init__(self, frame, rows, store, reference):  # type: ignore[no-untyped-def]
        self.table = table = frame.loc[rows].reset_index(drop=True)  # the store's rows
        self.labels = table.label.to_numpy()
        mu = latent_columns(table, "mu")
        patches, brain = store.patches(rows), store.masks("brain", rows)
        found = ps.scores_and_features(table, mu, reference, patches, brain, "neg_elbo", True)
        self.scores, self.features, self.around = found.scores, found.features, found.around
        self.count = self.scores[ps.label_free_base(self.scores)]


def sides(run: Path) -> tuple[Side, Side, int]:
    settings = load_yaml_config(PatchTrainConfig, run / SETTINGS_FILE)
    store = PatchStore(Path(settings.patches))
    frame, seen, _, _ = _embeddings(run, store, Path(settings.patches))
    reference = ps.training_reference(seen, 0)
    train_rows = seen.index.to_numpy()[ps.at_most(len(seen), ps.THRESHOLD_PATCHES, 0)]
    held_rows = np.flatnonzero(~frame.seen_in_training.to_numpy())
    train = Side(frame, train_rows, store, reference)
    return train, Side(frame, held_rows, store, reference), settings.train.seed


def proposed(train: Side, how: str) -> np.ndarray:
    """Labels of the patches the label-free fusion proposes: its top 20, or 20 spread evenly
    over its top 5 %."""
    known = train.labels >= 0
    order = np.argsort(-train.scores[ps.LABEL_FREE])
    order = order[known[order]]
    pick = (
        order[:BUDGET]
        if how == "top"
        else order[np.linspace(0, len(order) // 20, BUDGET).astype(int)]
    )
    kept = np.full(train.labels.shape, -1)
    kept[pick] = train.labels[pick]
    return kept


def neighbourhood_max(side: Side, columns: int) -> np.ndarray:
    """The features with, for the first ``columns``, their largest value around each patch."""
    f = side.features
    has = side.around >= 0
    found = [
        np.maximum(f[:, c], np.where(has, f[np.where(has, side.around, 0), c], -np.inf).max(1))
        for c in range(columns)
    ]
    return np.column_stack([f, *found])


Read = Callable[[Side, np.ndarray], np.ndarray]  # (side, its weak score) -> the score read


def plain(side: Side, weak: np.ndarray) -> np.ndarray:
    return weak


def context(side: Side, weak: np.ndarray) -> np.ndarray:
    return in_context(weak, side.around)


def with_count(weight: float, read: Read) -> Read:
    return lambda side, weak: fuse_by_rank(side.count, read(side, weak), weight)


def fused_in_context(side: Side, weak: np.ndarray) -> np.ndarray:
    return in_context(fuse_by_rank(side.count, weak, 0.5), side.around)


QUARTER = with_count(0.25, context)
# name, how the labels are drawn, label weight, features (columns with their neighbourhood
# max), self-training rounds, how the weak score is read
VARIANTS: list[tuple[str, str, float, int, int, Read]] = [
    ("p_lesion_weak", "random", 20, 0, 0, plain),
    (
        "**count in context + p_lesion_weak, equal weights** (the recipe, kept)",
        "random",
        20,
        0,
        0,
        with_count(0.5, plain),
    ),
    ("p_lesion_weak in context", "random", 20, 0, 0, context),
    (
        "count in context + p_lesion_weak in context, equal weights",
        "random",
        20,
        0,
        0,
        with_count(0.5, context),
    ),
    (
        "1/4 count in context + 3/4 p_lesion_weak in context ('the 1/4 fusion')",
        "random",
        20,
        0,
        0,
        QUARTER,
    ),
    ("the recipe's fusion read in context", "random", 20, 0, 0, fused_in_context),
    ("the 1/4 fusion, label weight 5", "random", 5, 0, 0, QUARTER),
    ("the 1/4 fusion, label weight 1", "random", 1, 0, 0, QUARTER),
    (
        "the 1/4 fusion, the features' neighbourhood maxima too (intensities, brain fraction)",
        "random",
        20,
        8,
        0,
        QUARTER,
    ),
    (
        "the 1/4 fusion, the features' neighbourhood maxima too (also the two ranks)",
        "random",
        20,
        10,
        0,
        QUARTER,
    ),
    (
        "the 1/4 fusion, one round of self-training (pseudo-labels from the weak score)",
        "random",
        20,
        0,
        1,
        QUARTER,
    ),
    ("the 1/4 fusion, labels proposed: the label-free fusion's top 20", "top", 20, 0, 0, QUARTER),
    (
        "the 1/4 fusion, labels proposed: 20 spread over the label-free fusion's top 5 %",
        "band",
        20,
        0,
        0,
        QUARTER,
    ),
]


def by_case(labels: np.ndarray, score: np.ndarray, cases: np.ndarray) -> float:
    return float(
        np.mean([roc_auc_score(labels[cases == c], score[cases == c]) for c in np.unique(cases)])
    )


def measure(train: Side, held: Side, seed: int) -> list[tuple[float, float]]:
    found = []
    for _, draw, weight, columns, rounds, read in VARIANTS:
        kept = (
            draw_labelled(train.labels, BUDGET, seed) if draw == "random" else proposed(train, draw)
        )
        tf = neighbourhood_max(train, columns) if columns else train.features
        hf = neighbourhood_max(held, columns) if columns else held.features
        before, fewlabel.WEAK_LABEL_WEIGHT = fewlabel.WEAK_LABEL_WEIGHT, weight
        try:
            weak = fewlabel.fit_weak_score(tf, train.scores[ps.LABEL_FREE], kept)
            for _ in range(rounds):
                weak = fewlabel.fit_weak_score(tf, weak(tf), kept)
        finally:
            fewlabel.WEAK_LABEL_WEIGHT = before
        left = (train.labels >= 0) & (kept < 0)
        cases = train.table.case_id.astype(str).to_numpy()
        t = by_case(train.labels[left], read(train, weak(tf))[left], cases[left])
        mask = held.labels >= 0
        h = roc_auc_score(held.labels[mask], read(held, weak(hf))[mask])
        found.append((t, h))
    return found


def main(grids: list[str]) -> None:
    names = [Path(g).name.removeprefix("recipes-") for g in grids]
    table = {}
    for grid, name in zip(grids, names, strict=True):
        runs = sorted(
            p for p in (Path(grid) / "weak20").glob("seed-*") if (p / SETTINGS_FILE).is_file()
        )
        table[name] = np.mean([measure(*sides(run)) for run in runs], axis=0)
    print(
        "| variant (score) | "
        + " | ".join(f"{n} training" for n in names)
        + " | mean | held out: "
        + " / ".join(names)
        + " |"
    )
    print("|---" * (len(names) + 3) + "|")
    for i, variant in enumerate(VARIANTS):
        train = [table[n][i, 0] for n in names]
        held = [table[n][i, 1] for n in names]
        print(
            f"| {variant[0]} | "
            + " | ".join(f"{t:.3f}" for t in train)
            + f" | {np.mean(train):.4f} | "
            + " / ".join(f"{h:.3f}" for h in held)
            + " |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
