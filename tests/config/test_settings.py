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


def test_weak_labels_train_no_classifier_and_refuse_one() -> None:
    weak = PatchTrainConfig(patches="s.h5", weak_labels=20)
    assert weak.model.classifier_classes == 0 and weak.label_budget is None
    with pytest.raises(ValueError, match="weak_labels and label_budget"):
        PatchTrainConfig(patches="s.h5", weak_labels=20, label_budget=20)
    with pytest.raises(ValueError, match="weak_labels: for a model without a classifier"):
        PatchTrainConfig(patches="s.h5", weak_labels=20, model=VAEConfig(classifier_classes=2))


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


def test_each_setting_belongs_to_the_network_that_honours_it(tmp_path: Path) -> None:
    """A setting one kind of network does not have is refused, not saved and ignored; the
    defaults of each kind appear only in that kind; 0.1 settings files (which saved every
    kind's defaults) still load."""
    from pydantic import ValidationError

    from patchvae.config import MnistStudyConfig, load_yaml_config
    from patchvae.config.model import VAEConfig
    from patchvae.config.presets import build_settings

    assert VAEConfig().conv_channels is None and VAEConfig().n_clusters is None
    assert VAEConfig(architecture="conv").conv_channels == [32, 64]
    assert VAEConfig(prior="gmm").n_clusters == 2
    with pytest.raises(ValidationError, match="a mlp network has no convolutions"):
        VAEConfig(conv_channels=[8])
    with pytest.raises(ValidationError, match="only a mixture prior"):
        VAEConfig(n_clusters=3)
    gmm = build_settings(MnistStudyConfig, None, "keras2016", {"model": {"prior": "gmm"}})
    assert gmm.model.n_clusters == 2
    # a conv run's settings file, switched back to mlp, drops what only conv had
    conv = build_settings(MnistStudyConfig, None, None, {"model": {"architecture": "conv"}})
    mlp = build_settings(MnistStudyConfig, conv, None, {"model": {"architecture": "mlp"}})
    assert mlp.model.conv_channels is None and mlp.model.init == "glorot_uniform"
    # as patchvae 0.1 wrote settings.yaml: every kind's defaults
    import yaml

    old = MnistStudyConfig().model_dump(mode="json")
    old["model"].update(conv_channels=[32, 64], n_clusters=2)
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(old))
    assert load_yaml_config(MnistStudyConfig, path) == MnistStudyConfig()


def test_mixture_pretraining_and_refits_need_a_first_fit() -> None:
    from pydantic import ValidationError

    from patchvae.config import TrainConfig

    for bad in (
        {"gmm_pretrain_prior": "gaussian"},
        {"gmm_refit_every": 5},
        {"gmm_cluster_weight": 1},
    ):
        with pytest.raises(ValidationError, match="need gmm_init_epochs > 0"):
            TrainConfig(**bad)
    fine = TrainConfig(gmm_init_epochs=3, gmm_pretrain_prior="gaussian", gmm_refit_every=5)
    assert fine.gmm_init == "latent" and fine.gmm_init_restarts == 3
