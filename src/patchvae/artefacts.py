"""File names of patchvae's artefacts, and how to recognise a folder patchvae made.

A run folder holds ``settings.yaml`` (written first), ``checkpoint.pt`` (after every epoch),
the stage records (``training.json``, ``metrics.json``), figures, ``report.html``, default
embedding tables and ``analysis-<store>/`` folders. Only files named here are ever removed by
patchvae (when the demo replaces its own earlier output).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

SETTINGS_FILE = "settings.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
TRAINING_FILE = "training.json"
METRICS_FILE = "metrics.json"
ANALYSIS_FILE = "analysis.json"
REPORT_FILE = "report.html"
COMPARE_ROW_FILE = "compare-row.json"
DEMO_MARKER = "patchvae-demo.json"
ANALYSIS_PREFIX = "analysis-"

FIGURES = (
    "loss.png",
    "latent.png",
    "latent_umap.png",
    "manifold.png",
    "reconstructions.png",
    "latent_lesion.png",
    "latent_lesion_fraction.png",
    "heatmaps.png",
    "few_labels.png",
)
RUN_FILES = (
    SETTINGS_FILE,
    CHECKPOINT_FILE,
    TRAINING_FILE,
    METRICS_FILE,
    REPORT_FILE,
    COMPARE_ROW_FILE,
    *FIGURES,
)
RUN_FILE_PATTERNS = ("embedding-*.csv", "embedding-*.parquet")
ANALYSIS_FILES = (ANALYSIS_FILE, *FIGURES)


def is_run_file(name: str) -> bool:
    """Whether ``name`` is a file name patchvae writes at the top of a run folder.

    Example
    -------
    >>> is_run_file("checkpoint.pt"), is_run_file("embedding-s.csv"), is_run_file("notes.txt")
    (True, True, False)
    """
    return name in RUN_FILES or any(fnmatch.fnmatch(name, p) for p in RUN_FILE_PATTERNS)


def analysis_dir(run: str | Path, store: str | Path) -> Path:
    """Where ``patchvae analyze RUN --patches STORE`` writes: ``RUN/analysis-<store name>/``."""
    return Path(run) / f"{ANALYSIS_PREFIX}{Path(store).stem}"
