"""What a training run needs beside its steps: curves for TensorBoard, the arithmetic, the
mixture prior's start, the rules for resuming and for a run that diverged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchvae.config import TrainConfig, as_read_today
from patchvae.config.model import VAEConfig
from patchvae.errors import ConfigError, TrainingDiverged
from patchvae.feed import Rows
from patchvae.models.inference import infer
from patchvae.models.vae import VAE


class Curves:
    """TensorBoard's view of the losses: one scalar per value of an epoch's record."""

    def __init__(self, folder: Path) -> None:
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    @staticmethod
    def check_available() -> None:
        """Refuse ``tensorboard`` before training when the package is missing."""
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "tensorboard: needs the tensorboard package (pip install tensorboard); the "
                "curves are in history.csv without it"
            ) from None

    def add_scalars_of(self, epoch: int, record: dict[str, float]) -> None:
        for key, value in record.items():
            if key != "epoch":
                group = "validation" if key.startswith("val_") else "training"
                self.writer.add_scalar(f"{group}/{key}", value, epoch)
        self.writer.flush()


def resolve_precision(asked: str, device: torch.device) -> str:
    """The arithmetic a run uses: ``auto`` is fp32, which was faster than bf16 autocast for
    patchvae's networks on an H200 (the casts cost more than the small matrix products save);
    fp16 and bf16 are refused where the device cannot do them."""
    cuda = device.type == "cuda"
    if asked == "auto":
        return "fp32"
    if asked == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: this CUDA device cannot do bf16 (use fp16 or fp32)")
    if asked == "fp16" and not cuda:
        raise ConfigError("precision: fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return asked


def diverged(
    epoch: int, step: int | None, steps: int, what: str, config: TrainConfig
) -> TrainingDiverged:
    where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step + 1} of {steps}")
    kept = f"epoch {epoch}" if epoch else "none: no epoch had finished"
    rate = f"{config.learning_rate:g}"
    return TrainingDiverged(
        f"training diverged: the {what} became NaN or infinite at {where}; the checkpoint "
        f"keeps the last good epoch ({kept}); try a smaller learning rate (now {rate})"
    )


UMAP_INIT_POINTS = 20000  # latent means a UMAP initialisation embeds (a random subset)


def import_umap() -> Any:
    """umap-learn, or a one-line error saying how to get it."""
    try:
        import umap
    except ImportError:
        raise ConfigError(
            "gmm_init: umap needs umap-learn (pip install umap-learn), or use gmm_init: latent"
        ) from None
    return umap


@dataclass(frozen=True)
class MixtureFit:
    """What a fit of the mixture prior found: the mixture's BIC (in the space it was fitted
    in), and each sample's cluster, (n,): the prior's component that the fit built from the
    sample's group, or -1 for a sample the fit did not see (beyond ``UMAP_INIT_POINTS``)."""

    bic: float
    clusters: np.ndarray


@torch.no_grad()
def init_prior_from_gmm(
    model: VAE,
    x: torch.Tensor | Rows,
    batch_size: int,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
    method: str = "latent",
    restarts: int = 3,
) -> MixtureFit:
    """Start a mixture prior from the latent means of ``x`` (the VaDE recipe) and switch it
    on; the optimiser forgets its moments for the prior's parameters.

    ``method`` "latent" fits a diagonal Gaussian mixture to the means; "umap" fits a full one
    to a UMAP embedding of (up to ``UMAP_INIT_POINTS`` of) them and takes each component's
    weight, mean and variance from the latent means of its members. Of ``restarts`` fits, the
    one of highest likelihood is kept. Returns that mixture's BIC and each sample's cluster
    (:class:`MixtureFit`)."""
    from sklearn.mixture import GaussianMixture

    if isinstance(x, torch.Tensor):
        (mu,) = infer(model, x, lambda m, b: (m.encode(b)[0],), batch_size)
    else:  # streamed: the means, chunk by chunk
        mu = np.concatenate(
            [
                infer(model, chunk, lambda m, b: (m.encode(b)[0],), batch_size)[0]
                # chunks of whole batches: the batches of the in-memory pass, so the same means
                for chunk in x.chunks(batch_size * max(1, 8192 // batch_size))
            ]
        )
    data = mu.astype(np.float64)
    k = model.config.clusters
    if method in ("umap", "umap_self_training"):
        images = None
        if method == "umap_self_training":  # only the rows UMAP embeds are read
            shape = model.config.input_shape
            if shape[0] != 1 or shape[1] != shape[2] or shape[1] % 4:
                raise ConfigError(
                    "gmm_init: umap_self_training needs single-channel square images whose "
                    f"side divides by 4, got input_shape {tuple(shape)}"
                )
            images = _row_reader(x)
        device = next(model.parameters()).device
        fitted, bic, clusters = _mixture_from_umap(data, k, seed, restarts, images, device)
    else:
        mixture = GaussianMixture(
            k, covariance_type="diag", n_init=restarts, random_state=seed
        ).fit(data)
        fitted = {
            "prior_logits": np.log(mixture.weights_),
            "prior_mu": mixture.means_,
            "prior_logvar": np.log(mixture.covariances_),
        }
        bic = float(mixture.bic(data))
        clusters = mixture.predict(data)
    for name, value in fitted.items():
        parameter = getattr(model, name)
        parameter.copy_(torch.as_tensor(value, dtype=parameter.dtype))
        if optimizer is not None:
            optimizer.state.pop(parameter, None)
    model.use_mixture(True)
    return MixtureFit(bic, clusters.astype(np.int64))


def _mixture_from_umap(
    mu: np.ndarray,
    k: int,
    seed: int,
    restarts: int,
    images: Callable[[np.ndarray], np.ndarray] | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
    """Mixture parameters in the latent from the clusters of a GMM on a UMAP embedding;
    with ``images`` (the reader of the means' images, by row), from those clusters as a
    classifier of the images learnt them (self-training, out of fold). Also each row's
    cluster (its most probable; -1 for a row left out of the embedding)."""
    from sklearn.mixture import GaussianMixture

    umap = import_umap()
    rng = np.random.default_rng(seed)
    n = mu.shape[0]
    rows = np.arange(n)
    if n > UMAP_INIT_POINTS:
        rows = np.sort(rng.choice(n, UMAP_INIT_POINTS, replace=False))
        mu = mu[rows]
    # N2D's settings: as many dimensions as clusters (no more than the latent has), tight
    # clumps (min_dist 0)
    dims = min(k, mu.shape[1])
    embedding = umap.UMAP(
        n_neighbors=20, n_components=dims, min_dist=0.0, random_state=seed, n_jobs=1
    ).fit_transform(mu)
    mixture = GaussianMixture(k, covariance_type="full", n_init=restarts, random_state=seed).fit(
        embedding
    )
    members = mixture.predict_proba(embedding)  # (n, k) soft memberships
    found = members.argmax(axis=1)  # the mixture's clusters (its predict)
    clusters = np.full(n, -1, dtype=np.int64)
    clusters[rows] = found
    if images is not None:
        from patchvae.train.selftrain import self_train

        # each image in the cluster the classifier (out of fold) gives it: hard, for a
        # classifier's probabilities reproduce the rate at which its targets were wrong
        # where the image alone cannot tell; its most probable cluster corrects them
        taught = self_train(images(rows), found, seed=seed, device=device, n_clusters=k)
        members = np.eye(k)[taught.train_clusters]
        clusters[rows] = taught.train_clusters
    weight = members.sum(axis=0) + 1e-6
    mean = members.T @ mu / weight[:, None]
    var = members.T @ mu**2 / weight[:, None] - mean**2
    floor = 1e-3 * mu.var(axis=0)  # an empty or point-like component stays usable
    fitted = {
        "prior_logits": np.log(weight / weight.sum()),
        "prior_mu": mean,
        "prior_logvar": np.log(np.maximum(var, floor)),
    }
    return fitted, float(mixture.bic(embedding)), clusters


def _row_reader(x: torch.Tensor | Rows) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(x, torch.Tensor):
        return lambda rows: x[torch.as_tensor(rows)].cpu().numpy()
    return x.read


def check_resumable(
    state: dict[str, Any], model_config: VAEConfig, train_config: TrainConfig
) -> None:
    if state.get("model_config") != model_config.model_dump(mode="json"):
        raise ConfigError("resume: the checkpoint was made with other model settings")
    saved = as_read_today(TrainConfig, dict(state.get("train_config") or {}))
    asked = train_config.model_dump(mode="json")
    # The number of epochs may grow; where the run goes (device) and how its data are read
    # (in memory or streamed, by how many workers) may change: none changes a number.
    for key in ("epochs", "device", "in_memory_mb", "loader_workers"):
        saved.pop(key, None)
        asked.pop(key, None)
    if saved != asked:
        raise ConfigError("resume: the checkpoint was made with other training settings")
    if int(state["epoch"]) > train_config.epochs:
        raise ConfigError(
            f"epochs: the checkpoint already holds {state['epoch']} epochs, "
            f"more than {train_config.epochs}"
        )
