"""Clustering and classification metrics of a latent space against known labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.preprocessing import StandardScaler

SILHOUETTE_MAX_SAMPLES = 5000  # silhouette is quadratic in N; larger sets are subsampled


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy of ``y_pred`` after the one-to-one relabelling of clusters that maximises it.

    Example
    -------
    >>> hungarian_accuracy(np.array([7, 7, 9, 9]), np.array([1, 1, 0, 1]))
    0.75
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size == 0:
        raise ValueError("hungarian_accuracy needs at least one sample")
    classes, true_idx = np.unique(y_true, return_inverse=True)
    clusters, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.size)


def agreement(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """How well clusters ``predicted`` match ``labels``: Hungarian ``accuracy``, ``nmi``, ``ari``.

    Example
    -------
    >>> agreement(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))["accuracy"]
    1.0
    """
    return {
        "accuracy": hungarian_accuracy(labels, predicted),
        "nmi": float(normalized_mutual_info_score(labels, predicted)),
        "ari": float(adjusted_rand_score(labels, predicted)),
    }


def silhouette(latent: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Silhouette of ``latent`` under ``labels`` (subsampled above 5000 points); NaN when
    there is a single group."""
    if np.unique(labels).size < 2:
        return float("nan")
    sample = min(SILHOUETTE_MAX_SAMPLES, latent.shape[0])
    return float(silhouette_score(latent, labels, sample_size=sample, random_state=seed))


def cluster_agreement(
    model: Any, train_latent: np.ndarray, test_latent: np.ndarray, labels: np.ndarray, seed: int
) -> dict[str, float]:
    """A clustering model (k-means, a Gaussian mixture: anything with ``fit`` and
    ``predict``) fitted on the train latents and applied to the test latents: its agreement
    with ``labels`` (Hungarian accuracy, NMI, ARI) and the silhouette of its clusters."""
    predicted = model.fit(train_latent).predict(test_latent)
    return {**agreement(labels, predicted), "silhouette": silhouette(test_latent, predicted, seed)}


def clustering_scores(
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    test_labels: np.ndarray,
    n_clusters: int,
    seed: int = 0,
) -> dict[str, float]:
    """k-means fitted on the train latents, applied to the test latents, scored against labels.

    Returns ``kmeans_accuracy`` (Hungarian-matched), ``nmi``, ``ari`` and ``silhouette`` (of the
    test latents under the k-means clusters) and ``silhouette_labels`` (under the true labels:
    how well the classes themselves separate).
    """
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    found = cluster_agreement(kmeans, train_latent, test_latent, test_labels, seed)
    return {
        "kmeans_accuracy": found.pop("accuracy"),
        **found,
        "silhouette_labels": silhouette(test_latent, test_labels, seed),
    }


def logreg_accuracy(
    train_latent: np.ndarray,
    train_labels: np.ndarray,
    test_latent: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Accuracy on the test latents of a logistic regression fitted on the train latents."""
    scaler = StandardScaler().fit(train_latent)
    classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(train_latent), train_labels)
    return float(classifier.score(scaler.transform(test_latent), test_labels))
