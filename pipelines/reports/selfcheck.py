"""Geometry self-check: read each written object back and prove it lines up with its source.

Fail closed: any disagreement raises :class:`~pipelines.errors.OutputGeometryError`
(``output.geometry_mismatch``) and the object is not released. The checks work from the
*written* attributes, never from what the writer meant to write, and map them through the
source volume's affine independently of highdicom's own frame bookkeeping:

* SEG: every frame's ImagePositionPatient is that of a source slice (``k`` found through the
  source affine, then the instance's own position within ``atol_mm``), the frame's derivation
  reference is that slice's SOPInstanceUID, the shared orientation and pixel spacing are the
  source's, each segment carries its finding's Tracking UID and has at least one frame, and the
  mask rebuilt from the frames equals the findings mask voxel for voxel.
* SR: one measurement group per finding (matched by Tracking UID), its SCOORD3D point equals the
  finding centre in the source frame of reference, its values equal the finding's, and the SEG
  is listed as evidence.
* Key images: each references the source slice nearest its finding's centre and carries the
  source's patient and study identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from pipelines.errors import OutputGeometryError
from pipelines.reports import codes as basira_codes
from pipelines.reports.seg import frame_segment_number
from pipelines.reports.study import AnalysedStudy, confidence_of

__all__ = ["ATOL_MM", "check_key_images", "check_seg", "check_sr"]

#: Largest distance (mm) between a written position and the source position it stands for.
ATOL_MM = 1e-2


def _fail(what: str, obj: str, **detail: Any) -> OutputGeometryError:
    return OutputGeometryError(
        f"The written {obj} does not line up with the source series: {what}.",
        object=obj,
        check=what,
        **detail,
    )


def check_seg(seg: Dataset, study: AnalysedStudy, *, atol_mm: float = ATOL_MM) -> None:
    """Verify a SEG read back from disk against ``study``.

    Raises:
        OutputGeometryError: any frame, reference, segment or voxel disagrees.
    """
    provenance = study.volume.provenance
    if seg.SOPClassUID != SegmentationStorage or seg.SegmentationType != "BINARY":
        raise _fail("not a BINARY segmentation", "SEG", sop_class_uid=str(seg.SOPClassUID))
    if seg.FrameOfReferenceUID != provenance.frame_of_reference_uid:
        raise _fail("frame of reference differs", "SEG")
    _check_seg_plane(seg, study)
    _check_segments(seg, study)
    rebuilt = _rebuild_mask(seg, study, atol_mm)
    if not np.array_equal(rebuilt, study.findings_mask):
        differing = int(np.count_nonzero(rebuilt != study.findings_mask))
        raise _fail("mask re-read differs from the mask written", "SEG", voxels=differing)


def _check_seg_plane(seg: Dataset, study: AnalysedStudy) -> None:
    """The shared orientation and pixel spacing are the source's."""
    affine = study.volume.affine_lps
    col_mm, row_mm, _ = study.volume.spacing_mm
    expected = np.concatenate([affine[:3, 0] / col_mm, affine[:3, 1] / row_mm])
    shared = seg.SharedFunctionalGroupsSequence[0]
    found = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    if not np.allclose(found, expected, atol=1e-4):
        raise _fail("orientation differs", "SEG", expected=expected.tolist(), found=found.tolist())
    spacing = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    if not np.allclose(spacing, [row_mm, col_mm], rtol=1e-4):
        raise _fail("pixel spacing differs", "SEG", found=spacing.tolist())
    if (int(seg.Rows), int(seg.Columns)) != study.volume.shape[1:]:
        raise _fail("matrix size differs", "SEG")


def _check_segments(seg: Dataset, study: AnalysedStudy) -> None:
    """Each finding's segment exists, carries its Tracking UID and has at least one frame (the
    SR measures on a segment's frames, and a PACS cannot show a segment without any)."""
    segments = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    if len(segments) != len(study.findings):
        raise _fail("segment count differs", "SEG", expected=len(study.findings))
    framed = {frame_segment_number(seg, item) for item in seg.PerFrameFunctionalGroupsSequence}
    for finding in study.findings:
        number = study.segment_number(finding)
        item = segments.get(number)
        if item is None or item.get("TrackingUID") != study.tracking_uid(finding):
            raise _fail("segment tracking UID differs", "SEG", finding=finding.id)
        if number not in framed:
            raise _fail("segment has no frame", "SEG", finding=finding.id, segment=number)


def _rebuild_mask(seg: Dataset, study: AnalysedStudy, atol_mm: float) -> np.ndarray:
    """The ``[k, j, i]`` finding-id mask the SEG's frames describe, placed by their positions."""
    uids = study.volume.provenance.sop_instance_uids
    labels = {study.segment_number(f): f.id for f in study.findings}
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    rebuilt = np.zeros(study.volume.shape, dtype=np.uint8)
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        k = _frame_slice(item, study, atol_mm, frame=index + 1)
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if source != uids[k]:
            raise _fail("frame references another slice", "SEG", frame=index + 1, slice=k)
        segment = frame_segment_number(seg, item)
        on = frames[index] > 0
        if segment is None or segment not in labels or np.any(rebuilt[k][on]):
            raise _fail("frame segment unknown or overlapping", "SEG", frame=index + 1)
        rebuilt[k][on] = labels[segment]
    return rebuilt


def _frame_slice(item: Dataset, study: AnalysedStudy, atol_mm: float, *, frame: int) -> int:
    """Index ``k`` of the source slice a SEG frame's position is on.

    ``k`` is found through the volume's affine, and the position must then equal that source
    instance's own ImagePositionPatient. The affine alone is not the reference: the reader
    takes a stack sheared by less than its tilt tolerance as unsheared, so the affine drifts
    from the instances' positions along such a stack, while the SEG copies the positions.
    """
    position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
    k = round(float(study.volume.lps_to_ijk(position)[2]))
    if 0 <= k < study.volume.shape[0]:
        header = study.headers_in_volume_order[k]
        exact = np.asarray(header.ImagePositionPatient, float)
        if np.linalg.norm(position - exact) <= atol_mm:
            return k
    raise _fail(
        "frame position is not on a source slice",
        "SEG",
        frame=frame,
        position_lps_mm=position.tolist(),
    )


def check_sr(sr: Dataset, study: AnalysedStudy, seg: Dataset) -> None:
    """Verify a TID 1500 SR read back from disk against ``study`` and its ``seg``.

    Raises:
        OutputGeometryError: a group is missing or its point, frame of reference, values or
            references disagree.
    """
    try:
        report = hd.sr.MeasurementReport.from_sequence([sr])
    except (AttributeError, ValueError) as error:
        raise _fail("not a TID 1500 measurement report", "SR") from error
    groups = report.get_volumetric_roi_measurement_groups()
    by_uid = {str(g.tracking_uid): g for g in groups}
    if len(groups) != len(study.findings) or len(by_uid) != len(groups):
        raise _fail("one measurement group per finding expected", "SR", found=len(groups))
    for finding in study.findings:
        group = by_uid.get(study.tracking_uid(finding))
        if group is None:
            raise _fail("finding has no measurement group", "SR", finding=finding.id)
        _check_centre(group, study, np.asarray(finding.center_lps_mm))
        expected = {
            basira_codes.DIAMETER.value: finding.diameter_mm,
            basira_codes.VOLUME.value: finding.volume_ml,
            basira_codes.CERTAINTY_OF_FINDING.value: confidence_of(finding),
        }
        found = {m.name.value: float(m.value) for m in group.get_measurements()}
        if found.keys() != expected.keys() or not all(
            np.isclose(found[code], value, rtol=1e-6, atol=1e-9) for code, value in expected.items()
        ):
            raise _fail("measurements differ", "SR", finding=finding.id)
    if seg.SOPInstanceUID not in _evidence_uids(sr):
        raise _fail("the SEG is not referenced", "SR")


def _check_centre(group: Any, study: AnalysedStudy, centre: np.ndarray) -> None:
    surface = group.roi
    if not isinstance(surface, hd.sr.VolumeSurface):
        raise _fail("measurement group has no SCOORD3D point", "SR")
    if surface.frame_of_reference_uid != study.volume.provenance.frame_of_reference_uid:
        raise _fail("point is in another frame of reference", "SR")
    point = np.asarray(surface.graphic_data[0], float).reshape(-1)
    if point.shape != (3,) or np.linalg.norm(point - centre) > ATOL_MM:
        raise _fail(
            "point is not the finding centre",
            "SR",
            expected=centre.tolist(),
            found=point.tolist(),
        )


def _evidence_uids(sr: Dataset) -> set[str]:
    return {
        str(instance.ReferencedSOPInstanceUID)
        for study_item in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study_item.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }


def check_key_images(images: Sequence[Dataset], study: AnalysedStudy) -> None:
    """Verify key images (ascending finding id) read back from disk against ``study``.

    Raises:
        OutputGeometryError: an image is missing, references another slice than the one
            nearest its finding's centre, or belongs to another patient or study.
    """
    findings = study.key_image_findings()
    if len(images) != len(findings):
        raise _fail("one key image per key finding expected", "key image", found=len(images))
    source = study.reference_header
    uids = study.volume.provenance.sop_instance_uids
    for image, finding in zip(images, findings, strict=True):
        expected = uids[study.nearest_slice(finding)]
        referenced = image.SourceImageSequence[0].ReferencedSOPInstanceUID
        if referenced != expected:
            raise _fail("references another slice", "key image", finding=finding.id)
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName"):
            if image.get(keyword) != source.get(keyword):
                raise _fail(f"{keyword} differs from the source", "key image")
