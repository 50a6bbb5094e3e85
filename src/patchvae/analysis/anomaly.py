"""Scalar anomaly scores per patch and their patch-level detection metrics.

Higher score = more anomalous, for every score: reconstruction error, KL, negative ELBO, the
negative log-density of the patch's latent mean under the training patches' aggregate
posterior, and the intensity baseline (the patch's 95th-percentile normalised intensity).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import average_precision_score, roc_auc_score

AGGREGATE_MAX_COMPONENTS = 5000  # training patches used as mixture components


def aggregate_posterior_nll(
    query_mu: np.ndarray,
    train_mu: np.ndarray,
    train_logvar: np.ndarray,
    seed: int = 0,
    batch: int = 512,
) -> np.ndarray:
    """-log q(z) at each query point, q = (1/N) sum_i N(mu_i, diag exp(logvar_i)), the aggregate
    posterior of the training patches (at most ``AGGREGATE_MAX_COMPONENTS``, drawn at random).

    Example
    -------
    >>> mu = np.zeros((1, 1)); lv = np.zeros((1, 1))
    >>> round(float(aggregate_posterior_nll(np.zeros((1, 1)), mu, lv)[0]), 4)  # -log N(0; 0, 1)
    0.9189
    """
    if train_mu.shape[0] > AGGREGATE_MAX_COMPONENTS:
        keep = np.random.default_rng(seed).choice(
            train_mu.shape[0], AGGREGATE_MAX_COMPONENTS, replace=False
        )
        train_mu, train_logvar = train_mu[keep], train_logvar[keep]
    var = np.exp(train_logvar.astype(np.float64))
    log_norm = -0.5 * (np.log(2 * np.pi * var).sum(axis=1))  # (N,)
    out = np.empty(query_mu.shape[0])
    for start in range(0, query_mu.shape[0], batch):
        q = query_mu[start : start + batch].astype(np.float64)[:, None, :]  # (b, 1, d)
        log_pdf = log_norm[None, :] - 0.5 * ((q - train_mu[None]) ** 2 / var[None]).sum(axis=2)
        out[start : start + batch] = -(logsumexp(log_pdf, axis=1) - np.log(train_mu.shape[0]))
    return out


def intensity_baseline(patches: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """The patch's ``percentile`` normalised intensity (mean over channels): a score with no
    learning at all, for lesions brighter than tissue (DWI, FLAIR)."""
    flat = patches.reshape(patches.shape[0], patches.shape[1], -1)
    return np.percentile(flat, percentile, axis=2).mean(axis=1)


def detection_metrics(
    labels: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of ``score`` for ``labels`` (1 = lesion)."""
    if np.unique(labels).size < 2:
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {
        "auroc": float(roc_auc_score(labels, score, sample_weight=weights)),
        "auprc": float(average_precision_score(labels, score, sample_weight=weights)),
    }
