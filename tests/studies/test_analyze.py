"""``analyze`` as a library: embeds where needed, analyses, and seeds as the run was seeded."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from patchvae.artefacts import ANALYSIS_FILE, AnalysisResult, analysis_dir, read_record
from patchvae.studies.analyze import analyze


def test_seeded_as_the_run_unless_told(
    trained_run: Path, two_case_store: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis-*"))
    settings = yaml.safe_load((run / "settings.yaml").read_text())
    settings["train"]["seed"] = 5  # as if trained with seed 5
    (run / "settings.yaml").write_text(yaml.safe_dump(settings))
    result = analyze(run, two_case_store)
    assert result.seed == 5 and "--seed 5" in result.reproduce
    assert (
        read_record(AnalysisResult, analysis_dir(run, two_case_store) / ANALYSIS_FILE, "a")
        == result
    )
    assert analyze(run, two_case_store, seed=1).seed == 1
