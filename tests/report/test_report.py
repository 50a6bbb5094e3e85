"""The report as a library: drawn from artefacts, with what is missing said on the page."""

from __future__ import annotations

import shutil
from pathlib import Path

from patchvae.report.html import build_report
from patchvae.studies.analyze import analyze


def test_an_analysis_without_figure_data_is_said(
    trained_run: Path, two_case_store: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis-*"))
    analyze(run, two_case_store)
    folder = run / f"analysis-{two_case_store.stem}"
    (folder / "figure-data.npz").unlink()  # as an analysis of patchvae 0.1
    (run / "checkpoint.pt").unlink()  # not needed by the report
    page = build_report(run).read_text()
    assert "holds no figure-data.npz" in page
    assert sorted(p.name for p in folder.iterdir()) == [
        "analysis.json",
        "few_labels.png",
        "maps",
        "patch-scores.parquet",
    ]
    assert (run / "loss.png").is_file() and not list(run.glob(".report.html.*"))
