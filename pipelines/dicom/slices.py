"""One slice of a series without decoding the others: the review viewer's path to a first image.

:func:`read_series_layout` reads only headers and applies the checks and the slice order of
:func:`~pipelines.dicom.read.read_series_volume`; :func:`read_slice_hu` then decodes the one file
that holds slice ``k``, so the viewer shows a first slice long before a whole-volume decode
would end, and slice ``k`` read here equals ``read_series_volume(...).array_hu[k]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.dicom.geometry import GeometryTolerances
from pipelines.dicom.header import InstanceHeader
from pipelines.dicom.hu import frame_rescale, rescale_into
from pipelines.dicom.index import RejectedFile, build_index, header_or_refusal
from pipelines.dicom.pixels import read_stored_frames
from pipelines.dicom.selection import SelectionRules, check_content, series_placements
from pipelines.errors import (
    MissingAttributeError,
    MixedSeriesError,
    NoDicomFoundError,
    SliceOutOfRangeError,
)

__all__ = ["SeriesLayout", "read_series_layout", "read_slice_hu"]


@dataclass(frozen=True)
class SeriesLayout:
    """A checked series from its headers: ``frames[k]`` is the (instance, frame) of slice ``k``;
    ``shape`` is ``(k, j, i)``; ``affine_lps`` maps ``(i, j, k, 1)`` to LPS mm."""

    frames: tuple[tuple[InstanceHeader, int], ...]
    shape: tuple[int, int, int]
    affine_lps: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along ``(i, j, k)``: column spacing, row spacing, slice step."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(inst.sop_instance_uid for inst, _ in self.frames)


def read_series_layout(
    paths: Sequence[Path], *, tolerances: GeometryTolerances | None = None
) -> SeriesLayout:
    """Order and check the files of one CT series from their headers, reading no pixels.

    Raises:
        NoDicomFoundError: no file is a readable DICOM image.
        MixedSeriesError: the files hold more than one series.
        NotCTError, ColourImageError, NotHounsfieldError, NotAnImageError: not a CT HU image.
        MissingAttributeError: a slice lacks its position, orientation or spacing.
        InconsistentGeometryError, DuplicateSlicesError, MissingSlicesError,
        NonUniformSpacingError, GantryTiltError: the slices do not form one regular volume.
    """
    tolerances = tolerances or GeometryTolerances()
    headers: list[InstanceHeader] = []
    rejected: list[RejectedFile] = []
    for path in paths:
        header = header_or_refusal(path, str(path))
        if isinstance(header, RejectedFile):
            rejected.append(header)
        else:
            headers.append(header)
    index = build_index(headers, rejected, SelectionRules(geometry=tolerances))
    series = [s for study in index.studies for s in study.series]
    if not series:
        raise NoDicomFoundError("No readable DICOM image was found.", n_files=len(paths))
    if len(series) > 1:
        raise MixedSeriesError(
            f"The input holds {len(series)} series; give the files of one series.",
            series_instance_uids=[s.series_instance_uid for s in series],
        )
    instances = series[0].instances
    check_content(instances[0])
    frames = [(inst, f) for inst in instances for f in range(inst.n_frames)]
    if len(series_placements(instances)) != len(frames):
        raise MissingAttributeError(
            "Some slices lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing."
        )
    stacked = series[0].stacked_geometry(tolerances)
    ordered = tuple(frames[i] for i in stacked.order)
    shape = (len(ordered), instances[0].rows, instances[0].columns)
    return SeriesLayout(ordered, shape, stacked.affine_lps.copy())


def read_slice_hu(layout: SeriesLayout, k: int) -> np.ndarray:
    """Slice ``k`` as float32 HU ``[j, i]``, decoded from its own file alone (the whole file for
    a multi-frame instance).

    Raises:
        SliceOutOfRangeError: ``k`` is not a slice of the series.
        UnsupportedTransferSyntaxError, UndecodablePixelDataError: the pixels cannot be decoded.
    """
    if not 0 <= k < layout.shape[0]:
        raise SliceOutOfRangeError(
            "No such slice in this series.", k=k, n_slices=int(layout.shape[0])
        )
    inst, frame = layout.frames[k]
    stored = read_stored_frames(inst)
    out = np.empty(layout.shape[1:], np.float32)
    slope, intercept, _ = frame_rescale(inst, frame)
    rescale_into(stored[frame], slope, intercept, out)
    return out
