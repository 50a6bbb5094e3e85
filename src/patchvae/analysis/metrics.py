"""Clustering and classification metrics of a latent space against known labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

SILHOUETTE_MAX_SAMPLES = 5000  # silhouette is quadratic in N; larger sets are subsampled


def _contingency(
    y_true: np.ndarray, y_pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The classes, the clusters, and how many samples of each class each cluster holds,
    (clusters, classes)."""
    classes, true_idx = np.unique(y_true, return_inverse=True)
    clusters, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    return classes, clusters, counts


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
    _, _, counts = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.size)


def majority_names(y_true: np.ndarray, y_pred: np.ndarray) -> dict[Any, Any]:
    """Each cluster named after the class most of its members hold (ties: the smaller class
    label); clusters may share a name. How clusters are read when there are more clusters than
    classes: many clusters per class are then allowed, and accuracy can only grow with K.

    Example
    -------
    >>> majority_names(np.array([7, 7, 9, 9, 9]), np.array([0, 1, 1, 2, 2]))
    {0: 7, 1: 7, 2: 9}
    """
    classes, clusters, counts = _contingency(np.asarray(y_true), np.asarray(y_pred))
    return {c.item(): classes[counts[i].argmax()].item() for i, c in enumerate(clusters)}


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_clusters: int) -> dict[str, Any]:
    """The accuracy of clusters against classes, read the way their number allows:
    one-to-one (Hungarian) when there are no more clusters than classes, else each cluster
    named by its majority class (``majority_names``). Returns ``accuracy`` and ``matching``
    (``"hungarian"`` or ``"majority"``), which a table must show beside the number: a
    majority-named accuracy with many clusters is not comparable to a Hungarian one.

    Example
    -------
    >>> cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2]), n_clusters=3)
    {'accuracy': 1.0, 'matching': 'majority'}
    """
    n_classes = np.unique(np.asarray(y_true)).size
    if n_clusters <= n_classes:
        return {"accuracy": hungarian_accuracy(y_true, y_pred), "matching": "hungarian"}
    names = majority_names(y_true, y_pred)
    named = np.array([names[c] for c in np.asarray(y_pred).tolist()])
    return {"accuracy": float(np.mean(named == np.asarray(y_true))), "matching": "majority"}


def agreement(
    labels: np.ndarray, predicted: np.ndarray, n_clusters: int | None = None
) -> dict[str, Any]:
    """How well clusters ``predicted`` match ``labels``: ``accuracy`` (Hungarian, or
    majority-named when ``n_clusters`` exceeds the classes; ``matching`` says which),
    ``nmi``, ``ari``. ``n_clusters`` defaults to the number of clusters found.

    Example
    -------
    >>> agreement(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))["accuracy"]
    1.0
    """
    if n_clusters is None:
        n_clusters = np.unique(np.asarray(predicted)).size
    return {
        **cluster_accuracy(labels, predicted, n_clusters),
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
    found = agreement(labels, predicted, n_clusters=np.unique(labels).size)  # one-to-one
    del found["matching"]
    return {**found, "silhouette": silhouette(test_latent, predicted, seed)}


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


GMM_RESTARTS = 5  # fits of the mixture from different starts; the most likely is kept


def gmm_scores(
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    test_labels: np.ndarray,
    n_clusters: int,
    seed: int = 0,
) -> dict[str, float]:
    """A Gaussian mixture with full covariances (the most likely of ``GMM_RESTARTS`` fits)
    fitted on the train points and applied to the test points: ``gmm_accuracy``
    (Hungarian-matched), ``gmm_nmi``, ``gmm_ari``, ``gmm_silhouette``. On a 2-D UMAP view
    this is N2D's read-off (McConville et al. 2020). k-means' boundary is the bisector
    between two centres; the mixture weighs each group's spread, so a wide group beside a
    compact one is not cut at the midpoint."""
    found = cluster_agreement(
        full_mixture(n_clusters, seed), train_latent, test_latent, test_labels, seed
    )
    return {f"gmm_{key}": value for key, value in found.items()}


def full_mixture(n_clusters: int, seed: int = 0) -> GaussianMixture:
    """The (unfitted) Gaussian mixture ``gmm_scores`` reads clusters with: full covariances,
    the most likely of ``GMM_RESTARTS`` fits kept."""
    return GaussianMixture(
        n_components=n_clusters, covariance_type="full", n_init=GMM_RESTARTS, random_state=seed
    )


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
