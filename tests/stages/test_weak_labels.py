"""Weak labels (docs/recipes/lesion-20-labels-weak.yaml): training uses no label; the analysis
and ``score`` fit a linear score on the training patches alone, and fuse it with the count in
context."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from patchvae.analysis.anomaly import fuse_by_rank
from patchvae.checkpoint import load_checkpoint
from patchvae.splits import draw_labelled
from patchvae.store import PatchStore
from tests.conftest import Cli, cli_code
from tests.volume_helpers import write_manifest

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def _train(store: Path, recipe: str, out: Path) -> Path:
    args = ["train", "--patches", str(store), "--config", str(RECIPES / recipe)]
    args += ["--val-cases", "2", "--seed", "1", "--epochs", "2", "--quiet", "--out", str(out)]
    assert cli_code(args) == 0
    return out


@pytest.fixture(scope="module")
def weak_run(two_case_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = _train(two_case_store, "lesion-20-labels-weak.yaml", tmp_path_factory.mktemp("w") / "r")
    assert cli_code(["analyze", str(run), "--patches", str(two_case_store)]) == 0
    return run


def test_training_with_weak_labels_uses_no_label(
    weak_run: Path, two_case_store: Path, tmp_path: Path
) -> None:
    """The same seed trains the same network as lesion-unsupervised: the labels only enter
    after training."""
    plain = _train(two_case_store, "lesion-unsupervised.yaml", tmp_path / "plain")
    weak_state = load_checkpoint(weak_run / "checkpoint.pt")["model_state"]
    plain_state = load_checkpoint(plain / "checkpoint.pt")["model_state"]
    assert weak_state.keys() == plain_state.keys()
    for name, tensor in weak_state.items():
        assert torch.equal(tensor, plain_state[name]), name


def test_the_weak_score_is_fitted_on_training_patches_only(
    weak_run: Path, two_case_store: Path
) -> None:
    from patchvae.analysis.anomaly import in_context
    from patchvae.stages.patch_scores import (
        patch_scores,
        surroundings,
        training_reference,
        training_scores,
    )
    from patchvae.tables import latent_columns

    folder = weak_run / f"analysis-{two_case_store.stem}"
    result = json.loads((folder / "analysis.json").read_text())
    held = pd.read_parquet(folder / "patch-scores.parquet")
    assert result["patch_scores"]["p_lesion_weak"]["kind"] == "semi-supervised"
    # the run's own score is the weak one: the label-free fusion takes it beside the count;
    # it is also read in context, as the count is
    around = surroundings(held, 28)
    assert around is not None and (around >= 0).any()
    in_place = in_context(held.p_lesion_weak.to_numpy(), around)
    np.testing.assert_allclose(held.p_lesion_weak_context, in_place)
    assert result["patch_scores"]["p_lesion_weak_context"]["kind"] == "semi-supervised"
    np.testing.assert_allclose(
        held.fused_label_free,
        fuse_by_rank(held.intensity_spots_context.to_numpy(), held.p_lesion_weak.to_numpy(), 0.5),
    )
    # refitted from the training patches alone (their 20 labels drawn with the run's seed),
    # it gives the analysis's held-out values: no held-out label reaches it
    embedding = pd.read_parquet(weak_run / f"embedding-{two_case_store.stem}.parquet")
    store = PatchStore(two_case_store)
    seen = embedding[embedding.seen_in_training]
    reference = training_reference(seen, 0)
    train = seen.reset_index(drop=True)
    weak = training_scores(seen, reference, store, "mlp", False, 20, 1).weak
    assert weak is not None
    kept = draw_labelled(train.label.to_numpy(), 20, 1)
    assert result["weak_labels"]["labelled"] == 20 == weak.n_labelled
    assert result["weak_labels"]["labelled_lesion"] == int((kept == 1).sum()) >= 1
    out_rows = np.flatnonzero(~embedding.seen_in_training.to_numpy())
    part = embedding.iloc[out_rows].reset_index(drop=True)
    patches, brain = store.patches(out_rows), store.masks("brain", out_rows)
    mu = latent_columns(part, "mu")
    scores = patch_scores(part, mu, reference, patches, brain, "neg_elbo", weak)
    for name in ("p_lesion_weak", "p_lesion_weak_context", "fused_label_free"):
        np.testing.assert_allclose(scores[name], held[name], rtol=1e-6)


def test_score_fits_the_weak_score_as_the_analysis_does(
    weak_run: Path, two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    held = pd.read_parquet(weak_run / f"analysis-{two_case_store.stem}" / "patch-scores.parquet")
    case = next(c for c in PatchStore(two_case_store).cases if c["case_id"] == "2")
    manifest = write_manifest(tmp_path, [{"case_id": "2", "DWI": case["sources"]["DWI"]["path"]}])
    out = tmp_path / "scored"
    code, _, err = cli(["score", str(weak_run), str(manifest), "--out", str(out), "--stride", "28"])
    assert code == 0, err
    scored = pd.read_parquet(out / "patch-scores.parquet")
    merged = held.merge(scored, on=["case_id", "slice", "row", "col"], suffixes=("_a", "_s"))
    assert len(merged) == len(held)
    for name in ("p_lesion_weak", "p_lesion_weak_context", "fused_label_free"):
        np.testing.assert_allclose(merged[f"{name}_s"], merged[f"{name}_a"], rtol=1e-5, atol=1e-6)
    assert "p_lesion_weak" in json.loads((out / "score.json").read_text())["scores"]


def test_weak_labels_without_lesion_masks_are_refused_before_training(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    cases = PatchStore(two_case_store).cases
    rows = [{"case_id": c["case_id"], "DWI": c["sources"]["DWI"]["path"]} for c in cases]
    store = tmp_path / "unlabelled.h5"
    manifest = str(write_manifest(tmp_path, rows))
    extract = ["extract", "--layout", "csv", "--root", manifest, "--modality", "DWI"]
    assert cli([*extract, "--out", str(store)])[0] == 0
    run = tmp_path / "run"
    code, _, err = cli(
        ["train", "--patches", str(store), "--weak-labels", "5", "--val-cases", "2", "--quiet",
         "--out", str(run)]
    )  # fmt: skip
    assert code != 0 and "weak_labels: no training patch has a label" in err
    assert not run.exists()


def test_the_report_says_labels_were_used_after_training(weak_run: Path) -> None:
    from patchvae.report.html import build_report

    page = build_report(weak_run).read_text()
    assert "Labels were used after training" in page and "20 labelled training" in page
    assert "p_lesion_weak" in page
