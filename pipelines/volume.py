"""The in-memory CT volume every reader returns and every model consumes.

Whatever the source (a DICOM series, NIfTI, MetaImage), a :class:`Volume` holds HU values as
float32 in array order ``(slices, rows, columns)`` = ``[k, j, i]`` and an affine mapping the
voxel index ``(i, j, k, 1)`` to patient LPS millimetres. Its provenance says where every slice
came from and every default that was applied on the way, without patient identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Provenance:
    """Where a volume came from: UIDs, the source instance of each slice, applied defaults."""

    source_format: str  # "dicom" | "nifti" | "metaimage"
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = "CT"
    #: SOPInstanceUID of the instance that gave slice k (for multi-frame: the same UID repeated).
    sop_instance_uids: tuple[str, ...] = ()
    #: frame number (1-based) within that instance; all 1 for single-frame series.
    frame_numbers: tuple[int, ...] = ()
    transfer_syntaxes: tuple[str, ...] = ()
    slice_thickness_mm: float | None = None
    #: every default or repair applied while reading, as "attribute: what was assumed".
    defaults_applied: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Volume:
    """A CT volume in HU with its placement in patient space."""

    array_hu: np.ndarray  # float32, shape (slices, rows, columns)
    affine_lps: np.ndarray  # float64, 4x4, voxel (i, j, k, 1) -> LPS mm
    provenance: Provenance

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        k, j, i = self.array_hu.shape
        return int(k), int(j), int(i)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along ``(i, j, k)``: column spacing, row spacing, slice step."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    def ijk_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` in (i, j, k) order to LPS millimetres."""
        ijk = np.asarray(ijk, float)
        return ijk @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def lps_to_ijk(self, lps_mm: np.ndarray) -> np.ndarray:
        """Map LPS millimetres ``(..., 3)`` to (fractional) voxel indices in (i, j, k) order."""
        inverse = np.linalg.inv(self.affine_lps)
        lps = np.asarray(lps_mm, float)
        return lps @ inverse[:3, :3].T + inverse[:3, 3]
