"""Self-training: clusters found in a latent, learnt again from the images themselves.

A clustering of the latent (a Gaussian mixture on its UMAP view) gives every training image a
cluster. A small convolutional classifier then learns those clusters from the images, with
random shifts, and assigns the test images. No label is used: the classifier's targets are
the clusters. What it adds is the image: the latent's view is fixed once the VAE is trained,
while the classifier sees the pixels and, trained on clusters that are mostly right, tends to
follow the majority of a cluster where the latent put a few images on the wrong side of a
boundary (the self-labelling step of SCAN, Van Gansbeke et al., ECCV 2020; DEC's refinement,
Xie et al., ICML 2016, does the same in the latent).

The training images are split in ``SELF_TRAIN_FOLDS`` folds; each fold's classifier learns
the others' clusters, so each training image gets a cluster from a classifier that never saw
its own target (out of fold: a classifier memorises its targets), and the test images the
average of the folds' classifiers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from patchvae.models.classifier import ClusterClassifier
from patchvae.models.inference import infer
from patchvae.runtime import deterministic_kernels

# two folds: half the images per classifier, so the same work as one classifier on all.
# Epochs, batch, rate and shifts were set before any measurement and not tuned; one
# alternative (rotations and scalings beside the shifts) was measured on the *training*
# images of the ten-digit mnist-clusters-k30 run, seed 0, and not kept (docs/models.md)
SELF_TRAIN_FOLDS = 2
SELF_TRAIN_EPOCHS = 6
SELF_TRAIN_BATCH = 128
SELF_TRAIN_PEAK_LR = 2e-3
SELF_TRAIN_SHIFT = 2  # pixels, each way
_PREDICT_BATCH = 2000


def random_shifts(x: torch.Tensor, generator: torch.Generator, pixels: int) -> torch.Tensor:
    """Each image of ``x`` ``(n, 1, side, side)`` moved by its own whole-pixel offset of at
    most ``pixels`` each way, zeros filling in."""
    n, _, side, _ = x.shape
    padded = F.pad(x, (pixels,) * 4)
    offsets = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(side, device=x.device))[:, :, None]
    cols = (offsets[1, :, None] + torch.arange(side, device=x.device))[:, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols][:, None]


@dataclass(frozen=True)
class SelfTraining:
    """The classifiers' cluster probabilities: ``train`` out of fold ``(n_train, k)``,
    ``test`` averaged over the folds ``(n_test, k)``; and how long it took."""

    train: np.ndarray
    test: np.ndarray
    seconds: float

    @property
    def train_clusters(self) -> np.ndarray:
        return self.train.argmax(axis=1)

    @property
    def test_clusters(self) -> np.ndarray:
        return self.test.argmax(axis=1)


def self_train(
    x_train: np.ndarray,
    clusters: np.ndarray,
    x_test: np.ndarray | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    epochs: int = SELF_TRAIN_EPOCHS,
    n_clusters: int | None = None,
) -> SelfTraining:
    """Learn ``clusters`` (one integer per training image, 0..k-1) from the images
    ``x_train`` and assign ``x_test``.

    Parameters
    ----------
    x_train, x_test : square single-channel images, ``(n, side * side)``, ``(n, side, side)``
        or ``(n, 1, side, side)``, values in [0, 1]; no ``x_test``: the training images only
    clusters : the cluster of each training image (no labels)
    n_clusters : how many clusters there are (default: the largest in ``clusters``, plus 1)
    seed : fixes the folds, the initial weights, the order and the shifts
    device : where the classifiers train (default: the CPU)

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((40, 16 * 16), dtype=np.float32)
    >>> found = self_train(images, np.arange(40) % 2, images[:5], seed=0, epochs=1)
    >>> found.train.shape, found.test.shape, found.test_clusters.shape
    ((40, 2), (5, 2), (5,))
    """
    x_train = np.asarray(x_train, dtype=np.float32).reshape(len(x_train), -1)
    if x_test is None or not len(x_test):  # (an empty array cannot be reshaped by -1)
        x_test = x_train[:0]
    else:
        x_test = np.asarray(x_test, dtype=np.float32).reshape(len(x_test), -1)
    clusters = np.asarray(clusters)
    if clusters.shape != (len(x_train),):
        raise ValueError(
            f"clusters: one per training image expected, got {clusters.shape} "
            f"for {len(x_train)} images"
        )
    side = math.isqrt(x_train.shape[1])
    if side * side != x_train.shape[1] or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"square images of one size expected, got {x_train.shape[1:]} and {x_test.shape[1:]}"
        )
    device = device or torch.device("cpu")
    n_clusters = n_clusters or int(clusters.max()) + 1
    folds = np.random.default_rng(seed).permutation(len(x_train)) % SELF_TRAIN_FOLDS
    train_probabilities = np.zeros((len(x_train), n_clusters), dtype=np.float32)
    test_probabilities = np.zeros((len(x_test), n_clusters), dtype=np.float32)
    start = time.perf_counter()
    # seeded inside, the caller's random state kept; gradients also when called under no_grad
    forked = [device] if device.type == "cuda" else []
    with deterministic_kernels(device), torch.random.fork_rng(forked), torch.enable_grad():
        for fold in range(SELF_TRAIN_FOLDS):
            learner = folds != fold
            net = _fit_classifier(
                x_train[learner], clusters[learner], side, n_clusters, seed + fold, device, epochs
            )
            train_probabilities[~learner] = _probabilities(net, x_train[~learner])
            test_probabilities += _probabilities(net, x_test) / SELF_TRAIN_FOLDS
    return SelfTraining(train_probabilities, test_probabilities, time.perf_counter() - start)


def _fit_classifier(
    images: np.ndarray,
    targets: np.ndarray,
    side: int,
    n_clusters: int,
    seed: int,
    device: torch.device,
    epochs: int,
) -> ClusterClassifier:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ClusterClassifier(side, n_clusters).to(device)
    x = torch.from_numpy(images)
    y = torch.from_numpy(targets.astype(np.int64))
    steps_per_epoch = math.ceil(len(x) / SELF_TRAIN_BATCH)
    optimizer = torch.optim.Adam(net.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, SELF_TRAIN_PEAK_LR, total_steps=epochs * steps_per_epoch
    )
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for first in range(0, len(x), SELF_TRAIN_BATCH):
            batch = order[first : first + SELF_TRAIN_BATCH]
            images_b = x[batch].reshape(-1, 1, side, side)
            shifted = random_shifts(images_b, generator, SELF_TRAIN_SHIFT).to(device)
            loss = F.cross_entropy(net(shifted), y[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


def _probabilities(net: ClusterClassifier, images: np.ndarray) -> np.ndarray:
    (found,) = infer(net, images, lambda m, b: (F.softmax(m(b), dim=1),), _PREDICT_BATCH)
    return found
