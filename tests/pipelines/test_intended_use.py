"""The intended-use check refuses, with a reason code and never an exception, what the model was
not made for: another modality or body part, thick slices, too few slices, a scan too short for a
chest, and values that are not CT Hounsfield units; a plausible chest CT passes."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.bundle import IntendedUse
from pipelines.errors import (
    ImplausibleHounsfieldError,
    IntendedBodyPartError,
    IntendedCoverageError,
    IntendedModalityError,
    IntendedSliceCountError,
    IntendedSliceThicknessError,
    OutOfIntendedUseError,
)
from pipelines.inference.intended_use import check_intended_use, require_intended_use
from pipelines.volume import Provenance, Volume

INTENDED = IntendedUse()  # CT, chest, 0.5-3 mm, >= 60 slices


def chest_hu(shape: tuple[int, int, int]) -> np.ndarray:
    """``[k, j, i]`` HU: air around an elliptic body of soft tissue holding two lungs."""
    _, rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols]
    y = (y - rows / 2 + 0.5) / (rows / 2)
    x = (x - cols / 2 + 0.5) / (cols / 2)
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1
    lungs = ((np.abs(x) - 0.42) / 0.3) ** 2 + (y / 0.45) ** 2 <= 1
    plane = np.where(body, 40.0, -1000.0)
    plane = np.where(body & lungs, -850.0, plane)
    return np.broadcast_to(plane, shape).astype(np.float32)


def make_volume(
    shape: tuple[int, int, int] = (64, 32, 32),
    *,
    step_mm: float = 2.5,
    thickness_mm: float | None = 2.5,
    modality: str = "CT",
    array_hu: np.ndarray | None = None,
) -> Volume:
    affine = np.diag([10.0, 10.0, step_mm, 1.0])
    provenance = Provenance("dicom", modality=modality, slice_thickness_mm=thickness_mm)
    array = chest_hu(shape) if array_hu is None else array_hu
    return Volume(array, affine, provenance)


def codes(volume: Volume, **kwargs: object) -> list[str]:
    return [reason.code for reason in check_intended_use(volume, INTENDED, **kwargs)]  # type: ignore[arg-type]


def test_plausible_chest_ct_is_in_scope():
    assert codes(make_volume(), body_part="CHEST") == []
    assert codes(make_volume(), body_part="") == []  # unknown is not refused
    assert codes(make_volume(), body_part="Thorax") == []


def test_mr_series_is_refused_with_the_modality_code():
    assert codes(make_volume(modality="MR")) == [IntendedModalityError.code]


def test_head_scan_is_refused_with_the_body_part_code():
    assert codes(make_volume(), body_part="HEAD") == [IntendedBodyPartError.code]


@pytest.mark.parametrize("thickness", [5.0, 0.3])
def test_slice_thickness_outside_the_range_is_refused(thickness):
    reasons = check_intended_use(make_volume(thickness_mm=thickness), INTENDED)
    assert [r.code for r in reasons] == ["intended_use.slice_thickness"]
    assert f"{thickness:g} mm" in reasons[0].message


def test_missing_thickness_falls_back_to_the_slice_step():
    assert codes(make_volume(thickness_mm=None, step_mm=5.0, shape=(64, 32, 32))) == [
        IntendedSliceThicknessError.code
    ]


def test_too_few_slices_and_too_short_a_scan_are_both_reported():
    found = codes(make_volume((40, 32, 32)))
    assert found == [IntendedSliceCountError.code, IntendedCoverageError.code]


def test_thin_slices_covering_too_little_are_refused_for_coverage():
    found = codes(make_volume((80, 32, 32), step_mm=1.0, thickness_mm=1.0))
    assert found == ["intended_use.chest_coverage"]


def test_volume_without_air_is_refused_as_implausible_hounsfield():
    """A lost rescale intercept: stored values 0..1400 read as HU, so nothing is air."""
    shifted = chest_hu((64, 32, 32)) + 1024.0
    reasons = check_intended_use(make_volume(array_hu=shifted), INTENDED)
    assert [r.code for r in reasons] == [ImplausibleHounsfieldError.code]
    assert "air" in reasons[0].message


def test_volume_without_soft_tissue_is_refused():
    air_only = np.full((64, 32, 32), -1000.0, dtype=np.float32)
    assert codes(make_volume(array_hu=air_only)) == ["intended_use.hu_implausible"]


def test_values_no_scanner_produces_are_refused():
    wild = chest_hu((64, 32, 32)).copy()
    wild[:, :8, :] = 30000.0
    assert codes(make_volume(array_hu=wild)) == ["intended_use.hu_implausible"]


def test_require_raises_out_of_intended_use_with_every_reason():
    with pytest.raises(OutOfIntendedUseError) as raised:
        require_intended_use(make_volume(modality="MR", thickness_mm=5.0), INTENDED)
    assert raised.value.code == "input.out_of_intended_use"
    assert [r["code"] for r in raised.value.detail["reasons"]] == [
        "intended_use.modality",
        "intended_use.slice_thickness",
    ]
    require_intended_use(make_volume(), INTENDED)  # in scope: no error
