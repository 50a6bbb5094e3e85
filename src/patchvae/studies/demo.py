"""``patchvae demo``: the reference study on the data bundled with patchvae.

First MNIST 7 vs 9 with the keras2016 network; then the medical pipeline: extract the bundled
ISLES'22 DWI at 1 mm (as the study's ISLES 2015 data were), train the keras2016 network with
slabs of slices held out (one case: no case to hold out), analyse the held-out slabs, and
write the reports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from patchvae.artefacts import DEMO_MARKER, REPORT_FILE, MnistRecord
from patchvae.config import ExtractConfig, MnistStudyConfig, PatchTrainConfig
from patchvae.config.presets import build_settings
from patchvae.data.volumes import bundled_isles22_dir
from patchvae.errors import RunDirError
from patchvae.extract import extract_dataset
from patchvae.io import missing_folders, remove_empty, write_json_atomic
from patchvae.locks import lock_file, lock_folder
from patchvae.report.html import build_report
from patchvae.stages.training import train_on_store
from patchvae.studies.analyze import analyze

DEMO_SPACING_MM = 1.0
DEMO_STORE = "isles22-dwi-1mm.h5"
PARTS = ("mnist", "stroke")


@contextmanager
def demo_folder(out: str | Path) -> Iterator[Path]:
    """Hold ``out`` for a demo run. An earlier demo's output there (recognised by its marker
    file) is removed first, file by file: only what patchvae wrote; the user's own files stay,
    and if any sits inside the demo's run folders, nothing is removed and the demo stops."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).is_file():
        raise RunDirError(f"{out}: is not empty and holds no earlier demo; choose another --out")
    created = missing_folders(out)
    with lock_folder(out):
        _remove_earlier_demo(out)
        write_json_atomic(out / DEMO_MARKER, {"parts": list(PARTS)})
        try:
            yield out
        except BaseException:
            if set(os.listdir(out)) == {DEMO_MARKER}:  # nothing of the demo was kept
                (out / DEMO_MARKER).unlink()
                remove_empty(created)
            raise


def _remove_earlier_demo(out: Path) -> None:
    from patchvae.rundir import own_run_files
    from patchvae.store import is_patch_store

    runs = [run for run in (out / "mnist", out / "stroke" / "run") if run.is_dir()]
    stroke = out / "stroke"
    files: list[Path] = []
    with ExitStack() as held:
        # holding each output removes what a killed demo left there (temporaries, a store's
        # lock file), and makes sure no other process is using it
        for run in runs:
            held.enter_context(lock_folder(run, create=False))
        if stroke.is_dir():
            held.enter_context(lock_file(stroke / DEMO_STORE))
        for run in runs:
            files += own_run_files(run)
        if stroke.is_dir():
            for entry in stroke.iterdir():
                if entry.name in ("run", f".{DEMO_STORE}.lock"):
                    continue
                if not (entry.name == DEMO_STORE and is_patch_store(entry)):
                    raise RunDirError(
                        f"{entry}: was not written by the demo; it is never removed (move it, "
                        "or choose another --out)"
                    )
                files.append(entry)
        for path in files:
            path.unlink()
    # every folder the removed files lay in, up to ``out`` (an analysis's maps/<case>/ too)
    folders = {d for p in files for d in p.parents if out in d.parents} | {*runs, stroke}
    for folder in sorted(folders, key=lambda p: -len(p.parts)):  # deepest first
        with suppress(OSError):
            os.rmdir(folder)  # only when empty


def run_demo(
    out: str | Path,
    epochs: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    on_mnist: Callable[[MnistRecord], None] | None = None,
) -> dict[str, Any]:
    """The whole demo in ``out``: MNIST 7 vs 9 with the keras2016 network on the bundled
    sample (``out/mnist``), then the stroke pipeline (``out/stroke``). An earlier demo's files
    are replaced (only those). ``on_mnist`` receives the MNIST metrics as soon as they exist."""
    from patchvae.studies.mnist import run_mnist_study

    out = Path(out)
    config = build_settings(
        MnistStudyConfig,
        None,
        "keras2016",
        {"train": {"epochs": epochs}},
        {"use_bundled_sample": True},
    )
    with demo_folder(out):
        echo("1/2 MNIST 7 vs 9 (bundled sample), keras2016 network:")
        metrics = run_mnist_study(config, out / "mnist", progress=progress)
        if on_mnist is not None:
            on_mnist(metrics)
        build_report(out / "mnist")
        echo("2/2 stroke DWI patches (bundled ISLES'22 case, 1 mm), keras2016 network:")
        stroke = run_stroke_demo(out / "stroke", epochs, progress)
    return {"mnist": metrics, "mnist_report": out / "mnist" / REPORT_FILE, **stroke}


def run_stroke_demo(
    out: str | Path, epochs: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Extract, train, analyse and report on the bundled stroke case; return the headline facts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / DEMO_STORE
    summary = extract_dataset(
        ExtractConfig(root=str(bundled_isles22_dir()), layout="isles2022", spacing=DEMO_SPACING_MM),
        store,
    )
    config = build_settings(
        PatchTrainConfig, None, "keras2016", {"train": {"epochs": epochs}}, {"patches": str(store)}
    )
    run = out / "run"
    record = train_on_store(config, run, progress=progress)
    analysis = analyze(run, store)
    report = build_report(run)
    return {
        "patches": summary.patches,
        "lesion_patches": summary.lesion_patches,
        "split": record.split,
        "analysis": analysis,
        "report": report,
    }
