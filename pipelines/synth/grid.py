"""The voxel grid of a synthetic study: axis-aligned, head-first or feet-first, in LPS mm.

The generator renders in patient coordinates: each array axis maps to one LPS axis (possibly
reversed), so the LPS coordinate of column ``i``, row ``j`` and slice ``k`` are three 1-D arrays
and every structure is a broadcast expression over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.dicom.geometry import affine_from_dicom
from pipelines.synth.protocol import StudyProtocol

#: Real scanners write these ImageOrientationPatient values for supine head- and feet-first.
ORIENTATION_BY_POSITION: dict[str, tuple[float, ...]] = {
    "HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
}


@dataclass(frozen=True)
class Grid:
    """Voxel centres of a volume of shape ``(slices, rows, columns)``."""

    affine_lps: np.ndarray  # 4x4, voxel (i, j, k, 1) -> LPS mm; diagonal up to signs
    shape: tuple[int, int, int]  # (slices, rows, columns)

    def axis_mm(self, axis: int) -> np.ndarray:
        """LPS coordinate along ``axis`` (0 = x of columns, 1 = y of rows, 2 = z of slices)."""
        n = self.shape[2 - axis]
        return self.affine_lps[axis, 3] + np.arange(n) * self.affine_lps[axis, axis]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along x, y, z."""
        return tuple(abs(float(self.affine_lps[a, a])) for a in range(3))  # type: ignore[return-value]

    def box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices ``[k, j, i]`` covering the LPS box ``[low_mm, high_mm]`` (None: outside)."""
        bounds = []
        for axis in range(3):
            n = self.shape[2 - axis]
            step, origin = self.affine_lps[axis, axis], self.affine_lps[axis, 3]
            ends = sorted(((low_mm[axis] - origin) / step, (high_mm[axis] - origin) / step))
            first, last = max(int(np.ceil(ends[0])), 0), min(int(np.floor(ends[1])), n - 1)
            if first > last:
                return None
            bounds.append(slice(first, last + 1))
        return bounds[2], bounds[1], bounds[0]

    def box_coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """Broadcastable LPS coordinates ``(x, y, z)`` of a box, shaped to index ``[k, j, i]``."""
        x = self.axis_mm(0)[box[2]].astype(np.float32)[None, None, :]
        y = self.axis_mm(1)[box[1]].astype(np.float32)[None, :, None]
        z = self.axis_mm(2)[box[0]].astype(np.float32)[:, None, None]
        return x, y, z

    def to_index(self, lps_mm: np.ndarray) -> np.ndarray:
        """Nearest voxel index ``(i, j, k)`` of an LPS point."""
        inverse = np.linalg.inv(self.affine_lps)
        return np.rint(inverse[:3, :3] @ np.asarray(lps_mm, float) + inverse[:3, 3]).astype(int)


def make_grid(protocol: StudyProtocol, z_top_mm: float) -> Grid:
    """The grid of ``protocol``: FOV centred on the isocentre, first slice as the scanner writes.

    Head-first scans run from the head down (slice step -z); feet-first scans start at the feet
    (step +z) and, seen from the feet, have the row direction along -x.
    """
    n, size = protocol.n_slices, protocol.matrix_size
    spacing, thickness = protocol.pixel_spacing_mm, protocol.slice_thickness_mm
    half = (size - 1) / 2 * spacing
    orientation = ORIENTATION_BY_POSITION[protocol.patient_position]
    if protocol.patient_position == "HFS":
        first, step = (-half, -half, z_top_mm), (0.0, 0.0, -thickness)
    else:
        first, step = (half, -half, z_top_mm - (n - 1) * thickness), (0.0, 0.0, thickness)
    affine = affine_from_dicom(orientation, (spacing, spacing), first, step)
    return Grid(affine, (n, size, size))
