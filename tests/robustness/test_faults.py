"""Fault injection: each way a user (or a hostile input) once broke patchvae, done again.

Every test works in a temporary folder and checks three things: the one-line message, the
exit status, and that every file that existed before is byte-identical afterwards (and no
temporary file is left). Numbers in test names are the items of the issue that reported them.
Tests never aim at real system files: a FIFO or a link inside the temporary folder stands in
for /dev/null; a full disk is a small tmpfs (skipped where mounting is not allowed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from patchvae.data.volumes import bundled_isles22_dir
from tests.conftest import Cli
from tests.robustness.fault_helpers import (
    assert_kept,
    one_line,
    snapshot,
    start_cli,
    temporaries,
    wait_for,
)
from tests.volume_helpers import bundled_case_images, single_case_manifest, write_manifest


def fails(args: list[str], cli: Cli, root: Path, message: str, code: int = 2) -> str:
    """Run ``args``; expect exit ``code``, one line holding ``message``, ``root`` unchanged."""
    before = snapshot(root)
    got, _, err = cli(args)
    line = one_line(err)
    assert got == code and message in line, (got, line)
    assert_kept(before, root)
    assert not temporaries(root)
    return line


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A one-case csv dataset of the bundled DWI and lesion mask; returns the manifest."""
    dwi, mask = bundled_case_images()
    return single_case_manifest(tmp_path / "data", dwi, mask)


# 1. --force replaces only a patch store, never an input, a link or a device


@pytest.mark.parametrize("target", ["data/img.nii.gz", "data/manifest.csv", "fifo", "link"])
def test_01_force_never_replaces_what_is_not_a_store(
    tmp_path: Path, cli: Cli, dataset: Path, target: str
) -> None:
    os.mkfifo(tmp_path / "fifo")  # stands in for /dev/null
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    args = ["extract", "--root", str(dataset), "--out", str(tmp_path / target), "--force"]
    expected = {
        "fifo": "is not a regular file (a device, FIFO or socket); never written",
        "link": "is a symbolic link; patchvae never writes through a link",
    }.get(target, "is not a patch store written by patchvae; it is never replaced")
    fails(args, cli, tmp_path, expected)


def test_01_force_replaces_an_earlier_store(tmp_path: Path, cli: Cli, dataset: Path) -> None:
    out = tmp_path / "s.h5"
    args = ["extract", "--root", str(dataset), "--out", str(out)]
    assert cli(args)[0] == 0
    fails(args, cli, tmp_path, "already exists; pass --force")
    first, inode = out.read_bytes(), out.stat().st_ino
    assert cli([*args, "--force"])[0] == 0
    # a new file (renamed into place), with the same bytes: extraction is deterministic
    assert out.stat().st_ino != inode and out.read_bytes() == first
    assert not temporaries(tmp_path)
    from patchvae.store import PatchStore

    assert PatchStore(out).n_patches == 179


# 2. the demo replaces only what an earlier demo wrote


@pytest.mark.slow
def test_02_demo_rerun_keeps_user_files(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--epochs", "1", "--quiet", "--out", str(out)]
    assert cli(args)[0] == 0
    (out / "notes.txt").write_text("mine")
    # what a demo killed with -9 leaves: a temporary file and folder, a store's lock file
    (out / "mnist" / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half")
    (out / "stroke" / "run" / ".analysis-isles22-dwi-1mm.abcd1234.tmp").mkdir()
    (out / "stroke" / ".isles22-dwi-1mm.h5.lock").touch()
    code, _, err = cli(args)  # replaces its own runs, keeps notes.txt
    assert code == 0, err
    assert not temporaries(out)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "stroke" / "run" / "report.html").is_file()
    (out / "mnist" / "mine.txt").write_text("also mine")
    fails(args, cli, tmp_path, "mine.txt: was not written by patchvae; it is never removed")


# 3. names from a settings file are plain names


@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", ".hidden", ".."])
def test_03_grid_names_cannot_leave_out(tmp_path: Path, cli: Cli, name: str) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"dataset": "mnist", "seeds": [0], "models": [{"name": name}]}))
    fails(
        ["compare", "--config", str(grid), "--out", str(tmp_path / "out")],
        cli,
        tmp_path,
        "models.0.name: String should match pattern",
    )
    assert not (tmp_path / "out").exists() and not Path("/tmp/abs").exists()


# 4. one process per run folder


def test_04_second_training_into_the_same_folder_is_refused(
    tmp_path: Path, cli: Cli, two_case_store: Path
) -> None:
    out = tmp_path / "run"
    common = ["train", "--patches", str(two_case_store), "--val-cases", "2", "--quiet"]
    first = start_cli([*common, "--epochs", "40", "--out", str(out)])
    wait_for(out / "settings.yaml", first)
    line = fails([*common, "--epochs", "2", "--out", str(out)], cli, tmp_path / "none", "")
    assert "in use by another patchvae process" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    settings = yaml.safe_load((out / "settings.yaml").read_text())
    record = json.loads((out / "training.json").read_text())
    assert settings["train"]["epochs"] == 40 == record["epochs"]


# 5. settings are checked before anything is written; an unstarted run can be started


def test_05_resume_to_fewer_epochs_changes_nothing(
    tmp_path: Path, cli: Cli, trained_run: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    fails(
        ["train", "--out", str(run), "--resume", "--epochs", "2"],
        cli,
        tmp_path,
        "the checkpoint already holds 3 epochs, more than --epochs 2; nothing was changed",
    )


def test_05_run_stopped_before_its_first_checkpoint_restarts(
    tmp_path: Path, cli: Cli, trained_run: Path
) -> None:
    for resume in ([], ["--resume"]):
        run = tmp_path / f"run{len(resume)}"
        run.mkdir()
        shutil.copy(trained_run / "settings.yaml", run / "settings.yaml")
        (run / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half")  # left by kill -9
        settings = yaml.safe_load((run / "settings.yaml").read_text())
        code, _, err = cli(
            [
                "train",
                "--config",
                str(run / "settings.yaml"),
                "--quiet",
                "--out",
                str(run),
                *resume,
            ],
        )
        assert code == 0, err
        record = json.loads((run / "training.json").read_text())
        expected = json.loads((trained_run / "training.json").read_text())
        assert record["epochs"] == settings["train"]["epochs"] == 3
        assert [h["train_loss"] for h in record["history"]] == [
            h["train_loss"] for h in expected["history"]
        ]
        assert not temporaries(run)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seed", str(2**70)], "train.seed: Input should be less than or equal to 4294967295"),
        (["--seed", "-1"], "train.seed"),
        (["--device", "tpu"], "train.device"),
    ],
)
def test_05_bad_settings_leave_no_folder(
    tmp_path: Path, cli: Cli, two_case_store: Path, option: list[str], message: str
) -> None:
    out = tmp_path / "run"
    fails(
        ["train", "--patches", str(two_case_store), *option, "--out", str(out)],
        cli,
        tmp_path,
        message,
    )
    assert not out.exists()


def test_05_cuda_without_a_gpu_leaves_no_folder(
    tmp_path: Path, cli: Cli, two_case_store: Path
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "run"
    fails(
        ["train", "--patches", str(two_case_store), "--device", "cuda", "--out", str(out)],
        cli,
        tmp_path,
        "no CUDA device is available",
    )
    assert not out.exists()


# 6. masks are label maps: any label > 0, resampled without interpolation


def test_06_mask_values_and_ties_do_not_change_the_lesion(tmp_path: Path) -> None:
    from patchvae.config import ExtractConfig
    from patchvae.data.volumes import discover_cases
    from patchvae.preprocess import load_case

    dwi, mask = bundled_case_images()
    native = load_case(
        discover_cases(single_case_manifest(tmp_path / "n", dwi, mask), "csv")[0], ExtractConfig()
    )
    assert native.lesion is not None
    # independent: at 2 -> 1 mm each native voxel is a 2x2x2 block of the new grid
    expected = native.lesion.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    binary = sitk.GetArrayFromImage(mask) > 0
    variants = {
        "0/1": mask,
        "0/255": sitk.Cast(mask, sitk.sitkUInt8) * 255,
        "0/3": sitk.Cast(mask, sitk.sitkUInt8) * 3,
        "0/0.3": sitk.Cast(mask, sitk.sitkFloat32) * 0.3,
        "labels 0-4": _multiclass(mask),
    }
    for name, variant in variants.items():
        assert (sitk.GetArrayFromImage(variant) > 0).sum() == binary.sum(), name
        for spacing in (2.0, 2.00001):  # a header 5 ppm off must change nothing
            image, label = sitk.Image(dwi), sitk.Image(variant)
            for im in (image, label):
                im.SetSpacing((spacing,) * 3)
            folder = tmp_path / f"{name.replace('/', '-')}-{spacing}"
            case = discover_cases(single_case_manifest(folder, image, label), "csv")[0]
            resampled = load_case(case, ExtractConfig(spacing=1.0))
            assert resampled.lesion is not None
            np.testing.assert_array_equal(resampled.lesion, expected, err_msg=name)
            assert resampled.lesion.sum() == 8 * native.lesion.sum()


def test_06_lesion_patches_at_1mm_match_an_independent_count(tmp_path: Path) -> None:
    """The bundled 2 mm case at 1 mm: the store's patch and lesion-patch counts equal those of
    a plain numpy computation on the native arrays (each voxel a 2x2x2 block)."""
    from patchvae.config import ExtractConfig
    from patchvae.extract import extract_dataset

    dwi, mask = (sitk.DICOMOrient(image, "LPS") for image in bundled_case_images())
    brain = sitk.GetArrayFromImage(dwi) != 0  # "auto": the background is exactly zero
    lesion = sitk.GetArrayFromImage(mask) > 0
    up = [a.repeat(2, 0).repeat(2, 1).repeat(2, 2) for a in (brain, lesion)]
    kept = lesion_patches = 0
    for k in range(up[0].shape[0]):
        for r in range(0, up[0].shape[1] - 27, 28):
            for c in range(0, up[0].shape[2] - 27, 28):
                if up[0][k, r : r + 28, c : c + 28].mean() >= 0.5:
                    kept += 1
                    lesion_patches += bool(up[1][k, r : r + 28, c : c + 28].any())
    summary = extract_dataset(
        ExtractConfig(root=str(bundled_isles22_dir()), spacing=1.0), tmp_path / "s.h5"
    )
    assert (summary.patches, summary.lesion_patches) == (kept, lesion_patches) == (1756, 90)


def _multiclass(mask: sitk.Image) -> sitk.Image:
    """Labels 1-4 spread over the lesion (as BraTS' OTMultiClass)."""
    array = sitk.GetArrayFromImage(mask).astype(np.uint8)
    lesion = np.flatnonzero(array)
    array.flat[lesion] = 1 + np.arange(lesion.size) % 4
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(mask)
    return image


# 7. damage is detected; divergence stops training


def test_07_damaged_store_is_refused_wherever_the_damage_lies(
    tmp_path: Path, two_case_store: Path
) -> None:
    from patchvae.errors import DataError
    from patchvae.store import PatchStore

    def read_all(path: Path) -> list[object]:
        store = PatchStore(path)
        return [
            store.table().to_dict("list"),
            store.patches(),
            store.masks("brain"),
            store.masks("lesion"),
            store.cases,
            store.settings,
        ]

    clean = read_all(two_case_store)
    size = two_case_store.stat().st_size
    rng = np.random.default_rng(0)
    detected = 0
    for offset in np.linspace(0, size - 4096, 24).astype(int):
        damaged = tmp_path / f"d{offset}.h5"
        data = bytearray(two_case_store.read_bytes())
        data[offset : offset + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        damaged.write_bytes(bytes(data))
        try:
            got = read_all(damaged)
        except DataError as exc:
            assert "damaged" in str(exc) or "not a patch store" in str(exc)
            detected += 1
            continue
        # not detected: then what was read must be exactly the clean store (unused bytes)
        for a, b in zip(got, clean, strict=True):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b
    assert detected >= 20  # the store is nearly all payload


def test_07_garbage_store_stops_training(tmp_path: Path, cli: Cli, two_case_store: Path) -> None:
    damaged = tmp_path / "s.h5"
    data = bytearray(two_case_store.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff\x7f" * 2048
    damaged.write_bytes(bytes(data))
    fails(
        ["train", "--patches", str(damaged), "--out", str(tmp_path / "r")],
        cli,
        tmp_path,
        "s.h5: damaged",
    )
    assert not (tmp_path / "r").exists()


def test_07_divergence_stops_with_one_line_and_keeps_the_last_good_epoch(
    tmp_path: Path, cli: Cli, two_case_store: Path
) -> None:
    out = tmp_path / "run"
    base = ["train", "--patches", str(two_case_store), "--val-cases", "2", "--quiet"]
    assert cli([*base, "--epochs", "1", "--out", str(out)])[0] == 0
    kept = (out / "checkpoint.pt").read_bytes()
    before = snapshot(out)
    code, _, err = cli(
        [
            "train",
            "--out",
            str(out),
            "--resume",
            "--epochs",
            "3",
            "--lr",
            "1000",
            "--optimizer",
            "sgd",
        ],
    )
    assert code == 2 and "cannot resume with other settings" in one_line(err)
    assert_kept(before, out)
    fresh = tmp_path / "fresh"
    code, _, err = cli(
        [*base, "--epochs", "3", "--lr", "1000", "--optimizer", "sgd", "--out", str(fresh)],
    )
    line = one_line(err)
    assert code == 2 and "training diverged" in line and "at epoch 1" in line, line
    assert "smaller learning rate (now 1000)" in line
    assert not fresh.exists()  # no epoch finished: nothing kept, nothing to resume
    assert (out / "checkpoint.pt").read_bytes() == kept


def test_07_divergence_mid_run_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import torch

    from patchvae.checkpoint import checkpoint_epoch
    from patchvae.config import TrainConfig
    from patchvae.errors import TrainingDiverged
    from patchvae.models import VAEConfig
    from patchvae.models.vae import VAE
    from patchvae.train import fit

    calls = {"n": 0}
    forward = VAE.forward

    def poisoned(self: VAE, *args: object, **kwargs: object) -> object:
        out = forward(self, *args, **kwargs)  # type: ignore[arg-type]
        if self.training:
            calls["n"] += 1
            if calls["n"] == 13:  # epoch 3 (5 steps an epoch), step 3
                return dataclasses.replace(out, loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(VAE, "forward", poisoned)
    x = torch.rand(50, 1, 28, 28)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(
        TrainingDiverged,
        match="training loss became NaN or infinite at epoch 3, "
        "step 3 of 5; the checkpoint keeps the last good epoch \\(epoch 2\\)",
    ):
        fit(
            VAEConfig(),
            TrainConfig(epochs=4, batch_size=10),
            x,
            checkpoint_path=path,
            progress=False,
        )
    assert checkpoint_epoch(path) == 2


def test_07_a_changed_store_is_not_trained_on_or_analysed_silently(
    tmp_path: Path, cli: Cli, two_case_store: Path
) -> None:
    store, run = tmp_path / "s.h5", tmp_path / "run"
    shutil.copy(two_case_store, store)
    args = ["train", "--patches", str(store), "--val-cases", "2", "--epochs", "1", "--quiet"]
    assert cli([*args, "--out", str(run)])[0] == 0
    import h5py

    with h5py.File(store, "a") as handle:  # changed in place, checksums and all
        handle["patches"][0] = handle["patches"][0] * 0.5
    fails(
        ["train", "--out", str(run), "--resume", "--epochs", "2"],
        cli,
        tmp_path,
        "the patch store changed since this run began",
    )
    fails(
        ["analyze", str(run), "--patches", str(two_case_store)],
        cli,
        tmp_path,
        "the run's training store changed since training",
    )


# 8. manifests: unknown mask columns, short rows, BOM


def _manifest(tmp_path: Path, header: str, row: str, bom: bool = False) -> Path:
    dwi, mask = bundled_case_images()
    single_case_manifest(tmp_path / "data", dwi, mask)
    path = tmp_path / "data" / "m.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + f"{header}\n{row}\n".encode())
    return path


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("case_id,DWI,mask", "c1,img.nii.gz,img_mask.nii.gz", "['mask'] look like masks"),
        ("case_id,DWI,lesion_mask", "c1,img.nii.gz", "line 2: 2 fields where the header has 3"),
        ("case_id,DWI", "c1,img.nii.gz,extra", "line 2: 3 fields where the header has 2"),
        ("case_id,DWI,DWI", "c1,a,b", "repeated column names ['DWI']"),
    ],
)
def test_08_manifest_problems_are_one_line(
    tmp_path: Path, cli: Cli, header: str, row: str, message: str
) -> None:
    manifest = _manifest(tmp_path, header, row)
    fails(
        ["extract", "--root", str(manifest), "--out", str(tmp_path / "s.h5")],
        cli,
        tmp_path,
        message,
    )


def test_08_bom_manifest_reads_like_a_plain_one(tmp_path: Path, cli: Cli) -> None:
    manifest = _manifest(tmp_path, "case_id,DWI,lesion_mask", "c1,img.nii.gz,img_mask.nii.gz", True)
    code, out, err = cli(
        ["extract", "--root", str(manifest), "--out", str(tmp_path / "s.h5")],
    )
    assert code == 0, err
    assert "179 patches kept of 1168 on the grid, 28 with lesion" in out


# 9. signals and full disks leave nothing half-written


def test_09_sigterm_during_extract_leaves_nothing(tmp_path: Path) -> None:
    from tests.volume_helpers import write_isles2015

    root = write_isles2015(tmp_path / "siss", ".nii.gz", n_cases=3)
    out = tmp_path / "out" / "s.h5"
    process = start_cli(["extract", "--root", str(root), "--spacing", "1", "--out", str(out)])
    wait_for(out.parent / ".s.h5.lock", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "terminated (SIGTERM); no half-written file was kept" in one_line(err)
    assert not out.exists() and not temporaries(out.parent)


def test_09_ctrl_c_during_training_says_so_and_resumes(
    tmp_path: Path, cli: Cli, two_case_store: Path
) -> None:
    out = tmp_path / "run"
    args = ["train", "--patches", str(two_case_store), "--val-cases", "2", "--quiet"]
    process = start_cli([*args, "--epochs", "200", "--out", str(out)])
    wait_for(out / "checkpoint.pt", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted (SIGINT)" in one_line(err)
    assert not temporaries(out)
    code, _, err = cli(
        ["train", "--out", str(out), "--resume", "--epochs", "5", "--quiet"],
    )
    if code == 2:  # interrupted after epoch 5 already
        assert "more than --epochs 5" in err
    else:
        assert code == 0, err
        assert json.loads((out / "training.json").read_text())["epochs"] == 5


# 10. YAML bombs


def test_10_yaml_aliases_are_refused_at_once(tmp_path: Path, cli: Cli) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        prev = chr(ord("a") + level - 1)
        this = chr(ord("a") + level)
        lines.append(f"{this}: &{this} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 2048
    fails(
        ["train", "--config", str(bomb), "--out", str(tmp_path / "r")],
        cli,
        tmp_path,
        "YAML anchors and aliases (& and *) are not accepted",
    )


# 11. inputs that ended as "internal error"


def test_11_non_utf8_manifest_and_settings(tmp_path: Path, cli: Cli) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("case_id,DWI\nc\xe9,x.nii\n".encode("latin-1"))
    fails(
        ["extract", "--root", str(manifest), "--out", str(tmp_path / "s.h5")],
        cli,
        tmp_path,
        "m.csv: manifest is not UTF-8 text",
    )
    settings = tmp_path / "s.yaml"
    settings.write_bytes("patches: caf\xe9.h5\n".encode("latin-1"))
    fails(
        ["train", "--config", str(settings), "--out", str(tmp_path / "r")],
        cli,
        tmp_path,
        "s.yaml: settings file is not UTF-8 text",
    )


def test_11_huge_header(tmp_path: Path, cli: Cli) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    image.header.set_data_shape((30000, 30000, 30000))
    data = image.header.binaryblock + b"\x00" * 4 + np.zeros(8, np.float32).tobytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.nii").write_bytes(data)
    manifest = write_manifest(tmp_path / "data", [{"case_id": "c", "DWI": "big.nii"}])
    fails(
        ["extract", "--root", str(manifest), "--out", str(tmp_path / "s.h5")],
        cli,
        tmp_path,
        "big.nii: the header claims 30000x30000x30000 voxels",
    )


def test_11_hdf5_that_is_not_a_store(tmp_path: Path, cli: Cli) -> None:
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle["data"] = np.zeros(3)
    for args in (
        ["inspect", str(tmp_path / "x.h5")],
        ["train", "--patches", str(tmp_path / "x.h5"), "--out", str(tmp_path / "r")],
    ):
        fails(args, cli, tmp_path, "x.h5: not a patch store of format patchvae-patch-store/3")


def test_11_damaged_run_records(
    tmp_path: Path, cli: Cli, trained_run: Path, two_case_store: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "training.json").write_text('{"split": ')
    fails(
        ["analyze", str(run), "--patches", str(two_case_store)],
        cli,
        tmp_path,
        "training.json: training record is damaged (JSONDecodeError)",
    )
    fails(["report", str(run)], cli, tmp_path, "training.json: training record is damaged")
    (run / "training.json").unlink()  # as after an interrupted run
    fails(["report", str(run)], cli, tmp_path, "the run has not finished")
    fails(
        ["embed", str(run), "--patches", str(two_case_store)],
        cli,
        tmp_path,
        "the run has not finished training",
    )


def test_11_checkpoint_that_does_not_fit_its_config(
    tmp_path: Path, cli: Cli, trained_run: Path, two_case_store: Path
) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["model_config"]["latent_dim"] = 7
    torch.save(payload, run / "checkpoint.pt")
    fails(
        ["embed", str(run), "--patches", str(two_case_store)],
        cli,
        tmp_path,
        "checkpoint.pt: the weights do not fit the model settings it holds",
    )
    (run / "checkpoint.pt").write_bytes(b"garbage")
    fails(
        ["analyze", str(run), "--patches", str(two_case_store)],
        cli,
        tmp_path,
        "checkpoint.pt: not a readable checkpoint",
    )


def test_11_analyze_with_one_training_patch(tmp_path: Path, cli: Cli) -> None:
    from patchvae.patches import PatchBatch
    from patchvae.store import PatchStoreWriter

    rng = np.random.default_rng(0)
    with PatchStoreWriter(tmp_path / "s.h5", ["DWI"], 28, {}) as writer:
        for case, n in (("a", 1), ("b", 6)):
            label = np.array([0, 1] * 3)[:n].astype(np.int8)
            writer.append(
                PatchBatch(
                    case,
                    rng.random((n, 1, 28, 28), dtype=np.float32),
                    np.arange(n, dtype=np.int32),
                    np.zeros(n, np.int32),
                    np.zeros(n, np.int32),
                    np.ones(n, np.float32),
                    label.astype(np.float32),
                    label,
                    np.ones((n, 28, 28), np.uint8),
                    np.zeros((n, 28, 28), np.uint8),
                    n,
                ),
                {},
            )
    run = tmp_path / "run"
    args = ["train", "--patches", str(tmp_path / "s.h5"), "--val-cases", "b", "--epochs", "1"]
    assert cli([*args, "--quiet", "--out", str(run)])[0] == 0
    fails(
        ["analyze", str(run), "--patches", str(tmp_path / "s.h5")],
        cli,
        tmp_path,
        "the run trained on 1 patch(es) of this store",
    )


def test_11_absurd_spacing_and_incomplete_grid(tmp_path: Path, cli: Cli) -> None:
    fails(
        [
            "extract",
            "--root",
            str(bundled_isles22_dir()),
            "--spacing",
            "1e-3",
            "--out",
            str(tmp_path / "s.h5"),
        ],
        cli,
        tmp_path,
        "spacing: Input should be greater than or equal to 0.1",
    )
    grid = tmp_path / "g.yaml"
    grid.write_text("dataset: patches\nseeds: [0]\n")
    fails(
        ["compare", "--config", str(grid), "--out", str(tmp_path / "o")],
        cli,
        tmp_path,
        "dataset 'patches' needs 'patches: STORE'",
    )


def test_11_embed_out_that_is_not_a_table(
    tmp_path: Path, cli: Cli, trained_run: Path, two_case_store: Path
) -> None:
    (tmp_path / "notes.csv").write_text("my,own\n1,2\n")
    fails(
        [
            "embed",
            str(trained_run),
            "--patches",
            str(two_case_store),
            "--out",
            str(tmp_path / "notes.csv"),
            "--force",
        ],
        cli,
        tmp_path,
        "is not an embedding table written by patchvae",
    )


# 13. runs find their inputs from anywhere; --resume alone; stale and clashing analyses


def test_13_relative_store_resume_alone_and_stale_analysis(
    tmp_path: Path, cli: Cli, two_case_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(two_case_store, work / "s.h5")
    monkeypatch.chdir(work)
    args = ["train", "--patches", "s.h5", "--val-cases", "2", "--epochs", "1", "--quiet"]
    assert cli([*args, "--out", "run"])[0] == 0
    monkeypatch.chdir(tmp_path)  # another folder: the run still finds its store
    assert cli(["analyze", "work/run", "--patches", "work/s.h5"])[0] == 0
    code, _, err = cli(
        ["train", "--out", "work/run", "--resume", "--epochs", "2", "--quiet"],
    )
    assert code == 0, err
    assert cli(["report", "work/run"])[0] == 0
    page = (work / "run" / "report.html").read_text()
    assert "Stale: this analysis was made from the checkpoint of epoch 1" in page
    assert "the run now holds 2 epochs" in page
    # an analysis of another store with the same file name is not replaced
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(two_case_store, other / "s.h5")
    fails(
        ["analyze", "work/run", "--patches", "other/s.h5"],
        cli,
        work,
        "holds the analysis of another store",
    )
    assert cli(["analyze", "work/run", "--patches", "work/s.h5"])[0] == 0
    assert cli(["report", "work/run"])[0] == 0
    assert "Stale" not in (work / "run" / "report.html").read_text()
