"""Training on data that hold lesions: trimmed loss, healthy-only training, the fused score
chosen on training patches, feature Mahalanobis, and the recipes as a user copies them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from patchvae.analysis.anomaly import detection_metrics, fit_gaussian, fuse_by_rank, mahalanobis
from patchvae.store import PatchStore
from patchvae.train.compiled import step_loss
from tests.conftest import Cli, needs_cxx

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def test_trimmed_loss_ignores_the_worst_samples() -> None:
    out = SimpleNamespace(
        recon=torch.tensor([1.0, 2.0, 3.0, 100.0]),
        kl=torch.full((4,), 2.0),
        class_loss=None,
        loss=torch.tensor(27.5),
    )
    assert float(step_loss(out, 0.0, 0.25, 1.0)) == pytest.approx(2.0)
    # the KL weight counts: 1 + 2 + 3 plus 0.5 * 2 each
    assert float(step_loss(out, torch.tensor(0.5), 0.25, 1.0)) == pytest.approx(3.0)
    # the classifier's loss counts, over the whole batch: a labelled lesion patch (the worst
    # fitted, here the last) is trimmed from the ELBO, never from the classifier's loss
    out.class_loss = torch.tensor([0.0, 0.0, 2.0, 10.0])
    assert float(step_loss(out, 0.0, 0.25, 1.0)) == pytest.approx(2.0 + 12 / 4)
    assert float(step_loss(out, 0.0, 0.25, 3.0)) == pytest.approx(2.0 + 3 * 12 / 4)
    assert step_loss(out, 1.0, 0.0, 1.0) is out.loss  # no trimming: the batch's mean


def test_healthy_only_trains_without_lesion_patches_and_says_so(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    run = tmp_path / "run"
    args = ["train", "--patches", str(two_case_store), "--val-cases", "2", "--epochs", "2"]
    code, _, err = cli(
        [*args, "--healthy-only", "--trim-fraction", "0.1", "--quiet", "--out", str(run)]
    )
    assert code == 0, err
    record = json.loads((run / "training.json").read_text())
    table = PatchStore(two_case_store).table()
    healthy = int(((table.case_id == "1") & (table.label == 0)).sum())
    assert record["split"]["healthy_only"] and record["split"]["n_train"] == healthy
    assert record["settings"]["train"]["trim_fraction"] == 0.1
    code, _, err = cli(["analyze", str(run), "--patches", str(two_case_store)])
    assert code == 0, err
    embedding = pd.read_parquet(run / f"embedding-{two_case_store.stem}.parquet")
    lesion_of_training_case = (embedding.case_id == "1") & (embedding.label == 1)
    assert embedding.seen_in_training[lesion_of_training_case].all()
    assert not embedding.trained_on[lesion_of_training_case].any()
    code, _, err = cli(["report", str(run)])
    assert code == 0, err
    assert "Labels were used in training" in (run / "report.html").read_text()


def test_feature_mahalanobis_is_fitted_on_the_patches_trained_on(
    trained_run: Path, two_case_store: Path
) -> None:
    from patchvae.checkpoint import load_model
    from patchvae.embed import encoder_features
    from patchvae.stages.embedding import embed_store

    frame = embed_store(trained_run, two_case_store)
    features = encoder_features(
        load_model(trained_run / "checkpoint.pt"), PatchStore(two_case_store).patches()
    )
    mean, precision = fit_gaussian(features[frame.trained_on.to_numpy()])
    np.testing.assert_allclose(
        frame.feature_mahalanobis, mahalanobis(features, mean, precision), rtol=1e-4
    )


def test_fused_score_is_chosen_on_training_patches_only(
    trained_run: Path, two_case_store: Path, cli: Cli
) -> None:
    code, _, err = cli(["analyze", str(trained_run), "--patches", str(two_case_store)])
    assert code == 0, err
    folder = trained_run / f"analysis-{two_case_store.stem}"
    result = json.loads((folder / "analysis.json").read_text())
    fusion = result["fusion"]
    held = pd.read_parquet(folder / "patch-scores.parquet")
    # the fused score is the recorded partner and weight applied to the held-out scores
    expected = fuse_by_rank(
        held[fusion["base"]].to_numpy(),
        held[fusion["partner"] or fusion["base"]].to_numpy(),
        fusion["baseline_weight"],
    )
    np.testing.assert_allclose(held.fused, expected)
    # and the choice is the best on the training patches: recompute it from them alone
    from patchvae.stages.analysis import FUSION_WEIGHTS

    embedding = pd.read_parquet(trained_run / f"embedding-{two_case_store.stem}.parquet")
    train = embedding[embedding.seen_in_training].reset_index(drop=True)
    store = PatchStore(two_case_store)
    from patchvae.analysis.anomaly import (
        adjacent_patches,
        count_bright_spots,
        equalise_by_case,
        in_context,
        intensity_baseline,
        surrounding_patches,
    )

    rows = np.flatnonzero(embedding.seen_in_training)
    patches, brain = store.patches(rows), store.masks("brain", rows)
    cases = train.case_id.astype(str).to_numpy()
    adjacent = adjacent_patches(cases, train.slice, train.row, train.col)
    spots = count_bright_spots(equalise_by_case(patches, brain, cases), brain, adjacent=adjacent)
    around = surrounding_patches(cases, train.slice, train.row, train.col, size=28)
    bases = {
        "intensity_p95": intensity_baseline(patches),
        "intensity_spots": spots,
        "intensity_spots_context": in_context(spots, around),
    }
    assert fusion["base"] in bases
    labels = train.label.to_numpy()
    best = max(
        (detection_metrics(labels, fuse_by_rank(base, train[p].to_numpy(), w))["auroc"], b, p, w)
        for b, base in bases.items()
        for p in ("recon_error", "kl", "neg_elbo", "feature_mahalanobis")
        for w in FUSION_WEIGHTS
    )
    assert fusion["training_auroc"] >= best[0] - 1e-12


def test_the_label_free_fusion_uses_no_label(trained_run: Path, two_case_store: Path) -> None:
    """fused_label_free: the count in context's and the model's own score's percentile
    ranks averaged with equal weights (the intensity baseline's where the patches' places
    are unknown); the patches' labels change nothing."""
    from patchvae.stages.embedding import embed_store
    from patchvae.stages.patch_scores import own_score, patch_scores

    assert (own_score("dae"), own_score("mlp"), own_score("conv")) == (
        "residual_p95",
        "neg_elbo",
        "neg_elbo",
    )
    assert own_score("conv", classifier=True) == "p_lesion"  # what lesion-20-labels names
    embedding = embed_store(trained_run, two_case_store)
    store = PatchStore(two_case_store)
    patches, brain = store.patches(), store.masks("brain")
    mu = embedding[[c for c in embedding.columns if c.startswith("mu_")]].to_numpy()
    scores = patch_scores(embedding, mu, None, patches, brain, "neg_elbo")
    base, own = scores["intensity_spots_context"], embedding.neg_elbo.to_numpy()
    # by hand: each score's rank (1 = lowest, ties share their mean rank) over the number
    # of patches, averaged
    by_hand = (pd.Series(base).rank() + pd.Series(own).rank()).to_numpy() / (2 * len(base))
    np.testing.assert_allclose(scores["fused_label_free"], by_hand)
    relabelled = embedding.assign(label=1 - embedding.label, lesion_fraction=0.0)
    again = patch_scores(relabelled, mu, None, patches, brain, "neg_elbo")
    np.testing.assert_array_equal(again["fused_label_free"], scores["fused_label_free"])
    assert "fused_label_free" not in patch_scores(embedding, mu, None, patches, brain)
    # patches whose places are unknown: the intensity baseline instead
    unplaced = embedding.drop(columns=["slice", "row", "col"])
    plain = patch_scores(unplaced, mu, None, patches, brain, "neg_elbo")
    assert "intensity_spots_context" not in plain
    by_hand = (pd.Series(plain["intensity_p95"]).rank() + pd.Series(own).rank()).to_numpy()
    np.testing.assert_allclose(plain["fused_label_free"], by_hand / (2 * len(own)))


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("lesion-*.yaml")))
def test_recipes_are_accepted_as_they_are(
    recipe: str, two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    run = tmp_path / "run"
    code, _, err = cli(
        [
            "train", "--patches", str(two_case_store), "--config", str(RECIPES / recipe),
            "--val-cases", "2", "--seed", "3", "--epochs", "1", "--quiet", "--out", str(run),
        ]
    )  # fmt: skip
    assert code == 0, err
    settings = json.loads((run / "training.json").read_text())["settings"]
    assert settings["train"]["seed"] == 3 and Path(settings["patches"]) == two_case_store.resolve()


@needs_cxx
def test_train_compile_flag(two_case_store: Path, tmp_path: Path, cli: Cli) -> None:
    """`train --compile step` reaches the settings, and the record says the whole step ran
    compiled."""
    run = tmp_path / "run"
    code, _, err = cli(
        [
            "train", "--patches", str(two_case_store), "--val-cases", "2", "--epochs", "1",
            "--compile", "step", "--quiet", "--out", str(run),
        ]
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((run / "training.json").read_text())
    assert record["settings"]["train"]["compile"] == "step"
    # on CUDA the compiled step is replayed as a CUDA graph, and the record says so
    graphs = " (CUDA graphs)" if record["provenance"]["device"].startswith("cuda") else ""
    assert record["provenance"]["compiled"] == "step" + graphs


def test_the_fusion_takes_no_partner_where_none_helps_on_the_training_patches() -> None:
    from patchvae.stages.analysis import _fusion, _TrainingSide

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    training = {
        "intensity_p95": labels + rng.normal(0, 0.1, 100),  # separates the training patches
        "intensity_spots": rng.normal(0, 1, 100),
        "recon_error": rng.normal(0, 1, 100),  # noise: fusing it in only costs
        "kl": np.zeros(100),  # constant (a DAE's): never a partner
    }
    held = {name: rng.normal(0, 1, 30) for name in training}
    side = _TrainingSide(training, labels, np.zeros(0), np.zeros(0))
    fusion = _fusion(side, held)
    assert (fusion["base"], fusion["partner"], fusion["baseline_weight"]) == (
        "intensity_p95",
        None,
        1.0,
    )
    np.testing.assert_array_equal(np.argsort(held["fused"]), np.argsort(held["intensity_p95"]))
    # a partner that carries what the base lacks is taken
    training["recon_error"] = labels * 0.5 + rng.normal(0, 0.1, 100)
    training["intensity_p95"] = labels * 0.5 + rng.normal(0, 0.2, 100)
    fusion = _fusion(_TrainingSide(training, labels, np.zeros(0), np.zeros(0)), held)
    assert fusion["partner"] == "recon_error" and fusion["baseline_weight"] < 1.0
