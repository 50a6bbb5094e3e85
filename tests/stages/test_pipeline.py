"""train, embed, analyze and report on patch stores, end to end on small real data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from patchvae.checkpoint import load_model
from patchvae.embed import encode
from patchvae.stages.embedding import embed_store
from patchvae.store import PatchStore
from patchvae.tables import read_embedding
from tests.conftest import Cli


def test_train_records_a_case_split(trained_run: Path, two_case_store: Path) -> None:
    record = json.loads((trained_run / "training.json").read_text())
    assert record["split"]["train_cases"] == ["1"] and record["split"]["val_cases"] == ["2"]
    table = PatchStore(two_case_store).table()
    assert record["split"]["n_train"] == int((table.case_id == "1").sum())
    assert len(record["history"]) == 3 and "val_loss" in record["history"][0]
    assert (trained_run / "settings.yaml").is_file()
    assert not (trained_run / "loss.png").exists()  # the report draws it


def test_embed_aligns_row_by_row_with_the_store(
    trained_run: Path, two_case_store: Path, cli: Cli
) -> None:
    out = trained_run / "emb.csv"
    code, stdout, err = cli(
        ["embed", str(trained_run), "--patches", str(two_case_store), "--out", str(out)],
    )
    assert code == 0, err
    frame = pd.read_csv(out, dtype={"case_id": str})
    store = PatchStore(two_case_store)
    table = store.table()
    assert len(frame) == store.n_patches
    for column in ("case_id", "slice", "row", "col", "label"):
        assert frame[column].tolist() == table[column].tolist()
    mu = encode(load_model(trained_run / "checkpoint.pt"), torch.from_numpy(store.patches())).mu
    np.testing.assert_allclose(frame[["mu_0", "mu_1"]].to_numpy(), mu, rtol=1e-5, atol=1e-5)
    assert frame.seen_in_training.tolist() == (table.case_id == "1").tolist()
    np.testing.assert_allclose(frame.neg_elbo, frame.recon_error + frame.kl, rtol=1e-5)
    assert "not seen in training" in stdout


def test_analyze_and_report(trained_run: Path, two_case_store: Path, cli: Cli) -> None:
    code, _, err = cli(["analyze", str(trained_run), "--patches", str(two_case_store)])
    assert code == 0, err
    folder = trained_run / f"analysis-{two_case_store.stem}"
    result = json.loads((folder / "analysis.json").read_text())
    assert (
        result["cases"] == ["2"]
        and result["evaluation_set"] == "patches the model never trained on"
    )
    scores = result["patch_scores"]
    assert set(scores) == {
        "recon_error",
        "kl",
        "neg_elbo",
        "residual_p95",
        "latent_nll",
        "latent_mahalanobis",
        "feature_mahalanobis",
        "intensity_p95",
        "intensity_histeq",
        "intensity_spots",
        "intensity_spots_context",
        "fused",
        "fused_label_free",
    }
    assert scores["intensity_p95"]["kind"] == "baseline"
    # the analysis' AUROC is the plain one of the embedding's scores on the held-out patches
    from sklearn.metrics import roc_auc_score

    frame = embed_store(trained_run, two_case_store)
    held = frame[~frame.seen_in_training]
    for name in ("recon_error", "kl", "neg_elbo"):
        expected = roc_auc_score(held.label, held[name])
        assert scores[name]["auroc"] == pytest.approx(expected, abs=1e-12), name
    assert set(result["clustering"]) == {"kmeans", "gmm", "kmeans10_majority_named"}
    assert result["few_labels"]["latent"]["5"]["draws"] > 0
    # cluster-then-label is scored on the logistic regression's draws of labelled patches
    groups = result["few_labels"]["latent groups (cluster-then-label)"]
    assert all(groups[k]["draws"] == result["few_labels"]["latent"][k]["draws"] for k in groups)
    # analyze wrote the run's embedding of the store and read the analysis from it
    embedded, info = read_embedding(trained_run / f"embedding-{two_case_store.stem}.parquet")
    pd.testing.assert_frame_equal(embedded, frame)
    assert info.checkpoint.sha256 == result["checkpoint"]["sha256"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "analysis.json",
        "figure-data.npz",
        "maps",
        "patch-scores.parquet",
    ]
    # the held-out case's maps lie on the grid of the file it was extracted from
    import nibabel as nib

    table = pd.read_parquet(folder / "patch-scores.parquet")
    assert len(table) == len(held) and set(scores) <= set(table.columns)
    source = next(iter(info_of_case(two_case_store, "2")["sources"].values()))["path"]
    for name in scores:
        written = nib.load(folder / result["maps"]["2"][name])
        assert (written.affine == nib.load(source).affine).all()
        assert written.shape == nib.load(source).shape
    code, _, err = cli(["report", str(trained_run)])
    assert code == 0, err
    for name in (
        "latent_lesion.png",
        "latent_lesion_fraction.png",
        "heatmaps.png",
        "few_labels.png",
    ):
        assert (folder / name).stat().st_size > 5000
    assert (trained_run / "loss.png").stat().st_size > 5000
    page = (trained_run / "report.html").read_text()
    assert not re.search(
        r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.IGNORECASE
    )  # no external URL
    # every resource is inline; the one link is the analysis's latent explorer beside it
    assert not re.search(r"""(src|href)=["'](?!data:|analysis-[\w.-]+/explorer\.html)""", page)
    assert page.count("<img") >= 5 and "intensity_p95" in page and "patchvae analyze" in page
    # it interprets: a verdict per score against the baseline, with its bootstrap interval
    result = json.loads((folder / "analysis.json").read_text())
    recon = result["patch_scores"]["recon_error"]
    low, high = recon["intervals"]["by_patch"]["auroc"]
    assert low < recon["auroc"] < high
    assert (
        re.search(
            r"reconstruction error (beats|is worse than|cannot be told apart from|INVERTED)"
            r"[^<]*the intensity baseline: AUROC "
            + f"{recon['auroc']:.3f} \\(95 % CI {low:.3f} to {high:.3f}\\)",
            page,
        )
        or recon["auroc"] < 0.5
    )
    assert "majority-class level" in page and "oracle Dice" in page
    assert "kmeans10_majority_named: each group named by the commoner label" in page
    assert str(trained_run.parent) not in page and str(two_case_store.parent) not in page


def test_train_refuses_a_store_that_does_not_fit(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    code, _, err = cli(
        [
            "train",
            "--patches",
            str(two_case_store),
            "--val-cases",
            "9",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert (
        code == 2 and "val_cases: ['9'] not in the store" in err and not (tmp_path / "r").exists()
    )
    old = tmp_path / "old.h5"
    shutil.copy(two_case_store, old)
    import h5py

    with h5py.File(old, "a") as handle:
        handle.attrs["format"] = "patchvae-patch-store/1"
    code, _, err = cli(["train", "--patches", str(old), "--out", str(tmp_path / "r")])
    assert code == 2 and "older format patchvae-patch-store/1" in err


def test_semi_supervised_label_budget(two_case_store: Path, tmp_path: Path, cli: Cli) -> None:
    run = tmp_path / "semi"
    args = [
        "train",
        "--patches",
        str(two_case_store),
        "--val-cases",
        "2",
        "--label-budget",
        "6",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        str(run),
    ]
    code, _, err = cli(args)
    assert code == 0, err
    record = json.loads((run / "training.json").read_text())
    assert record["labelled_training_patches"] == 6
    assert record["settings"]["model"]["classifier_classes"] == 2
    code, _, err = cli(
        ["embed", str(run), "--patches", str(two_case_store), "--out", str(run / "e.csv")],
    )
    assert code == 0, err
    frame = pd.read_csv(run / "e.csv")
    assert frame.p_lesion.between(0, 1).all()
    code, stdout, err = cli(["analyze", str(run), "--patches", str(two_case_store)])
    assert code == 0 and "p_lesion" in stdout and "(semi-supervised)" in stdout
    # its label-free fusion takes the score the run is read by: the classifier's
    held = pd.read_parquet(run / f"analysis-{two_case_store.stem}" / "patch-scores.parquet")
    by_hand = (held.intensity_spots_context.rank() + held.p_lesion.rank()) / (2 * len(held))
    np.testing.assert_allclose(held.fused_label_free, by_hand)


def test_semi_supervised_pooled_conv_classifier(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    run = tmp_path / "pooled"
    args = ["train", "--patches", str(two_case_store), "--val-cases", "2", "--label-budget", "4"]
    args += ["--architecture", "conv", "--latent-dim", "4", "--classifier-input", "pooled"]
    args += ["--classifier-weight", "7", "--epochs", "1", "--quiet", "--out", str(run)]
    code, _, err = cli(args)
    assert code == 0, err
    model = json.loads((run / "training.json").read_text())["settings"]["model"]
    assert (model["classifier_input"], model["classifier_weight"]) == ("pooled", 7.0)
    frame = embed_store(run, two_case_store)
    assert frame.p_lesion.between(0, 1).all() and frame.p_lesion.nunique() > 1
    bad = ["train", "--patches", str(two_case_store), "--label-budget", "4"]
    bad += ["--classifier-input", "pooled", "--out", str(tmp_path / "bad")]
    code, _, err = cli(bad)
    assert code == 2 and "needs architecture 'conv'" in err and not (tmp_path / "bad").exists()


def test_embed_to_parquet_as_in_the_readme(
    trained_run: Path, two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "embedding.parquet"
    args = ["embed", str(trained_run), "--patches", str(two_case_store), "--out", str(out)]
    code, _, err = cli(args)
    assert code == 0, err
    frame = pd.read_parquet(out)
    assert frame.equals(embed_store(trained_run, two_case_store))
    code, _, err = cli([*args, "--force"])  # recognised as an embedding table
    assert code == 0, err


def test_analyze_and_report_from_artefacts_alone(
    trained_run: Path, two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    """After ``embed``, the checkpoint is not needed: analyze reads the embeddings, the report
    draws from the records; the numbers are those of a run that still has its checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis-*", "embedding-*"))
    assert cli(["embed", str(run), "--patches", str(two_case_store)])[0] == 0
    (run / "checkpoint.pt").unlink()
    code, _, err = cli(["analyze", str(run), "--patches", str(two_case_store)])
    assert code == 0, err
    assert cli(["report", str(run)])[0] == 0
    assert (run / f"analysis-{two_case_store.stem}" / "heatmaps.png").stat().st_size > 5000
    with_model = tmp_path / "with-model"
    shutil.copytree(trained_run, with_model, ignore=shutil.ignore_patterns("analysis-*"))
    assert cli(["analyze", str(with_model), "--patches", str(two_case_store)])[0] == 0
    name = f"analysis-{two_case_store.stem}/analysis.json"
    alone, full = (json.loads((r / name).read_text()) for r in (run, with_model))
    assert alone["patch_scores"] == full["patch_scores"]
    assert alone["clustering"] == full["clustering"]
    # without the checkpoint and without an embedding, one line says what is missing
    other = tmp_path / "other.h5"
    shutil.copy(two_case_store, other)
    code, _, err = cli(["analyze", str(run), "--patches", str(other)])
    assert code == 2 and "checkpoint.pt: not found, and the run holds no embedding" in err
    assert len(err.strip().splitlines()) == 1


def info_of_case(store: Path, case_id: str) -> dict:
    from patchvae.store import PatchStore

    return next(c for c in PatchStore(store).cases if c["case_id"] == case_id)
