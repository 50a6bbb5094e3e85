"""Training in several processes through ``torchrun`` (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli

# --device cpu: gloo on any machine (a one-GPU machine cannot hold two NCCL processes)
ARGS = ["--device", "cpu", "--val-cases", "2", "--epochs", "2", "--batch-size", "64", "--quiet"]


def _history(run: Path) -> list[dict[str, float]]:
    return json.loads((run / "training.json").read_text())["history"]


def test_two_processes_train_as_one_and_resume_in_one(
    two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    run2, run1 = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "patchvae", "train", "--patches"]
    done = subprocess.run(
        [*command, str(two_case_store), *ARGS, "--out", str(run2)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # one process speaks
    # one set of artefacts, written by one process; nothing else left
    assert sorted(p.name for p in run2.iterdir()) == [
        "checkpoint.pt",
        "history.csv",
        "settings.yaml",
        "steps",
        "training.json",
    ]
    assert json.loads((run2 / "training.json").read_text())["provenance"]["world_size"] == 2
    # the same global batch in one process: the same losses but for the latent noise, which
    # each process draws for its own part of a batch (measured: within 0.5 %)
    assert cli(["train", "--patches", str(two_case_store), *ARGS, "--out", str(run1)])[0] == 0
    for two, one in zip(_history(run2), _history(run1), strict=True):
        for key in ("train_loss", "val_loss"):
            assert two[key] == pytest.approx(one[key], rel=0.01), key
    # a two-process run continues in one process
    code, _, err = cli(["train", "--out", str(run2), "--resume", "--epochs", "3", "--quiet"])
    assert code == 0, err
    resumed = _history(run2)
    assert len(resumed) == 3 and resumed[2]["train_loss"] < resumed[0]["train_loss"]
