"""Is this series something the model was made for? Checked before any inference.

The model card's intended use lives in the bundle (:class:`~pipelines.bundle.IntendedUse`:
modality, body part, slice thickness range, minimum slices). This module adds what the header
cannot promise and the pixels can show: that the scan is long enough to hold a chest and that its
values look like CT in Hounsfield units. Out-of-scope input is not an error of the program: the
check returns reasons (stable codes, one sentence each) and the study is reported
``not_analysable`` with them, never with a score. See ``docs/predict.md``.

The thresholds (:class:`IntendedUseLimits`) are deliberately lenient: they refuse what is clearly
not a chest CT (a head scan, a 60 mm targeted scan, a series whose rescale was lost so no voxel is
air), not unusual but valid chest CTs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.bundle import IntendedUse
from pipelines.dicom.selection import Reason
from pipelines.errors import (
    BasiraError,
    ImplausibleHounsfieldError,
    IntendedBodyPartError,
    IntendedCoverageError,
    IntendedModalityError,
    IntendedSliceCountError,
    IntendedSliceThicknessError,
    OutOfIntendedUseError,
)
from pipelines.volume import Volume

__all__ = [
    "BODY_PART_ALIASES",
    "IntendedUseLimits",
    "check_intended_use",
    "require_intended_use",
    "slice_thickness_mm",
]

#: Body Part Examined values that name (or contain) the body part of the bundle's intended use.
#: Scanners write many spellings; a region that includes the chest counts as the chest.
BODY_PART_ALIASES: dict[str, frozenset[str]] = {
    "CHEST": frozenset(
        {
            "CHEST",
            "THORAX",
            "LUNG",
            "LUNGS",
            "CHESTABDOMEN",
            "CHEST_ABDOMEN",
            "CHESTABDPELVIS",
            "CHEST_ABDOMEN_PELVIS",
            "TORSO",
            "TRUNK",
            "WHOLEBODY",
            "WHOLE_BODY",
            "BODY",
        }
    )
}


@dataclass(frozen=True, kw_only=True)
class IntendedUseLimits:
    """Pixel-level limits of a plausible chest CT, beyond the bundle's header-level ones."""

    #: The scan's length along the slice axis (slices x slice step) must reach this: an adult
    #: chest is 250-350 mm head to foot, so 150 mm refuses targeted scans, not short patients.
    min_coverage_mm: float = 150.0
    #: A voxel at or below this is air (outside the body, or in the lungs).
    air_hu: float = -900.0
    #: At least this share of voxels must be air: every chest CT has lungs and air around it.
    min_air_fraction: float = 0.02
    #: Soft tissue (muscle, blood, fat-free organs) lies in this range.
    soft_tissue_hu: tuple[float, float] = (-200.0, 200.0)
    #: At least this share of voxels must be soft tissue.
    min_soft_tissue_fraction: float = 0.02
    #: The 99.9th percentile may not exceed this (bone and metal clip well below in HU).
    max_plausible_hu: float = 4000.0
    #: Histogram sample: every n-th voxel along ``(k, j, i)`` (a 512x512x250 CT gives ~2 M).
    sample_stride_kji: tuple[int, int, int] = (2, 4, 4)


def check_intended_use(
    volume: Volume,
    intended: IntendedUse,
    *,
    body_part: str = "",
    limits: IntendedUseLimits | None = None,
) -> list[Reason]:
    """Every reason ``volume`` is outside ``intended``; empty when it is in scope.

    Args:
        volume: the series as read (HU, ``[k, j, i]``), with its provenance.
        intended: the bundle's intended use.
        body_part: the series' Body Part Examined; empty (unknown) is not refused.
        limits: coverage and HU plausibility limits (defaults: :class:`IntendedUseLimits`).

    Never raises for out-of-scope input: each failed condition is one :class:`Reason` whose
    code is that of the matching :class:`~pipelines.errors.OutOfIntendedUseError` subclass.
    """
    limits = limits or IntendedUseLimits()
    checks: list[Callable[[], None]] = [
        lambda: _check_modality(volume, intended),
        lambda: _check_body_part(body_part, intended),
        lambda: _check_thickness(volume, intended),
        lambda: _check_slices(volume, intended),
        lambda: _check_coverage(volume, limits),
        lambda: _check_hounsfield(volume, limits),
    ]
    reasons: list[Reason] = []
    for check in checks:
        try:
            check()
        except BasiraError as exc:
            reasons.append(Reason.from_error(exc))
    return reasons


def require_intended_use(
    volume: Volume,
    intended: IntendedUse,
    *,
    body_part: str = "",
    limits: IntendedUseLimits | None = None,
) -> None:
    """Like :func:`check_intended_use`, for callers that refuse with an error (the API).

    Raises:
        OutOfIntendedUseError: with every reason in ``detail["reasons"]``.
    """
    reasons = check_intended_use(volume, intended, body_part=body_part, limits=limits)
    if reasons:
        codes = ", ".join(reason.code for reason in reasons)
        raise OutOfIntendedUseError(
            f"The series is outside the model's intended use ({codes}): {reasons[0].message}",
            reasons=[{"code": r.code, "message": r.message} for r in reasons],
        )


def slice_thickness_mm(volume: Volume) -> float:
    """The recorded Slice Thickness, or the slice step when the header had none."""
    recorded = volume.provenance.slice_thickness_mm
    return float(recorded) if recorded else volume.spacing_mm[2]


def _check_modality(volume: Volume, intended: IntendedUse) -> None:
    modality = volume.provenance.modality
    if modality.upper() != intended.modality.upper():
        raise IntendedModalityError(
            f"The series is {modality or 'of unknown modality'}; the model reads "
            f"{intended.modality} only.",
            modality=modality,
        )


def _check_body_part(body_part: str, intended: IntendedUse) -> None:
    name = body_part.strip().upper().replace(" ", "_")
    wanted = intended.body_part.upper()
    if name and name not in BODY_PART_ALIASES.get(wanted, frozenset({wanted})):
        raise IntendedBodyPartError(
            f"Body Part Examined is {body_part!r}; the model reads the {wanted.lower()} only.",
            body_part=body_part,
        )


def _check_thickness(volume: Volume, intended: IntendedUse) -> None:
    thickness = slice_thickness_mm(volume)
    low, high = intended.slice_thickness_mm
    if not low - 1e-3 <= thickness <= high + 1e-3:
        raise IntendedSliceThicknessError(
            f"Slices are {thickness:.3g} mm thick; the model was validated on {low:g}–{high:g} mm.",
            slice_thickness_mm=thickness,
        )


def _check_slices(volume: Volume, intended: IntendedUse) -> None:
    n_slices = volume.shape[0]
    if n_slices < intended.min_slices:
        raise IntendedSliceCountError(
            f"The series has {n_slices} slices; the model needs at least {intended.min_slices}.",
            n_slices=n_slices,
        )


def _check_coverage(volume: Volume, limits: IntendedUseLimits) -> None:
    coverage_mm = volume.shape[0] * volume.spacing_mm[2]
    if coverage_mm < limits.min_coverage_mm:
        raise IntendedCoverageError(
            f"The scan covers {coverage_mm:.0f} mm along the body axis; a chest needs at least "
            f"{limits.min_coverage_mm:.0f} mm.",
            coverage_mm=coverage_mm,
        )


def _check_hounsfield(volume: Volume, limits: IntendedUseLimits) -> None:
    sk, sj, si = limits.sample_stride_kji
    sample = np.asarray(volume.array_hu[::sk, ::sj, ::si], dtype=np.float32).ravel()
    air = float(np.mean(sample <= limits.air_hu))
    low, high = limits.soft_tissue_hu
    soft = float(np.mean((sample >= low) & (sample <= high)))
    top = float(np.percentile(sample, 99.9))
    detail = {"air_fraction": air, "soft_tissue_fraction": soft, "p99_9_hu": top}
    if air < limits.min_air_fraction:
        raise ImplausibleHounsfieldError(
            f"Only {air:.1%} of voxels are air (<= {limits.air_hu:g} HU); a chest CT has lungs "
            "and air around the body. The rescale to Hounsfield units may be missing.",
            **detail,
        )
    if soft < limits.min_soft_tissue_fraction:
        raise ImplausibleHounsfieldError(
            f"Only {soft:.1%} of voxels are soft tissue ({low:g} to {high:g} HU); the values "
            "do not look like CT in Hounsfield units.",
            **detail,
        )
    if top > limits.max_plausible_hu:
        raise ImplausibleHounsfieldError(
            f"The 99.9th percentile is {top:.0f} HU, above {limits.max_plausible_hu:g} HU that "
            "CT values reach; the rescale to Hounsfield units may be wrong.",
            **detail,
        )
