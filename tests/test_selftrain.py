"""Self-training: a classifier learns a latent's clusters from the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchvae.models.classifier import ClusterClassifier
from patchvae.train.selftrain import random_shifts, self_train
from tests.conftest import bar_images


def test_each_image_moves_by_its_own_offset_within_the_bound() -> None:
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    shifted = random_shifts(x, torch.Generator().manual_seed(0), pixels=2)
    assert shifted.shape == x.shape
    lit = shifted[:, 0].flatten(1).argmax(dim=1)
    rows, cols = lit // 28 - 14, lit % 28 - 14
    assert torch.all(shifted.flatten(1).sum(dim=1) == 1)  # moved, not blurred or lost
    assert rows.abs().max() == 2 and cols.abs().max() == 2  # the bound, reached
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 25  # per image


def test_classifier_takes_flat_or_square_images() -> None:
    net = ClusterClassifier(side=28, n_clusters=3)
    flat = torch.rand(4, 784)
    assert torch.equal(net(flat), net(flat.reshape(4, 1, 28, 28)))
    assert net(flat).shape == (4, 3)
    with pytest.raises(ValueError, match="divisible by 4"):
        ClusterClassifier(side=30, n_clusters=3)


def test_the_images_correct_clusters_the_latent_got_wrong() -> None:
    """Targets with 15 % of the images in the wrong cluster: out of fold, the classifiers
    put the training images back in their kind's cluster (a classifier that had seen its
    own targets would copy the mistakes), and the test images too."""
    x_train, kinds = bar_images(600, seed=0)
    x_test, test_kinds = bar_images(200, seed=1)
    wrong = np.random.default_rng(2).random(600) < 0.15
    clusters = np.where(wrong, 1 - kinds, kinds)
    found = self_train(x_train, clusters, x_test, seed=0, epochs=8)
    assert found.train.shape == (600, 2) and found.test.shape == (200, 2)
    assert np.allclose(found.train.sum(axis=1), 1, atol=1e-5)
    assert np.mean(found.train_clusters == kinds) > 0.97  # the targets: about 0.85
    assert np.mean(found.train_clusters[wrong] == kinds[wrong]) > 0.9
    assert np.mean(found.test_clusters == test_kinds) > 0.97


def test_the_same_seed_gives_the_same_clusters() -> None:
    x_train, kinds = bar_images(200, seed=3)
    x_test, _ = bar_images(50, seed=4)
    first = self_train(x_train, kinds, x_test, seed=5, epochs=1)
    again = self_train(x_train, kinds, x_test, seed=5, epochs=1)
    assert np.array_equal(first.test, again.test) and np.array_equal(first.train, again.train)


def test_bad_shapes_are_named() -> None:
    x_train, kinds = bar_images(20, seed=0)
    with pytest.raises(ValueError, match="one per training image"):
        self_train(x_train, kinds[:10], x_train)
    with pytest.raises(ValueError, match="square images"):
        self_train(x_train[:, :250], kinds, x_train[:, :250])
