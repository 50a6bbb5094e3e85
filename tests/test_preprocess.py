from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from patchvae.config import ExtractConfig
from patchvae.data.volumes import CaseFiles
from patchvae.errors import DataError
from patchvae.patches import extract_patches
from patchvae.preprocess import derive_brain_mask, load_case
from patchvae.reading import read_volume
from tests.volume_helpers import bundled_case_images


def case_from(
    tmp_path: Path, image: sitk.Image, mask: sitk.Image | None, name: str = "v"
) -> CaseFiles:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
    lesion = None
    if mask is not None:
        lesion = tmp_path / f"{name}_msk.nii.gz"
        sitk.WriteImage(mask, str(lesion))
    return CaseFiles(name, {"DWI": tmp_path / f"{name}.nii.gz"}, lesion)


@pytest.mark.parametrize(
    "transform",
    [
        lambda im: sitk.Flip(im, [True, False, False]),
        lambda im: sitk.Flip(im, [False, True, True]),
        lambda im: sitk.PermuteAxes(im, [1, 0, 2]),
        lambda im: sitk.PermuteAxes(im, [2, 0, 1]),
    ],
    ids=["flip-x", "flip-yz", "swap-xy", "permute-zxy"],
)
def test_same_volume_any_direction_matrix_gives_same_patches(tmp_path: Path, transform) -> None:  # type: ignore[no-untyped-def]
    dwi, mask = bundled_case_images()
    settings = ExtractConfig()
    reference = extract_patches(load_case(case_from(tmp_path / "a", dwi, mask), settings))
    moved_image, moved_mask = transform(dwi), transform(mask)
    # the voxel array really is stored differently, the anatomy is the same
    assert (
        moved_image.GetDirection() != dwi.GetDirection() or moved_image.GetSize() != dwi.GetSize()
    )
    other = extract_patches(load_case(case_from(tmp_path / "b", moved_image, moved_mask), settings))
    np.testing.assert_array_equal(other.pixels, reference.pixels)
    for column in ("slice", "row", "col", "label"):
        np.testing.assert_array_equal(getattr(other, column), getattr(reference, column))


def test_canonical_orientation_is_lps(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    case = load_case(case_from(tmp_path, dwi, mask), ExtractConfig())
    assert case.params["orientation"] == "LPS"
    assert case.image.shape == (1, 73, 112, 112) and case.image.dtype == np.float32
    inside = case.image[0][case.brain]
    assert inside.min() >= 0 and inside.max() == 1.0
    assert np.all(case.image[0][~case.brain] == 0)
    assert case.lesion is not None and int(case.lesion.sum()) == 523


def test_resampling_to_isotropic_spacing(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    case = load_case(case_from(tmp_path, dwi, mask), ExtractConfig(spacing=1.0))
    assert case.spacing == (1.0, 1.0, 1.0) and case.image.shape == (1, 146, 224, 224)
    assert case.lesion is not None
    # a lesion resampled to 8x smaller voxels holds about 8x the voxels
    assert 0.7 * 8 * 523 < case.lesion.sum() < 1.3 * 8 * 523


def test_percentile_parameters_are_recorded(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    case = load_case(case_from(tmp_path, dwi, mask), ExtractConfig(clip_percentiles=(1.0, 99.0)))
    raw = sitk.GetArrayFromImage(dwi)
    low, high = np.percentile(raw[raw != 0], [1.0, 99.0])
    params = case.params["channels"]["DWI"]
    assert params["clip_low"] == pytest.approx(low, rel=1e-5) and params[
        "clip_high"
    ] == pytest.approx(high, rel=1e-5)


def test_otsu_brain_mask_when_background_is_not_zero() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(0.0, 0.05, size=(10, 40, 40)) - 1.0  # non-zero background
    volume[:, 10:30, 10:30] += 3.0
    mask, method = derive_brain_mask(volume, "auto")
    assert method == "otsu"
    assert mask[:, 10:30, 10:30].all() and mask.sum() == 10 * 20 * 20


def test_n4_runs_and_keeps_range(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    case = load_case(case_from(tmp_path, dwi, mask), ExtractConfig(n4=True))
    assert case.params["channels"]["DWI"]["n4"] is True
    assert case.image.min() >= 0 and case.image.max() <= 1


# --- bad inputs: each a DataError naming the file ---------------------------------------


def test_mask_on_another_grid_names_both_files(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    shifted = sitk.Image(mask)
    shifted.SetOrigin(tuple(o + 4.0 for o in mask.GetOrigin()))
    case = case_from(tmp_path, dwi, shifted)
    with pytest.raises(DataError, match=r"v_msk\.nii\.gz: not on the grid of .*v\.nii\.gz: origin"):
        load_case(case, ExtractConfig())
    small = sitk.Resample(
        mask,
        [56, 56, 36],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        mask.GetOrigin(),
        (4.0, 4.0, 4.0),
    )
    with pytest.raises(DataError, match="size"):
        load_case(case_from(tmp_path / "s", dwi, small), ExtractConfig())


def test_reference_resamples_other_channels_onto_the_first(tmp_path: Path) -> None:
    """A second channel on its own grid (coarser, shifted: as ISLES'22 FLAIR against DWI) is
    resampled onto the first channel's grid by physical position with ``reference``."""
    dwi, mask = bundled_case_images()
    second = sitk.Resample(
        dwi,
        [76, 76, 50],  # 3 mm voxels over the 2 mm grid's field of view, shifted
        sitk.Transform(),
        sitk.sitkLinear,
        dwi.TransformContinuousIndexToPhysicalPoint((-1.0, -1.0, -1.0)),
        (3.0, 3.0, 3.0),
        dwi.GetDirection(),
    )
    case = case_from(tmp_path, dwi, mask)
    sitk.WriteImage(second, str(tmp_path / "second.nii.gz"))
    case.channels["FLAIR"] = tmp_path / "second.nii.gz"
    settings = ExtractConfig(modalities=["DWI", "FLAIR"])
    with pytest.raises(DataError, match=r"second\.nii\.gz: not on the grid of .*v\.nii\.gz: size"):
        load_case(case, settings)
    both = load_case(case, settings.model_copy(update={"reference": True}))
    assert (
        both.image.shape[1:]
        == load_case(
            case_from(tmp_path / "one", dwi, mask),
            settings.model_copy(update={"modalities": ["DWI"]}),
        ).image.shape[1:]
    )
    # the same anatomy in both channels: strongly correlated inside the brain
    first, resampled = both.image[0][both.brain], both.image[1][both.brain]
    assert np.corrcoef(first, resampled)[0, 1] > 0.8
    # a channel that does not overlap the first in space is one line naming both files
    far = sitk.Image(second)
    far.SetOrigin(tuple(o + 1000.0 for o in second.GetOrigin()))
    sitk.WriteImage(far, str(tmp_path / "second.nii.gz"))
    with pytest.raises(DataError, match=r"second\.nii\.gz: does not overlap .*v\.nii\.gz in space"):
        load_case(case, settings.model_copy(update={"reference": True}))


def test_two_d_and_four_d_images(tmp_path: Path) -> None:
    flat = sitk.GetImageFromArray(np.ones((40, 40), np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match="expected a 3-D volume, found a 2-D image"):
        read_volume(tmp_path / "flat.nii.gz")
    series = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((8, 40, 40), np.float32))] * 3)
    sitk.WriteImage(series, str(tmp_path / "series.nii.gz"))
    with pytest.raises(DataError, match=r"found a 4-D image .*one 3-D volume per channel"):
        read_volume(tmp_path / "series.nii.gz")


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    dwi, _ = bundled_case_images()
    sitk.WriteImage(dwi, str(tmp_path / "good.nii.gz"))
    raw = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    (tmp_path / "text.nii").write_text("not an image at all\n" * 30)
    for name in ("truncated.nii.gz", "garbage.nii.gz", "text.nii"):
        with pytest.raises(DataError, match=f"{name}: cannot be read as an image"):
            read_volume(tmp_path / name)
    for suffix in (".nii", ".mha"):
        sitk.WriteImage(dwi, str(tmp_path / f"plain{suffix}"))
        raw = (tmp_path / f"plain{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(raw[: len(raw) // 2])
        with pytest.raises(DataError, match=rf"cut\{suffix}: cannot be read as an image"):
            read_volume(tmp_path / f"cut{suffix}")
    with pytest.raises(DataError, match="file not found"):
        read_volume(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_nan_and_inf_voxels_are_refused(tmp_path: Path, suffix: str) -> None:
    # ITK reads NIfTI NaN/inf as 0; patchvae must still see and refuse them
    dwi, _ = bundled_case_images()
    array = sitk.GetArrayFromImage(dwi)
    array[30, 50, 50] = np.nan
    array[31, 50, 50] = np.inf
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(dwi)
    sitk.WriteImage(bad, str(tmp_path / f"bad{suffix}"))
    case = CaseFiles("bad", {"DWI": tmp_path / f"bad{suffix}"})
    with pytest.raises(DataError, match=r"bad\S*: 2 voxel\(s\) are NaN or infinite"):
        load_case(case, ExtractConfig())


def test_empty_brain_mask(tmp_path: Path) -> None:
    dwi, mask = bundled_case_images()
    empty = sitk.Image(mask) * 0
    sitk.WriteImage(empty, str(tmp_path / "brain.nii.gz"))
    case = case_from(tmp_path, dwi, mask)
    case = CaseFiles(case.case_id, case.channels, case.lesion_mask, tmp_path / "brain.nii.gz")
    with pytest.raises(DataError, match=r"brain\.nii\.gz: the brain mask is empty"):
        load_case(case, ExtractConfig())


def test_volume_smaller_than_a_patch(tmp_path: Path) -> None:
    dwi, _ = bundled_case_images()
    small = dwi[40:60, 40:60, :]
    with pytest.raises(DataError, match="smaller than one 28x28 patch"):
        load_case(case_from(tmp_path, small, None), ExtractConfig())


@pytest.mark.parametrize(
    "kind", ["bundled", "int16", "scaled", "scaled-int32", "scaled-float64", "oblique"]
)
def test_read_volume_is_the_image_itk_reads(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each NIfTI file is read once (nibabel decodes the voxels for the checks, ITK reads only
    the header), yet the image is the one SimpleITK gives: pixel type, geometry and voxels.
    Scaled voxels are scaled as ITK scales them, bit for bit: int32 values beyond float32's
    exact range with BraTS's mask slope show the order of the casts. Only a file that ITK
    scales to double is left to ITK's own reader."""
    import nibabel as nib
    import SimpleITK as sitk

    from patchvae.data.volumes import bundled_isles22_dir
    from patchvae.reading import read_volume

    if kind == "bundled":
        path = next(bundled_isles22_dir().rglob("*_dwi.nii.gz"))
    else:
        rng = np.random.default_rng(0)
        data = rng.integers(0, 1000, (9, 8, 7)).astype(np.int16)
        affine = np.diag([1.5, 0.8, 2.0, 1.0])
        if kind == "oblique":
            c, s = np.cos(0.3), np.sin(0.3)
            affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ affine[:3, :3]
            affine[:3, 3] = [4.0, -7.0, 12.5]
        if kind == "scaled-int32":
            data = rng.integers(-(2**31), 2**31 - 1, (9, 8, 7)).astype(np.int32)
        if kind == "scaled-float64":
            data = rng.normal(size=(9, 8, 7)).astype(np.float64) * 1e3  # type: ignore[assignment]
        image = nib.Nifti1Image(data, affine, dtype=data.dtype)
        slopes = {"scaled": (0.5, 3.0), "scaled-int32": (2.3283064365386963e-10, 0.5)}
        if kind.startswith("scaled"):
            image.header.set_slope_inter(*slopes.get(kind, (0.37123, -12.77)))
        path = tmp_path / f"{kind}.nii.gz"
        nib.save(image, path)
    itk = sitk.ReadImage(str(path))
    if kind != "scaled-float64":  # read once: ITK's own voxel reader is never called
        monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: pytest.fail("read"))
    ours = read_volume(path)
    assert ours.GetPixelID() == itk.GetPixelID()
    assert ours.GetSize() == itk.GetSize() and ours.GetSpacing() == itk.GetSpacing()
    assert ours.GetOrigin() == itk.GetOrigin() and ours.GetDirection() == itk.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk))


def test_non_finite_voxels_refused_also_when_scaled(tmp_path: Path) -> None:
    """A file whose voxels are scaled is checked for NaN all the same."""
    import nibabel as nib

    data = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    data[1, 2, 3] = np.nan
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_slope_inter(2.0, 1.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    with pytest.raises(DataError, match=r"scaled\.nii\.gz: .*NaN or infinite"):
        read_volume(tmp_path / "scaled.nii.gz")


@pytest.mark.parametrize("inflater", ["isal", "zlib"])
def test_gzip_members_padding_and_the_zlib_fallback(
    inflater: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .nii.gz of two gzip members with zero padding after them (both valid gzip) reads
    as the plain file does, with ISA-L's inflate or the standard library's; a file cut in
    its second member is refused as truncated."""
    import gzip
    import zlib

    import SimpleITK as sitk

    from patchvae import reading
    from patchvae.data.volumes import bundled_isles22_dir

    if inflater == "zlib":
        monkeypatch.setattr(reading, "_inflater", zlib.decompressobj)
    source = next(bundled_isles22_dir().rglob("*_dwi.nii.gz"))
    plain = gzip.decompress(source.read_bytes())
    members = gzip.compress(plain[:5000]) + gzip.compress(plain[5000:])
    (tmp_path / "members.nii.gz").write_bytes(members + bytes(64))
    ours = read_volume(tmp_path / "members.nii.gz")
    assert np.array_equal(
        sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(sitk.ReadImage(str(source)))
    )
    (tmp_path / "cut.nii.gz").write_bytes(members[: len(members) - 100])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: .*truncated"):
        read_volume(tmp_path / "cut.nii.gz")


def test_a_volumes_voxels_keep_its_image_alive() -> None:
    """SimpleITK's array view of an image reads freed memory once the image is gone; a
    Volume's voxels keep the image alive, whatever happens to the Volume."""
    import gc

    import SimpleITK as sitk

    from patchvae.reading import Volume

    values = np.arange(64**3, dtype=np.float32).reshape(64, 64, 64)

    def voxels_of_a_dropped_volume() -> np.ndarray:
        return Volume.of(sitk.GetImageFromArray(values)).voxels

    voxels = voxels_of_a_dropped_volume()
    gc.collect()
    others = [sitk.GetImageFromArray(np.zeros_like(values)) for _ in range(4)]  # reuse memory
    np.testing.assert_array_equal(voxels, values)
    assert len(others) == 4 and not voxels.flags.writeable
