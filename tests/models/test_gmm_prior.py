"""The VaDE-style mixture prior: its KL term, responsibilities, training and round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from patchvae.checkpoint import load_model
from patchvae.config import TrainConfig
from patchvae.models import VAEConfig, build_model
from patchvae.models.losses import gaussian_kl, gmm_prior_terms
from patchvae.train import fit
from tests.conftest import bar_images


def test_one_standard_component_is_the_gaussian_kl() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    z = mu + torch.randn(5, 3)
    reg, gamma = gmm_prior_terms(
        z, mu, logvar, torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3)
    )
    assert torch.allclose(gamma, torch.ones(5, 1))
    assert torch.allclose(reg, gaussian_kl(mu, logvar), atol=1e-6)


def test_responsibilities_pick_the_nearest_component() -> None:
    prior_mu = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
    z = torch.tensor([[-4.0, 0.0], [4.5, 1.0]])
    _, gamma = gmm_prior_terms(z, z, torch.zeros(2, 2), torch.zeros(2), prior_mu, torch.zeros(2, 2))
    assert gamma.argmax(dim=1).tolist() == [0, 1] and torch.allclose(
        gamma.sum(dim=1), torch.ones(2)
    )
    # a posterior equal to one component leaves only KL(one-hot gamma || uniform pi) = log 2
    reg, gamma = gmm_prior_terms(
        prior_mu, prior_mu, torch.zeros(2, 2), torch.zeros(2), prior_mu, torch.zeros(2, 2)
    )
    assert torch.allclose(reg, torch.full((2,), math.log(2)), atol=1e-4)


class TestModel:
    config = VAEConfig(
        input_shape=(1, 8, 8), hidden_dims=[32], latent_dim=2, prior="gmm", n_clusters=3
    )

    def test_forward_shapes_and_clusters(self) -> None:
        model = build_model(self.config)
        out = model(torch.rand(4, 1, 8, 8))
        assert out.kl.shape == (4,) and torch.isfinite(out.loss)
        probabilities = model.cluster_probabilities(torch.rand(4, 1, 8, 8))
        assert probabilities.shape == (4, 3) and torch.allclose(
            probabilities.sum(dim=1), torch.ones(4)
        )
        with pytest.raises(ValueError, match="prior='gmm'"):
            build_model(VAEConfig(input_shape=(1, 8, 8))).cluster_probabilities(
                torch.rand(1, 1, 8, 8)
            )

    def test_loss_falls_and_round_trip(self, tmp_path: Path) -> None:
        x = torch.zeros(12, 1, 8, 8)
        x[:6, :, :4] = 1.0  # two obvious groups
        x[6:, :, 4:] = 1.0
        ckpt = tmp_path / "c.pt"
        result = fit(
            self.config,
            TrainConfig(
                epochs=40, batch_size=12, optimizer="adam", learning_rate=3e-3, device="cpu"
            ),
            x,
            checkpoint_path=ckpt,
            progress=False,
        )
        losses = [h["train_loss"] for h in result.history]
        assert losses[-1] < 0.7 * losses[0]
        loaded = load_model(ckpt)
        assert torch.equal(loaded.prior_mu, result.model.prior_mu)
        assert torch.equal(loaded.cluster_probabilities(x), result.model.cluster_probabilities(x))


def test_gmm_initialisation_puts_the_prior_on_the_latent_groups() -> None:
    """VaDE's recipe: after a warm-up, the mixture prior starts from a GMM fitted to the
    training latent means, so each component sits on one group of samples."""
    x = torch.zeros(40, 1, 8, 8)
    x[:20, :, :4] = 1.0
    x[20:, :, 4:] = 1.0
    config = VAEConfig(
        input_shape=(1, 8, 8), hidden_dims=[32], latent_dim=2, prior="gmm", n_clusters=2
    )
    train = TrainConfig(epochs=3, batch_size=20, optimizer="adam", learning_rate=3e-3, device="cpu")
    fitted = fit(config, train.model_copy(update={"gmm_init_epochs": 3}), x, progress=False)
    plain = fit(config, train, x, progress=False)
    assert "prior_init_bic" in fitted.history[2] and "prior_init_bic" not in plain.history[2]
    model = fitted.model
    with torch.no_grad():
        mu = model.encode(x)[0]
        centres = torch.stack([mu[:20].mean(0), mu[20:].mean(0)])
        # each prior mean is the centre of one group, and the weights are a half each
        distance = torch.cdist(model.prior_mu, centres)
        assert torch.allclose(distance.min(dim=1).values, torch.zeros(2), atol=1e-3)
        assert torch.allclose(model.prior_logits.softmax(0), torch.full((2,), 0.5), atol=1e-3)
        clusters = model.cluster_probabilities(x).argmax(dim=1)
    assert clusters[:20].unique().numel() == 1 and clusters[20:].unique().numel() == 1
    assert clusters[0] != clusters[20]


def _two_groups(n: int = 40) -> torch.Tensor:
    x = torch.zeros(n, 1, 8, 8)
    x[: n // 2, :, :4] = 1.0
    x[n // 2 :, :, 4:] = 1.0
    return x


def test_pretraining_runs_under_the_standard_normal_until_the_mixture_is_fitted(
    tmp_path: Path,
) -> None:
    """gmm_pretrain_prior gaussian: a plain VAE until the fit, the mixture after; the switch
    is part of the checkpoint, and a run that stops before the fit says so when asked for
    clusters."""
    x = _two_groups()
    config = VAEConfig(
        input_shape=(1, 8, 8), hidden_dims=[32], latent_dim=2, prior="gmm", n_clusters=2
    )
    train = TrainConfig(
        epochs=2,
        batch_size=20,
        optimizer="adam",
        learning_rate=3e-3,
        device="cpu",
        gmm_init_epochs=2,
        gmm_pretrain_prior="gaussian",
    )
    early = fit(config, train.model_copy(update={"gmm_init_epochs": 5}), x, progress=False)
    model = early.model
    assert not model.mixture_ready
    with torch.no_grad():
        out = model(x, sample=False)
        assert torch.allclose(out.kl, gaussian_kl(out.mu, out.logvar))
    with pytest.raises(ValueError, match="never fitted"):
        model.cluster_probabilities(x)
    ckpt = tmp_path / "c.pt"
    done = fit(config, train, x, checkpoint_path=ckpt, progress=False).model
    assert done.mixture_ready and load_model(ckpt).mixture_ready
    clusters = done.cluster_probabilities(x).argmax(dim=1)
    assert clusters[:20].unique().numel() == 1 and clusters[0] != clusters[20]
    # the default keeps the first VaDE: the random mixture from the first step
    assert build_model(config).mixture_ready


def test_umap_initialisation_takes_each_component_from_its_groups_latent_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gmm_init umap: the components' weights, means and variances are those of the latent
    means of each group the GMM finds in the embedding (a stand-in embedding here, so the
    test checks patchvae's part, not umap-learn's)."""
    import sys
    import types

    from patchvae.train.aids import init_prior_from_gmm

    class Stretch:  # an "embedding" that keeps the means, stretched apart
        def __init__(self, **settings: object) -> None:
            self.settings = settings

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            return data[:, :2] * 10.0

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Stretch))
    config = VAEConfig(
        input_shape=(1, 8, 8), hidden_dims=[32], latent_dim=3, prior="gmm", n_clusters=2
    )
    torch.manual_seed(0)
    model = build_model(config)
    model.use_mixture(False)
    x = torch.cat([_two_groups(40), _two_groups(20)[:10]])  # 30 of one group, 20 of the other
    init_prior_from_gmm(model, x, batch_size=16, seed=0, method="umap", restarts=2)
    assert model.mixture_ready
    with torch.no_grad():
        mu = model.encode(x)[0].double()
    first = torch.zeros(50, dtype=torch.bool)
    first[:20], first[40:] = True, True
    groups = [mu[first], mu[~first]]
    expected_mu = torch.stack([g.mean(0) for g in groups])
    order = torch.cdist(model.prior_mu.double(), expected_mu).argmin(dim=1)
    assert sorted(order.tolist()) == [0, 1]
    assert torch.allclose(model.prior_mu.double(), expected_mu[order], atol=1e-4)
    weights = model.prior_logits.softmax(0).double()
    assert torch.allclose(weights, torch.tensor([30 / 50, 20 / 50]).double()[order], atol=1e-4)
    variance = torch.stack([g.var(0, unbiased=False) for g in groups])[order]
    floor = 1e-3 * mu.var(0, unbiased=False)
    assert torch.allclose(
        model.prior_logvar.exp().double(), torch.maximum(variance, floor), rtol=1e-3
    )


def test_umap_initialisation_embeds_in_no_more_dimensions_than_the_latent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """N2D embeds in as many dimensions as clusters; with more components than latent
    dimensions (30 components, 10-D latent) the embedding stops at the latent's."""
    import sys
    import types

    from patchvae.train.aids import init_prior_from_gmm

    asked: list[dict[str, object]] = []

    class Keep:  # a stand-in embedding: the latent means themselves
        def __init__(self, **settings: object) -> None:
            asked.append(settings)

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            return data

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Keep))
    for clusters, dims in ((2, 2), (5, 3)):
        config = VAEConfig(
            input_shape=(1, 8, 8), hidden_dims=[32], latent_dim=3, prior="gmm",
            n_clusters=clusters,
        )  # fmt: skip
        model = build_model(config)
        model.use_mixture(False)
        init_prior_from_gmm(model, _two_groups(40), batch_size=16, seed=0, method="umap")
        assert asked[-1]["n_components"] == dims
        assert model.prior_mu.shape == (clusters, 3)


def test_self_training_initialisation_corrects_the_embeddings_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gmm_init umap_self_training: the embedding's GMM puts 30 % of one kind of image in
    the other's cluster (a stand-in embedding); a classifier of the images taught those
    clusters, out of fold, puts them back, so the components' weights follow the two kinds
    (half each), not the embedding's 35/65 split, as the plain umap fit does."""
    import sys
    import types

    import numpy as np

    from patchvae.train.aids import init_prior_from_gmm

    rng = np.random.default_rng(0)
    n = 2000
    kinds = np.arange(n) % 2  # a bar across (kind 0) or down (kind 1), half each
    images, _ = bar_images(n, seed=0, kinds=kinds)
    wrongly = (kinds == 0) & (rng.random(n) < 0.3)
    clusters = np.where(wrongly, 1, kinds)

    class Clusters:  # an "embedding" that holds the wrong clusters (rows in order)
        def __init__(self, **settings: object) -> None:
            self.settings = settings

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            assert len(data) == n
            return np.stack([clusters * 10.0, np.zeros(n)], axis=1) + rng.normal(0, 0.1, (n, 2))

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Clusters))
    config = VAEConfig(
        input_shape=(1, 16, 16), hidden_dims=[32], latent_dim=3, prior="gmm", n_clusters=2
    )
    x = torch.from_numpy(images.reshape(n, 1, 16, 16))
    weights = {}
    for method in ("umap", "umap_self_training"):
        torch.manual_seed(0)
        model = build_model(config)
        init_prior_from_gmm(model, x, batch_size=64, seed=0, method=method, restarts=1)
        weights[method] = sorted(model.prior_logits.softmax(0).tolist())
    assert weights["umap"][0] == pytest.approx(np.mean(clusters == 0), abs=0.01)  # 0.35
    assert weights["umap_self_training"][0] == pytest.approx(0.5, abs=0.03)


def test_self_training_initialisation_needs_square_single_channel_images() -> None:
    from patchvae.errors import ConfigError
    from patchvae.train.aids import init_prior_from_gmm

    config = VAEConfig(
        input_shape=(2, 8, 8), hidden_dims=[8], latent_dim=2, prior="gmm", n_clusters=2
    )
    with pytest.raises(ConfigError, match="single-channel square images"):
        init_prior_from_gmm(
            build_model(config), torch.rand(10, 2, 8, 8), 8, 0, method="umap_self_training"
        )


def test_cluster_target_loss_by_hand() -> None:
    from patchvae.models.losses import cluster_target_loss

    gamma = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    loss = cluster_target_loss(gamma, torch.tensor([0, 0, -1]))  # the third has no target
    assert loss.item() == pytest.approx(-(math.log(0.9) + math.log(0.2)) / 3, rel=1e-6)


def _kinds_in_the_fit(
    monkeypatch: pytest.MonkeyPatch, n: int = 400
) -> tuple[torch.Tensor, np.ndarray, VAEConfig]:
    """Two kinds of 16x16 image, and a stand-in UMAP embedding in which the GMM finds them."""
    import sys
    import types

    kinds = np.arange(n) % 2
    images, _ = bar_images(n, seed=0, kinds=kinds)
    noise = np.random.default_rng(0).normal(0, 0.1, (n, 2))

    class Kinds:
        def __init__(self, **settings: object) -> None:
            self.settings = settings

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            return np.stack([kinds * 10.0, np.zeros(n)], axis=1) + noise

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Kinds))
    config = VAEConfig(
        input_shape=(1, 16, 16), hidden_dims=[32], latent_dim=2, prior="gmm", n_clusters=2
    )
    return torch.from_numpy(images.reshape(n, 1, 16, 16)), kinds, config


def _taught(weight: float, epochs: int = 12) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=50, optimizer="adam", learning_rate=3e-3, device="cpu",
        gmm_init_epochs=2, gmm_pretrain_prior="gaussian", gmm_init="umap",
        gmm_init_restarts=1, gmm_cluster_weight=weight,
    )  # fmt: skip


def test_cluster_weight_teaches_the_prior_the_fits_clusters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gmm_cluster_weight: each image's cluster in the mixture's fit (here a stand-in
    embedding that holds the two kinds of image) becomes its target. A 2-D latent after two
    epochs does not separate the kinds, so the prior's components, started from the kinds'
    latent means, give each image either at chance; with the targets' cross-entropy in the
    loss, the encoder learns to. The targets live in the checkpoint, for a resumed run."""
    from patchvae.checkpoint import load_checkpoint

    x, kinds, config = _kinds_in_the_fit(monkeypatch)
    agreement = {}
    for weight in (0.0, 10.0):
        ckpt = tmp_path / f"w{weight}.pt"
        model = fit(config, _taught(weight), x, checkpoint_path=ckpt, progress=False).model
        with torch.no_grad():
            found = model.cluster_probabilities(x).argmax(dim=1).numpy()
        agreement[weight] = max(np.mean(found == kinds), np.mean(found != kinds))
        targets = load_checkpoint(ckpt)["cluster_targets"]
        if weight:  # the fit's clusters: the kinds, under the fit's own numbering
            assert targets is not None and sorted(targets.unique().tolist()) == [0, 1]
            assert np.mean(targets.numpy() == kinds) in (0.0, 1.0)
        else:
            assert targets is None
    assert agreement[0.0] < 0.65 and agreement[10.0] > agreement[0.0] + 0.15


def test_a_resumed_run_keeps_its_cluster_targets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stopped after the fit and resumed, the run trains on with the same targets: the
    same weights as the run that went through (no refit happens at the resume)."""
    x, _, config = _kinds_in_the_fit(monkeypatch, n=100)
    whole = fit(config, _taught(10.0, epochs=5), x, progress=False).model
    ckpt = tmp_path / "c.pt"
    fit(config, _taught(10.0, epochs=3), x, checkpoint_path=ckpt, progress=False)
    resumed = fit(
        config, _taught(10.0, epochs=5), x, checkpoint_path=ckpt, resume=True, progress=False
    ).model
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cluster_weight_needs_a_mixture_prior() -> None:
    from patchvae.errors import ConfigError

    with pytest.raises(ConfigError, match="gmm_cluster_weight: only a mixture prior"):
        fit(
            VAEConfig(input_shape=(1, 8, 8), hidden_dims=[8], latent_dim=2),
            TrainConfig(epochs=2, device="cpu", gmm_init_epochs=1, gmm_cluster_weight=1.0),
            _two_groups(10),
            progress=False,
        )


def test_a_sample_the_fit_did_not_see_has_no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """A UMAP fit embeds at most UMAP_INIT_POINTS samples; the others get cluster -1 (no
    target), the embedded ones the cluster their group got."""
    import sys
    import types

    import patchvae.train.aids as aids

    x, _, config = _kinds_in_the_fit(monkeypatch, n=30)
    monkeypatch.setattr(aids, "UMAP_INIT_POINTS", 20)
    seen: list[int] = []

    class Few:  # the stand-in embedding, of whichever rows it is given
        def __init__(self, **settings: object) -> None:
            self.settings = settings

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            seen.append(len(data))
            return np.random.default_rng(0).normal(0, 0.1, (len(data), 2))

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=Few))
    fit_found = aids.init_prior_from_gmm(build_model(config), x, 8, seed=0, method="umap")
    assert seen == [20] and fit_found.clusters.shape == (30,)
    assert (fit_found.clusters == -1).sum() == 10 and (fit_found.clusters >= 0).sum() == 20
