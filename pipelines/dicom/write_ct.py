"""Write a HU volume as a real DICOM CT Image Storage series.

Used by the synthetic generator, the test fixtures and the benchmarks, so that every series Basira
reads in its own tests went through the same, standard-conforming writer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from pipelines.dicom.geometry import affine_to_dicom

#: Transfer syntaxes whose encoders we have, with the plugin that encodes each fastest here.
ENCODERS: dict[str, str] = {
    "1.2.840.10008.1.2.5": "gdcm",  # RLE Lossless (pydicom's native encoder is far slower)
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 Lossless
}


@dataclass(frozen=True)
class CTSeriesInfo:
    """Patient, study and series attributes of a written series.

    UIDs left empty are derived deterministically from ``uid_seed`` so a seeded generator writes
    byte-identical studies.
    """

    uid_seed: str
    patient_id: str = "ANON"
    patient_name: str = "Anonymous"
    patient_sex: str = "O"
    patient_age: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    study_date: dt.date = dt.date(2026, 1, 1)
    accession_number: str = ""
    study_description: str = "CT CHEST"
    series_description: str = "Axial 1.0 mm"
    series_number: int = 1
    body_part_examined: str = "CHEST"
    patient_position: str = "HFS"
    slice_thickness_mm: float | None = None
    kvp: float = 120.0
    convolution_kernel: str = "STANDARD"
    manufacturer: str = "Basira"
    model_name: str = "synthetic"
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL")
    rescale_intercept: float = -1024.0
    rescale_slope: float = 1.0
    extra: dict[str, object] = field(default_factory=dict)

    def uid(self, which: str) -> str:
        """The configured UID called ``which``, or one derived from ``uid_seed``."""
        given = getattr(self, which, "")
        return str(given) if given else str(generate_uid(entropy_srcs=[self.uid_seed, which]))


def write_ct_series(
    volume_hu: np.ndarray,
    affine_lps: np.ndarray,
    out_dir: Path,
    info: CTSeriesInfo,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write ``volume_hu`` (shape ``(slices, rows, columns)``) as one file per slice.

    ``affine_lps`` maps voxel index ``(column i, row j, slice k, 1)`` to patient LPS millimetres;
    it fixes ImageOrientationPatient, PixelSpacing and each slice's ImagePositionPatient. Values
    are stored as unsigned 16-bit with the info's rescale, clipped to the representable range.
    Returns the written paths in slice order (``k = 0`` first).
    """
    if volume_hu.ndim != 3:
        raise ValueError(f"volume_hu must be 3-D (slices, rows, columns), got {volume_hu.shape}")
    if transfer_syntax != ExplicitVRLittleEndian and transfer_syntax not in ENCODERS:
        raise ValueError(f"no encoder configured for transfer syntax {transfer_syntax}")
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry = affine_to_dicom(affine_lps, volume_hu.shape[0])
    stored = np.rint((volume_hu - info.rescale_intercept) / info.rescale_slope)
    stored = np.clip(stored, 0, 65535).astype(np.uint16)
    base = _series_dataset(info, geometry.pixel_spacing_mm, geometry.orientation, volume_hu.shape)
    paths = []
    for k in range(volume_hu.shape[0]):
        ds = _slice_dataset(base, info, k, geometry.positions_lps_mm[k], stored[k])
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(UID(transfer_syntax), encoding_plugin=ENCODERS[transfer_syntax])
        path = out_dir / f"CT{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _series_dataset(
    info: CTSeriesInfo,
    pixel_spacing_mm: tuple[float, float],
    orientation: tuple[float, ...],
    shape: tuple[int, ...],
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = list(info.image_type)
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientSex = info.patient_sex
    if info.patient_age:
        ds.PatientAge = info.patient_age
    ds.StudyInstanceUID = info.uid("study_instance_uid")
    ds.SeriesInstanceUID = info.uid("series_instance_uid")
    ds.FrameOfReferenceUID = info.uid("frame_of_reference_uid")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.AccessionNumber = info.accession_number
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = info.series_description
    ds.SeriesNumber = info.series_number
    ds.BodyPartExamined = info.body_part_examined
    ds.PatientPosition = info.patient_position
    ds.Manufacturer = info.manufacturer
    ds.ManufacturerModelName = info.model_name
    ds.KVP = info.kvp
    ds.ConvolutionKernel = info.convolution_kernel
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
    ds.PixelSpacing = [round(float(v), 6) for v in pixel_spacing_mm]
    if info.slice_thickness_mm is not None:
        ds.SliceThickness = round(info.slice_thickness_mm, 4)
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = info.rescale_intercept
    ds.RescaleSlope = info.rescale_slope
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    for keyword, value in info.extra.items():
        setattr(ds, keyword, value)
    return ds


def _slice_dataset(
    base: Dataset, info: CTSeriesInfo, k: int, position: np.ndarray, pixels: np.ndarray
) -> Dataset:
    ds = Dataset()
    ds.update(base)
    sop_uid = generate_uid(entropy_srcs=[info.uid_seed, "sop", str(k)])
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [round(float(v), 6) for v in position]
    ds.SliceLocation = round(float(position[2]), 6)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
