"""Static figures: latent scatter, decoded manifold, reconstructions, loss curves.

Each figure is written atomically (temporary name, then rename) as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from patchvae.io import atomic_path

_PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _finish_plane(
    fig: plt.Figure, ax: Any, path: str | Path, title: str, axis_labels: Sequence[str]
) -> Path:
    """Axis names, title and a light grid on a picture of the latent plane; then save it."""
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.2)
    return save_figure(fig, path)


def plot_latent_scatter(
    coords: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str,
    axis_labels: Sequence[str] = ("z1", "z2"),
    label_names: dict[int, str] | None = None,
) -> Path:
    """Scatter of 2-D latent coordinates, one colour per label. Points are drawn in random
    order so that no class hides another, except that rarer classes come last (on top): a few
    lesion patches stay visible among many healthy ones."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    rng = np.random.default_rng(0)
    classes, counts = np.unique(labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    order = rng.permutation(coords.shape[0])
    order = order[np.argsort([-count_of[v] for v in labels[order].tolist()], kind="stable")]
    colour_of = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(classes)}
    ax.scatter(
        coords[order, 0],
        coords[order, 1],
        c=[colour_of[c] for c in labels[order]],
        s=6,
        alpha=0.6,
        linewidths=0,
    )
    for c in classes:
        name = (label_names or {}).get(int(c), str(c))
        count = int((labels == c).sum())
        ax.scatter([], [], c=colour_of[c], s=30, label=f"{name} (n={count})")
    ax.legend(loc="best", markerscale=1.2, frameon=True)
    return _finish_plane(fig, ax, path, title, axis_labels)


def plot_manifold(
    images: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    path: str | Path,
    title: str,
    axis_labels: Sequence[str] = ("z1", "z2"),
) -> Path:
    """Tile the images decoded from :func:`manifold_plane`'s grid, (n*n, C, H, W) in [0, 1]."""
    n = len(xs)
    channels, height, width = images.shape[1:]
    tiles = images[:, 0] if channels == 1 else images.mean(axis=1)
    canvas = tiles.reshape(n, n, height, width).transpose(0, 2, 1, 3).reshape(n * height, n * width)
    fig, ax = plt.subplots(figsize=(7, 7))
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    ax.imshow(canvas, cmap="Greys_r", extent=extent, aspect="auto", vmin=0, vmax=1)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray, path: str | Path, title: str
) -> Path:
    """Originals (top row) above their reconstructions (bottom row); arrays (k, C, H, W)."""
    k = originals.shape[0]
    fig, axes = plt.subplots(2, k, figsize=(1.1 * k, 2.6), squeeze=False)
    for i in range(k):
        for row, source in enumerate((originals, reconstructions)):
            ax = axes[row, i]
            ax.imshow(source[i].mean(axis=0), cmap="Greys_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("decoded\nmean", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_loss_curves(history: list[dict[str, float]], path: str | Path, title: str) -> Path:
    """Train and validation loss per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train", marker=".")
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation", marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per sample (negative ELBO)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_latent_continuous(
    coords: np.ndarray,
    values: np.ndarray,
    path: str | Path,
    title: str,
    axis_labels: Sequence[str] = ("z1", "z2"),
    colour_label: str = "lesion fraction",
) -> Path:
    """Scatter coloured by a continuous value; the highest values drawn last (on top)."""
    order = np.argsort(values, kind="stable")
    fig, ax = plt.subplots(figsize=(7, 6))
    points = ax.scatter(
        coords[order, 0],
        coords[order, 1],
        c=values[order],
        cmap="viridis",
        s=8,
        alpha=0.8,
        linewidths=0,
    )
    fig.colorbar(points, ax=ax, label=colour_label)
    return _finish_plane(fig, ax, path, title, axis_labels)


def plot_heatmaps(
    panels: list[dict[str, np.ndarray | str]],
    score_names: Sequence[str],
    path: str | Path,
    title: str,
    titles: Sequence[str] | None = None,
) -> Path:
    """One row per slice: the image with the lesion contour, then one heat map per score,
    with one colour bar for all (every map is a percentile rank in [0, 1]) and the patient's
    directions at the image edges (radiological view: patient's right on the left).

    Each panel holds ``image`` (y, x), ``lesion`` (y, x) bool, ``label`` (str) and one (y, x)
    map per score name (NaN where no patch lies). ``titles``: the scores' names in words.
    """
    rows, cols = len(panels), 1 + len(score_names)
    titles = list(titles or score_names)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols + 0.8, 3.4 * rows), squeeze=False, layout="constrained"
    )
    shown = None
    for i, panel in enumerate(panels):
        image = np.asarray(panel["image"])
        lesion = np.asarray(panel["lesion"])
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if j > 0:
                heat = np.asarray(panel[score_names[j - 1]], dtype=float)
                shown = ax.imshow(
                    np.ma.masked_invalid(heat), cmap="inferno", alpha=0.6, vmin=0, vmax=1
                )
            if lesion.any():
                ax.contour(lesion.astype(float), levels=[0.5], colors="#00e5ff", linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            _orientation_marks(ax)
            if i == 0:
                ax.set_title("image, lesion outlined" if j == 0 else titles[j - 1], fontsize=11)
        axes[i, 0].set_ylabel(str(panel["label"]), fontsize=10)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=0.6, pad=0.01)
        bar.set_label("percentile rank among held-out patches (1: most anomalous)")
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path)


def _orientation_marks(ax: Any) -> None:
    """R, L, A, P at the edges of an axial slice of a canonical (LPS) volume, drawn with
    ``imshow``: columns run towards the patient's left, rows towards posterior."""
    style = {"color": "#ffd54f", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, "R", ha="left", va="center", **style)
    ax.text(0.98, 0.5, "L", ha="right", va="center", **style)
    ax.text(0.5, 0.98, "A", ha="center", va="top", **style)
    ax.text(0.5, 0.02, "P", ha="center", va="bottom", **style)


def plot_few_labels(
    results: dict[str, dict[str, dict[str, float] | None]], path: str | Path, title: str
) -> Path:
    """AUROC (mean +- sd over draws) against the number of labelled patches, one line per
    feature set."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_k in results.items():
        ks = [int(k) for k, r in by_k.items() if r is not None]
        means = [by_k[str(k)]["mean"] for k in ks]  # type: ignore[index]
        sds = [by_k[str(k)]["sd"] for k in ks]  # type: ignore[index]
        ax.errorbar(ks, means, yerr=sds, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    all_ks = sorted({int(k) for by_k in results.values() for k in by_k})
    ax.set_xticks(all_ks, labels=[str(k) for k in all_ks])
    ax.minorticks_off()
    ax.set_xlabel("labelled patches")
    ax.set_ylabel("AUROC on the other patches")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_comparison(table: Any, metrics: Sequence[str], path: str | Path, title: str) -> Path:
    """Horizontal bars, one group per row of ``table``, one bar per metric (mean, sd bars);
    a row without a metric has no bar for it."""
    rows = len(table)
    height = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * max(rows, 1) * max(len(metrics), 1) ** 0.5 + 1.5))
    positions = np.arange(rows)
    for i, metric in enumerate(metrics):
        if f"{metric}_mean" not in table:
            continue
        ax.barh(
            positions + i * height,
            table[f"{metric}_mean"].fillna(0),
            height,
            xerr=table[f"{metric}_sd"].fillna(0),
            capsize=3,
            label=metric,
            color=_PALETTE[i % len(_PALETTE)],
        )
    ax.set_yticks(positions + height * (len(metrics) - 1) / 2, labels=list(table["model"]))
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
