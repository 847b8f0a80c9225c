"""Slice-stack geometry: from DICOM position/orientation to a voxel-to-LPS affine, and back.

Conventions (used everywhere in Basira):

* A volume array has shape ``(slices, rows, columns)``, indexed ``[k, j, i]``.
* The affine maps the voxel index ``(i, j, k, 1)`` (column, row, slice) to patient LPS millimetres:
  column 0 is the row direction times the column spacing, column 1 the column direction times the
  row spacing, column 2 the step between consecutive slices, column 3 the first slice's position.
* Slices are ordered by their position along the slice normal (row x column direction cosines),
  never by file name or InstanceNumber.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.errors import (
    DuplicateSlicesError,
    GantryTiltError,
    InconsistentGeometryError,
    MissingSlicesError,
    NonUniformSpacingError,
    TooFewSlicesError,
)


@dataclass(frozen=True)
class DicomGeometry:
    """The DICOM attributes that place every slice of a volume."""

    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosines then column cosines
    pixel_spacing_mm: tuple[float, float]  # PixelSpacing: (between rows, between columns)
    positions_lps_mm: np.ndarray  # (slices, 3) ImagePositionPatient per slice, k order


@dataclass(frozen=True)
class SlicePlacement:
    """The geometry attributes of one single-frame slice, as read from its header."""

    orientation: tuple[float, ...]
    position_lps_mm: tuple[float, float, float]
    pixel_spacing_mm: tuple[float, float]
    rows: int
    columns: int


@dataclass(frozen=True, kw_only=True)
class GeometryTolerances:
    """How much real scanners may deviate before a stack is refused.

    ``spacing_rtol`` bounds a slice step's deviation from the median step (relative), with
    ``spacing_atol_mm`` as a floor for very thin slices; a step at least ``gap_factor`` times the
    median means slices are missing. ``max_tilt_deg`` is the largest shear of the stack away
    from the slice normal that is treated as rounding; beyond it the stack is a gantry-tilted
    acquisition, refused unless ``allow_gantry_tilt`` (the affine then carries the shear).
    """

    orientation_atol: float = 1e-3
    spacing_rtol: float = 0.05
    spacing_atol_mm: float = 0.02
    gap_factor: float = 1.5
    max_tilt_deg: float = 0.5
    allow_gantry_tilt: bool = False
    min_slices: int = 2


@dataclass(frozen=True)
class StackedGeometry:
    """The result of ordering and checking a slice stack."""

    order: list[int]  # indices into the given placements, in k order
    affine_lps: np.ndarray  # 4x4
    slice_step_mm: float  # distance between consecutive slices along the normal
    gantry_tilt_deg: float


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: row direction x column direction."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def check_orientation(orientation: Sequence[float], *, atol: float = 1e-3) -> None:
    """Refuse an ImageOrientationPatient whose cosines are not two orthogonal unit vectors."""
    if len(orientation) != 6:
        raise InconsistentGeometryError(
            "ImageOrientationPatient must hold 6 values.", found=list(orientation)
        )
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    if (
        abs(np.linalg.norm(row) - 1) > atol
        or abs(np.linalg.norm(col) - 1) > atol
        or abs(float(row @ col)) > atol
    ):
        raise InconsistentGeometryError(
            "ImageOrientationPatient is not two orthogonal unit vectors.",
            found=[float(v) for v in orientation],
        )


def affine_from_dicom(
    orientation: Sequence[float],
    pixel_spacing_mm: Sequence[float],
    first_position_lps_mm: Sequence[float] | np.ndarray,
    slice_step_lps_mm: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The 4x4 voxel-(i, j, k)-to-LPS affine of a stack (see the module conventions)."""
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(orientation[:3], float) * float(pixel_spacing_mm[1])
    affine[:3, 1] = np.asarray(orientation[3:6], float) * float(pixel_spacing_mm[0])
    affine[:3, 2] = np.asarray(slice_step_lps_mm, float)
    affine[:3, 3] = np.asarray(first_position_lps_mm, float)
    return affine


def affine_to_dicom(affine_lps: np.ndarray, n_slices: int) -> DicomGeometry:
    """The DICOM orientation, pixel spacing and per-slice positions that ``affine_lps`` encodes."""
    affine = np.asarray(affine_lps, float)
    col_spacing = float(np.linalg.norm(affine[:3, 0]))
    row_spacing = float(np.linalg.norm(affine[:3, 1]))
    orientation = tuple(affine[:3, 0] / col_spacing) + tuple(affine[:3, 1] / row_spacing)
    k = np.arange(n_slices, dtype=float)[:, None]
    positions = affine[:3, 3][None, :] + k * affine[:3, 2][None, :]
    return DicomGeometry(
        tuple(float(v) for v in orientation), (row_spacing, col_spacing), positions
    )


def stack_slices(
    placements: Sequence[SlicePlacement], tolerances: GeometryTolerances | None = None
) -> StackedGeometry:
    """Order slices along their normal and prove they form one regular volume.

    Raises:
        TooFewSlicesError: fewer than ``tolerances.min_slices`` slices.
        InconsistentGeometryError: orientation, matrix or pixel spacing differ between slices.
        DuplicateSlicesError: two slices at the same position.
        MissingSlicesError: a gap of at least ``gap_factor`` median steps.
        NonUniformSpacingError: steps vary beyond the spacing tolerance.
        GantryTiltError: the stack is sheared and ``allow_gantry_tilt`` is false.
    """
    tol = tolerances or GeometryTolerances()
    if len(placements) < tol.min_slices:
        raise TooFewSlicesError(
            f"The series has {len(placements)} slice(s); at least {tol.min_slices} are needed.",
            n_slices=len(placements),
            minimum=tol.min_slices,
        )
    _check_consistent(placements, tol)
    normal = slice_normal(placements[0].orientation)
    positions = np.array([p.position_lps_mm for p in placements], float)
    distances = positions @ normal
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    steps = np.diff(distances[order])
    median_step = _check_steps(steps, tol)
    span = positions[order[-1]] - positions[order[0]]
    along = float(span @ normal)
    across = float(np.linalg.norm(span - along * normal))
    tilt_deg = math.degrees(math.atan2(across, along))
    if tilt_deg > tol.max_tilt_deg and not tol.allow_gantry_tilt:
        raise GantryTiltError(
            f"The slices are sheared by {tilt_deg:.1f} degrees (gantry tilt); "
            "resample the series on the scanner or allow tilted stacks explicitly.",
            tilt_deg=round(tilt_deg, 2),
        )
    step_vector = span / (len(order) - 1) if tilt_deg > tol.max_tilt_deg else normal * median_step
    first = placements[order[0]]
    affine = affine_from_dicom(
        first.orientation, first.pixel_spacing_mm, positions[order[0]], step_vector
    )
    return StackedGeometry(order, affine, float(median_step), float(tilt_deg))


def _check_consistent(placements: Sequence[SlicePlacement], tol: GeometryTolerances) -> None:
    first = placements[0]
    check_orientation(first.orientation, atol=tol.orientation_atol)
    orientations = np.array([p.orientation for p in placements], float)
    off = np.flatnonzero(
        np.any(np.abs(orientations - orientations[0]) > tol.orientation_atol, axis=1)
    )
    if off.size:
        raise InconsistentGeometryError(
            "Slices of the series have different orientations.",
            expected=list(first.orientation),
            found=list(placements[int(off[0])].orientation),
        )
    matrices = {(p.rows, p.columns) for p in placements}
    if len(matrices) > 1:
        raise InconsistentGeometryError(
            "Slices of the series have different matrix sizes.",
            expected=[first.rows, first.columns],
            found=list(sorted(matrices - {(first.rows, first.columns)})[0]),
        )
    spacings = np.array([p.pixel_spacing_mm for p in placements], float)
    reference = spacings[0]
    off = np.flatnonzero(np.any(np.abs(spacings - reference) > 1e-4 + 1e-3 * reference, axis=1))
    if off.size:
        raise InconsistentGeometryError(
            "Slices of the series have different pixel spacings.",
            expected=list(first.pixel_spacing_mm),
            found=list(placements[int(off[0])].pixel_spacing_mm),
        )


def _check_steps(steps: np.ndarray, tol: GeometryTolerances) -> float:
    """Return the median slice step after refusing duplicates, gaps and irregular steps."""
    duplicate = np.flatnonzero(steps < tol.spacing_atol_mm)
    if duplicate.size:
        raise DuplicateSlicesError(
            "Two or more slices share the same position.", n_duplicates=int(duplicate.size)
        )
    median = float(np.median(steps))
    ratios = steps / median
    gaps = np.flatnonzero(ratios >= tol.gap_factor)
    if gaps.size:
        missing = int(np.sum(np.rint(ratios[gaps]) - 1))
        raise MissingSlicesError(
            f"About {missing} slice(s) are missing: the slice step jumps from {median:.3g} mm to "
            f"{float(steps[gaps].max()):.3g} mm. Re-send the complete series.",
            n_missing=missing,
            step_mm=round(median, 4),
        )
    allowed = max(tol.spacing_atol_mm, tol.spacing_rtol * median)
    worst = float(np.max(np.abs(steps - median)))
    if worst > allowed:
        raise NonUniformSpacingError(
            f"Slice spacing varies by up to {worst:.3g} mm around {median:.3g} mm "
            f"(tolerance {allowed:.3g} mm).",
            median_step_mm=round(median, 4),
            max_deviation_mm=round(worst, 4),
        )
    return median
