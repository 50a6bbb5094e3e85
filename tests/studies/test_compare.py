"""`patchvae compare` on tiny grids: its table has every row, mean and sd, and baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from patchvae.config import ExtractConfig
from patchvae.data.volumes import bundled_isles22_dir
from patchvae.extract import extract_dataset
from patchvae.studies.compare import BASELINE_ROW
from tests.conftest import Cli


def _grid(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_compare_mnist_tiny_grid(tmp_path: Path, cli: Cli) -> None:
    grid = _grid(
        tmp_path,
        {
            "dataset": "mnist",
            "seeds": [0, 1],
            "models": [
                {
                    "name": "conv-l4",
                    "model": {"architecture": "conv", "latent_dim": 4, "conv_channels": [4]},
                    "train": {"optimizer": "adam", "epochs": 1},
                },
                {"name": "keras2016", "train": {"epochs": 1}},
            ],
        },
    )
    out = tmp_path / "cmp"
    code, stdout, err = cli(["compare", "--config", str(grid), "--out", str(out)])
    assert code == 0, err
    table = pd.read_csv(out / "comparison.csv")
    assert table.model.tolist() == ["conv-l4", "keras2016", "pixels (k-means, no training)"]
    assert (table.seeds == 2).all()
    for column in (
        "kmeans_accuracy_mean",
        "kmeans_accuracy_sd",
        "nmi_mean",
        "ari_mean",
        "train_seconds_mean",
    ):
        assert column in table.columns
    assert table.set_index("model").loc["keras2016", "parameters"] == 404_244
    assert (out / "comparison.png").stat().st_size > 3000
    assert "| keras2016 | 2 | 404,244 |" in (out / "comparison.md").read_text()
    # a second run reuses the finished runs
    code, stdout, _ = cli(["compare", "--config", str(grid), "--out", str(out)])
    assert code == 0 and stdout.count("done before, reused") == 4
    # ... but not when the grid now asks for other settings under the same name
    changed = yaml.safe_load(grid.read_text())
    changed["models"][0]["model"]["latent_dim"] = 5
    grid.write_text(yaml.safe_dump(changed))
    before = (out / "comparison.csv").read_bytes()
    code, _, err = cli(["compare", "--config", str(grid), "--out", str(out)])
    assert code == 2 and "conv-l4/seed-0: holds a finished run with other settings (model)" in err
    assert (out / "comparison.csv").read_bytes() == before


@pytest.mark.usefixtures("stand_in_umap")
def test_an_mnist_grid_is_analysed_again_with_new_read_offs(tmp_path: Path, cli: Cli) -> None:
    """--reanalyse on an MNIST grid: finished runs keep their training and take the grid's
    analysis settings (here UMAP and self-training, added after the runs were made); a
    change to the training settings is still refused. UMAP: the conftest's stand-in."""
    entry = {"name": "mlp", "model": {"latent_dim": 4}, "train": {"epochs": 1}}
    grid_values = {"dataset": "mnist", "seeds": [0], "reference": False, "models": [entry]}
    grid = _grid(tmp_path, grid_values)
    out = tmp_path / "cmp"
    code, _, err = cli(["compare", "--config", str(grid), "--out", str(out)])
    assert code == 0, err
    run = out / "mlp" / "seed-0"
    trained = (run / "checkpoint.pt").read_bytes(), (run / "history.csv").read_bytes()
    assert "self_training_accuracy" not in json.loads((run / "metrics.json").read_text())
    grid = _grid(
        tmp_path, {**grid_values, "models": [{**entry, "umap": True, "self_training": True}]}
    )
    code, stdout, err = cli(["compare", "--config", str(grid), "--out", str(out)])
    assert code == 2 and "other settings (self_training, umap)" in err  # not reused silently
    code, stdout, err = cli(["compare", "--config", str(grid), "--out", str(out), "--reanalyse"])
    assert code == 0, err
    assert "analysed again" in stdout
    assert trained == ((run / "checkpoint.pt").read_bytes(), (run / "history.csv").read_bytes())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["settings"]["self_training"] and metrics["epochs"] == 1
    row = json.loads((run / "compare-row.json").read_text())
    assert row["self_training_accuracy"] == metrics["self_training_accuracy"]
    assert "self_training_accuracy_mean" in pd.read_csv(out / "comparison.csv").columns
    assert yaml.safe_load((run / "settings.yaml").read_text())["self_training"] is True
    entry["train"] = {"epochs": 2}
    grid = _grid(tmp_path, {**grid_values, "models": [entry]})
    code, _, err = cli(["compare", "--config", str(grid), "--out", str(out), "--reanalyse"])
    assert code == 2 and "other settings (train)" in err


def test_compare_adds_keras2016_and_scores_patches(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "isles.h5"
    extract_dataset(ExtractConfig(root=str(bundled_isles22_dir())), store)
    monkeypatch.chdir(tmp_path)
    grid = _grid(
        tmp_path,
        {
            "dataset": "patches",
            "patches": "isles.h5",  # relative, as in docs/grids
            "seeds": [3],
            "models": [{"name": "mlp-l4", "model": {"latent_dim": 4}, "train": {"epochs": 1}}],
        },
    )
    # the automatic keras2016 row trains for the preset's 50 epochs: cheap on 147 patches
    code, _, err = cli(
        ["compare", "--config", str(grid), "--out", str(tmp_path / "cmp")],
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv").set_index("model")
    assert list(table.index) == ["keras2016", "mlp-l4", BASELINE_ROW["patches"]]
    for column in (
        "auroc_neg_elbo_mean",
        "auroc_intensity_p95_mean",
        "few_label_auroc_k20_mean",
        "gmm_nmi_mean",
    ):
        assert column in table.columns
    for score in ("intensity_p95", "intensity_spots"):  # each with its interval
        for column in (f"auroc_{score}_mean", f"ci_low_{score}_mean"):
            baseline = table.loc[BASELINE_ROW["patches"], column]
            assert baseline == pytest.approx(table.loc["keras2016", column]), column
    # the baseline row's few-label figure is the analysis' own, for the intensity score alone
    analysis = json.loads(
        (tmp_path / "cmp" / "keras2016" / "seed-3" / "analysis-isles" / "analysis.json").read_text()
    )
    few = analysis["few_labels"]["intensity_p95"]["20"]["mean"]
    assert table.loc[BASELINE_ROW["patches"], "few_label_auroc_k20_mean"] == pytest.approx(few)
    # run again: both runs are recognised as finished (their settings record the store's
    # absolute path, the grid a relative one) and reused
    code, out, err = cli(["compare", "--config", str(grid), "--out", "cmp"])
    assert code == 0, err
    assert out.count("done before, reused") == 2
    own = yaml.safe_load((tmp_path / "cmp" / "mlp-l4" / "seed-3" / "settings.yaml").read_text())
    assert own["train"]["epochs"] == 1  # the entry's own epochs when none are given
    # --reanalyse: finished runs are analysed again (a stale row is replaced), not trained
    run = tmp_path / "cmp" / "mlp-l4" / "seed-3"
    row_file = run / "compare-row.json"
    stale = {**json.loads(row_file.read_text()), "auroc_neg_elbo": 99.0, "wall_seconds": 1234.0}
    row_file.write_text(json.dumps(stale))
    trained = (run / "checkpoint.pt").stat().st_mtime_ns, (run / "training.json").read_bytes()
    code, out, err = cli(["compare", "--config", str(grid), "--out", "cmp", "--reanalyse"])
    assert code == 0, err
    assert out.count("analysed again") == 2 and "reused" not in out
    assert trained == (
        (run / "checkpoint.pt").stat().st_mtime_ns,
        (run / "training.json").read_bytes(),
    )
    row = json.loads(row_file.read_text())
    analysed = json.loads((run / "analysis-isles" / "analysis.json").read_text())
    assert row["auroc_neg_elbo"] == analysed["patch_scores"]["neg_elbo"]["auroc"] != 99.0
    assert row["wall_seconds"] == 1234.0  # the run's own time stays
    # seeds and epochs from the command line, the grid untouched
    args = ["compare", "--config", str(grid), "--out", "quick", "--seeds", "8", "9"]
    code, _, err = cli([*args, "--epochs", "1"])
    assert code == 0, err
    assert (pd.read_csv(tmp_path / "quick" / "comparison.csv").seeds == 2).all()
    for name in ("keras2016", "mlp-l4"):
        for seed in (8, 9):
            saved = yaml.safe_load(
                (tmp_path / "quick" / name / f"seed-{seed}" / "settings.yaml").read_text()
            )
            assert saved["train"]["epochs"] == 1 and saved["train"]["seed"] == seed


def test_compare_bad_grid(tmp_path: Path, cli: Cli) -> None:
    grid = _grid(tmp_path, {"dataset": "cifar", "seeds": []})
    code, _, err = cli(["compare", "--config", str(grid), "--out", str(tmp_path / "c")])
    assert code == 2 and "dataset" in err and "seeds" in err and len(err.strip().splitlines()) == 1


def test_summary_skips_missing_figures() -> None:
    from patchvae.studies.compare import _summarise

    rows = {
        "a": [{"auroc": 0.5, "few": float("nan")}, {"auroc": 0.7, "few": 0.9}],
        "b": [{"auroc": float("nan")}, {"auroc": float("nan")}],
    }
    table = _summarise(rows, {"a": 10}).set_index("model")
    assert table.loc["a", "auroc_mean"] == pytest.approx(0.6)
    assert table.loc["a", "few_mean"] == pytest.approx(0.9) and table.loc["a", "few_sd"] == 0.0
    assert np.isnan(table.loc["b", "auroc_mean"])  # no figure at all: left empty, no crash


def test_a_grid_entry_takes_a_recipe_as_it_is(two_case_store: Path, tmp_path: Path) -> None:
    """A grid names a recipe file relative to itself; the run's settings are the recipe's
    with the grid's store, split and seed."""
    from patchvae.config import PatchTrainConfig, load_yaml_config
    from patchvae.config.compare import CompareConfig
    from patchvae.studies.compare import _study_settings

    recipes = Path(__file__).resolve().parents[2] / "docs" / "recipes"
    recipe = recipes / "lesion-dae.yaml"
    grid = CompareConfig(
        dataset="patches",
        patches=str(two_case_store),
        val_cases=["2"],
        models=[{"name": "dae", "recipe": str(recipe)}],
    )
    settings = _study_settings(grid, grid.models[0], seed=4)
    assert isinstance(settings, PatchTrainConfig)
    expected = load_yaml_config(PatchTrainConfig, recipe, {"patches": str(two_case_store)})
    assert settings.model == expected.model and settings.model.architecture == "dae"
    assert settings.train.trim_fraction == expected.train.trim_fraction == 0.2
    assert settings.train.seed == 4 and settings.val_cases == ["2"]
    assert settings.val_fold is None  # a grid's fold reaches its runs (slab cross-validation)
    folded = grid.model_copy(update={"val_cases": None, "val_fold": 3})
    assert _study_settings(folded, folded.models[0], seed=4).val_fold == 3  # type: ignore[union-attr]


def test_an_mnist_grid_takes_the_clusters_recipe_and_may_drop_the_reference() -> None:
    """The MNIST recipe reaches a grid's runs as it is (digits and seed from the grid), and
    ``reference: false`` leaves out the keras2016 row, which is otherwise added."""
    from patchvae.config import MnistStudyConfig, load_yaml_config
    from patchvae.config.compare import CompareConfig
    from patchvae.studies.compare import _entries, _study_settings

    recipe = Path(__file__).resolve().parents[2] / "docs" / "recipes" / "mnist-clusters.yaml"
    entry = {"name": "clusters", "recipe": str(recipe), "umap": True}
    grid = CompareConfig(dataset="mnist", digits=list(range(10)), models=[entry])
    assert [e.name for e in _entries(grid)] == ["keras2016", "clusters"]
    alone = grid.model_copy(update={"reference": False})
    assert [e.name for e in _entries(alone)] == ["clusters"]
    settings = _study_settings(grid, grid.models[0], seed=2)
    assert isinstance(settings, MnistStudyConfig)
    expected = load_yaml_config(MnistStudyConfig, recipe, {})
    assert settings.model == expected.model and settings.model.n_clusters == 10
    assert settings.train.gmm_init == "umap" and settings.train.gmm_refit_every == 10
    assert settings.train.seed == 2 and settings.digits == list(range(10)) and settings.umap


@pytest.mark.parametrize(
    "recipe",
    sorted(
        p.name
        for p in (Path(__file__).resolve().parents[2] / "docs" / "recipes").glob("mnist-*.yaml")
    ),
)
def test_mnist_recipes_are_accepted_as_they_are(recipe: str) -> None:
    """Each MNIST recipe is a whole study setting that `patchvae mnist --config` takes: a
    mixture prior pretrained under N(0, I), fitted through UMAP and refitted."""
    from patchvae.config import MnistStudyConfig, load_yaml_config

    path = Path(__file__).resolve().parents[2] / "docs" / "recipes" / recipe
    settings = load_yaml_config(MnistStudyConfig, path, {})
    # at least a component per digit: each is named afterwards (majority) where there are more
    assert settings.model.prior == "gmm" and settings.model.n_clusters >= 10
    assert settings.train.gmm_pretrain_prior == "gaussian"
    assert settings.train.gmm_init in ("umap", "umap_self_training")
    assert 0 < settings.train.gmm_init_epochs < settings.train.epochs
