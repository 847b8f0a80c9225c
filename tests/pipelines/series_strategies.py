"""Hypothesis strategies for CT series the writers have never seen: every patient position
(head- or feet-first; supine, prone, decubitus left or right), oblique stacks, gantry tilt,
1 to 600 slices, non-square pixels, either slice order, implicit or explicit VR. Written by
:func:`tests.pipelines.foreign_series.write_foreign_series`, not by the project's writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from tests.pipelines.foreign_series import ForeignGeometry, write_foreign_series

__all__ = ["PATIENT_POSITIONS", "SeriesSpec", "series_specs", "write_spec"]

#: Row and column directions (LPS) of an axial image for each patient position, as scanners
#: write them.
PATIENT_POSITIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "HFS": ((1, 0, 0), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, -1, 0)),
    "HFDL": ((0, -1, 0), (1, 0, 0)),
    "HFDR": ((0, 1, 0), (-1, 0, 0)),
    "FFDL": ((0, 1, 0), (1, 0, 0)),
    "FFDR": ((0, -1, 0), (-1, 0, 0)),
}


@dataclass(frozen=True)
class SeriesSpec:
    """One generated series: where its slices are and how its files are encoded."""

    patient_position: str
    n_slices: int
    rows: int
    columns: int
    #: DICOM order: (between rows, between columns).
    pixel_spacing_mm: tuple[float, float]
    #: Signed distance between consecutive slices along the slice normal.
    step_mm: float
    #: Rotation of the whole stack (degrees): in-plane, then about the row and column axes.
    rotation_deg: tuple[float, float, float]
    #: Shear of the stack along the column direction (gantry tilt), degrees.
    tilt_deg: float
    transfer_syntax: str

    def geometry(self) -> ForeignGeometry:
        row, column = (np.asarray(v, float) for v in PATIENT_POSITIONS[self.patient_position])
        rotation = _rotation(*self.rotation_deg)
        row, column = rotation @ row, rotation @ column
        normal = np.cross(row, column)
        shear = math.tan(math.radians(self.tilt_deg)) * abs(self.step_mm)
        origin = np.array([-40.0, -30.0, 120.0])
        positions = [
            tuple(float(v) for v in origin + k * (self.step_mm * normal + shear * column))
            for k in range(self.n_slices)
        ]
        return ForeignGeometry(
            row_direction=tuple(float(v) for v in row),  # type: ignore[arg-type]
            column_direction=tuple(float(v) for v in column),  # type: ignore[arg-type]
            pixel_spacing_mm=self.pixel_spacing_mm,
            positions_lps_mm=positions,
        )


def _rotation(in_plane_deg: float, about_row_deg: float, about_column_deg: float) -> np.ndarray:
    a, b, c = (math.radians(v) for v in (in_plane_deg, about_row_deg, about_column_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return ry @ rx @ rz


def _angle(limit_deg: float) -> st.SearchStrategy[float]:
    """0 half of the time (axial, untilted stacks are the common case), else up to the limit."""
    return st.one_of(st.just(0.0), st.floats(-limit_deg, limit_deg, allow_nan=False))


@st.composite
def series_specs(
    draw: st.DrawFn,
    *,
    slices: tuple[int, int] = (1, 600),
    matrix: tuple[int, int] = (2, 12),
    step_mm: tuple[float, float] = (0.5, 5.0),
    max_oblique_deg: float = 40.0,
    max_tilt_deg: float = 25.0,
) -> SeriesSpec:
    """A series spec; ``slices``, ``matrix`` (rows and columns) and ``step_mm`` are ranges."""
    step = draw(st.floats(*step_mm, allow_nan=False))
    return SeriesSpec(
        patient_position=draw(st.sampled_from(sorted(PATIENT_POSITIONS))),
        n_slices=draw(st.integers(*slices)),
        rows=draw(st.integers(*matrix)),
        columns=draw(st.integers(*matrix)),
        pixel_spacing_mm=(
            draw(st.floats(0.3, 2.5, allow_nan=False)),
            draw(st.floats(0.3, 2.5, allow_nan=False)),
        ),
        step_mm=round(step if draw(st.booleans()) else -step, 4),
        rotation_deg=(
            draw(st.floats(-180.0, 180.0, allow_nan=False)),
            draw(_angle(max_oblique_deg)),
            draw(_angle(max_oblique_deg)),
        ),
        tilt_deg=draw(_angle(max_tilt_deg)),
        transfer_syntax=draw(st.sampled_from(["implicit", "explicit"])),
    )


def write_spec(spec: SeriesSpec, out: Path, volume_hu: np.ndarray, *, uid_seed: str) -> list[Path]:
    """Write ``volume_hu`` (``[k, j, i]`` of the spec's shape) as the spec's series."""
    return write_foreign_series(
        out,
        volume_hu,
        spec.geometry(),
        uid_seed=uid_seed,
        transfer_syntax=spec.transfer_syntax,
        patient_position=spec.patient_position,
        slice_thickness_mm=abs(spec.step_mm),
    )
