"""The command line end to end, on the bundled sample: outputs, errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import Cli

FIGURES = ("latent.png", "manifold.png", "reconstructions.png", "loss.png")


def test_mnist_end_to_end_on_bundled_sample(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli(
        [
            "mnist",
            "--sample",
            "--digits",
            "7",
            "9",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert code == 0, err
    assert "kmeans_accuracy=" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "kmeans_accuracy",
        "nmi",
        "ari",
        "silhouette",
        "logreg_accuracy",
        "test_loss",
        "epochs",
        "seed",
        "train_seconds",
    ):
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["n_train"] == 3000 and metrics["n_test"] == 500
    # the loss is the ELBO's two terms (beta 1), and after 2 epochs it beats predicting 0.5 for
    # every pixel (784 ln 2 = 543.4 nats), which an untrained network does not
    assert metrics["test_loss"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"])
    assert metrics["test_loss"] < 784 * np.log(2) - 100
    assert len(metrics["history"]) == 2 and "val_loss" in metrics["history"][0]
    # the report draws every figure from the records alone: the checkpoint is not needed
    assert not any((out / name).exists() for name in FIGURES)
    (out / "checkpoint.pt").rename(tmp_path / "checkpoint.pt")
    assert cli(["report", str(out)])[0] == 0
    for name in FIGURES:
        assert (out / name).stat().st_size > 5000
    (tmp_path / "checkpoint.pt").rename(out / "checkpoint.pt")
    settings = yaml.safe_load((out / "settings.yaml").read_text())
    assert settings["train"]["batch_size"] == 128 and settings["digits"] == [7, 9]

    # the settings file re-runs the same thing: same seed, same losses
    again = tmp_path / "again"
    code, _, err = cli(
        ["mnist", "--config", str(out / "settings.yaml"), "--quiet", "--out", str(again)],
    )
    assert code == 0, err
    assert (
        json.loads((again / "metrics.json").read_text())["history"][-1]["train_loss"]
        == metrics["history"][-1]["train_loss"]
    )

    # resume to more epochs continues the same run
    code, _, err = cli(
        [
            "mnist",
            "--config",
            str(out / "settings.yaml"),
            "--epochs",
            "3",
            "--resume",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert code == 0, err
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["epochs"] == 3
    assert resumed["history"][:2] == metrics["history"]


def test_latent_above_two_dims_is_projected(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "run"
    code, _, err = cli(
        ["mnist", "--sample", "--latent-dim", "5", "--epochs", "1", "--quiet", "--out", str(out)],
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "PCA" in metrics["projection"]["description"] and metrics["latent_dim"] == 5
    assert metrics["settings"]["preset"] is None  # no longer the keras2016 network


def test_demo_replaces_its_own_output(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "demo"
    for _ in range(2):
        code, _, err = cli(["demo", "--epochs", "1", "--quiet", "--out", str(out)])
        assert code == 0, err
        assert (out / "mnist" / "metrics.json").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, err = cli(["demo", "--epochs", "1", "--out", str(other)])
    assert code == 2 and "holds no earlier demo" in err
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-dir", "{tmp}/absent"], "MNIST data folder not found"),
        (["--data-dir", "{notidx}"], "not an IDX file"),
        (["--sample", "--digits", "7", "10"], "digits must lie in 0-9"),
        (["--sample", "--digits", "7"], "at least two different digits"),
        (["--sample", "--epochs", "0"], "train.epochs: Input should be greater than 0"),
        (["--sample", "--batch-size", "-5"], "train.batch_size: Input should be greater than 0"),
        (["--sample", "--latent-dim", "0"], "model.latent_dim"),
        (["--sample", "--preset", "nope"], "unknown preset 'nope'"),
        (["--sample", "--lr", "0"], "train.learning_rate"),
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(
    tmp_path: Path, cli: Cli, args: list[str], message: str
) -> None:
    notidx = tmp_path / "notidx"
    notidx.mkdir()
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (notidx / stem).write_text("this is not an IDX file\n")
    args = [a.format(tmp=tmp_path, notidx=notidx) for a in args]
    out = tmp_path / "run"
    code, _, err = cli(["mnist", *args, "--quiet", "--out", str(out)])
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_output_folder_holding_another_run(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "run"
    assert cli(["mnist", "--sample", "--epochs", "1", "--quiet", "--out", str(out)])[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli(
        ["mnist", "--sample", "--epochs", "2", "--quiet", "--out", str(out)],
    )
    assert code == 2 and "holds another run" in err
    code, _, err = cli(
        [
            "mnist",
            "--sample",
            "--epochs",
            "2",
            "--seed",
            "9",
            "--resume",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert code == 2 and "cannot resume with other settings (train.seed 0 -> 9)" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_run_made_before_a_setting_existed_resumes(tmp_path: Path, cli: Cli) -> None:
    """A setting added since a run was made reads as its default (what the run did), so the
    run resumes; a real change is still refused."""
    import torch

    out = tmp_path / "run"
    assert cli(["mnist", "--sample", "--epochs", "1", "--quiet", "--out", str(out)])[0] == 0
    saved = yaml.safe_load((out / "settings.yaml").read_text())
    del saved["train"]["compile"], saved["self_training"]  # as an older version wrote it
    (out / "settings.yaml").write_text(yaml.safe_dump(saved))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    del checkpoint["train_config"]["compile"]  # the checkpoint records its settings too
    torch.save(checkpoint, out / "checkpoint.pt")
    args = ["mnist", "--sample", "--epochs", "2", "--quiet", "--resume", "--out", str(out)]
    code, _, err = cli(args)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    code, _, err = cli([*args, "--seed", "9"])
    assert code == 2 and "(train.seed 0 -> 9)" in err


def test_console_script_prints_no_traceback_and_debug_does(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "patchvae",
        "mnist",
        "--data-dir",
        str(tmp_path / "x"),
        "--out",
        str(tmp_path / "r"),
    ]
    plain = subprocess.run(cmd, capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stderr.strip() == f"patchvae: error: {tmp_path / 'x'}: MNIST data folder not found"
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_conv_beta_warmup_options_reach_the_settings(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "run"
    args = [
        "mnist",
        "--sample",
        "--architecture",
        "conv",
        "--conv-channels",
        "8",
        "--latent-dim",
        "4",
        "--beta",
        "2",
        "--kl-warmup",
        "1",
        "--optimizer",
        "adam",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    code, _, err = cli(args)
    assert code == 0, err
    settings = yaml.safe_load((out / "settings.yaml").read_text())
    assert settings["model"]["architecture"] == "conv" and settings["model"]["conv_channels"] == [8]
    assert settings["model"]["beta"] == 2.0 and settings["train"]["kl_warmup_epochs"] == 1
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["beta"] == 2.0  # reached the full weight at the end of the warm-up epoch


def test_version_and_short_help(cli: Cli) -> None:
    from importlib import metadata

    code, out, _ = cli(["--version"])
    assert code == 0 and out.startswith(f"patchvae {metadata.version('patchvae')} (python ")
    code, out, _ = cli(["train", "-h"])
    assert code == 0 and "--patches" in out and "--val-cases" in out


def test_val_cases_take_several_values_as_the_readme_writes(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    args = ["train", "--patches", str(two_case_store), "--val-cases", "1", "2"]
    code, _, err = cli([*args, "--out", str(tmp_path / "r")])
    assert code == 2 and "val_cases: every case is held out" in err  # both were read


def test_ten_digits_with_a_mixture_prior_end_to_end(tmp_path: Path, cli: Cli) -> None:
    """All ten digits of the bundled sample, a mixture prior with more components than
    digits: pretrained under N(0, I), fitted, refitted; its clusters are majority-named."""
    settings = tmp_path / "clusters.yaml"
    settings.write_text(
        "preset: null\n"
        "model: {hidden_dims: [64], latent_dim: 6, prior: gmm, n_clusters: 12}\n"
        "train: {optimizer: adam, batch_size: 128, epochs: 5, gmm_init_epochs: 3,\n"
        "        gmm_pretrain_prior: gaussian, gmm_refit_every: 1}\n"
    )
    digits = [str(d) for d in range(10)]
    out = tmp_path / "run"
    code, _, err = cli(
        ["mnist", "--sample", "--config", str(settings), "--digits", *digits, "--out", str(out)]
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["digits"] == list(range(10)) and metrics["n_test"] == 900
    assert metrics["prior_cluster_matching"] == "majority"
    # the mixture was fitted after epoch 3 and again after epochs 4 and 5
    fitted = [("prior_init_bic" in h) for h in metrics["history"]]
    assert fitted == [False, False, True, True, True]
    # above calling every image the commonest digit (7 or 9: 250 of the 900 test images)
    assert metrics["prior_cluster_accuracy"] > 250 / 900 + 0.1


@pytest.mark.usefixtures("stand_in_umap")
def test_self_training_reads_the_umap_views_clusters_off_the_images(
    tmp_path: Path, cli: Cli
) -> None:
    """--umap --self-training: the mixture's clusters of the UMAP view are learnt again
    from the images and scored; metrics.json and the printed summary carry them. A
    stand-in for umap-learn (the latent's first two dimensions) keeps the test about
    patchvae's part."""
    out = tmp_path / "run"
    args = ["mnist", "--sample", "--epochs", "2", "--umap", "--self-training", "--out", str(out)]
    code, printed, err = cli(args)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["self_training"] is True
    # the classifier, out of fold, puts most training images in the cluster it was taught
    assert metrics["self_training_agreement"] > 0.8
    assert {"self_training_nmi", "self_training_train_accuracy"} <= set(metrics)
    assert f"self_training_accuracy={metrics['self_training_accuracy']:.4g}" in printed
    code, _, err = cli(["report", str(out)])  # the run's page lists it too
    assert code == 0, err
    assert "self_training_accuracy" in (out / "report.html").read_text()


def test_self_training_without_umap_is_refused(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli(["mnist", "--sample", "--self-training", "--out", str(tmp_path / "r")])
    assert code == 2 and "set umap: true too" in err
    assert not (tmp_path / "r").exists()
