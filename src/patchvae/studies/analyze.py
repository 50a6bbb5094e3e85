"""``patchvae analyze``: the embedding stage where needed, then the analysis stage.

The run's embeddings of its training store and of the analysed store are made (again) only
when missing or made from an older checkpoint; the analysis then reads them from disk. A run
whose ``checkpoint.pt`` is gone is analysed from the embeddings it holds.
"""

from __future__ import annotations

from pathlib import Path

from patchvae.artefacts import SETTINGS_FILE, AnalysisResult, analysis_dir
from patchvae.config import PatchTrainConfig, load_yaml_config
from patchvae.errors import DataError
from patchvae.locks import lock_folder
from patchvae.stages.analysis import analyze_run, check_analysis_target
from patchvae.stages.embedding import current_embedding
from patchvae.store import PatchStore


def analyze(run: str | Path, store: str | Path, seed: int | None = None) -> AnalysisResult:
    """Analyse ``store`` with the run in ``run``: ``RUN/analysis-<store>/analysis.json``.
    ``seed`` (of the clusterings, the density's subsampling and the few-label draws) is by
    default the run's training seed; it is recorded in the result."""
    run = Path(run)
    if not (run / SETTINGS_FILE).is_file():
        raise DataError(run, f"not a run folder made by `patchvae train` (no {SETTINGS_FILE})")
    with lock_folder(run, create=False):
        settings = load_yaml_config(PatchTrainConfig, run / SETTINGS_FILE)
        check_analysis_target(analysis_dir(run, store), PatchStore(store))
        for path in dict.fromkeys(Path(p).resolve() for p in (settings.patches, store)):
            if path.is_file():  # a missing store is reported by the analysis, in its words
                current_embedding(run, path)
        return analyze_run(run, store, settings.train.seed if seed is None else seed)
