"""The scoring stage: a trained run + volumes -> score maps on each volume's own grid.

``patchvae score RUN INPUT... --out DIR`` preprocesses each input as the run's training store
was made (channels, resampling, brain mask, intensity scaling: taken from the run), cuts every
axial slice into patches on a dense sliding window (default stride: a quarter of the patch),
scores every patch, and averages the scores of the patches covering each voxel. The maps are
written as NIfTI on the input's own grid (same size, spacing, origin and direction), one per
score, beside a per-patch table and ``score.json``.

Windows are cut by :func:`patchvae.patches.extract_patches`, the function that made the
training store, so a window on the store's grid is exactly a store patch (same pixels, same
brain-fraction rule) and its scores are the analysis's; the per-voxel mean is a box filter
over the grid of scores (:func:`patchvae.analysis.heatmap.score_volume`).

Why not TorchIO's ``GridSampler``/``GridAggregator`` or MONAI's sliding-window inferer: both
cut every window of the volume and average per-voxel network outputs. Here (1) the windows
must be the store's (only those with the run's minimum brain fraction: scoring background
windows would pull the means at the brain's edge towards background), so that a run's scores
on the store's grid are its analysis's scores (tested); and (2) each window gives one number
per score, so their aggregators would need a patch-sized tensor per window and score (784
times the memory) to do what one box filter over the grid of corners does exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchvae.analysis.anomaly import detection_metrics
from patchvae.analysis.fewlabel import WeakScore
from patchvae.analysis.heatmap import score_volume
from patchvae.artefacts import (
    CHECKPOINT_FILE,
    COVERAGE_MAP,
    PATCH_SCORES_FILE,
    SCORE_FILE,
    SCORE_FORMAT,
    SCORE_WORDS,
    TRAINING_FILE,
    ScoreRecord,
    TrainingRecord,
    embedding_path,
    read_record,
)
from patchvae.checkpoint import load_checkpoint, model_from_payload
from patchvae.config import ExtractConfig
from patchvae.data.volumes import CaseFiles, discover_cases, is_image_file
from patchvae.embed import score_patches
from patchvae.errors import DataError, RunDirError
from patchvae.geometry import write_on_grid
from patchvae.io import atomic_folder, read_json
from patchvae.models.vae import VAE
from patchvae.patches import extract_patches
from patchvae.preprocess import NormalisedCase, load_case
from patchvae.runtime import provenance
from patchvae.stages.embedding import checkpoint_record, embed_store
from patchvae.stages.patch_scores import (
    Reference,
    own_score,
    patch_scores,
    recorded_patch_labels,
    training_reference,
    training_scores,
)
from patchvae.store import PatchStore, file_sha256
from patchvae.tables import read_embedding

MAP_SUFFIX = ".nii.gz"


@dataclass
class ScoredCase:
    """One input's patch table and maps (score name -> map on the canonical grid)."""

    case: NormalisedCase
    table: pd.DataFrame
    maps: dict[str, np.ndarray]
    coverage: np.ndarray

    def voxel_metrics(self) -> dict[str, dict[str, float]] | None:
        """Per map: voxel AUROC and AUPRC for the lesion mask, over the brain voxels that
        some scored patch covers (None without a lesion mask)."""
        lesion = self.case.lesion
        if lesion is None:
            return None
        inside = (self.coverage > 0) & self.case.brain
        return {
            name: {**detection_metrics(lesion[inside], values[inside]), "voxels": int(inside.sum())}
            for name, values in self.maps.items()
        }


def score_inputs(
    run: str | Path,
    inputs: list[Path],
    out: str | Path,
    stride: int | None = None,
    force: bool = False,
    on_case: Callable[[str, int], None] | None = None,
) -> ScoreRecord:
    """Score every case of ``inputs`` with the run; write maps, table and record into ``out``.

    ``inputs``: image files (one case each; runs on one channel) or dataset folders and CSV
    manifests in any layout ``extract`` reads. ``out`` is written whole at the end; an
    existing one is replaced only with ``force`` and only if patchvae's ``score`` made it.
    """
    run, out = Path(run), Path(out)
    check_score_target(out, force)
    payload = load_checkpoint(run / CHECKPOINT_FILE)
    model = model_from_payload(payload, run / CHECKPOINT_FILE)
    record = read_record(TrainingRecord, run / TRAINING_FILE, "training record")
    settings = _extraction(record)
    stride = stride or max(1, settings.patch_size // 4)
    cases = input_cases(inputs, settings.modalities)
    seed = int(record.settings.get("train", {}).get("seed", 0))
    # the training patches' posteriors, for the latent scores, as the analysis takes them
    frame = _training_frame(run, record)
    seen = None if frame is None else frame[frame.seen_in_training]
    reference = None if seen is None else training_reference(seen, seed)
    weak = _weak_score(record, seen, reference, model.config.architecture, seed)
    case_records: list[dict[str, Any]] = []
    tables: list[pd.DataFrame] = []
    with atomic_folder(out) as folder:
        for case in cases:
            scored = score_case(model, case, settings, stride, reference, weak)
            case_records.append(_write_maps(folder, scored, case))
            tables.append(scored.table)
            if on_case is not None:
                on_case(case.case_id, len(scored.table))
        pd.concat(tables, ignore_index=True).to_parquet(folder / PATCH_SCORES_FILE, index=False)
        result = ScoreRecord(
            format=SCORE_FORMAT,
            run=str(run.resolve()),
            checkpoint=checkpoint_record(run, payload),
            stride=stride,
            extraction=settings.model_dump(mode="json", exclude={"root", "workers"}),
            scores={
                name: SCORE_WORDS[name][1] for name in tables[0].columns if name in SCORE_WORDS
            },
            cases=case_records,
            provenance=provenance(),
            reproduce=(
                f"patchvae score {run} {' '.join(str(p) for p in inputs)} --out {out} "
                f"--stride {stride}"
            ),
        )
        (folder / SCORE_FILE).write_text(result.model_dump_json(indent=2) + "\n")
    return result


def check_score_target(out: Path, force: bool) -> None:
    """``out`` may receive a scoring: new, or (with ``force``) a folder ``score`` made."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RunDirError(f"{out}: is not a folder patchvae made; it is never replaced")
    if not out.exists():
        return
    if not (out / SCORE_FILE).is_file():
        if any(out.iterdir()):
            raise RunDirError(
                f"{out}: exists and was not written by `patchvae score`; it is never replaced "
                "(choose another --out)"
            )
        return
    try:
        read_json(out / SCORE_FILE, "score record")["format"]
    except (DataError, KeyError, TypeError):
        raise RunDirError(f"{out}: its {SCORE_FILE} is not patchvae's; never replaced") from None
    if not force:
        raise RunDirError(f"{out}: exists; give --force to replace this scoring")


def _extraction(record: TrainingRecord) -> ExtractConfig:
    """The training store's extraction settings: from the run, or (older runs) the store."""
    settings = record.extraction
    if settings is None:
        settings = PatchStore(record.store.path).settings
    return ExtractConfig(**{**settings, "workers": 1, "on_error": "fail"})


def input_cases(inputs: list[Path], channels: list[str]) -> list[CaseFiles]:
    """The cases of the inputs: an image file is one case of a one-channel run; a folder or
    CSV manifest gives its cases with the run's channels (a case without one is refused)."""
    cases: list[CaseFiles] = []
    for path in inputs:
        if is_image_file(path):
            if len(channels) != 1:
                raise DataError(
                    path,
                    f"the run was trained on {len(channels)} channels ({', '.join(channels)}); "
                    "give a dataset folder or CSV manifest that names each of them",
                )
            name = path.name.split(".")[0]
            cases.append(CaseFiles(case_id=name, channels={channels[0]: path}))
        else:
            cases.extend(discover_cases(path, "auto", channels))
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DataError(
                case.channels[channels[0]], f"case name {case.case_id!r} is given twice"
            )
        seen.add(case.case_id)
    return cases


def _training_frame(run: Path, record: TrainingRecord) -> pd.DataFrame | None:
    """The run's embedding of its training store (embedded here, in memory, where the run
    holds none: the run is not written); None when neither it nor the store is there."""
    path = embedding_path(run, record.store.path)
    if path.is_file():
        return read_embedding(path)[0]
    if Path(record.store.path).is_file():
        return embed_store(run, record.store.path)
    return None


def _weak_score(
    record: TrainingRecord,
    seen: pd.DataFrame | None,
    reference: Reference | None,
    architecture: str,
    seed: int,
) -> WeakScore | None:
    """A run with weak labels: its weakly supervised score, fitted on its training patches
    (``seen``: their rows of the run's embedding of its training store) as the analysis fits
    it (the same patches, labels and pseudo-labels); None for others."""
    budget = record.settings.get("weak_labels")
    if not budget:
        return None
    store_path = Path(record.store.path)
    if seen is None or reference is None or not store_path.is_file():
        raise DataError(
            store_path,
            "the run's weak score (weak_labels) is fitted on its training store, which is gone",
        )
    store = PatchStore(store_path)
    given = recorded_patch_labels(record, store)
    found = training_scores(seen, reference, store, architecture, False, int(budget), seed, given)
    return found.weak


def score_case(
    model: VAE,
    case: CaseFiles,
    settings: ExtractConfig,
    stride: int,
    reference: Reference | None,
    weak: WeakScore | None = None,
) -> ScoredCase:
    """Preprocess one case as the store was made, score its dense windows, build the maps
    (with ``weak``, a run's weakly supervised score, fitted on its training patches)."""
    normalised = load_case(case, settings)
    batch = extract_patches(
        normalised, settings.patch_size, stride, settings.min_brain, settings.lesion_threshold
    )
    if len(batch) == 0:
        raise DataError(
            next(iter(case.channels.values())),
            f"no {settings.patch_size}x{settings.patch_size} window holds {settings.min_brain:g} "
            "brain: nothing to score",
        )
    found = score_patches(model, batch.pixels)
    columns = {"case_id": case.case_id, "recon_error": found.recon_error, "kl": found.kl}
    columns.update(slice=batch.slice, row=batch.row, col=batch.col)  # where each window lies
    columns["neg_elbo"] = found.recon_error + found.kl
    if found.residual is not None:
        columns["residual_p95"] = found.residual
    if found.class_probability is not None:
        columns["p_lesion"] = found.class_probability[:, 1]
    frame = pd.DataFrame(columns)
    unsupervised = own_score(model.config.architecture, bool(model.config.classifier_classes))
    brain = batch.brain_mask.astype(bool)
    scores = patch_scores(frame, found.mu, reference, batch.pixels, brain, unsupervised, weak)
    table = pd.DataFrame(
        {
            "case_id": case.case_id,
            "slice": batch.slice,
            "row": batch.row,
            "col": batch.col,
            "brain_fraction": batch.brain_fraction,
            "lesion_fraction": batch.lesion_fraction,
            "label": batch.label,
            **{f"mu_{i}": found.mu[:, i] for i in range(found.mu.shape[1])},
            **scores,
        }
    )
    shape = normalised.brain.shape
    maps = {}
    coverage = None  # counted with the first score, then reused
    for name, values in scores.items():
        maps[name], coverage = score_volume(
            values, batch.slice, batch.row, batch.col, settings.patch_size, shape, coverage
        )
    assert coverage is not None
    return ScoredCase(normalised, table, maps, coverage)


def _write_maps(folder: Path, scored: ScoredCase, case: CaseFiles) -> dict[str, Any]:
    """Each map of a case as NIfTI on its first channel's own grid; the case's record."""
    normalised = scored.case
    assert normalised.grid is not None and normalised.source is not None
    target = folder / case.case_id
    target.mkdir()
    like = next(iter(case.channels.values()))
    files = {}
    grids = (normalised.grid, normalised.source)
    for name, values in scored.maps.items():
        path = target / f"{name}{MAP_SUFFIX}"
        files[name] = write_on_grid(values.astype(np.float32), *grids, path, like)
    path = target / f"{COVERAGE_MAP}{MAP_SUFFIX}"
    coverage = scored.coverage.astype(np.uint16)
    files[COVERAGE_MAP] = write_on_grid(coverage, *grids, path, like, label=True)
    table = scored.table
    return {
        "case_id": case.case_id,
        "inputs": {
            name: {"path": str(path.resolve()), "sha256": file_sha256(path)}
            for name, path in case.channels.items()
        },
        "patches": len(table),
        "lesion_patches": int((table.label == 1).sum()),
        "voxel_metrics": scored.voxel_metrics(),
        "maps": {name: f"{case.case_id}/{file}" for name, file in files.items()},
    }
