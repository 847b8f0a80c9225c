"""Patient splits (no leakage, stratified, deterministic) and lesion/mask conversions."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.datasets.lesions import lesions_from_mask, rasterise_spheres
from pipelines.datasets.manifest import Case, ImageFormat, Lesion, Manifest, Split
from pipelines.datasets.splits import SplitConfig, assign_splits
from tests.pipelines.datasets.layouts import affine_lps

LESION = Lesion(id=1, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=5.0)


def _manifest(n_patients: int, *, lesion_every: int = 3, scans: int = 2) -> Manifest:
    cases = [
        Case(
            case_id=f"P{p:04d}_{s}",
            patient_id=f"P{p:04d}",
            image=f"P{p:04d}_{s}.nii.gz",
            image_format=ImageFormat.NIFTI,
            lesions=[LESION] if p % lesion_every == 0 and s == 0 else [],
            source="test",
        )
        for p in range(n_patients)
        for s in range(scans)
    ]
    return Manifest(name="t", source="test", cases=cases)


def _patient_splits(manifest: Manifest) -> dict[str, set[Split | None]]:
    found: dict[str, set[Split | None]] = {}
    for case in manifest.cases:
        found.setdefault(case.patient_id, set()).add(case.split)
    return found


def test_all_cases_of_a_patient_share_a_split() -> None:
    split = assign_splits(_manifest(200), SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.2))
    assert all(len(splits) == 1 for splits in _patient_splits(split).values())
    assert all(case.split is not None for case in split.cases)


def test_each_stratum_gets_the_requested_fractions() -> None:
    config = SplitConfig(seed=5, val_fraction=0.2, test_fraction=0.1)
    split = assign_splits(_manifest(300), config)
    per_patient = {
        c.patient_id: (c.split, c.has_lesion) for c in split.cases if c.case_id[-1] == "0"
    }
    for stratum in (True, False):
        members = [s for s, lesion in per_patient.values() if lesion is stratum]
        n = len(members)
        assert members.count(Split.TEST) == round(n * 0.1)
        assert members.count(Split.VAL) == round(n * 0.2)


def test_same_seed_same_split_other_seed_other_split() -> None:
    config = SplitConfig(seed=11)
    first = assign_splits(_manifest(100), config)
    again = assign_splits(_manifest(100), config)
    other = assign_splits(_manifest(100), SplitConfig(seed=12))
    assert [c.split for c in first.cases] == [c.split for c in again.cases]
    assert [c.split for c in first.cases] != [c.split for c in other.cases]


def test_split_ignores_case_order() -> None:
    manifest = _manifest(60)
    shuffled = manifest.model_copy(update={"cases": list(reversed(manifest.cases))})
    config = SplitConfig(seed=2)
    a = {c.case_id: c.split for c in assign_splits(manifest, config).cases}
    b = {c.case_id: c.split for c in assign_splits(shuffled, config).cases}
    assert a == b


def test_adding_patients_moves_few_existing_ones() -> None:
    config = SplitConfig(seed=7, val_fraction=0.2, test_fraction=0.2)
    before = _patient_splits(assign_splits(_manifest(200), config))
    after = _patient_splits(assign_splits(_manifest(210), config))
    moved = [p for p in before if before[p] != after[p]]
    assert len(moved) <= 10 * 2 * 2  # at most one per boundary and stratum per added patient
    assert len(moved) < 0.1 * len(before)


def test_fractions_leaving_no_training_are_refused() -> None:
    with pytest.raises(ValidationError):
        SplitConfig(val_fraction=0.5, test_fraction=0.5)


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
    assert 0 < mask.sum() < 4 / 3 * np.pi * 27
    assert mask[5, 5, 0] == 1


def test_mask_components_below_min_voxels_are_dropped() -> None:
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1, 1, 1] = 1
    mask[4:7, 4:7, 4:7] = 1
    lesions = lesions_from_mask(mask, np.eye(4), min_voxels=2)
    assert len(lesions) == 1 and lesions[0].id == 1
    assert lesions[0].volume_ml == pytest.approx(27 / 1000)
