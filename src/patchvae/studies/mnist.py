"""The reference study's first part: a VAE's latent plane on MNIST digits (default 7 and 9).

Trains on the official train split of the chosen digits, validates on the official test split
(as the Keras example did; nothing is selected on it), and analyses the test split with
posterior means: latent scatter, decoded manifold, reconstructions, clustering metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchvae.analysis.metrics import agreement, clustering_scores, logreg_accuracy
from patchvae.analysis.projection import fit_projection, umap_embed
from patchvae.artefacts import CHECKPOINT_FILE, METRICS_FILE, SETTINGS_FILE
from patchvae.config import MnistStudyConfig
from patchvae.data.mnist import (
    FILE_STEMS,
    MnistSplit,
    bundled_mnist_dir,
    default_cache_dir,
    fetch_mnist,
    load_mnist,
)
from patchvae.embed import encode, reconstruct
from patchvae.errors import DataError
from patchvae.io import write_json_atomic
from patchvae.models.inference import infer
from patchvae.models.vae import VAE, count_parameters
from patchvae.report.figures import (
    plot_latent_scatter,
    plot_loss_curves,
    plot_manifold,
    plot_reconstructions,
)
from patchvae.rundir import open_run_dir
from patchvae.runtime import provenance, select_device
from patchvae.train import evaluate, fit

_EVAL_SEED_OFFSET = 7  # test-loss noise stream, apart from the training streams


def resolve_mnist_dir(config: MnistStudyConfig, download: bool = False) -> Path:
    """Where this run's MNIST files are: bundled sample, ``data_dir``, or the download cache."""
    if config.use_bundled_sample:
        return bundled_mnist_dir()
    if config.data_dir is not None:
        return Path(config.data_dir)
    cache = default_cache_dir()
    if all((cache / f"{stem}.gz").is_file() for stem in FILE_STEMS.values()):
        return cache
    if download:
        return fetch_mnist(cache)
    raise DataError(
        None,
        "no MNIST data: pass --data-dir DIR (a folder with the four official IDX files), "
        "or --download to fetch them once into " + str(cache),
    )


def run_mnist_study(
    config: MnistStudyConfig,
    out: str | Path,
    resume: bool = False,
    download: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, analyse and write the run folder; return the metrics written to ``metrics.json``.

    The data are read and validated before the run folder is touched, so bad input leaves
    nothing behind.
    """
    data_dir = resolve_mnist_dir(config, download)
    train, test = load_mnist(data_dir, config.digits)
    if not config.use_bundled_sample:
        config = config.model_copy(update={"data_dir": str(data_dir.resolve())})
    select_device(config.train.device)  # refuse an unusable device before writing anything
    out = Path(out)
    with open_run_dir(out, config, resume) as resuming:
        return _train_and_analyse(config, out, resuming, train, test, data_dir, progress)


def _train_and_analyse(
    config: MnistStudyConfig,
    out: Path,
    resume: bool,
    train: MnistSplit,
    test: MnistSplit,
    data_dir: Path,
    progress: bool,
) -> dict[str, Any]:

    x_train = torch.from_numpy(train.as_float())
    x_test = torch.from_numpy(test.as_float())
    sources = {**train.sources, **test.sources}
    result = fit(
        config.model,
        config.train,
        x_train,
        x_test,
        checkpoint_path=out / CHECKPOINT_FILE,
        resume=resume,
        progress=progress,
        metadata={"data_sources": sources, "split": _split_record(train, test)},
    )
    model = result.model
    seed = config.train.seed
    test_terms = evaluate(model, x_test, config.train.batch_size, seed=seed + _EVAL_SEED_OFFSET)
    train_latent = encode(model, x_train).mu
    test_latent = encode(model, x_test).mu
    metrics: dict[str, Any] = {
        **clustering_scores(train_latent, test_latent, test.labels, len(config.digits), seed),
        "logreg_accuracy": logreg_accuracy(train_latent, train.labels, test_latent, test.labels),
        **(
            _umap_scores(train_latent, test_latent, test.labels, config, out) if config.umap else {}
        ),
        **(
            _prior_cluster_scores(model, x_test, test.labels) if config.model.prior == "gmm" else {}
        ),
        "test_loss": test_terms["loss"],
        "test_recon_loss": test_terms["recon"],
        "test_kl": test_terms["kl"],
        "epochs": len(result.history),
        "seed": seed,
        "train_seconds": round(result.train_seconds, 3),
        "n_train": len(train),
        "n_test": len(test),
        "digits": config.digits,
        "latent_dim": config.model.latent_dim,
        "parameters": count_parameters(model),
        "device": str(result.device),
    }
    metrics["projection"] = _write_figures(
        model, out, train_latent, test_latent, test, x_test, config
    )
    plot_loss_curves(result.history, out / "loss.png", "Loss per sample (validation: test split)")
    write_json_atomic(
        out / METRICS_FILE,
        {
            **metrics,
            "history": result.history,
            "settings": config.model_dump(mode="json"),
            "data_dir": str(data_dir),
            "data_sources": sources,
            "split": _split_record(train, test),
            "provenance": provenance(result.device),
            "reproduce": f"patchvae mnist --config {out / SETTINGS_FILE} --out NEW_RUN_DIR",
            "command": " ".join(sys.argv),
        },
    )
    return metrics


def _umap_scores(
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    labels: np.ndarray,
    config: MnistStudyConfig,
    out: Path,
) -> dict[str, float]:
    """k-means on a 2-D UMAP of the latent (umap_kmeans_accuracy, umap_nmi, umap_ari, ...),
    and its picture, ``latent_umap.png``."""
    seed = config.train.seed
    train_2d, test_2d = umap_embed(train_latent, test_latent, seed)
    scores = clustering_scores(train_2d, test_2d, labels, len(config.digits), seed)
    plot_latent_scatter(
        test_2d,
        labels,
        out / "latent_umap.png",
        f"Test digits: UMAP (fitted on train latents) of the posterior means (n={len(labels)})",
        ("UMAP 1", "UMAP 2"),
        {d: f"digit {d}" for d in config.digits},
    )
    return {f"umap_{key}": value for key, value in scores.items()}


def _prior_cluster_scores(model: VAE, x_test: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Clusters read off the mixture prior: the most probable component of each test image."""
    (probabilities,) = infer(model, x_test, lambda m, b: (m.cluster_probabilities(b),))
    assigned = probabilities.argmax(axis=1)
    matched = agreement(labels, assigned)
    return {
        "prior_cluster_accuracy": matched["accuracy"],
        "prior_cluster_nmi": matched["nmi"],
        "prior_cluster_ari": matched["ari"],
        "prior_clusters_used": int(np.unique(assigned).size),
    }


def _split_record(train: MnistSplit, test: MnistSplit) -> dict[str, Any]:
    return {
        "train": "official MNIST train split (all images of the chosen digits)",
        "validation_and_analysis": "official MNIST test split; never trained on",
        "n_train": len(train),
        "n_test": len(test),
    }


def _write_figures(
    model: torch.nn.Module,
    out: Path,
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    test: MnistSplit,
    x_test: torch.Tensor,
    config: MnistStudyConfig,
) -> str:
    projection = fit_projection(train_latent, config.train.seed)
    coords = projection.transform(test_latent)
    digits = "/".join(str(d) for d in config.digits)
    plot_latent_scatter(
        coords,
        test.labels,
        out / "latent.png",
        f"Test digits {digits}: posterior means (n={len(test)}); {projection.description}",
        projection.axis_labels,
        {d: f"digit {d}" for d in config.digits},
    )
    device = next(model.parameters()).device

    @torch.no_grad()
    def decode(plane: np.ndarray) -> np.ndarray:
        latent = torch.from_numpy(projection.inverse(plane).astype(np.float32)).to(device)
        return model.decode(latent).cpu().numpy()  # type: ignore[operator]

    # A 2-D latent uses the prior's grid; a PCA plane is scaled to the test latents' spread.
    scale = (1.0, 1.0) if projection.method == "identity" else tuple(coords.std(axis=0).tolist())
    plot_manifold(
        decode,
        out / "manifold.png",
        f"Decoded grid over the latent plane (inverse normal CDF); {projection.description}",
        scale=(scale[0], scale[1]),
        axis_labels=projection.axis_labels,
    )
    shown = np.linspace(0, len(test) - 1, 12).astype(int)
    plot_reconstructions(
        x_test[shown].numpy(),
        reconstruct(model, x_test[shown]),  # type: ignore[arg-type]
        out / "reconstructions.png",
        "Test digits and their reconstructions (decoded posterior mean)",
    )
    return projection.description
