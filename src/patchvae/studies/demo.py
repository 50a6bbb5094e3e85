"""The stroke half of ``patchvae demo``: the study's medical pipeline on the bundled case.

Extract the bundled ISLES'22 DWI at 1 mm (as the study's ISLES 2015 data were), train the
keras2016 network with slabs of slices held out (one case: no case to hold out), analyse the
held-out slabs, and write the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchvae.config import ExtractConfig, PatchTrainConfig
from patchvae.data.volumes import bundled_isles22_dir
from patchvae.extract import extract_dataset
from patchvae.presets import get_preset
from patchvae.report.html import build_report
from patchvae.studies.lesion_analysis import analyze_run
from patchvae.studies.patches import train_on_store

DEMO_SPACING_MM = 1.0


def run_stroke_demo(
    out: str | Path, epochs: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Extract, train, analyse and report on the bundled stroke case; return the headline facts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "isles22-dwi-1mm.h5"
    summary = extract_dataset(
        ExtractConfig(root=str(bundled_isles22_dir()), layout="isles2022", spacing=DEMO_SPACING_MM),
        store,
    )
    model, train = get_preset("keras2016")
    if epochs is not None:
        train = train.model_copy(update={"epochs": epochs})
    config = PatchTrainConfig(patches=str(store), model=model, train=train)
    run = out / "run"
    record = train_on_store(config, run, progress=progress)
    analysis = analyze_run(run, store)
    report = build_report(run)
    return {
        "patches": summary.patches,
        "lesion_patches": summary.lesion_patches,
        "split": record["split"],
        "analysis": analysis,
        "report": report,
    }
