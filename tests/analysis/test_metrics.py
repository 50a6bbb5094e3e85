from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from patchvae.analysis.metrics import (
    clustering_scores,
    gmm_scores,
    hungarian_accuracy,
    logreg_accuracy,
)
from patchvae.analysis.projection import fit_projection


def test_hungarian_accuracy_hand_values() -> None:
    # cluster 1 -> 7 (two right), cluster 0 -> 9 (one right): 3 of 4
    assert hungarian_accuracy(np.array([7, 7, 9, 9]), np.array([1, 1, 0, 1])) == 0.75
    # labels swapped entirely is still perfect
    assert hungarian_accuracy(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == 1.0
    # three clusters for two classes: the best one-to-one map leaves one cluster unmatched
    assert hungarian_accuracy(
        np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 2, 1, 1, 1])
    ) == pytest.approx(5 / 6)


def test_hungarian_accuracy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        hungarian_accuracy(np.array([0, 1]), np.array([0]))


def blobs(n: int, gap: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([7, 9], n)
    points = rng.normal(size=(2 * n, 2)) + np.where(labels[:, None] == 7, -gap, gap)
    return points, labels


def test_clustering_scores_separated_and_mixed() -> None:
    train, _ = blobs(100, 5.0, 0)
    test, test_labels = blobs(50, 5.0, 1)
    scores = clustering_scores(train, test, test_labels, n_clusters=2)
    assert scores["kmeans_accuracy"] == 1.0 and scores["nmi"] == pytest.approx(1.0)
    assert scores["ari"] == pytest.approx(1.0) and scores["silhouette"] > 0.7
    mixed_train, _ = blobs(100, 0.0, 2)
    mixed, mixed_labels = blobs(50, 0.0, 3)
    scores = clustering_scores(mixed_train, mixed, mixed_labels, n_clusters=2)
    assert scores["kmeans_accuracy"] < 0.7 and scores["nmi"] < 0.1


def test_ari_is_sklearn_value_on_predictions() -> None:
    train, _ = blobs(100, 1.0, 0)
    test, labels = blobs(50, 1.0, 1)
    scores = clustering_scores(train, test, labels, n_clusters=2, seed=0)
    from sklearn.cluster import KMeans

    predicted = KMeans(2, n_init=10, random_state=0).fit(train).predict(test)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, predicted))


def test_logreg_accuracy() -> None:
    train, train_labels = blobs(100, 5.0, 0)
    test, test_labels = blobs(50, 5.0, 1)
    assert logreg_accuracy(train, train_labels, test, test_labels) == 1.0


def test_projection_identity_for_2d_and_pca_above() -> None:
    rng = np.random.default_rng(0)
    two = rng.normal(size=(20, 2))
    assert fit_projection(two).method == "identity"
    np.testing.assert_array_equal(fit_projection(two).transform(two), two)
    # 5-D data living in a plane: PCA recovers it, inverse maps back exactly
    plane = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 5)) + 3.0
    projection = fit_projection(plane)
    assert projection.method == "pca" and "PC1" in projection.axis_labels[0]
    np.testing.assert_allclose(projection.inverse(projection.transform(plane)), plane, atol=1e-8)


def test_umap_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from patchvae.analysis.projection import umap_embed
    from patchvae.errors import ConfigError

    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ConfigError, match="pip install umap-learn"):
        umap_embed(np.zeros((5, 3)), np.zeros((2, 3)))


def test_cluster_accuracy_one_to_one_when_clusters_equal_classes() -> None:
    """Ten classes, ten clusters with permuted names and one sample moved: Hungarian."""
    from patchvae.analysis.metrics import cluster_accuracy

    y = np.repeat(np.arange(10), 5)
    permuted = (y * 3 + 1) % 10  # a one-to-one renaming
    permuted[0] = permuted[5]  # one sample of class 0 lands in class 1's cluster
    found = cluster_accuracy(y, permuted, n_clusters=10)
    assert found == {"accuracy": 49 / 50, "matching": "hungarian"}
    # two classes merged in one cluster: one-to-one matching loses one class whole
    merged = np.where(y == 9, 8, y)
    assert cluster_accuracy(y, merged, n_clusters=10)["accuracy"] == 45 / 50


def test_cluster_accuracy_names_clusters_by_majority_when_more_clusters() -> None:
    """Four clusters for two classes: each named by its majority; one-to-one would lose two."""
    from patchvae.analysis.metrics import cluster_accuracy, majority_names

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([0, 0, 1, 3, 2, 2, 3, 3])
    assert majority_names(y, clusters) == {0: 0, 1: 0, 2: 1, 3: 1}
    found = cluster_accuracy(y, clusters, n_clusters=4)
    assert found == {"accuracy": 7 / 8, "matching": "majority"}
    assert hungarian_accuracy(y, clusters) == 4 / 8  # what one-to-one would report


def test_gmm_keeps_a_wide_group_whole_where_kmeans_cuts_it_at_the_midpoint() -> None:
    # a compact group beside a wide one (a 2-D UMAP view of a tight digit next to a spread
    # one): k-means' boundary is the perpendicular bisector of the centres, which gives the
    # wide group's near side to the compact one; a full-covariance mixture weighs the spreads
    rng = np.random.default_rng(0)

    def groups(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat([0, 1], n)
        compact = rng.normal(0, 0.3, (2 * n, 2))
        wide = np.array([3.0, 0.0]) + rng.normal(0, 1.5, (2 * n, 2))
        return np.where(labels[:, None] == 0, compact, wide), labels

    (train, _), (test, labels) = groups(500), groups(200)
    kmeans = clustering_scores(train, test, labels, 2)["kmeans_accuracy"]
    found = gmm_scores(train, test, labels, 2)
    assert kmeans < 0.9  # about 16 % of the wide group lies past the midpoint
    assert found["gmm_accuracy"] > 0.97 and found["gmm_nmi"] > 0.8
