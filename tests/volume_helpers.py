"""Builders of small real-data datasets in the layouts patchvae reads, in temporary folders."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from patchvae.data.volumes import bundled_isles22_dir, discover_cases


def bundled_case_images() -> tuple[sitk.Image, sitk.Image]:
    """The bundled ISLES'22 DWI and lesion mask as SimpleITK images."""
    case = discover_cases(bundled_isles22_dir(), "isles2022")[0]
    return sitk.ReadImage(str(case.channels["DWI"])), sitk.ReadImage(str(case.lesion_mask))


def write_isles2015(root: Path, suffix: str = ".nii", n_cases: int = 2) -> Path:
    """The SISS layout, cases 1..n, each with the real DWI (and a FLAIR copy) and lesion mask."""
    dwi, mask = bundled_case_images()
    for case in range(1, n_cases + 1):
        for name, image in (
            (f"VSD.Brain.XX.O.MR_DWI.{70600 + case}", dwi),
            (f"VSD.Brain.XX.O.MR_Flair.{70700 + case}", dwi),
            (f"VSD.Brain_3more.XX.O.OT.{70800 + case}", mask),
        ):
            folder = root / str(case) / name
            folder.mkdir(parents=True)
            sitk.WriteImage(image, str(folder / f"{name}{suffix}"))
    return root


def write_manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def single_case_manifest(
    root: Path, image: sitk.Image, mask: sitk.Image | None = None, name: str = "img"
) -> Path:
    """A csv dataset of one case made of the given images."""
    root.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(root / f"{name}.nii.gz"))
    row = {"case_id": "c1", "DWI": f"{name}.nii.gz"}
    if mask is not None:
        sitk.WriteImage(mask, str(root / f"{name}_mask.nii.gz"))
        row["lesion_mask"] = f"{name}_mask.nii.gz"
    return write_manifest(root, [row])
