"""Settings: the one preset + overrides builder, and rules that live in validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchvae.config import MnistStudyConfig, PatchTrainConfig, load_yaml_config
from patchvae.config.compare import CompareConfig
from patchvae.config.model import VAEConfig
from patchvae.config.presets import build_settings, get_preset


def test_label_budget_brings_its_classifier_from_python_too() -> None:
    assert PatchTrainConfig(patches="s.h5", label_budget=20).model.classifier_classes == 2
    given = PatchTrainConfig(patches="s.h5", model=VAEConfig(latent_dim=4), label_budget=5)
    assert given.model.classifier_classes == 2 and given.model.latent_dim == 4
    assert PatchTrainConfig(patches="s.h5").model.classifier_classes == 0
    assert (
        build_settings(
            PatchTrainConfig, None, None, {}, {"patches": "s.h5", "label_budget": 3}
        ).model.classifier_classes
        == 2
    )


def test_builder_keeps_the_preset_only_for_its_own_network() -> None:
    model, train = get_preset("keras2016")
    same = build_settings(MnistStudyConfig, None, None, {"train": {"epochs": 3, "seed": None}})
    assert same.preset == "keras2016" and same.model == model and same.train.epochs == 3
    assert same.train.seed == train.seed  # None means "not given"
    shape_only = build_settings(
        MnistStudyConfig, None, None, {"model": {"input_shape": (1, 28, 28)}}
    )
    assert shape_only.preset == "keras2016"
    other = build_settings(MnistStudyConfig, None, None, {"model": {"latent_dim": 8}})
    assert other.preset is None and other.model.latent_dim == 8
    again = build_settings(MnistStudyConfig, other, None, {"train": {"epochs": 7}})
    assert again.model.latent_dim == 8 and again.train.epochs == 7 and again.preset is None


def test_paths_in_a_settings_file_are_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "grids"
    folder.mkdir()
    (folder / "g.yaml").write_text("dataset: patches\npatches: ../stores/s.h5\nseeds: [0]\n")
    (folder / "a.yaml").write_text(f"dataset: patches\npatches: {tmp_path}/x.h5\n")
    monkeypatch.chdir(tmp_path / "grids")  # anywhere: the file's folder decides
    grid = load_yaml_config(CompareConfig, tmp_path / "grids" / "g.yaml")
    assert Path(grid.patches or "").resolve() == tmp_path / "stores" / "s.h5"
    assert load_yaml_config(CompareConfig, folder / "a.yaml").patches == f"{tmp_path}/x.h5"
