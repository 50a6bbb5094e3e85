"""What an analysis's numbers mean, in sentences: each score against the intensity baseline
with its 95 % interval, inverted scores flagged, accuracies beside the majority-class level,
and a glossary of the scores. Nothing here draws or reads files."""

from __future__ import annotations

import math
import re
from typing import Any

from patchvae.artefacts import SCORE_WORDS, score_title

FEW_POSITIVES = 100  # below this many lesion patches the page says intervals are wide


def _ci(pair: list[float] | None, signed: bool = False) -> str:
    if not pair or any(math.isnan(v) for v in pair):
        return "no interval"
    form = "{:+.3f}" if signed else "{:.3f}"
    return f"95 % CI {form.format(pair[0])} to {form.format(pair[1])}"


def auroc_with_interval(metrics: dict[str, Any]) -> str:
    """``0.689 (0.61-0.77)``: the AUROC and its by-patch interval, as a table cell."""
    auroc = metrics.get("auroc", float("nan"))
    if auroc != auroc:
        return "n/a"
    pair = metrics.get("intervals", {}).get("by_patch", {}).get("auroc")
    return f"{auroc:.3f}" + (f" ({pair[0]:.2f} to {pair[1]:.2f})" if pair else "")


def difference_with_interval(metrics: dict[str, Any], baseline: dict[str, Any]) -> str:
    """``+0.135 (+0.03 to +0.24)``: the AUROC minus the baseline's, with its interval."""
    difference = metrics.get("auroc", float("nan")) - baseline.get("auroc", float("nan"))
    if difference != difference:
        return "n/a"
    pair = metrics.get("intervals", {}).get("by_patch", {}).get("difference")
    return f"{difference:+.3f}" + (f" ({pair[0]:+.2f} to {pair[1]:+.2f})" if pair else "")


def verdict(name: str, metrics: dict[str, Any], baseline: dict[str, Any]) -> str:
    """One sentence: how a score does against the intensity baseline, by its interval."""
    title = score_title(name)
    auroc, base = metrics.get("auroc", float("nan")), baseline.get("auroc", float("nan"))
    if auroc != auroc:
        return f"{title}: no AUROC (the analysed patches hold one class only)."
    by_patch = metrics.get("intervals", {}).get("by_patch", {})
    by_case = metrics.get("intervals", {}).get("by_case")
    interval = f"AUROC {auroc:.3f} ({_ci(by_patch.get('auroc'))})"
    if auroc < 0.5:
        return (
            f"INVERTED: {title} ranks healthy patches above lesion patches ({interval}); "
            "as a lesion score it is worse than chance here."
        )
    pair = by_patch.get("difference")
    if not pair:
        phrase = "has no interval (analysed by an older patchvae) against"
    elif pair[0] > 0:
        phrase = "beats"
    elif pair[1] < 0:
        phrase = "is worse than"
    else:
        phrase = "cannot be told apart from"
    sentence = (
        f"{title} {phrase} the intensity baseline: {interval} against {base:.3f}; "
        f"difference {auroc - base:+.3f} ({_ci(pair, signed=True)}, resampling patches"
    )
    if by_case:
        sentence += f"; {_ci(by_case.get('difference'), signed=True)} resampling cases"
    return sentence + ")."


def baseline_sentence(baseline: dict[str, Any], n_lesion: int, n_patches: int) -> str:
    pair = baseline.get("intervals", {}).get("by_patch", {}).get("auroc")
    auroc = baseline.get("auroc", float("nan"))
    text = (
        f"The intensity baseline (no learning) reaches AUROC {auroc:.3f} ({_ci(pair)}) on"
        f" {n_lesion} lesion and {n_patches - n_lesion} healthy patches."
    )
    if n_lesion < FEW_POSITIVES:
        text += (
            f" With {n_lesion} lesion patches the intervals are wide: read differences "
            "inside them as no difference."
        )
    return text


def majority_sentence(clustering: dict[str, dict[str, float]]) -> str:
    """What a clustering accuracy must beat: calling every patch the commoner class."""
    majority = next((m["majority"] for m in clustering.values() if "majority" in m), None)
    if majority is None:
        return ""
    beaten = [k for k, m in clustering.items() if m.get("accuracy", 0.0) > majority]
    return (
        f"Calling every patch the commoner class scores {majority:.3f}: an accuracy below "
        "that finds no lesion structure. "
        + (f"Above it: {', '.join(beaten)}." if beaten else "No clustering is above it.")
    )


def glossary(names: list[str]) -> list[tuple[str, str, str]]:
    """(title, code name, meaning) of each score named."""
    return [(SCORE_WORDS[n][0], n, SCORE_WORDS[n][1]) for n in names if n in SCORE_WORDS]


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/\"'<>]+/)+([^\s/\"'<>]*)")


def without_paths(text: str) -> str:
    """Absolute paths of this machine replaced by their last part (a file or folder name).

    Example
    -------
    >>> without_paths("patchvae analyze /home/me/runs/r1 --patches /data/s.h5")
    'patchvae analyze r1 --patches s.h5'
    """
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)
