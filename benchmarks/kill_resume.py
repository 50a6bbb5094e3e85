"""kill -9 at random moments, then the same command again: does every run end as if nothing
had happened?

For each of extract, train, embed, analyze and compare, the script first runs the command
uninterrupted (the reference), then several times: start it, SIGKILL it after a random delay
(seeded), run the same command again (``train`` continues with ``--resume`` once its folder
holds settings), and compares the artefacts with the reference: the store byte for byte, the
training losses exactly, the embedding table byte for byte, the analysis' numbers, the
comparison's scores. After every trial no temporary (``.tmp``) or lock file may be left.

    python benchmarks/kill_resume.py                 # 25 kills, about 4 minutes on 2 cores
    python benchmarks/kill_resume.py --kills 2       # a quick look

Prints one line per kill and a tally; exits non-zero if any trial ends wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from patchvae.data.volumes import bundled_isles22_dir, discover_cases
from patchvae.io import is_temporary

COMMANDS = ("extract", "train", "embed", "analyze", "compare")


def make_dataset(root: Path) -> Path:
    """Two cases in the csv layout: the bundled ISLES'22 DWI and mask, and their mirror image."""
    case = discover_cases(bundled_isles22_dir(), "isles2022")[0]
    dwi, mask = sitk.ReadImage(str(case.channels["DWI"])), sitk.ReadImage(str(case.lesion_mask))
    root.mkdir(parents=True)
    lines = ["case_id,DWI,lesion_mask"]
    for name, flip in (("a", False), ("b", True)):
        for kind, image in (("dwi", dwi), ("msk", mask)):
            image = sitk.Flip(image, [flip, False, False], True)
            sitk.WriteImage(image, str(root / f"{name}_{kind}.nii.gz"))
        lines.append(f"{name},{name}_dwi.nii.gz,{name}_msk.nii.gz")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def patchvae(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "patchvae", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(args: list[str]) -> None:
    process = patchvae(args)
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"patchvae {' '.join(args)} failed: {err.decode().strip()}")


def leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if is_temporary(p.name) or p.name.endswith(".lock")
    )


class Bench:
    def __init__(self, work: Path, epochs: int) -> None:
        self.work = work
        self.manifest = make_dataset(work / "data")
        self.store = work / "store.h5"
        self.epochs = epochs
        self.grid = work / "grid.yaml"
        self.grid.write_text(
            f"dataset: patches\npatches: {self.store}\nval_cases: [b]\nseeds: [0]\n"
            f"models: [{{name: short, train: {{epochs: {epochs}}}}}]\n"
        )

    def command(self, name: str, target: Path) -> list[str]:
        """The command (writing to ``target``) and, for training, how it continues."""
        run = self.work / "reference-run"
        return {
            "extract": ["extract", "--root", str(self.manifest), "--out", str(target), "--force"],
            "train": [
                "train", "--patches", str(self.store), "--val-cases", "b", "--epochs",
                str(self.epochs), "--quiet", "--out", str(target),
            ],
            "embed": ["embed", str(run), "--patches", str(self.store), "--out", str(target),
                      "--force"],
            "analyze": ["analyze", str(target), "--patches", str(self.store)],
            "compare": ["compare", "--config", str(self.grid), "--out", str(target)],
        }[name]  # fmt: skip

    def again(self, name: str, target: Path) -> list[str]:
        if name == "train" and (target / "settings.yaml").is_file():
            return ["train", "--out", str(target), "--resume", "--quiet"]
        return self.command(name, target)

    def prepare(self, name: str, target: Path) -> None:
        """A fresh target; analyze works on a copy of the trained reference run."""
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        if name == "analyze":
            shutil.copytree(self.work / "reference-run", target)
            shutil.rmtree(next(target.glob("analysis-*"), target / "none"), ignore_errors=True)

    def result(self, name: str, target: Path) -> object:
        """What must equal the reference."""
        if name in ("extract", "embed"):
            return target.read_bytes()
        if name == "train":
            record = json.loads((target / "training.json").read_text())
            return [{k: v for k, v in h.items() if k != "seconds"} for h in record["history"]]
        if name == "analyze":
            found = json.loads((target / "analysis-store" / "analysis.json").read_text())
            keys = ("patch_scores", "clustering", "few_labels", "voxel_scores", "checkpoint")
            return {k: found[k] for k in keys}
        with (target / "comparison.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="kills per command (default 5)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rng = np.random.default_rng(options.seed)
    tally = {name: [0, 0] for name in COMMANDS}  # [right, wrong]
    with tempfile.TemporaryDirectory(prefix="patchvae-kill-") as folder:
        work = Path(folder)
        bench = Bench(work, options.epochs)
        finish(bench.command("extract", bench.store))
        finish(bench.command("train", work / "reference-run"))
        finish(["analyze", str(work / "reference-run"), "--patches", str(bench.store)])
        for name in COMMANDS:
            target = work / f"{name}-target" if name not in ("extract", "embed") else (
                work / ("store-again.h5" if name == "extract" else "table.csv")
            )  # fmt: skip
            bench.prepare(name, target)
            start = time.perf_counter()
            finish(bench.command(name, target))
            seconds = time.perf_counter() - start
            reference = bench.result(name, target)
            for kill in range(options.kills):
                bench.prepare(name, target)
                delay = float(rng.uniform(0.2 * seconds, seconds))
                process = patchvae(bench.command(name, target))
                time.sleep(delay)
                killed = process.poll() is None
                process.kill()
                process.wait()
                finish(bench.again(name, target))
                ok = bench.result(name, target) == reference
                left = leftovers(work)
                good = ok and not left
                tally[name][0 if good else 1] += 1
                state = "killed" if killed else "had finished"
                print(
                    f"{name:8s} kill {kill + 1}: {state} at {delay:5.2f} s of {seconds:5.2f} s; "
                    f"rerun {'matches' if ok else 'DIFFERS FROM'} the uninterrupted run"
                    + (f"; LEFT {left}" if left else "; nothing left over"),
                    flush=True,
                )
    total_right = sum(r for r, _ in tally.values())
    total = sum(r + w for r, w in tally.values())
    print("\ntally (right / kills):")
    for name, (right, wrong) in tally.items():
        print(f"  {name:8s} {right} / {right + wrong}")
    print(f"  all      {total_right} / {total}")
    return 0 if total_right == total else 1


if __name__ == "__main__":
    sys.exit(main())
