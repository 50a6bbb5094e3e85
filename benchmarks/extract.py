"""Extraction cost: per-volume seconds of each step, the patch-grid step beside a memcpy of the
same bytes (peer: the floor any patch cutter pays), reading every file beside a plain
SimpleITK read of the same files, 1 against 2 workers (beside compute-bound work in 1 against
2 processes: what the machine's cores allow), in this process and in new ones (as the CLI
runs it), and peak memory of a whole-dataset extraction against one volume's size.

    python benchmarks/extract.py                                   # the bundled ISLES'22 case
    python benchmarks/extract.py --root examples/brats2013.csv --modality FLAIR
    python benchmarks/extract.py --root ../shared/data/isles22 --spacing 1

It also times writing the store through patchvae's guarded file (which turns a full disk into
one clean error) beside h5py's native file driver writing the same datasets.

Peak memory is measured in fresh child processes (their maximum resident set size): one that
only imports patchvae (the floor), one that extracts the first case alone, and one that
extracts every case. Bounded streaming shows as "all cases" close to "first case".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from patchvae.config import ExtractConfig
from patchvae.data.volumes import bundled_isles22_dir, discover_cases
from patchvae.extract import extract_dataset
from patchvae.patches import extract_patches
from patchvae.preprocess import load_case

_CHILD = """
import json, sys, time
from pathlib import Path
from patchvae.config import ExtractConfig
from patchvae.data.volumes import discover_cases
from patchvae.extract import extract_dataset

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # KiB -> MiB
settings = ExtractConfig.model_validate_json(sys.argv[1])
cases = discover_cases(settings.root, settings.layout, settings.modalities)
Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark after the imports
before = status("VmRSS:")
t0 = time.perf_counter()
extract_dataset(settings, sys.argv[3], cases=cases[:1] if sys.argv[2] == "first" else cases)
seconds = time.perf_counter() - t0
print(json.dumps({"rss_before": before, "peak": status("VmHWM:"), "seconds": seconds}))
"""


WORKER_REPEATS = 8  # interleaved extractions with 1 and with 2 workers (the machine is noisy)


def fresh_seconds(settings: ExtractConfig, repeats: int = WORKER_REPEATS) -> dict[str, float]:
    """Median seconds of a whole extraction with 1 and 2 workers, each in a new process (as
    the CLI runs it: nothing warm, the imports not counted), interleaved."""
    times: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(repeats):
        for workers in (1, 2):
            config = settings.model_copy(update={"workers": workers})
            times[str(workers)].append(child_run(config, "all")["seconds"])
    return {name: statistics.median(values) for name, values in times.items()}


def child_run(settings: ExtractConfig, which: str) -> dict[str, float]:
    """One extraction (of the ``first`` case or ``all``) in a fresh process (Linux): RSS after
    the imports, the peak RSS during extraction (MiB), and its seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                settings.model_dump_json(),
                which,
                str(Path(tmp) / "s.h5"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memcpy_seconds(nbytes: int, repeats: int = 5) -> float:
    source = np.ones(max(nbytes // 4, 1), dtype=np.float32)
    target = np.empty_like(source)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _NativePath(str):
    """Stands in for patchvae's guarded file: h5py opens the path with its own file driver."""

    failed = None

    def close(self) -> None:
        pass


def store_write_seconds(batches: list, repeats: int = 5) -> dict[str, float]:
    """Median seconds to write the same patches as a store: patchvae's writer (through its
    guarded file, which survives a full disk) beside the same writer on h5py's native file
    driver (the peer: what HDF5 alone costs). Interleaved, on this folder's disk."""
    from patchvae import store as store_module

    guarded = store_module._GuardedFile
    times: dict[str, list[float]] = {"patchvae (guarded file)": [], "h5py native driver": []}
    channels = [f"channel {i}" for i in range(batches[0].pixels.shape[1])]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name in times:
                store_module._GuardedFile = guarded if name.startswith("patchvae") else _NativePath
                path = Path(tmp) / f"{repeat}-{len(times[name])}.h5"
                t0 = time.perf_counter()
                with store_module.PatchStoreWriter(
                    path, channels, batches[0].pixels.shape[-1], {}
                ) as w:
                    for batch in batches:
                        w.append(batch, {})
                times[name].append(time.perf_counter() - t0)
                store_module._GuardedFile = guarded
    return {name: statistics.median(values) for name, values in times.items()}


def read_seconds(cases: list, repeats: int = 3) -> dict[str, float]:
    """Median seconds to read every file of the cases: patchvae's reader (one pass: the file
    inflated in chunks into a reused buffer, the raw voxels checked for truncation and NaN,
    ITK reading only the header's geometry) beside SimpleITK reading the same files (the
    peer: one plain read, no checks). Interleaved."""
    import SimpleITK as sitk

    from patchvae.reading import read_volume

    files = [
        path
        for case in cases
        for path in [*case.channels.values(), case.lesion_mask, case.brain_mask]
        if path is not None
    ]
    readers = {"patchvae read_volume": read_volume, "SimpleITK.ReadImage": sitk.ReadImage}
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, read in readers.items():
            t0 = time.perf_counter()
            for path in files:
                read(str(path))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def _compress_work(rounds: int) -> None:
    """Compute-bound work that stays in the core's cache: zlib on 64 KiB, ``rounds`` times."""
    block = np.random.default_rng(0).bytes(1 << 16)
    for _ in range(rounds):
        zlib.compress(block, 6)


def workers_seconds(settings: ExtractConfig, repeats: int = WORKER_REPEATS) -> dict[str, float]:
    """Median wall seconds of a whole extraction with 1 and 2 workers, and of the peer: the
    same compute-bound work done twice in one process and once in each of two (what this
    machine's cores give two processes at best), all interleaved."""
    times: dict[str, list[float]] = {"1": [], "2": [], "peer 1": [], "peer 2": []}
    rounds = 200
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        list(pool.map(_compress_work, [1, 1]))  # the pool's processes started
        for repeat in range(repeats):
            for workers in (1, 2):
                config = settings.model_copy(update={"workers": workers})
                t0 = time.perf_counter()
                extract_dataset(config, Path(tmp) / f"w{workers}-{repeat}.h5")
                times[str(workers)].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _compress_work(2 * rounds)
            times["peer 1"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(pool.map(_compress_work, [rounds, rounds]))
            times["peer 2"].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(bundled_isles22_dir()))
    parser.add_argument("--layout", default="auto")
    parser.add_argument("--modality", action="append", default=None)
    parser.add_argument("--spacing", type=float, default=None)
    parser.add_argument("--n4", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    args = parser.parse_args()
    settings = ExtractConfig(
        root=args.root,
        layout=args.layout,
        modalities=args.modality or ["DWI"],
        spacing=args.spacing,
        n4=args.n4,
    )
    cases = discover_cases(settings.root, settings.layout, settings.modalities)
    steps = [
        "read",
        "check",
        "reorient_resample",
        "brain_mask",
        *(["n4"] if args.n4 else []),
        "scale",
    ]
    print(
        f"{len(cases)} case(s) from {args.root}, channels {settings.modalities}, "
        f"spacing {args.spacing}"
    )
    header = " ".join(f"{s:>17}" for s in [*steps, "patch_grid", "memcpy_same_bytes"])
    print(f"{'case':<30} {'volume MiB':>10} {header}   (seconds)")
    volume_mib = 0.0
    batches = []
    for case in cases:
        timings: dict[str, float] = {}
        normalised = load_case(case, settings, timings)
        t0 = time.perf_counter()
        batch = extract_patches(
            normalised, settings.patch_size, settings.grid_stride, settings.min_brain
        )
        timings["patch_grid"] = time.perf_counter() - t0
        batches.append(batch)
        timings["memcpy_same_bytes"] = memcpy_seconds(batch.pixels.nbytes)
        volume_mib = normalised.image.nbytes / 2**20
        cells = " ".join(
            f"{timings.get(s, 0.0):>17.4f}" for s in [*steps, "patch_grid", "memcpy_same_bytes"]
        )
        print(f"{case.case_id:<30} {volume_mib:>10.1f} {cells}")
    reads = read_seconds(cases)
    peer = reads["SimpleITK.ReadImage"]
    for name, seconds in reads.items():
        print(f"reading every file once, {name}: {seconds:.3f} s ({seconds / peer:.2f} x)")
    if len(cases) > 1:
        found = workers_seconds(settings)
        print(
            f"whole extraction: {found['1']:.2f} s with 1 worker, {found['2']:.2f} s with 2 "
            f"({found['1'] / found['2']:.2f} x faster; median of {WORKER_REPEATS}, interleaved)"
        )
        fresh = fresh_seconds(settings)
        print(
            f"the same, each extraction in a new process (as the CLI runs it): "
            f"{fresh['1']:.2f} s with 1 worker, {fresh['2']:.2f} s with 2 "
            f"({fresh['1'] / fresh['2']:.2f} x faster; median of {WORKER_REPEATS}, interleaved)"
        )
        print(
            f"peer, compute-bound work (zlib) in 2 processes against 1: "
            f"{found['peer 1'] / found['peer 2']:.2f} x faster (this machine's ceiling)"
        )
    n = sum(len(b) for b in batches)
    for name, seconds in store_write_seconds(batches).items():
        print(f"store write of {n} patches, {name}: {seconds:.3f} s (median of 5, interleaved)")
    if args.no_memory:
        return
    first = child_run(settings, "first")
    everything = child_run(settings, "all")
    print(f"one volume (float32, after preprocessing): {volume_mib:.1f} MiB")
    print(f"RSS after imports: {everything['rss_before']:.0f} MiB")
    for name, run in (("first case only", first), (f"all {len(cases)} cases", everything)):
        above = run["peak"] - run["rss_before"]
        print(
            f"peak RSS, {name}: {run['peak']:.0f} MiB ({above:.0f} MiB above the imports, "
            f"{above / max(volume_mib, 1e-9):.1f} x one volume)"
        )


if __name__ == "__main__":
    main()
