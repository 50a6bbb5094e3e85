"""Case discovery: find each case's image files, lesion mask and brain mask in a dataset folder.

Layouts:

* ``isles2015``: the SISS training layout: one folder per case, one sub-folder per sequence,
  ``<case>/VSD.Brain.XX.O.MR_DWI.70613/VSD.Brain.XX.O.MR_DWI.70613.nii`` (or ``.mha``), the
  lesion mask in ``VSD.Brain_*.XX.O.OT.<id>/``; sequences ``MR_DWI``, ``MR_Flair``, ``MR_T1``,
  ``MR_T2``.
* ``isles2022``: BIDS: ``rawdata/sub-*/ses-*/**/*_dwi.nii.gz`` (``_adc``, ``_flair``), the
  mask ``derivatives/sub-*/ses-*/*_msk.nii.gz``.
* ``csv``: a manifest with a ``case_id`` column, one column per channel (named as given to
  ``--modality``), optional ``lesion_mask`` and ``brain_mask`` columns; paths are relative to
  the manifest.
* ``auto``: ``isles2022`` when the root holds ``rawdata/``, ``isles2015`` when it holds
  ``VSD.Brain`` folders, ``csv`` when the root is a ``.csv`` file.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from patchvae.errors import DataError
from patchvae.io import read_text

LAYOUTS = ("auto", "isles2015", "isles2022", "csv")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass(frozen=True)
class CaseFiles:
    """One case: its channels (modality -> file, in the order asked) and optional masks."""

    case_id: str
    channels: dict[str, Path]
    lesion_mask: Path | None = None
    brain_mask: Path | None = None


def bundled_isles22_dir() -> Path:
    """The ISLES'22 case bundled in the package (DWI and lesion mask; see its README)."""
    return Path(str(resources.files("patchvae") / "data" / "sample" / "isles22"))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def discover_cases(
    root: str | Path, layout: str = "auto", modalities: list[str] | None = None
) -> list[CaseFiles]:
    """Find the cases under ``root`` in the given layout, with the asked modalities (default DWI).

    Raises :class:`DataError` when the root is missing, the layout is not recognised, or no
    case is found; a case that lacks an asked modality is an error naming the case.

    Example
    -------
    >>> [c.case_id for c in discover_cases(bundled_isles22_dir(), "auto", ["DWI"])]
    ['sub-strokecase0009_ses-0001']
    """
    root = Path(root)
    modalities = modalities or ["DWI"]
    if not root.exists():
        raise DataError(root, "dataset root not found")
    if layout not in LAYOUTS:
        raise DataError(root, f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(root)
    finder = {"isles2015": _isles2015, "isles2022": _isles2022, "csv": _manifest}[layout]
    cases = finder(root, modalities)
    if not cases:
        raise DataError(root, f"layout {layout} found no case here")
    return cases


def detect_layout(root: Path) -> str:
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if root.is_dir() and (root / "rawdata").is_dir():
        return "isles2022"
    if root.is_dir() and any(root.glob("*/VSD.Brain*")):
        return "isles2015"
    raise DataError(
        root,
        "layout auto: neither ISLES 2022 (rawdata/) nor ISLES 2015 (VSD.Brain folders) "
        "nor a .csv manifest",
    )


def _single_image(folder: Path, what: str) -> Path:
    images = sorted(p for p in folder.iterdir() if is_image_file(p))
    if len(images) != 1:
        raise DataError(folder, f"expected one {what} image file here, found {len(images)}")
    return images[0]


def _isles2015(root: Path, modalities: list[str]) -> list[CaseFiles]:
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        sequence_dirs = [
            p for p in case_dir.iterdir() if p.is_dir() and p.name.startswith("VSD.Brain")
        ]
        if not sequence_dirs:
            continue
        channels = {}
        for modality in modalities:
            pattern = re.compile(rf"\.MR_{re.escape(modality)}\.", re.IGNORECASE)
            matches = [p for p in sequence_dirs if pattern.search(p.name + ".")]
            if len(matches) != 1:
                raise DataError(
                    case_dir, f"expected one MR_{modality} folder, found {len(matches)}"
                )
            channels[modality] = _single_image(matches[0], f"MR_{modality}")
        masks = [p for p in sequence_dirs if re.search(r"\.OT\.", p.name + ".")]
        lesion = _single_image(masks[0], "OT lesion mask") if masks else None
        cases.append(CaseFiles(case_dir.name, channels, lesion))
    return sorted(cases, key=lambda c: _natural_key(c.case_id))


def _isles2022(root: Path, modalities: list[str]) -> list[CaseFiles]:
    cases = []
    for session in sorted((root / "rawdata").glob("sub-*/ses-*")):
        subject = session.parent.name
        case_id = f"{subject}_{session.name}"
        channels = {}
        for modality in modalities:
            found = sorted(session.rglob(f"*_{modality.lower()}.nii*"))
            if len(found) != 1:
                raise DataError(
                    session, f"expected one *_{modality.lower()}.nii[.gz] file, found {len(found)}"
                )
            channels[modality] = found[0]
        masks = sorted((root / "derivatives" / subject / session.name).glob("*_msk.nii*"))
        cases.append(CaseFiles(case_id, channels, masks[0] if masks else None))
    return cases


MASK_COLUMNS = ("lesion_mask", "brain_mask")
# a column named like a mask that patchvae does not read would silently drop the masks
_MASK_LIKE = re.compile(r"mask|seg|label|lesion|roi|ground|truth|gold|^ot$|^gt$", re.IGNORECASE)


def read_manifest_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV manifest; any malformed line is a one-line DataError."""
    text = read_text(path, "manifest")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DataError(path, f"not a readable CSV manifest ({exc})") from None
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if not lines:
        raise DataError(path, "the manifest is empty (expected a header line and one per case)")
    header = [name.strip() for name in lines[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated or "" in header:
        raise DataError(path, f"header line: empty or repeated column names {repeated or ['']}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise DataError(
                path, f"line {number}: {len(line)} fields where the header has {len(header)}"
            )
        rows.append({name: cell.strip() for name, cell in zip(header, line, strict=True)})
    return header, rows


def _manifest(path: Path, modalities: list[str]) -> list[CaseFiles]:
    if not path.is_file():
        raise DataError(path, "csv layout: --root must be the manifest .csv file")
    header, rows = read_manifest_rows(path)
    missing = [c for c in ("case_id", *modalities) if c not in header]
    if missing:
        raise DataError(path, f"manifest lacks column(s) {missing}; it has {header}")
    known = {"case_id", *modalities, *MASK_COLUMNS}
    unread_masks = [c for c in header if c not in known and _MASK_LIKE.search(c)]
    if unread_masks:
        raise DataError(
            path,
            f"column(s) {unread_masks} look like masks, but masks are read only from columns "
            f"named {' and '.join(MASK_COLUMNS)}; rename them (or ask for them with --modality)",
        )
    if not rows:
        raise DataError(path, "the manifest has a header but no case")
    base = path.parent
    cases = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        case_id = row["case_id"]
        if not case_id or case_id in seen:
            raise DataError(path, f"line {line}: empty or repeated case_id {case_id!r}")
        seen.add(case_id)

        def resolve(column: str, row: dict[str, str] = row) -> Path | None:
            value = row.get(column, "")
            return (base / value) if value else None

        channels = {}
        for modality in modalities:
            file = resolve(modality)
            if file is None:
                raise DataError(path, f"line {line}: case {case_id} has no {modality} file")
            channels[modality] = file
        cases.append(CaseFiles(case_id, channels, resolve("lesion_mask"), resolve("brain_mask")))
    return cases


def unread_columns(path: Path, modalities: list[str]) -> list[str]:
    """Manifest columns that extraction will not read (other sequences), to say so."""
    header, _ = read_manifest_rows(path)
    return [c for c in header if c not in {"case_id", *modalities, *MASK_COLUMNS}]


def _natural_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (10**9, name)
