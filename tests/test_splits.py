from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchvae.errors import ConfigError
from patchvae.splits import split_patches


def table(cases: dict[str, int], slices: int = 40) -> pd.DataFrame:
    rows = [(c, k) for c, n in cases.items() for k in np.arange(n) % slices]
    return pd.DataFrame(rows, columns=["case_id", "slice"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_case_split_never_leaks(seed: int) -> None:
    t = table({"a": 50, "b": 30, "c": 40, "d": 20, "e": 10})
    split = split_patches(t, val_fraction=0.4, seed=seed)
    train_cases = set(t.case_id.iloc[split.train_rows])
    val_cases = set(t.case_id.iloc[split.val_rows])
    assert train_cases and val_cases and not train_cases & val_cases
    assert len(val_cases) == 2 and split.method == "case_fraction"
    assert sorted(np.concatenate([split.train_rows, split.val_rows]).tolist()) == list(
        range(len(t))
    )
    assert not split.seen_in_training(t)[split.val_rows].any()
    assert split.seen_in_training(t)[split.train_rows].all()


def test_named_validation_cases() -> None:
    t = table({"a": 5, "b": 5, "c": 5})
    split = split_patches(t, val_cases=["c"])
    assert split.val_cases == ["c"] and split.train_cases == ["a", "b"]
    assert set(t.case_id.iloc[split.val_rows]) == {"c"}
    with pytest.raises(ConfigError, match="not in the store"):
        split_patches(t, val_cases=["z"])
    with pytest.raises(ConfigError, match="nothing is left to train on"):
        split_patches(t, val_cases=["a", "b", "c"])


def test_single_case_split_by_slabs_shares_no_slice() -> None:
    t = table({"only": 400}, slices=60)
    split = split_patches(t, val_fraction=0.25)
    assert split.method == "slabs" and split.val_slices is not None
    train_slices = set(t.slice.iloc[split.train_rows])
    val_slices = set(t.slice.iloc[split.val_rows])
    assert val_slices and not train_slices & val_slices
    assert val_slices == set(split.val_slices["only"])
    # every validation slab is 8 contiguous slices, and slabs are interleaved, not one block
    ordered = sorted(val_slices)
    assert len(ordered) % 8 == 0 and ordered[-1] - ordered[0] > len(ordered)
    seen = split.seen_in_training(t)
    assert not seen[split.val_rows].any() and seen[split.train_rows].all()


def test_slab_folds_hold_out_every_slice_once() -> None:
    from patchvae.splits import slab_folds

    t = table({"only": 600}, slices=100)
    folds = [split_patches(t, val_fraction=0.2, fold=k) for k in range(slab_folds(0.2))]
    held = [set(t.slice.iloc[s.val_rows]) for s in folds]
    assert len(folds) == 5 and all(held)
    # disjoint, and together every slice of the case
    assert sum(len(h) for h in held) == len(set().union(*held)) == 100
    for split, slices in zip(folds, held, strict=True):
        assert not set(t.slice.iloc[split.train_rows]) & slices
    # the default is the middle fold: runs made before folds existed keep their split
    default = split_patches(t, val_fraction=0.2)
    assert default.val_slices == folds[2].val_slices
    assert folds[0].val_slices != folds[2].val_slices


def test_a_fold_is_refused_where_it_means_nothing() -> None:
    one = table({"only": 400}, slices=60)
    with pytest.raises(ConfigError, match="folds 0 to 4"):
        split_patches(one, val_fraction=0.2, fold=5)
    with pytest.raises(ConfigError, match="val_fold: for a store of one case"):
        split_patches(table({"a": 5, "b": 5}), val_cases=["b"], fold=0)
