"""Two-dimensional views of a latent space for the pictures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.decomposition import PCA

from patchvae.errors import ConfigError


@dataclass
class Projection2D:
    """Maps latents to the plane: identity for 2-D latents, else PCA fitted on reference data."""

    method: str  # "identity" or "pca"
    axis_labels: tuple[str, str]
    mean: np.ndarray  # (latent_dim,)
    components: np.ndarray  # (2, latent_dim): rows span the plane

    def transform(self, latent: np.ndarray) -> np.ndarray:
        return (latent - self.mean) @ self.components.T if self.method == "pca" else latent[:, :2]

    def inverse(self, coords: np.ndarray) -> np.ndarray:
        """Latent points for plane coordinates (other PCA components at the mean)."""
        return coords @ self.components + self.mean if self.method == "pca" else coords

    @property
    def description(self) -> str:
        if self.method == "identity":
            return "latent dimensions 1 and 2"
        return (
            f"first two PCA components of the latent ({self.axis_labels[0]}, {self.axis_labels[1]})"
        )


def fit_projection(reference: np.ndarray, seed: int = 0) -> Projection2D:
    """Identity for 2-D latents; otherwise PCA fitted on ``reference`` (e.g. train latents)."""
    dim = reference.shape[1]
    if dim == 2:
        return Projection2D("identity", ("z1", "z2"), np.zeros(2), np.eye(2))
    if dim < 2:
        padded = np.zeros((2, dim))
        padded[0, 0] = 1.0
        return Projection2D("pca", ("z1", "(none)"), np.zeros(dim), padded)
    pca = PCA(n_components=2, random_state=seed).fit(reference)
    ratio = pca.explained_variance_ratio_
    labels = (f"PC1 ({ratio[0]:.0%} var.)", f"PC2 ({ratio[1]:.0%} var.)")
    return Projection2D("pca", labels, pca.mean_, pca.components_)


def umap_embed(train: np.ndarray, test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """UMAP to 2-D fitted on ``train``, applied to ``test`` (optional extra: umap-learn).

    The first call in a process compiles UMAP's numba kernels (minutes on a small CPU).
    """
    try:
        import umap
    except ImportError:
        raise ConfigError(
            "UMAP needs the optional package umap-learn: pip install umap-learn"
        ) from None
    reducer = umap.UMAP(n_components=2, random_state=seed).fit(train)
    return np.asarray(reducer.embedding_), np.asarray(reducer.transform(test))


def manifold_grid(n: int = 15, quantile_range: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Grid values through the inverse normal CDF, as in the 2016 Keras example: evenly spaced
    quantiles of N(0, 1), so the grid is dense where the prior has its mass."""
    return norm.ppf(np.linspace(quantile_range[0], quantile_range[1], n))


def manifold_plane(
    n: int = 15, scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n x n`` grid over the latent plane that :func:`plot_manifold` tiles: the N(0, 1)
    quantile grid stretched by ``scale`` along each axis (1 for a standard-normal latent).
    Returns (coords (n*n, 2) float32, row by row from high to low y; xs; ys)."""
    values = manifold_grid(n)
    xs, ys = values * scale[0], values * scale[1]
    # Rows run top to bottom from high to low y, as a plot's axis does.
    coords = np.array([[x, y] for y in ys[::-1] for x in xs], dtype=np.float32)
    return coords, xs, ys
