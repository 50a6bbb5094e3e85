from __future__ import annotations

from pathlib import Path

import pytest

from patchvae.data.volumes import bundled_isles22_dir, detect_layout, discover_cases
from patchvae.errors import DataError
from tests.conftest import SHARED_DATA
from tests.volume_helpers import write_isles2015, write_manifest


def test_isles2022_bundled_case() -> None:
    (case,) = discover_cases(bundled_isles22_dir(), "isles2022", ["DWI"])
    assert case.case_id == "sub-strokecase0009_ses-0001"
    assert case.channels["DWI"].name == "sub-strokecase0009_ses-0001_dwi.nii.gz"
    assert case.lesion_mask is not None and case.lesion_mask.name.endswith("_msk.nii.gz")


def test_isles2022_multichannel_on_shared_data() -> None:
    root = SHARED_DATA / "isles22"
    if not root.is_dir():
        pytest.skip(f"{root} absent (developer-only data)")
    (case,) = discover_cases(root, "auto", ["DWI", "ADC"])
    assert list(case.channels) == ["DWI", "ADC"]
    assert case.channels["ADC"].name.endswith("_adc.nii.gz")


@pytest.mark.parametrize("suffix", [".nii", ".mha"])
def test_isles2015_layout(tmp_path: Path, suffix: str) -> None:
    root = write_isles2015(tmp_path / "siss", suffix)
    assert detect_layout(root) == "isles2015"
    cases = discover_cases(root, "auto", ["DWI", "Flair"])
    assert [c.case_id for c in cases] == ["1", "2"]
    assert cases[0].channels["DWI"].name == f"VSD.Brain.XX.O.MR_DWI.70601{suffix}"
    assert cases[0].channels["Flair"].name.startswith("VSD.Brain.XX.O.MR_Flair")
    assert cases[1].lesion_mask is not None and ".OT." in cases[1].lesion_mask.name


def test_isles2015_missing_sequence(tmp_path: Path) -> None:
    root = write_isles2015(tmp_path / "siss", ".nii", n_cases=1)
    with pytest.raises(DataError, match="expected one MR_T2 folder, found 0"):
        discover_cases(root, "isles2015", ["T2"])


def test_csv_manifest_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "a.nii.gz").write_bytes(b"")
    manifest = write_manifest(
        tmp_path,
        [{"case_id": "a", "FLAIR": "a.nii.gz", "lesion_mask": "", "brain_mask": "b.nii.gz"}],
    )
    (case,) = discover_cases(manifest, "auto", ["FLAIR"])
    assert case.channels["FLAIR"] == tmp_path / "a.nii.gz"
    assert case.lesion_mask is None and case.brain_mask == tmp_path / "b.nii.gz"


def test_csv_manifest_errors(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, [{"case_id": "a", "FLAIR": "a.nii"}, {"case_id": "a", "FLAIR": "b.nii"}]
    )
    with pytest.raises(DataError, match="lacks column"):
        discover_cases(manifest, "csv", ["DWI"])
    with pytest.raises(DataError, match="repeated case_id 'a'"):
        discover_cases(manifest, "csv", ["FLAIR"])


def test_layout_that_finds_no_case(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="layout auto: neither"):
        discover_cases(tmp_path, "auto")
    (tmp_path / "rawdata").mkdir()
    with pytest.raises(DataError, match="layout isles2022 found no case"):
        discover_cases(tmp_path, "auto")
    with pytest.raises(DataError, match="dataset root not found"):
        discover_cases(tmp_path / "absent", "auto")
