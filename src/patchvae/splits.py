"""Train/validation splits of a patch store: by case, never by patch.

With two or more cases, whole cases go to validation (named, or a seeded fraction of them).
With a single case there is no case to hold out; the split is then by slabs of contiguous axial
slices, interleaved (every k-th slab), so validation patches never share a slice with training
patches. Neighbouring slabs still look alike: a single-case split is weaker evidence than a
held-out case, and the split record says which one was used. ``fold`` picks which of the
interleaved sets of slabs is held out (folds 0 to k-1 hold out every slice once: slab
cross-validation); by default the middle one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchvae.errors import ConfigError

DEFAULT_SLAB = 8  # slices per slab in a single-case split


@dataclass
class Split:
    method: str  # "val_cases", "case_fraction" or "slabs"
    train_rows: np.ndarray
    val_rows: np.ndarray
    train_cases: list[str]
    val_cases: list[str]
    val_slices: dict[str, list[int]] | None = None  # slabs: case -> validation slice indices
    healthy_only: bool = False  # the training part lost its lesion patches (labels used)

    def record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "train_cases": self.train_cases,
            "val_cases": self.val_cases,
            "val_slices": self.val_slices,
            "n_train": int(self.train_rows.size),
            "n_val": int(self.val_rows.size),
            "healthy_only": self.healthy_only,
        }

    def seen_in_training(self, table: pd.DataFrame) -> np.ndarray:
        """For any store's table: which patches were in the training part of this split."""
        seen = table.case_id.isin(self.train_cases).to_numpy().copy()
        for case, slices in (self.val_slices or {}).items():
            seen &= ~((table.case_id == case) & table.slice.isin(slices)).to_numpy()
        return seen

    def trained_on(self, table: pd.DataFrame) -> np.ndarray:
        """Which patches the model actually trained on: those of the training part, without
        the lesion patches where the run trained on healthy patches only."""
        seen = self.seen_in_training(table)
        if self.healthy_only:
            seen &= table.label.to_numpy() != 1
        return seen

    def without_lesion(self, labels: np.ndarray) -> Split:
        """This split with the lesion patches (label 1) left out of its training part."""
        from dataclasses import replace

        if not (labels[self.train_rows] >= 0).any():
            raise ConfigError(
                "healthy_only: no training patch has a lesion label (the store has no lesion "
                "masks); train on all patches, or with train.trim_fraction"
            )
        rows = self.train_rows[labels[self.train_rows] != 1]
        return replace(self, train_rows=rows, healthy_only=True)


def split_patches(
    table: pd.DataFrame,
    val_cases: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    slab: int = DEFAULT_SLAB,
    fold: int | None = None,
) -> Split:
    """Split the rows of a store's table into training and validation, by case (one case:
    by slabs, ``fold`` choosing which are held out; :func:`slab_folds`).

    Example
    -------
    >>> t = pd.DataFrame({"case_id": ["a", "a", "b", "c"], "slice": [0, 1, 0, 0]})
    >>> split_patches(t, val_cases=["b"]).val_rows.tolist()
    [2]
    """
    cases = sorted(table.case_id.unique().tolist())
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction: expected a value between 0 and 1, got {val_fraction}")
    if fold is not None and (val_cases or len(cases) >= 2):
        raise ConfigError(
            f"val_fold: for a store of one case (a split by slabs); this one holds {len(cases)} "
            "cases: hold cases out with val_cases"
        )
    if val_cases:
        unknown = sorted(set(val_cases) - set(cases))
        if unknown:
            raise ConfigError(f"val_cases: {unknown} not in the store (cases: {cases})")
        if set(val_cases) == set(cases):
            raise ConfigError("val_cases: every case is held out; nothing is left to train on")
        return _by_cases(table, cases, sorted(val_cases), "val_cases")
    if len(cases) >= 2:
        rng = np.random.default_rng(seed)
        n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
        chosen = sorted(rng.choice(cases, size=n_val, replace=False).tolist())
        return _by_cases(table, cases, chosen, "case_fraction")
    return _by_slabs(table, cases[0], val_fraction, slab, fold)


def _by_cases(table: pd.DataFrame, cases: list[str], val: list[str], method: str) -> Split:
    is_val = table.case_id.isin(val).to_numpy()
    train = [c for c in cases if c not in val]
    return Split(method, np.flatnonzero(~is_val), np.flatnonzero(is_val), train, val)


def slab_folds(val_fraction: float) -> int:
    """How many folds a split by slabs has: every k-th slab is held out, k = 1 / val_fraction
    (at least 2), so folds 0 to k - 1 hold out each slab once.

    Example
    -------
    >>> slab_folds(0.2), slab_folds(0.5)
    (5, 2)
    """
    return max(2, round(1 / val_fraction))


def _by_slabs(
    table: pd.DataFrame, case: str, val_fraction: float, slab: int, fold: int | None
) -> Split:
    slices = np.sort(table.slice.unique())
    every = slab_folds(val_fraction)
    if fold is None:
        fold = every // 2  # interleaved, not at an edge
    elif not 0 <= fold < every:
        raise ConfigError(
            f"val_fold: {fold} is not a fold of this split (val_fraction {val_fraction:g} "
            f"makes folds 0 to {every - 1})"
        )
    slab_of = (slices - slices.min()) // slab
    val_slices = slices[slab_of % every == fold].tolist()
    if not val_slices:
        raise ConfigError(f"case {case}: too few slices ({slices.size}) for a slab split of {slab}")
    is_val = table.slice.isin(val_slices).to_numpy()
    return Split(
        "slabs",
        np.flatnonzero(~is_val),
        np.flatnonzero(is_val),
        [case],
        [case],
        {case: [int(s) for s in val_slices]},
    )


def draw_labelled(labels: np.ndarray, budget: int | None, seed: int) -> np.ndarray:
    """The patches that keep their label when only ``budget`` may (None: every known one):
    one of each class that occurs, then the rest at random among the known ones, drawn with
    ``seed``; a label array with -1 for every other patch. A user labelling a few patches
    would include both classes.

    Example
    -------
    >>> kept = draw_labelled(np.array([0, 0, 0, 1, -1, 0]), 3, seed=0)
    >>> int((kept >= 0).sum()), int((kept == 1).sum())
    (3, 1)
    """
    labels = np.asarray(labels)
    kept = np.full(labels.shape, -1, dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    budget = known.size if budget is None else min(budget, known.size)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.choice(np.flatnonzero(labels == c))) for c in (0, 1) if (labels == c).any()]
    rest = np.setdiff1d(known, chosen)
    chosen += rng.choice(rest, size=max(0, budget - len(chosen)), replace=False).tolist()
    kept[chosen] = labels[chosen]
    return kept


LABEL_COLUMNS = ("case_id", "slice", "row", "col", "label")


def read_patch_labels(path: str | Path, table: pd.DataFrame) -> np.ndarray:
    """A user's own patch labels, for runs on a store without lesion masks (or to label other
    patches than the masks do): a CSV with the columns ``LABEL_COLUMNS`` (``label`` 1 for
    lesion, 0 for healthy; the patch named by its case and its slice, row and col in the
    store, as ``inspect``, ``analyze``'s patch table and the report give them). Returns one
    label per row of the store's ``table``, -1 for the patches the file does not name.
    Every problem is refused with the file's name and the line: a missing column, a label
    other than 0 or 1, a patch the store does not hold, a patch named twice.

    Example
    -------
    >>> import tempfile, os
    >>> t = pd.DataFrame({"case_id": ["a", "a"], "slice": [0, 0], "row": [0, 28], "col": [0, 0]})
    >>> f = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = open(f, "w").write("case_id,slice,row,col,label\\na,0,28,0,1\\n")
    >>> read_patch_labels(f, t).tolist()
    [-1, 1]
    """
    from patchvae.errors import DataError

    path = Path(path)
    try:
        given = pd.read_csv(path, dtype={"case_id": str})
    except FileNotFoundError:
        raise DataError(path, "not found (the patch labels file)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not a readable CSV of patch labels ({exc})") from None
    missing = [c for c in LABEL_COLUMNS if c not in given.columns]
    if missing:
        raise DataError(
            path, f"no column {', '.join(missing)}: expected {', '.join(LABEL_COLUMNS)}"
        )
    if given.empty:
        raise DataError(path, "holds no labelled patch")
    where = {
        (str(c), int(k), int(r), int(q)): i
        for i, (c, k, r, q) in enumerate(
            zip(table.case_id, table.slice, table.row, table.col, strict=True)
        )
    }
    found = np.full(len(table), -1, dtype=np.int64)
    for line, row in enumerate(given.itertuples(index=False), start=2):  # 1: the header
        try:
            numbers = [float(v) for v in (row.slice, row.row, row.col, row.label)]
            if any(v != int(v) for v in numbers):
                raise ValueError
            slice_, row_, col, label = (int(v) for v in numbers)
            key = (str(row.case_id), slice_, row_, col)
        except (TypeError, ValueError, OverflowError):
            raise DataError(
                path, f"line {line}: slice, row, col and label must be whole numbers"
            ) from None
        if label not in (0, 1):
            raise DataError(path, f"line {line}: label {label}; 1 is lesion, 0 healthy")
        if key not in where:
            raise DataError(
                path,
                f"line {line}: the store holds no patch of case {key[0]} at slice {key[1]}, "
                f"row {key[2]}, col {key[3]}",
            )
        if found[where[key]] >= 0:
            raise DataError(path, f"line {line}: named twice (that patch has a label above)")
        found[where[key]] = label
    return found
