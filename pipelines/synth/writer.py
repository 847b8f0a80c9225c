"""Write a generated study: DICOM CT series, NIfTI label, DICOM SEG, lesion JSON, manifest case.

Every file is byte-identical for the same study: UIDs derive from the study's seed, dates are
fixed, and the gzip stream of the NIfTI carries no timestamp.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

from pipelines.datasets.manifest import Case, ImageFormat, LabelFormat
from pipelines.dicom.write_ct import write_ct_series
from pipelines.synth.study import SynthStudy

#: LPS -> RAS: NIfTI's world space flips x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_study(study: SynthStudy, case_dir: Path, *, transfer_syntax: str) -> Case:
    """Write every file of ``study`` under ``case_dir`` and return its manifest entry."""
    case_dir.mkdir(parents=True, exist_ok=True)
    paths = write_ct_series(
        study.volume_hu,
        study.affine_lps,
        case_dir / "dicom",
        study.series_info,
        transfer_syntax=transfer_syntax,
    )
    write_label_nifti(study.label, study.affine_lps, case_dir / "label.nii.gz")
    write_label_seg(study, paths, case_dir / "seg.dcm")
    lesions = [lesion.model_dump(mode="json") for lesion in study.lesions]
    (case_dir / "lesions.json").write_text(json.dumps(lesions, indent=2) + "\n", encoding="utf-8")
    return Case(
        case_id=study.case_id,
        patient_id=study.series_info.patient_id,
        image=f"{study.case_id}/dicom",
        image_format=ImageFormat.DICOM,
        label=f"{study.case_id}/label.nii.gz",
        label_format=LabelFormat.NIFTI,
        lesions=list(study.lesions),
        source="synthetic",
        slice_thickness_mm=study.protocol.slice_thickness_mm,
    )


def write_label_nifti(label: np.ndarray, affine_lps: np.ndarray, path: Path) -> None:
    """Write ``label`` (``[k, j, i]``, uint8 lesion ids) as NIfTI with the matching RAS affine."""
    image = nib.Nifti1Image(np.ascontiguousarray(label.transpose(2, 1, 0)), LPS_TO_RAS @ affine_lps)
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def _segment_description() -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lung lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=[codes.SCT.Lung],
    )


def write_label_seg(study: SynthStudy, ct_paths: list[Path], path: Path) -> None:
    """Write the binary lesion mask as a DICOM SEG referencing the written CT instances."""
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_paths]
    uid_seed = study.series_info.uid_seed
    date = study.series_info.study_date
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=(study.label > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description()],
        series_instance_uid=generate_uid(entropy_srcs=[uid_seed, "seg-series"]),
        series_number=100,
        sop_instance_uid=generate_uid(entropy_srcs=[uid_seed, "seg-instance"]),
        instance_number=1,
        manufacturer="Basira",
        manufacturer_model_name="basira-synth",
        software_versions="1",
        device_serial_number="synthetic",
        series_description="Ground truth lesions",
        content_label="LESIONS",
        omit_empty_frames=bool(study.label.any()),
        content_date=date,
        content_time=dt.time(9, 0),
        series_date=date,
        series_time=dt.time(9, 0),
    )
    _pin_generated_values(seg, uid_seed, date)
    seg.save_as(path, enforce_file_format=True)


def _pin_generated_values(seg: hd.seg.Segmentation, uid_seed: str, date: dt.date) -> None:
    """Replace the creation times and random UIDs highdicom adds, so SEG files are reproducible."""
    seg.InstanceCreationDate = DA(date)
    seg.InstanceCreationTime = TM(dt.time(9, 0))
    stamp = DT(dt.datetime.combine(date, dt.time(9, 0)))
    for item in seg.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = stamp
    organization_uid = generate_uid(entropy_srcs=[uid_seed, "seg-dimension-organization"])
    for sequence in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(sequence, []):
            item.DimensionOrganizationUID = organization_uid
