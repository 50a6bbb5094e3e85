"""What an analysis writes beside its numbers: the figure data the report draws from, the
latent explorer's data, and each analysed case's score maps as NIfTI on its file's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchvae.analysis.heatmap import backproject, score_volume
from patchvae.analysis.projection import fit_projection
from patchvae.artefacts import MAPS_DIR
from patchvae.geometry import Grid, write_on_grid
from patchvae.patches import paste
from patchvae.stages.patch_scores import BASELINE
from patchvae.store import PatchStore

HEATMAP_SLICES = 4
EXPLORER_MAX_PATCHES = 10000  # points of the latent explorer (every lesion patch first)


def figure_data(
    part: pd.DataFrame,
    mu: np.ndarray,
    train_mu: np.ndarray,
    scores: dict[str, np.ndarray],
    patches: np.ndarray,
    lesion_masks: np.ndarray,
    store: PatchStore,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What the report draws the analysis's figures from: arrays (``figure-data.npz``) and
    the facts beside them (``projection``, ``heatmaps`` of ``analysis.json``)."""
    projection = fit_projection(train_mu)
    arrays = {
        "coords": projection.transform(mu),
        "label": part.label.to_numpy(),
        "lesion_fraction": np.nan_to_num(part.lesion_fraction.to_numpy()),
    }
    learnt = [n for n in ("p_lesion", "p_lesion_weak") if n in scores]
    names = ["neg_elbo", "latent_nll", *learnt, BASELINE]
    lesion_voxels = lesion_masks.reshape(len(part), -1).sum(axis=1)
    per_slice = (
        pd.Series(lesion_voxels)
        .groupby([part.case_id, part.slice])
        .sum()
        .sort_values(ascending=False)
    )
    shapes = {case["case_id"]: case["shape_zyx"][1:] for case in store.cases}
    # percentile ranks among the analysed patches: one colour scale for every slice
    ranks = {name: pd.Series(scores[name]).rank(pct=True).to_numpy() for name in names}
    labels = []
    for i, (case_id, k) in enumerate(per_slice.index[:HEATMAP_SLICES]):
        in_slice = ((part.case_id == case_id) & (part.slice == k)).to_numpy()
        sub = part[in_slice]
        shape = tuple(shapes[case_id])
        rows, cols = sub.row.to_numpy(), sub.col.to_numpy()
        image = patches[in_slice][:, 0].astype(np.float64)
        arrays[f"panel{i}_image"] = paste(image, rows, cols, shape)[0]
        arrays[f"panel{i}_lesion"] = paste(lesion_masks[in_slice], rows, cols, shape)[0]
        for name in names:
            maps = backproject(ranks[name][in_slice], sub, store.patch_size, shape)
            arrays[f"panel{i}_{name}"] = maps[(str(case_id), int(k))]
        labels.append(f"{case_id}\nslice {k}")
    arrays.update(_explorer_data(part, patches, seed=0))
    facts = {
        "projection": {
            "description": projection.description,
            "axis_labels": list(projection.axis_labels),
        },
        "heatmaps": {"scores": names, "panels": labels},
    }
    return arrays, facts


def write_case_maps(
    folder: Path, table: pd.DataFrame, names: list[str], store: PatchStore
) -> dict[str, dict[str, str]]:
    """Each analysed case's score maps as NIfTI on the grid of the file it was extracted from
    (``maps/<case>/<score>.nii.gz``): each voxel the mean score of the patches covering it.
    Stores made before patchvae 0.3 record no grid in space; their cases get no maps."""
    written: dict[str, dict[str, str]] = {}
    cases = {case["case_id"]: case for case in store.cases}
    for case_id, part in table.groupby("case_id", sort=True):
        info = cases[str(case_id)]
        if not info.get("grid") or not info.get("source_grid"):
            continue
        canonical, source = Grid(**info["grid"]), Grid(**info["source_grid"])
        first: dict[str, str] = next(iter(info.get("sources", {}).values()), {})
        like = Path(first["path"]) if "path" in first else None
        target = folder / str(case_id)
        target.mkdir(parents=True)
        written[str(case_id)] = {}
        where = (part.slice.to_numpy(), part.row.to_numpy(), part.col.to_numpy())
        shape, count = tuple(info["shape_zyx"]), None  # counted once, for the first score
        for name in names:
            mean, count = score_volume(
                part[name].to_numpy(), *where, store.patch_size, shape, count
            )
            path = target / f"{name}.nii.gz"
            file = write_on_grid(mean.astype(np.float32), canonical, source, path, like)
            written[str(case_id)][name] = f"{MAPS_DIR}/{case_id}/{file}"
    return written


def _explorer_data(part: pd.DataFrame, patches: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """What the latent explorer shows: which analysed patches (at most
    ``EXPLORER_MAX_PATCHES``: every lesion patch, then others drawn at random), their first
    channel as 8-bit images, and each one's slice as far as the analysed patches cover it."""
    n = len(part)
    lesion = np.flatnonzero(part.label.to_numpy() == 1)
    others = np.setdiff1d(np.arange(n), lesion)
    rng = np.random.default_rng(seed)
    room = max(0, EXPLORER_MAX_PATCHES - len(lesion))
    chosen = np.concatenate([lesion[:EXPLORER_MAX_PATCHES], rng.permutation(others)[:room]])
    chosen = np.sort(chosen)
    size = patches.shape[-1]
    where = part.iloc[chosen]
    keys = list(dict.fromkeys(zip(where.case_id.astype(str), where.slice.astype(int), strict=True)))
    canvases = []
    high = int(part.row.max()) + size if n else size
    wide = int(part.col.max()) + size if n else size
    for case_id, k in keys:
        on = ((part.case_id.astype(str) == case_id) & (part.slice == k)).to_numpy()
        canvas, _ = paste(
            patches[on][:, 0], part.row.to_numpy()[on], part.col.to_numpy()[on], (high, wide)
        )
        canvases.append(canvas)
    slot = {key: i for i, key in enumerate(keys)}
    return {
        "explorer_index": chosen.astype(np.int64),
        "explorer_pixels": _as_bytes(patches[chosen][:, 0]),
        "explorer_slices": _as_bytes(np.stack(canvases))
        if canvases
        else np.zeros((0, high, wide), np.uint8),
        "explorer_slice_of": np.array(
            [slot[(str(c), int(k))] for c, k in zip(where.case_id, where.slice, strict=True)],
            dtype=np.int64,
        ),
    }


def _as_bytes(images: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] as 8-bit grey levels."""
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
