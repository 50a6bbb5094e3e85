"""Peak memory of `patchvae train` against the size of the patch store.

Stores of growing size are written from the real patches of the bundled ISLES'22 case (each
copy turned by one of the 8 flips/quarter turns, so neighbouring patches differ), in 20
cases so that the split holds out whole cases. Each store is trained on for one epoch by
`patchvae train` in a fresh process, whose peak resident set size is read from the kernel
(`wait4`). Every store is trained on streamed (the default above `--in-memory-mb`, 1024 MB);
the peer is the same command holding the patches in memory (`--in-memory-mb` above the
store's size, as every store was read before), measured in the same run for the stores that
fit in this machine's memory.

    python benchmarks/train_memory.py                       # 112k, 500k and 2.1M patches
    python benchmarks/train_memory.py --sizes 50000 500000 --memory-peer-max 500000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from patchvae.config import ExtractConfig
from patchvae.data.volumes import bundled_isles22_dir
from patchvae.extract import extract_dataset
from patchvae.patches import PatchBatch
from patchvae.store import PatchStore, PatchStoreWriter

CASES = 20


def make_store(path: Path, n: int, source: PatchStore) -> Path:
    """A store of ``n`` patches in ``CASES`` cases (or pieces of at most 64k patches each),
    tiled from ``source``'s real patches."""
    pixels, table = source.patches(), source.table()
    lesion, brain = source.masks("lesion"), source.masks("brain")
    per_case = -(-n // CASES)
    with PatchStoreWriter(path, source.channels, source.patch_size, source.settings) as writer:
        for case in range(CASES):
            count = min(per_case, n - case * per_case)
            if count <= 0:
                break
            written, piece = 0, 0
            while written < count:  # in pieces of at most 64k patches: bounded memory
                k = min(count - written, 65536)
                pick = (np.arange(written, written + k) + case * per_case) % len(pixels)
                turn = (np.arange(written, written + k) // len(pixels) + case) % 8
                out = pixels[pick].copy()
                for t in range(1, 8):
                    sel = turn == t
                    out[sel] = np.rot90(out[sel], t % 4, axes=(2, 3))
                    if t >= 4:
                        out[sel] = out[sel][..., ::-1]
                rows = table.iloc[pick]
                batch = PatchBatch(
                    case_id=f"case{case:02d}{chr(97 + piece)}",
                    pixels=np.ascontiguousarray(out),
                    slice=(np.arange(written, written + k) // 16).astype(np.int32),
                    row=rows.row.to_numpy(np.int32),
                    col=rows.col.to_numpy(np.int32),
                    brain_fraction=rows.brain_fraction.to_numpy(np.float32),
                    lesion_fraction=rows.lesion_fraction.to_numpy(np.float32),
                    label=rows.label.to_numpy(np.int8),
                    brain_mask=brain[pick].astype(np.uint8),
                    lesion_mask=lesion[pick].astype(np.uint8),
                    grid_patches=k,
                )
                info = {"case_id": batch.case_id, "shape_zyx": [1 + k // 16, 112, 112]}
                info.update(spacing_xyz_mm=[1.0, 1.0, 1.0], sources={}, preprocessing={})
                writer.append(batch, info)
                written, piece = written + k, piece + 1
    return path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Peak resident set size (MB) and seconds of a fresh process running ``args``."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{process.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, seconds


def train(store: Path, out: Path, in_memory_mb: float) -> tuple[float, float]:
    args = [sys.executable, "-m", "patchvae", "train", "--patches", str(store), "--epochs", "1"]
    args += ["--in-memory-mb", str(in_memory_mb), "--quiet", "--out", str(out)]
    return peak_rss_mb(args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112_000, 500_000, 2_100_000])
    parser.add_argument(
        "--memory-peer-max", type=int, default=500_000, help="largest store also trained in memory"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchvae-memory-") as folder:
        work = Path(folder)
        bundled = work / "bundled.h5"
        extract_dataset(ExtractConfig(root=str(bundled_isles22_dir())), bundled)
        floor, _ = peak_rss_mb([sys.executable, "-c", "import patchvae.train"])
        print(f"floor (python + torch + patchvae imported): {floor:.0f} MB")
        head = f"{'patches':>10} {'store GB':>9} {'float32 GB':>10}  {'run: data':<24}"
        print(f"{head} {'peak RSS MB':>11} {'s':>6}")
        for n in options.sizes:
            store = make_store(work / f"s{n}.h5", n, PatchStore(bundled))
            gb = store.stat().st_size / 2**30
            raw = n * 784 * 4 / 2**30
            runs = [("default", 1024.0)]
            if raw * 1024 <= 1024:  # held in memory by default: also streamed
                runs.append(("streamed", 0.0))
            if n <= options.memory_peer_max and raw * 1024 > 1024:
                runs.append(("in memory (peer)", 10.0**6))
            for name, limit in runs:
                mode = "memory" if raw * 1024 <= limit else "stream"
                rss, seconds = train(store, work / f"run-{n}-{name[:4]}", limit)
                label = f"{name}: {mode}"
                print(f"{n:>10} {gb:>9.2f} {raw:>10.2f}  {label:<24} {rss:>11.0f} {seconds:>6.0f}")
            store.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
