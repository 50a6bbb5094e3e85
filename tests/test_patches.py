from __future__ import annotations

import numpy as np
import pytest

from patchvae.config import ExtractConfig
from patchvae.data.volumes import bundled_isles22_dir, discover_cases
from patchvae.patches import extract_patches, grid_starts, reassemble
from patchvae.preprocess import NormalisedCase, load_case


@pytest.fixture(scope="module")
def bundled_case() -> NormalisedCase:
    return load_case(discover_cases(bundled_isles22_dir())[0], ExtractConfig())


def test_grid_counts_on_bundled_case(bundled_case: NormalisedCase) -> None:
    batch = extract_patches(bundled_case, 28)
    # 73 slices x 4 x 4 positions; >= 50% non-zero brain; any lesion voxel
    assert batch.grid_patches == 1168
    # regression values (this version's counts), not derived independently
    assert len(batch) == 179 and int(batch.label.sum()) == 28
    assert batch.pixels.shape == (179, 1, 28, 28)
    assert np.all(batch.brain_fraction >= 0.5)


def test_provenance_puts_patches_back(bundled_case: NormalisedCase) -> None:
    for stride in (28, 14):
        batch = extract_patches(bundled_case, 28, stride=stride, min_brain=0.0)
        volume, covered = reassemble(
            batch.pixels, batch.slice, batch.row, batch.col, bundled_case.image.shape
        )
        _, y, x = bundled_case.brain.shape
        grid = np.zeros_like(covered)
        grid[:, : grid_starts(y, 28, stride)[-1] + 28, : grid_starts(x, 28, stride)[-1] + 28] = True
        assert np.array_equal(covered, grid)
        np.testing.assert_array_equal(volume[:, covered], bundled_case.image[:, covered])


def test_lesion_fraction_matches_mask(bundled_case: NormalisedCase) -> None:
    batch = extract_patches(bundled_case, 28, min_brain=0.5)
    assert bundled_case.lesion is not None
    for i in range(len(batch)):
        k, r, c = batch.slice[i], batch.row[i], batch.col[i]
        window = bundled_case.lesion[k, r : r + 28, c : c + 28]
        assert batch.lesion_fraction[i] == pytest.approx(window.mean())
        assert batch.label[i] == int(window.any())
        assert batch.brain_fraction[i] == pytest.approx(
            bundled_case.brain[k, r : r + 28, c : c + 28].mean()
        )


def test_lesion_threshold_and_missing_mask(bundled_case: NormalisedCase) -> None:
    strict = extract_patches(bundled_case, 28, lesion_threshold=0.1)
    assert np.array_equal(strict.label == 1, strict.lesion_fraction > 0.1)
    unlabelled = NormalisedCase(
        "u", bundled_case.image, bundled_case.brain, None, bundled_case.spacing
    )
    batch = extract_patches(unlabelled, 28)
    assert np.all(batch.label == -1) and np.all(np.isnan(batch.lesion_fraction))


def test_multichannel_patches() -> None:
    case = load_case(discover_cases(bundled_isles22_dir())[0], ExtractConfig())
    two = NormalisedCase(
        "m", np.concatenate([case.image, 1 - case.image]), case.brain, case.lesion, case.spacing
    )
    batch = extract_patches(two, 28)
    assert batch.pixels.shape == (179, 2, 28, 28)
    np.testing.assert_allclose(batch.pixels[:, 1], 1 - batch.pixels[:, 0])
