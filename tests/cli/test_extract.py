"""`patchvae extract` and `inspect` end to end: per-case lines, skip, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from patchvae.data.volumes import bundled_isles22_dir
from patchvae.store import PatchStore
from tests.conftest import SHARED_DATA, Cli
from tests.volume_helpers import bundled_case_images, single_case_manifest, write_isles2015


def test_extract_and_inspect_bundled_case(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "p.h5"
    code, stdout, err = cli(
        [
            "extract",
            "--layout",
            "isles2022",
            "--root",
            str(bundled_isles22_dir()),
            "--out",
            str(out),
        ],
    )
    assert code == 0, err
    assert (
        "sub-strokecase0009_ses-0001: 179 patches kept of 1168 on the grid, 28 with lesion"
        in stdout
    )
    assert "179 patches, 28 with lesion, from 1 case(s); 0 skipped" in stdout
    code, stdout, _ = cli(["inspect", str(out)])
    assert (
        code == 0
        and "179 patches of 1 channel(s) ['DWI'], 28x28" in stdout
        and "lesion patches: 28 of 179" in stdout
    )
    code, _, err = cli(
        ["extract", "--root", str(bundled_isles22_dir()), "--out", str(out)],
    )
    assert code == 2 and "already exists; pass --force" in err


def test_isles2015_mha_layout_stride_and_spacing(tmp_path: Path, cli: Cli) -> None:
    root = write_isles2015(tmp_path / "siss", ".mha", n_cases=1)
    out = tmp_path / "p.h5"
    code, _, err = cli(
        [
            "extract",
            "--root",
            str(root),
            "--modality",
            "DWI",
            "--modality",
            "Flair",
            "--stride",
            "14",
            "--out",
            str(out),
        ],
    )
    assert code == 0, err
    store = PatchStore(out)
    assert store.channels == ["DWI", "Flair"]
    patches = store.patches()
    np.testing.assert_array_equal(
        patches[:, 0], patches[:, 1]
    )  # the FLAIR folder holds the same volume
    assert set(store.table().row % 14) == {0}
    assert store.settings["stride"] == 14 and store.settings["clip_percentiles"] == [0.5, 99.5]


def test_skip_lists_bad_cases_and_keeps_good(tmp_path: Path, cli: Cli) -> None:
    root = write_isles2015(tmp_path / "siss", ".nii.gz", n_cases=2)
    damaged = next((root / "2").glob("*MR_DWI*/*.nii.gz"))
    damaged.write_bytes(damaged.read_bytes()[:1000])
    out = tmp_path / "p.h5"
    code, stdout, _ = cli(
        ["extract", "--root", str(root), "--on-error", "skip", "--out", str(out)],
    )
    assert code == 0
    assert (
        "2: SKIPPED:" in stdout and "skipped 2:" in stdout and "from 1 case(s); 1 skipped" in stdout
    )
    assert [c["case_id"] for c in PatchStore(out).cases] == ["1"]
    # nothing left after skipping: non-zero exit, no store
    other = next((root / "1").glob("*MR_DWI*/*.nii.gz"))
    other.write_bytes(other.read_bytes()[:1000])
    empty = tmp_path / "e.h5"
    code, _, err = cli(
        ["extract", "--root", str(root), "--on-error", "skip", "--out", str(empty)],
    )
    assert code == 2 and "no case left to write: all 2 case(s) failed" in err and not empty.exists()
    # fail (the default) stops at the bad case and writes nothing
    code, _, err = cli(
        ["extract", "--root", str(root), "--out", str(tmp_path / "q.h5")],
    )
    assert code == 2 and "cannot be read as an image" in err and not (tmp_path / "q.h5").exists()


def _bad_dataset(kind: str, root: Path) -> Path:
    dwi, mask = bundled_case_images()
    if kind == "missing file":
        path = single_case_manifest(root, dwi)
        (root / "img.nii.gz").unlink()
        return path
    if kind == "truncated":
        path = single_case_manifest(root, dwi)
        raw = (root / "img.nii.gz").read_bytes()
        (root / "img.nii.gz").write_bytes(raw[: len(raw) // 2])
        return path
    if kind == "corrupt":
        path = single_case_manifest(root, dwi)
        (root / "img.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
        return path
    if kind == "other grid":
        other = sitk.Image(mask)
        other.SetSpacing((2.5, 2.5, 2.5))
        return single_case_manifest(root, dwi, other)
    if kind == "2-D":
        return single_case_manifest(root, dwi[:, :, 30])
    if kind == "4-D":
        return single_case_manifest(root, sitk.JoinSeries([dwi, dwi]))
    if kind == "NaN":
        array = sitk.GetArrayFromImage(dwi)
        array[35, 50, 50] = np.nan
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(dwi)
        return single_case_manifest(root, image)
    if kind == "empty brain":
        blank = sitk.Image(dwi) * 0
        return single_case_manifest(root, blank)
    if kind == "too small":
        return single_case_manifest(root, dwi[40:60, 40:60, :])
    if kind == "no case":
        root.mkdir(parents=True)
        return root
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing file", "img.nii.gz: file not found"),
        ("truncated", "img.nii.gz: cannot be read as an image"),
        ("corrupt", "img.nii.gz: cannot be read as an image"),
        ("other grid", "img_mask.nii.gz: not on the grid of"),
        ("2-D", "expected a 3-D volume, found a 2-D image"),
        ("4-D", "found a 4-D image"),
        ("NaN", "1 voxel(s) are NaN or infinite"),
        ("empty brain", "the brain mask is empty"),
        ("too small", "smaller than one 28x28 patch"),
        ("no case", "layout auto: neither"),
    ],
)
def test_bad_input_one_line_nonzero_no_store(
    tmp_path: Path, cli: Cli, kind: str, message: str
) -> None:
    root = _bad_dataset(kind, tmp_path / "data")
    out = tmp_path / "out" / "p.h5"
    code, _, err = cli(["extract", "--root", str(root), "--out", str(out)])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary file either


def test_bad_settings(tmp_path: Path, cli: Cli) -> None:
    for args, message in (
        (["--patch-size", "0"], "patch_size"),
        (["--min-brain", "1.5"], "min_brain"),
        (["--clip", "99", "1"], "clip_percentiles"),
        (["--on-error", "maybe"], "on_error"),
        (["--layout", "bids"], "layout"),
    ):
        code, _, err = cli(
            [
                "extract",
                "--root",
                str(bundled_isles22_dir()),
                "--out",
                str(tmp_path / "p.h5"),
                *args,
            ],
        )
        assert code == 2 and message in err and not (tmp_path / "p.h5").exists()


def test_shared_isles22_dwi_and_adc(tmp_path: Path, cli: Cli) -> None:
    root = SHARED_DATA / "isles22"
    if not root.is_dir():
        pytest.skip(f"{root} absent (developer-only data)")
    local = tmp_path / "isles22"
    shutil.copytree(root, local)
    out = tmp_path / "p.h5"
    code, stdout, err = cli(
        [
            "extract",
            "--root",
            str(local),
            "--modality",
            "DWI",
            "--modality",
            "ADC",
            "--out",
            str(out),
        ],
    )
    assert code == 0, err
    assert "179 patches kept of 1168 on the grid, 28 with lesion" in stdout
    assert PatchStore(out).patches().shape == (179, 2, 28, 28)
