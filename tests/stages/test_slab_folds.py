"""Slab cross-validation on a store of one case: ``train --val-fold K`` holds out the K-th
interleaved set of slabs, records it, and the analysis scores exactly those slices."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from patchvae.config import ExtractConfig
from patchvae.extract import extract_dataset
from patchvae.store import PatchStore
from tests.conftest import Cli
from tests.volume_helpers import write_isles2015


@pytest.fixture(scope="module")
def one_case_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled DWI case alone, in the ISLES 2015 layout."""
    folder = tmp_path_factory.mktemp("one")
    root = write_isles2015(folder / "data", ".nii.gz", n_cases=1)
    store = folder / "one.h5"
    extract_dataset(ExtractConfig(root=str(root)), store)
    return store


def test_each_fold_holds_out_other_slices(one_case_store: Path, tmp_path: Path, cli: Cli) -> None:
    held = {}
    for fold in (0, 1):
        run = tmp_path / f"fold-{fold}"
        code, _, err = cli(
            ["train", "--patches", str(one_case_store), "--val-fraction", "0.5", "--val-fold",
             str(fold), "--epochs", "1", "--quiet", "--out", str(run)]
        )  # fmt: skip
        assert code == 0, err
        split = json.loads((run / "training.json").read_text())["split"]
        assert split["method"] == "slabs"
        held[fold] = set(split["val_slices"]["1"])
        assert cli(["analyze", str(run), "--patches", str(one_case_store)])[0] == 0
        scored = pd.read_parquet(run / "analysis-one" / "patch-scores.parquet")
        assert set(scored.slice) <= held[fold] and len(scored) == split["n_val"]
    # two folds of val_fraction 0.5: between them every slice of the case, none twice
    slices = set(PatchStore(one_case_store).table().slice)
    assert held[0] and held[1] and not held[0] & held[1] and held[0] | held[1] == slices


def test_a_fold_beyond_the_split_is_refused(one_case_store: Path, tmp_path: Path, cli: Cli) -> None:
    run = tmp_path / "run"
    code, _, err = cli(
        ["train", "--patches", str(one_case_store), "--val-fold", "5", "--quiet", "--out",
         str(run)]
    )  # fmt: skip
    assert code != 0 and "val_fold: 5 is not a fold of this split" in err
    assert not run.exists()
