"""``patchvae score``: maps on each input's own grid, that agree with the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from patchvae.store import PatchStore
from tests.conftest import Cli
from tests.volume_helpers import bundled_case_images, write_manifest

SCORES = [
    "recon_error",
    "kl",
    "neg_elbo",
    "residual_p95",
    "latent_nll",
    "latent_mahalanobis",
    "intensity_p95",
    "intensity_histeq",
    "intensity_spots",
    "intensity_spots_context",  # the same 26 patches around each: the same ranks
    "fused_label_free",  # ranks among the same patches here: the same values
]


def _source(store: Path, case_id: str, name: str = "DWI") -> str:
    case = next(c for c in PatchStore(store).cases if c["case_id"] == case_id)
    return str(case["sources"][name]["path"])


def test_score_on_the_store_grid_reproduces_the_analysis(
    trained_run: Path, two_case_store: Path, tmp_path: Path, cli: Cli
) -> None:
    code, _, err = cli(["analyze", str(trained_run), "--patches", str(two_case_store)])
    assert code == 0, err
    analysed = pd.read_parquet(
        trained_run / f"analysis-{two_case_store.stem}" / "patch-scores.parquet"
    )
    manifest = write_manifest(
        tmp_path,
        [
            {
                "case_id": "2",
                "DWI": _source(two_case_store, "2"),
                "lesion_mask": _source(two_case_store, "2", "lesion_mask"),
            }
        ],
    )
    out = tmp_path / "scored"
    code, stdout, err = cli(
        ["score", str(trained_run), str(manifest), "--out", str(out), "--stride", "28"]
    )
    assert code == 0, err
    assert "2: " in stdout
    scored = pd.read_parquet(out / "patch-scores.parquet")
    keys = ["case_id", "slice", "row", "col"]
    merged = analysed.merge(scored, on=keys, suffixes=("_analysis", "_score"))
    # every held-out patch of the store is a window of the scoring grid, and nothing else is
    assert len(merged) == len(analysed) == len(scored)
    for name in SCORES:
        np.testing.assert_allclose(
            merged[f"{name}_score"], merged[f"{name}_analysis"], rtol=1e-5, atol=1e-5, err_msg=name
        )
    np.testing.assert_array_equal(merged.label_score, merged.label_analysis)
    record = json.loads((out / "score.json").read_text())
    assert record["stride"] == 28 and set(record["scores"]) == set(SCORES)
    assert record["cases"][0]["voxel_metrics"]["intensity_p95"]["voxels"] > 0


def _with_blob(image: sitk.Image, index_xyz: tuple[int, int, int]) -> sitk.Image:
    """The image with a ball of radius 5 voxels at a voxel, as bright as the brain's 99.5th
    percentile (the level extraction maps to 1; brighter would move that level and darken
    the whole scan): wide enough to fill over 5 % of a 28 x 28 window, so it sets its p95."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    z, y, x = np.ogrid[: array.shape[0], : array.shape[1], : array.shape[2]]
    i, j, k = index_xyz
    ball = (x - i) ** 2 + (y - j) ** 2 + (z - k) ** 2 <= 25
    array[ball] = np.percentile(array[array != 0], 99.5)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _quiet_brain_voxel(image: sitk.Image) -> tuple[int, int, int]:
    """A voxel deep in the brain whose surroundings are darkest (far from the lesion and the
    bright cortex), as an (x, y, z) index: there the blob is the only bright thing."""
    from scipy import ndimage

    array = sitk.GetArrayFromImage(image).astype(np.float32)
    deep = ndimage.binary_erosion(array > 0, iterations=10)
    quiet = np.where(deep, ndimage.maximum_filter(array, size=21), np.inf)
    z, y, x = np.unravel_index(int(np.argmin(quiet)), quiet.shape)
    return int(x), int(y), int(z)


# the bundled DWI's own (oblique) direction, and axes permuted and flipped
DIRECTIONS = {"file": None, "permuted": (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_maps_keep_the_input_grid_and_peak_over_a_blob(
    trained_run: Path, tmp_path: Path, cli: Cli, direction: str
) -> None:
    dwi, _ = bundled_case_images()
    if DIRECTIONS[direction] is not None:
        dwi.SetDirection(DIRECTIONS[direction])
        dwi.SetOrigin((40.0, -20.0, 15.0))
    blob_index = _quiet_brain_voxel(dwi)
    plain, blobbed = tmp_path / "plain.nii.gz", tmp_path / "blob.nii.gz"
    sitk.WriteImage(dwi, str(plain))
    sitk.WriteImage(_with_blob(dwi, blob_index), str(blobbed))
    out = tmp_path / "scored"
    code, _, err = cli(["score", str(trained_run), str(plain), str(blobbed), "--out", str(out)])
    assert code == 0, err
    for name in (*SCORES, "coverage"):
        for case in ("plain", "blob"):
            path = out / case / f"{name}.nii.gz"
            written, source = sitk.ReadImage(str(path)), sitk.ReadImage(str(plain))
            assert written.GetSize() == source.GetSize()
            assert written.GetSpacing() == source.GetSpacing()
            assert written.GetOrigin() == source.GetOrigin()
            assert written.GetDirection() == source.GetDirection()
            assert (nib.load(path).affine == nib.load(plain).affine).all()
    # the voxels whose intensity score the blob changed: those under a window that holds some
    # of it, so a box around the blob in the slicing plane; its centre in physical space is
    # the blob's (an axis flipped or swapped on the way back would put it tens of mm away)
    change = np.nan_to_num(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out / "blob" / "intensity_p95.nii.gz")))
        - sitk.GetArrayFromImage(sitk.ReadImage(str(out / "plain" / "intensity_p95.nii.gz")))
    )
    changed = np.argwhere(change > 0.05)[:, ::-1]  # (x, y, z) indices
    middle = (changed.min(axis=0) + changed.max(axis=0)) / 2
    image = sitk.ReadImage(str(plain))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(middle.tolist()))
    blob = np.array(image.TransformIndexToPhysicalPoint(blob_index))
    step = 7 * 2.0  # mm: windows every 7 voxels of 2 mm
    assert np.linalg.norm(centre - blob) < step
    # and the test can tell a flipped axis: the blob's mirror image lies far off on each axis
    mirrored = np.array(image.GetSize()) - 1 - np.array(blob_index)
    for axis in range(3):
        index = list(blob_index)
        index[axis] = int(mirrored[axis])
        assert (
            np.linalg.norm(np.array(image.TransformIndexToPhysicalPoint(index)) - blob) > 3 * step
        )


def test_score_refuses_inputs_that_do_not_fit_the_run(
    trained_run: Path, tmp_path: Path, cli: Cli
) -> None:
    dwi, _ = bundled_case_images()
    plain = tmp_path / "plain.nii.gz"
    sitk.WriteImage(dwi, str(plain))
    manifest = write_manifest(tmp_path, [{"case_id": "a", "FLAIR": str(plain)}])
    code, _, err = cli(["score", str(trained_run), str(manifest), "--out", str(tmp_path / "o")])
    assert code != 0 and "DWI" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    # an output folder patchvae did not make is never replaced
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep")
    code, _, err = cli(["score", str(trained_run), str(plain), "--out", str(theirs), "--force"])
    assert code != 0 and "never replaced" in err
    assert (theirs / "notes.txt").read_text() == "keep"


def test_maps_of_a_brats_case_keep_its_grid(trained_run: Path, tmp_path: Path, cli: Cli) -> None:
    from tests.conftest import SHARED_DATA

    flair = (
        SHARED_DATA
        / "brats2013_deepmedic"
        / "brats_2013_pat0006_1"
        / "Flair_subtrMeanDivStd.nii.gz"
    )
    if not flair.is_file():
        pytest.skip(f"BraTS case not found at {flair} (../shared/data is a developer-only folder)")
    out = tmp_path / "scored"
    code, _, err = cli(["score", str(trained_run), str(flair), "--out", str(out), "--stride", "28"])
    assert code == 0, err
    source, source_nib = sitk.ReadImage(str(flair)), nib.load(flair)
    for path in sorted((out / "Flair_subtrMeanDivStd").glob("*.nii.gz")):
        written = sitk.ReadImage(str(path))
        assert written.GetSize() == source.GetSize() and written.GetOrigin() == source.GetOrigin()
        assert written.GetSpacing() == source.GetSpacing()
        assert written.GetDirection() == source.GetDirection()
        assert (nib.load(path).affine == source_nib.affine).all()
