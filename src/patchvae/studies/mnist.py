"""The reference study's first part: a VAE's latent plane on MNIST digits (default 7 and 9).

Trains on the official train split of the chosen digits, validates on the official test split
(as the Keras example did; nothing is selected on it), and analyses the test split with
posterior means: clustering metrics (``metrics.json``) and what the report draws
(``figure-data.npz``: the latent plane, a decoded manifold, reconstructions).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchvae.analysis.metrics import (
    agreement,
    clustering_scores,
    full_mixture,
    gmm_scores,
    hungarian_accuracy,
    logreg_accuracy,
)
from patchvae.analysis.projection import fit_projection, manifold_plane, umap_embed
from patchvae.artefacts import (
    CHECKPOINT_FILE,
    FIGURE_DATA_FILE,
    METRICS_FILE,
    SETTINGS_FILE,
    MnistRecord,
)
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
from patchvae.io import write_arrays_atomic, write_json_atomic
from patchvae.models.inference import infer
from patchvae.models.vae import VAE, count_parameters
from patchvae.rundir import open_run_dir
from patchvae.runtime import provenance, select_device
from patchvae.train import evaluate, fit
from patchvae.train.selftrain import self_train

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
) -> MnistRecord:
    """Train, analyse and write the run folder; return the record written to ``metrics.json``.

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
) -> MnistRecord:
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
    arrays, projection = _figure_data(model, train_latent, test_latent, test, x_test, seed)
    optional: dict[str, Any] = {}
    if config.umap:
        train_2d, test_2d = umap_embed(train_latent, test_latent, seed)
        optional.update(_umap_scores(train_2d, test_2d, test.labels, config, arrays))
        if config.self_training:
            found = _self_training_scores(train, test, train_2d, config, result.device)
            optional.update(found)
    if config.model.prior == "gmm" and model.mixture_ready:  # not before its first fit
        optional.update(_prior_cluster_scores(model, x_test, test.labels))
    record = MnistRecord(
        **clustering_scores(train_latent, test_latent, test.labels, len(config.digits), seed),
        logreg_accuracy=logreg_accuracy(train_latent, train.labels, test_latent, test.labels),
        **optional,
        test_loss=test_terms["loss"],
        test_recon=test_terms["recon"],
        test_kl=test_terms["kl"],
        epochs=len(result.history),
        seed=seed,
        train_seconds=round(result.train_seconds, 3),
        n_train=len(train),
        n_test=len(test),
        digits=config.digits,
        latent_dim=config.model.latent_dim,
        parameters=count_parameters(model),
        device=str(result.device),
        projection=projection,
        history=result.history,
        settings=config.model_dump(mode="json"),
        data_dir=str(data_dir),
        data_sources=sources,
        split=_split_record(train, test),
        provenance={**provenance(result.device), **result.extra},
        reproduce=f"patchvae mnist --config {out / SETTINGS_FILE} --out NEW_RUN_DIR",
        command=" ".join(sys.argv),
    )
    write_arrays_atomic(out / FIGURE_DATA_FILE, arrays)
    write_json_atomic(out / METRICS_FILE, record.model_dump(mode="json"))
    return record


def _umap_scores(
    train_2d: np.ndarray,
    test_2d: np.ndarray,
    labels: np.ndarray,
    config: MnistStudyConfig,
    arrays: dict[str, np.ndarray],
) -> dict[str, float]:
    """k-means and a full-covariance Gaussian mixture on a 2-D UMAP of the latent
    (umap_kmeans_accuracy, umap_nmi, umap_ari, ...; umap_gmm_accuracy, umap_gmm_nmi, ...);
    the UMAP coordinates join the figure data."""
    seed = config.train.seed
    scores = clustering_scores(train_2d, test_2d, labels, len(config.digits), seed)
    scores.update(gmm_scores(train_2d, test_2d, labels, len(config.digits), seed))
    arrays["umap_coords"] = test_2d
    return {f"umap_{key}": value for key, value in scores.items()}


def _self_training_scores(
    train: MnistSplit,
    test: MnistSplit,
    train_2d: np.ndarray,
    config: MnistStudyConfig,
    device: torch.device,
) -> dict[str, Any]:
    """The UMAP view's mixture clusters (``umap_gmm_*``) learnt again from the images
    (``train.selftrain``): the test images' clusters (``self_training_accuracy``,
    Hungarian; ``_nmi``, ``_ari``); the training images' out-of-fold clusters against their
    digits (``self_training_train_accuracy``) and against the mixture's clusters they were
    taught (``self_training_agreement``, which needs no label)."""
    seed, n_clusters = config.train.seed, len(config.digits)
    # the same fit as umap_gmm_*'s (same settings and seed): its clusters of the train images
    clusters = full_mixture(n_clusters, seed).fit(train_2d).predict(train_2d)
    found = self_train(train.as_float(), clusters, test.as_float(), seed=seed, device=device)
    matched = agreement(test.labels, found.test_clusters, n_clusters=n_clusters)
    return {
        "self_training_accuracy": matched["accuracy"],
        "self_training_nmi": matched["nmi"],
        "self_training_ari": matched["ari"],
        "self_training_train_accuracy": hungarian_accuracy(train.labels, found.train_clusters),
        "self_training_agreement": float(np.mean(found.train_clusters == clusters)),
        "self_training_seconds": round(found.seconds, 3),
    }


def _prior_cluster_scores(model: VAE, x_test: torch.Tensor, labels: np.ndarray) -> dict[str, Any]:
    """Clusters read off the mixture prior: the most probable component of each test image.
    With more components than digits, each is named by the digit most of its images show
    (``prior_cluster_matching``: majority), else matched one-to-one (Hungarian)."""
    (probabilities,) = infer(model, x_test, lambda m, b: (m.cluster_probabilities(b),))
    assigned = probabilities.argmax(axis=1)
    matched = agreement(labels, assigned, n_clusters=model.config.clusters)
    return {
        "prior_cluster_accuracy": matched["accuracy"],
        "prior_cluster_matching": matched["matching"],
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


def _figure_data(
    model: VAE,
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    test: MnistSplit,
    x_test: torch.Tensor,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What the report draws: the test latents on a plane, images decoded from a grid over
    that plane, and some test digits with their reconstructions; and the plane's facts."""
    projection = fit_projection(train_latent, seed)
    coords = projection.transform(test_latent)
    # A 2-D latent uses the prior's grid; a PCA plane is scaled to the test latents' spread.
    scale = (1.0, 1.0) if projection.method == "identity" else tuple(coords.std(axis=0).tolist())
    plane, xs, ys = manifold_plane(scale=(scale[0], scale[1]))
    latent = projection.inverse(plane).astype(np.float32)
    (decoded,) = infer(model, latent, lambda m, z: (m.decode(z),))
    shown = np.linspace(0, len(test) - 1, 12).astype(int)
    arrays = {
        "coords": coords,
        "label": test.labels,
        "manifold": decoded,
        "manifold_xs": xs,
        "manifold_ys": ys,
        "originals": x_test[shown].numpy(),
        "reconstructions": reconstruct(model, x_test[shown]),
    }
    facts = {
        "method": projection.method,
        "description": projection.description,
        "axis_labels": list(projection.axis_labels),
    }
    return arrays, facts
