"""`patchvae analyze`: how well a run's latent space and scores separate lesion from healthy
patches, on patches the model never trained on, always beside an intensity-only baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

from patchvae.analysis.anomaly import aggregate_posterior_nll, detection_metrics, intensity_baseline
from patchvae.analysis.fewlabel import few_label_auroc
from patchvae.analysis.heatmap import backproject, voxel_metrics
from patchvae.analysis.metrics import agreement
from patchvae.analysis.projection import fit_projection
from patchvae.artefacts import (
    ANALYSIS_FILE,
    ANALYSIS_FILES,
    SETTINGS_FILE,
    TRAINING_FILE,
    analysis_dir,
)
from patchvae.config import PatchTrainConfig, load_yaml_config
from patchvae.errors import DataError, RunDirError
from patchvae.io import atomic_folder, read_json, write_json_atomic
from patchvae.locks import lock_folder
from patchvae.patches import paste
from patchvae.report.figures import (
    plot_few_labels,
    plot_heatmaps,
    plot_latent_continuous,
    plot_latent_scatter,
)
from patchvae.runtime import provenance
from patchvae.store import PatchStore, file_sha256
from patchvae.studies.patches import checkpoint_record, embed_store

VAE_SCORES = ("recon_error", "kl", "neg_elbo", "latent_nll")
BASELINE = "intensity_p95"
FEW_LABEL_KS = (5, 10, 20, 50)
_KINDS = {BASELINE: "baseline", "p_lesion": "semi-supervised"}
HEATMAP_SLICES = 4


def analyze_run(run: str | Path, store_path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write ``analysis.json`` and figures into ``RUN/analysis-<store>/``; return the numbers.

    The run folder is held for the whole analysis. An analysis folder that holds the analysis
    of another store (same file name, other path) is not replaced.
    """
    run = Path(run)
    if not (run / SETTINGS_FILE).is_file():
        raise DataError(run, f"not a run folder made by `patchvae train` (no {SETTINGS_FILE})")
    with lock_folder(run, create=False):
        return _analyze(run, PatchStore(store_path), seed)


def _check_analysis_target(out: Path, store: PatchStore) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RunDirError(f"{out}: is not a folder patchvae made; it is never replaced")
    if out.is_dir():
        strange = sorted(p.name for p in out.iterdir() if p.name not in ANALYSIS_FILES)
        if strange:
            raise RunDirError(
                f"{out / strange[0]}: was not written by patchvae; the analysis folder holding "
                "it is never replaced (move the file)"
            )
    earlier = out / ANALYSIS_FILE
    if not earlier.is_file():
        return
    try:
        other = Path(read_json(earlier, "analysis")["store"]["path"])
    except (DataError, KeyError, TypeError):
        return  # damaged: ours (it is in our run folder), and replaced whole
    if other != store.path.resolve():
        raise RunDirError(
            f"{out}: holds the analysis of another store ({other}); rename or copy "
            f"{store.path.name} to analyse it beside that one"
        )


def _check_training_store(run: Path, path: Path) -> str:
    """The analysis compares held-out patches with the training patches' latents: the
    training store must still be the one the run trained on. Returns its SHA-256."""
    found = read_json(run / TRAINING_FILE, "training record")
    record = found.get("store") if isinstance(found, dict) else None
    record = record if isinstance(record, dict) else {}
    if not path.is_file():
        raise DataError(path, "the run's training store is gone; the analysis needs it")
    sha256 = file_sha256(path)
    if record.get("sha256") not in (None, sha256):
        raise DataError(
            path,
            "the run's training store changed since training (SHA-256 differs from "
            f"{TRAINING_FILE}); extract it again with the run's settings, or train anew",
        )
    return sha256


def _analyze(run: Path, store: PatchStore, seed: int) -> dict[str, Any]:
    settings = load_yaml_config(PatchTrainConfig, run / SETTINGS_FILE)
    out = analysis_dir(run, store.path)
    _check_analysis_target(out, store)
    made_from = checkpoint_record(run)
    training_sha256 = _check_training_store(run, Path(settings.patches))
    frame = embed_store(run, store.path)
    same_store = Path(settings.patches).resolve() == store.path.resolve()
    # a store of many GB is read once for its checksum, not twice
    store_sha256 = training_sha256 if same_store else file_sha256(store.path)
    train_frame = frame if same_store else embed_store(run, settings.patches)
    train_part = train_frame[train_frame.seen_in_training]
    if len(train_part) < 2:
        raise DataError(
            Path(settings.patches),
            f"the run trained on {len(train_part)} patch(es) of this store; the analysis fits "
            "its clusters and densities on training patches and needs at least 2",
        )
    held_out = ~frame.seen_in_training.to_numpy()
    evaluation = "patches the model never trained on"
    if not held_out.any():
        held_out[:] = True
        evaluation = "ALL patches (every patch of this store was seen in training)"
    rows = np.flatnonzero(held_out)
    part = frame.iloc[rows].reset_index(drop=True)
    labelled = (part.label >= 0).to_numpy()
    if not labelled.any():
        raise DataError(
            store.path, "no patch has a lesion label (no lesion masks): nothing to score"
        )
    latent_dim = sum(c.startswith("mu_") for c in frame.columns)
    mu = part[[f"mu_{i}" for i in range(latent_dim)]].to_numpy()
    train_mu = train_part[[f"mu_{i}" for i in range(latent_dim)]].to_numpy()
    train_logvar = train_part[[f"logvar_{i}" for i in range(latent_dim)]].to_numpy()
    patches = store.patches(rows)
    scores = {name: part[name].to_numpy() for name in VAE_SCORES[:3]}
    scores["latent_nll"] = aggregate_posterior_nll(mu, train_mu, train_logvar, seed)
    if "p_lesion" in part:
        scores["p_lesion"] = part["p_lesion"].to_numpy()  # semi-supervised classifier
    scores[BASELINE] = intensity_baseline(patches)
    labels = part.label.to_numpy()

    result: dict[str, Any] = {
        "store": {"path": str(store.path.resolve()), "sha256": store_sha256},
        "run": str(run.resolve()),
        "checkpoint": made_from,
        "seed": seed,
        "evaluation_set": evaluation,
        "n_patches": len(part),
        "n_lesion": int((labels == 1).sum()),
        "cases": sorted(part.case_id.unique().tolist()),
        "patch_scores": {
            name: {
                **detection_metrics(labels[labelled], s[labelled]),
                "kind": _KINDS.get(name, "vae"),
            }
            for name, s in scores.items()
        },
        "clustering": _clustering(train_mu, mu[labelled], labels[labelled], seed),
        "few_labels": {
            "latent": _few(mu[labelled], labels[labelled], seed),
            BASELINE: _few(scores[BASELINE][labelled, None], labels[labelled], seed),
        },
    }
    masks_lesion, masks_brain = store.masks("lesion")[rows], store.masks("brain")[rows]
    result["voxel_scores"] = {
        name: voxel_metrics(s, masks_lesion, masks_brain) for name, s in scores.items()
    }
    result["settings"] = settings.model_dump(mode="json")
    result["provenance"] = provenance()
    result["reproduce"] = f"patchvae analyze {run} --patches {store.path} --seed {seed}"
    # all files of the analysis appear together, replacing an earlier one whole
    with atomic_folder(out) as folder:
        _figures(folder, part, mu, train_mu, labels, scores, patches, masks_lesion, store)
        plot_few_labels(
            {
                "latent (logistic regression)": result["few_labels"]["latent"],
                f"{BASELINE} only": result["few_labels"][BASELINE],
            },
            folder / "few_labels.png",
            "A few labelled patches: AUROC on the rest (mean +- sd over draws)",
        )
        write_json_atomic(folder / ANALYSIS_FILE, result)
    return result


def _clustering(
    train_mu: np.ndarray, mu: np.ndarray, labels: np.ndarray, seed: int
) -> dict[str, Any]:
    """k-means and a 2-component Gaussian mixture fitted on training latents, applied here."""
    found: dict[str, Any] = {}
    models = {
        "kmeans": KMeans(n_clusters=2, n_init=10, random_state=seed),
        "gmm": GaussianMixture(n_components=2, covariance_type="full", random_state=seed),
    }
    for name, model in models.items():
        predicted = model.fit(train_mu).predict(mu)
        two = np.unique(predicted).size > 1
        found[name] = {
            **agreement(labels, predicted),
            "silhouette": float(
                silhouette_score(mu, predicted, sample_size=min(5000, len(mu)), random_state=seed)
            )
            if two
            else float("nan"),
        }
    return found


def _figures(
    out: Path,
    part: pd.DataFrame,
    mu: np.ndarray,
    train_mu: np.ndarray,
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    patches: np.ndarray,
    lesion_masks: np.ndarray,
    store: PatchStore,
) -> None:
    projection = fit_projection(train_mu)
    coords = projection.transform(mu)
    plot_latent_scatter(
        coords,
        labels,
        out / "latent_lesion.png",
        f"Held-out patches: posterior means (n={len(part)}); {projection.description}",
        projection.axis_labels,
        {0: "healthy", 1: "lesion", -1: "unlabelled"},
    )
    plot_latent_continuous(
        coords,
        np.nan_to_num(part.lesion_fraction.to_numpy()),
        out / "latent_lesion_fraction.png",
        "Held-out patches coloured by the fraction of lesion voxels",
        projection.axis_labels,
    )
    size = store.patch_size
    names = ["neg_elbo", "latent_nll", *(["p_lesion"] if "p_lesion" in scores else []), BASELINE]
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
    panels: list[dict[str, Any]] = []
    for case_id, k in per_slice.index[:HEATMAP_SLICES]:
        in_slice = ((part.case_id == case_id) & (part.slice == k)).to_numpy()
        sub = part[in_slice]
        height, width = shapes[case_id]
        rows, cols = sub.row.to_numpy(), sub.col.to_numpy()
        image, _ = paste(patches[in_slice][:, 0].astype(np.float64), rows, cols, (height, width))
        lesion, _ = paste(lesion_masks[in_slice], rows, cols, (height, width))
        panel: dict[str, Any] = {"image": image, "lesion": lesion, "label": f"{case_id}\nslice {k}"}
        for name in names:
            maps = backproject(ranks[name][in_slice], sub, size, (height, width))
            panel[name] = maps[(str(case_id), int(k))]
        panels.append(panel)
    if panels:
        plot_heatmaps(
            panels,
            names,
            out / "heatmaps.png",
            "Patch scores (percentile among held-out patches) on the slices with the most lesion",
        )


def _few(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, dict[str, float] | None]:
    return {str(k): few_label_auroc(features, labels, k, seed=seed) for k in FEW_LABEL_KS}
