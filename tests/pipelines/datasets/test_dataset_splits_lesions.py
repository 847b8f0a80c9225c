"""Lesion/mask conversions (the patient split tests live in test_splits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets.lesions import lesions_from_mask, rasterise_spheres
from pipelines.datasets.manifest import Lesion
from tests.pipelines.datasets.layouts import affine_lps


def test_rasterised_sphere_gives_back_its_lesion() -> None:
    affine = affine_lps(spacing_mm=(0.5, 0.5, 0.5), origin_lps_mm=(-10.0, -10.0, -10.0))
    lesion = Lesion(id=1, center_lps_mm=(1.0, -2.0, 0.5), diameter_mm=8.0)
    mask = rasterise_spheres([lesion], (40, 40, 40), affine)
    assert mask.dtype == np.uint8
    (found,) = lesions_from_mask(mask, affine)
    np.testing.assert_allclose(found.center_lps_mm, lesion.center_lps_mm, atol=0.05)
    assert found.diameter_mm == pytest.approx(8.0, rel=0.05)


def test_sphere_outside_the_grid_is_ignored_and_edge_one_clipped() -> None:
    affine = affine_lps(spacing_mm=(1.0, 1.0, 1.0), origin_lps_mm=(0.0, 0.0, 0.0))
    outside = Lesion(id=1, center_lps_mm=(500.0, 0.0, 0.0), diameter_mm=10.0)
    edge = Lesion(id=2, center_lps_mm=(0.0, 5.0, 5.0), diameter_mm=6.0)
    mask = rasterise_spheres([outside, edge], (10, 10, 10), affine)
    assert 0 < np.count_nonzero(mask) < 4 / 3 * np.pi * 27
    assert mask[5, 5, 0] == 2  # the second lesion keeps its instance number


def test_mask_components_below_min_voxels_are_dropped() -> None:
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1, 1, 1] = 1
    mask[4:7, 4:7, 4:7] = 1
    lesions = lesions_from_mask(mask, np.eye(4), min_voxels=2)
    assert len(lesions) == 1 and lesions[0].id == 1
    assert lesions[0].volume_ml == pytest.approx(27 / 1000)
