"""CT series written with pydicom alone, the way other vendors' generators write them, not with
the project's own writer (``pipelines.dicom.write_ct``): implicit or explicit VR little endian,
signed pixels without rescale offset, any orientation and patient position, and slice positions
given one by one (so a gantry tilt or an oblique stack is just another list of positions).

Used where the point is that Basira's outputs survive input it did not produce itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["ForeignGeometry", "write_foreign_series"]

TRANSFER_SYNTAXES = {"implicit": ImplicitVRLittleEndian, "explicit": ExplicitVRLittleEndian}


@dataclass(frozen=True)
class ForeignGeometry:
    """Where the slices are: ``row_direction`` (image column index i grows along it),
    ``column_direction`` (row index j), ``pixel_spacing_mm`` as DICOM orders it ``(between
    rows, between columns)``, and one ImagePositionPatient per slice."""

    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    pixel_spacing_mm: tuple[float, float]
    positions_lps_mm: Sequence[tuple[float, float, float]]


def write_foreign_series(
    out: Path,
    volume_hu: np.ndarray,
    geometry: ForeignGeometry,
    *,
    uid_seed: str,
    transfer_syntax: str = "implicit",
    patient_position: str = "HFS",
    slice_thickness_mm: float = 2.5,
) -> list[Path]:
    """Write ``volume_hu`` ``[k, j, i]`` (one file per slice ``k``, at ``positions_lps_mm[k]``).

    Files are named by a hash of their SOP Instance UID, so their order says nothing about the
    slice order. Returns the paths in slice order.
    """
    out.mkdir(parents=True, exist_ok=True)
    syntax = TRANSFER_SYNTAXES[transfer_syntax]
    base = _series(volume_hu.shape, geometry, uid_seed, patient_position, slice_thickness_mm)
    pixels = np.clip(np.rint(volume_hu), -32768, 32767).astype(np.int16)
    paths = []
    for k, position in enumerate(geometry.positions_lps_mm):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "instance", str(k)])
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}".rstrip("0").rstrip(".") for v in position]
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1003"
        meta.ImplementationVersionName = "OTHERGEN_1"
        ds.file_meta = meta
        path = out / f"IM{hashlib.sha256(ds.SOPInstanceUID.encode()).hexdigest()[:12]}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _series(
    shape: tuple[int, ...],
    geometry: ForeignGeometry,
    uid_seed: str,
    patient_position: str,
    slice_thickness_mm: float,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = "Other^Generator"
    ds.PatientID = "OG-1"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[uid_seed, "frame"])
    ds.StudyDate = "20260301"
    ds.StudyTime = "101500"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = patient_position
    ds.Manufacturer = "Other Generator"
    ds.ImageOrientationPatient = [
        f"{v:.8f}".rstrip("0").rstrip(".") or "0"
        for v in (*geometry.row_direction, *geometry.column_direction)
    ]
    ds.PixelSpacing = [f"{v:.6f}".rstrip("0").rstrip(".") for v in geometry.pixel_spacing_mm]
    ds.SliceThickness = f"{slice_thickness_mm:.4f}".rstrip("0").rstrip(".")
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    return ds
