"""A user's own patch labels (``train --labels FILE.csv``): the weak-labels and 20-label
recipes on a store without lesion masks, the file checked against the store and the split
before anything is written, and recorded so that the analysis reads the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patchvae.store import PatchStore
from tests.conftest import Cli, cli_code
from tests.volume_helpers import write_manifest

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


@pytest.fixture(scope="module")
def unlabelled_store(two_case_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two cases' DWI without their lesion masks: no patch has a label."""
    cases = PatchStore(two_case_store).cases
    folder = tmp_path_factory.mktemp("unlabelled")
    rows = [{"case_id": c["case_id"], "DWI": c["sources"]["DWI"]["path"]} for c in cases]
    manifest = str(write_manifest(folder, rows))
    store = folder / "unlabelled.h5"
    extract = ["extract", "--layout", "csv", "--root", manifest, "--modality", "DWI"]
    assert cli_code([*extract, "--out", str(store)]) == 0
    assert (PatchStore(store).table().label < 0).all()
    return store


def write_labels(path: Path, table: pd.DataFrame, lesion: int = 3, healthy: int = 5) -> Path:
    """Labels a user might give: the brightest patches of case 1 as lesion, some dim ones
    as healthy."""
    one = table[table.case_id.astype(str) == "1"].sort_values("brightness")
    picked = pd.concat(
        [one.tail(lesion).assign(label=1), one.head(healthy).assign(label=0)]
    )  # fmt: skip
    picked[["case_id", "slice", "row", "col", "label"]].to_csv(path, index=False)
    return path


def store_table(store: Path) -> pd.DataFrame:
    s = PatchStore(store)
    table = s.table()
    return table.assign(brightness=s.patches(np.arange(len(table))).reshape(len(table), -1).mean(1))


def train_args(store: Path, labels: Path, out: Path) -> list[str]:
    return [
        "train", "--patches", str(store), "--config", str(RECIPES / "lesion-20-labels-weak.yaml"),
        "--labels", str(labels), "--val-cases", "2", "--seed", "1", "--epochs", "2", "--quiet",
        "--out", str(out),
    ]  # fmt: skip


def test_weak_labels_from_a_users_file_on_a_store_without_masks(
    unlabelled_store: Path, tmp_path: Path, cli: Cli
) -> None:
    from patchvae.splits import read_patch_labels
    from patchvae.stages.patch_scores import training_reference, training_scores

    table = store_table(unlabelled_store)
    labels = write_labels(tmp_path / "labels.csv", table)
    run = tmp_path / "run"
    code, _, err = cli(train_args(unlabelled_store, labels, run))
    assert code == 0, err
    record = json.loads((run / "training.json").read_text())
    assert record["patch_labels"]["path"] == str(labels.resolve())
    assert len(record["patch_labels"]["sha256"]) == 64
    # the store holds no label, so the analysis scores nothing; score fits the weak score
    # to the file's labels as analyze would
    embedding = cli(["embed", str(run), "--patches", str(unlabelled_store)])
    assert embedding[0] == 0, embedding[2]
    frame = pd.read_parquet(run / "embedding-unlabelled.parquet")
    seen = frame[frame.seen_in_training]
    given = read_patch_labels(labels, PatchStore(unlabelled_store).table())
    found = training_scores(
        seen, training_reference(seen, 0), PatchStore(unlabelled_store), "mlp", False, 20, 1,
        given,
    )  # fmt: skip
    assert found.weak is not None
    assert (found.weak.n_labelled, found.weak.n_labelled_lesion) == (8, 3)
    # the file's patches are among those fitted on, and its lesion patches (the brightest)
    # are scored above its healthy ones
    rows = np.flatnonzero(given >= 0)
    assert set(rows) <= set(found.rows)
    weak = pd.Series(found.scores["p_lesion_weak"], index=found.rows)
    assert weak[rows[given[rows] == 1]].min() > weak[rows[given[rows] == 0]].max()
    # score fits it too, from the file the training record names (the store has no label:
    # without the file it would refuse, as training would)
    case = next(c for c in PatchStore(unlabelled_store).cases if c["case_id"] == "2")
    folder = tmp_path / "new"
    folder.mkdir()
    manifest = write_manifest(folder, [{"case_id": "2", "DWI": case["sources"]["DWI"]["path"]}])
    code, _, err = cli(["score", str(run), str(manifest), "--out", str(tmp_path / "scored")])
    assert code == 0, err
    scored = pd.read_parquet(tmp_path / "scored" / "patch-scores.parquet")
    assert scored.p_lesion_weak.between(0, 1).all() and scored.p_lesion_weak.nunique() > 1


def test_a_changed_labels_file_is_refused_after_training(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    labels = write_labels(tmp_path / "labels.csv", store_table(two_case_store))
    run = tmp_path / "run"
    code, _, err = cli(train_args(two_case_store, labels, run))
    assert code == 0, err
    code, _, err = cli(["analyze", str(run), "--patches", str(two_case_store)])
    assert code == 0, err
    result = json.loads((run / "analysis-siss" / "analysis.json").read_text())
    assert result["weak_labels"]["labelled"] == 8 and result["weak_labels"]["labelled_lesion"] == 3
    from patchvae.report.html import build_report

    page = build_report(run).read_text()  # the report names the file the labels came from
    assert "fitted to the patches labelled in labels.csv" in page
    with labels.open("a") as f:
        f.write("1,0,0,0,0\n")
    code, _, err = cli(["analyze", str(run), "--patches", str(two_case_store)])
    assert code != 0 and "labels.csv: changed since the run trained" in err


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("case_id,slice,row,label\n1,3,0,1\n", "no column col"),
        ("case_id,slice,row,col,label\n1,{s},{r},{c},2\n", "line 2: label 2; 1 is lesion"),
        ("case_id,slice,row,col,label\n1,999,0,0,1\n", "line 2: the store holds no patch"),
        ("case_id,slice,row,col,label\n1,{s}.5,{r},{c},1\n", "must be whole numbers"),
        ("case_id,slice,row,col,label\n1,,{r},{c},1\n", "must be whole numbers"),
        ("case_id,slice,row,col,label\n1,{s},{r},{c},1\n1,{s},{r},{c},1\n", "line 3: named twice"),
        ("case_id,slice,row,col,label\n1,{s},{r},{c},1\n", "needs lesion (1) and healthy (0)"),
        ("case_id,slice,row,col,label\n2,{s2},{r2},{c2},1\n", "lie in the held-out part"),
    ],
)  # fmt: skip
def test_bad_label_files_are_refused_before_anything_is_written(
    unlabelled_store: Path, tmp_path: Path, cli: Cli, rows: str, problem: str
) -> None:
    table = PatchStore(unlabelled_store).table()
    one = table[table.case_id.astype(str) == "1"].iloc[0]
    two = table[table.case_id.astype(str) == "2"].iloc[0]
    text = rows.format(s=one.slice, r=one.row, c=one.col, s2=two.slice, r2=two.row, c2=two.col)
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    run = tmp_path / "run"
    code, _, err = cli(train_args(unlabelled_store, labels, run))
    assert code != 0 and f"{labels}: " in err and problem in err, err
    assert not run.exists()


def test_more_labels_than_the_budget_or_no_budget_is_refused(
    unlabelled_store: Path, tmp_path: Path, cli: Cli
) -> None:
    labels = write_labels(tmp_path / "labels.csv", store_table(unlabelled_store), 10, 15)
    run = tmp_path / "run"
    code, _, err = cli(train_args(unlabelled_store, labels, run))
    assert code != 0 and "25 labelled patches, more than weak_labels (20) allows" in err
    plain = ["train", "--patches", str(unlabelled_store), "--labels", str(labels), "--quiet"]
    code, _, err = cli([*plain, "--val-cases", "2", "--out", str(run)])
    assert code != 0 and "patch_labels: give weak_labels" in err
    assert not run.exists()


def test_a_classifier_learns_from_the_files_labels() -> None:
    from patchvae.config import PatchTrainConfig
    from patchvae.stages.training import _training_labels

    config = PatchTrainConfig(patches="s.h5", label_budget=20, patch_labels="l.csv")
    given = np.array([-1, 1, -1, 0, 0])
    y, n = _training_labels(config, np.full(5, -1), given)
    assert n == 3 and y is not None and y.tolist() == given.tolist()
