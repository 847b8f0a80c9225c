"""Comprehensive 3D SR (TID 1500 Measurement Report) with one measurement group per finding.

Each finding is a TID 1411 *Volumetric ROI* group:

* Tracking Identifier and Tracking UID: the same as the finding's SEG segment, which is how a
  reader links the group to its segment.
* ROI: a Volume Surface ``SCOORD3D POINT`` at the finding centre (LPS mm, in the source frame of
  reference), geometric purpose DCM 111010 "Center", with the source series as Source Series
  for Segmentation. TID 1411 allows exactly one ROI row, so the point, which every report must
  carry, takes that row; the SEG is referenced per measurement instead (next item).
* Measurements (TID 300): diameter (mm) and volume (ml), each *inferred from* the SEG frames of
  the finding's segment (Source of Measurement); and the calibrated confidence as DCM 111012
  "Certainty of Finding", unit UCUM ``1``. A numeric measurement, not a qualitative evaluation:
  the calibrated probability is the quantity the model reports, and coding it into categories
  would throw away the number a reader thresholds on.
* Finding type SCT "Nodule", category SCT "Morphologically Abnormal Structure", finding site SCT
  "Lung", and the model as Algorithm Identification (TID 4019).

The SEG and every source instance are listed as evidence.

:func:`build_review_sr` writes the same template for a radiologist's signed review: the person
observer is the radiologist, each measurement group is a finding the review confirmed (an
accepted or corrected AI finding, or one the radiologist added) with its centre and diameter,
and the final impression is a TEXT item (DCM 121073 "Impression") of the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.findings import Finding
from pipelines.reports import codes as basira_codes
from pipelines.reports.seg import SEG_SERIES_NUMBER, frame_segment_number
from pipelines.reports.study import AnalysedStudy, _with_empty_type2, confidence_of

__all__ = [
    "PROCEDURE_CT_CHEST",
    "SR_SERIES_NUMBER",
    "ReviewedFinding",
    "SignedReview",
    "build_review_sr",
    "build_sr",
    "segment_frame_numbers",
]

SR_SERIES_NUMBER = SEG_SERIES_NUMBER + 1
#: LOINC 24627-2 "CT Chest", the procedure reported.
PROCEDURE_CT_CHEST = Code("24627-2", "LN", "CT Chest")


def segment_frame_numbers(seg: Dataset) -> dict[int, list[int]]:
    """1-based frame numbers of each segment of a SEG dataset, by segment number."""
    frames: dict[int, list[int]] = {}
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        segment = frame_segment_number(seg, item)
        if segment is None:
            raise ValueError(f"SEG frame {number} names no segment")
        frames.setdefault(segment, []).append(number)
    return frames


def build_sr(study: AnalysedStudy, seg: Dataset) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of ``study``'s findings, measured on ``seg`` (the SEG as written).

    Raises:
        ValueError: the study has no findings (highdicom's TID 1500 needs at least one
            measurement group; the FHIR report and the result JSON carry a negative result).
    """
    if not study.findings:
        raise ValueError("an SR needs at least one finding; write none for an empty study")
    frames = segment_frame_numbers(seg)
    groups = []
    for finding in study.ordered_findings():
        source = hd.sr.SourceImageForMeasurement(
            referenced_sop_class_uid=seg.SOPClassUID,
            referenced_sop_instance_uid=seg.SOPInstanceUID,
            referenced_frame_numbers=frames[study.segment_number(finding)],
        )
        groups.append(_group(study, finding, source))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(study),
        procedure_reported=PROCEDURE_CT_CHEST,
        imaging_measurements=groups,
    )
    algorithm = study.algorithm
    created = study.created
    return hd.sr.Comprehensive3DSR(
        evidence=[*study.headers_in_volume_order, seg],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        series_description=f"AI findings report ({algorithm.label})",
        content_date=created.date(),
        content_time=created.time(),
    )


def _observation_context(study: AnalysedStudy) -> hd.sr.ObservationContext:
    algorithm = study.algorithm
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[algorithm.manufacturer, algorithm.label]),
        name=algorithm.name,
        manufacturer_name=algorithm.manufacturer,
        model_name=algorithm.name,
        serial_number=algorithm.version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _group(
    study: AnalysedStudy, finding: Finding, source: hd.sr.SourceImageForMeasurement
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    provenance = study.volume.provenance
    centre = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([finding.center_lps_mm], dtype=np.float64),
        frame_of_reference_uid=provenance.frame_of_reference_uid,
        source_series=hd.sr.SourceSeriesForSegmentation(provenance.series_instance_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=study.tracking_uid(finding), identifier=f"AI finding {finding.id}"
        ),
        referenced_volume_surface=centre,
        finding_type=basira_codes.FINDING_TYPE,
        finding_category=basira_codes.FINDING_CATEGORY,
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=study.algorithm.name, version=study.algorithm.version
        ),
        finding_sites=[hd.sr.FindingSite(basira_codes.LUNG)],
        geometric_purpose=codes.DCM.Center,
        measurements=_measurements(finding, source),
    )


def _measurements(
    finding: Finding, source: hd.sr.SourceImageForMeasurement
) -> list[hd.sr.Measurement]:
    return [
        hd.sr.Measurement(
            name=basira_codes.DIAMETER,
            value=finding.diameter_mm,
            unit=basira_codes.UNIT_MILLIMETRE,
            referenced_images=[source],
        ),
        hd.sr.Measurement(
            name=basira_codes.VOLUME,
            value=finding.volume_ml,
            unit=basira_codes.UNIT_MILLILITRE,
            referenced_images=[source],
        ),
        hd.sr.Measurement(
            name=basira_codes.CERTAINTY_OF_FINDING,
            value=confidence_of(finding),
            unit=basira_codes.UNIT_ONE,
        ),
    ]


@dataclass(frozen=True)
class ReviewedFinding:
    """A finding a radiologist confirmed; ``label`` says how (e.g. "accepted AI finding 2")."""

    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    label: str


@dataclass(frozen=True)
class SignedReview:
    """What a signed review reports, about the source series in ``evidence`` (headers)."""

    evidence: list[Dataset]
    observer_name: str
    organization: str
    impression: str
    signed_at: datetime
    findings: list[ReviewedFinding]


def build_review_sr(review: SignedReview) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of a signed review, the radiologist as person observer."""
    evidence = [_with_empty_type2(header) for header in review.evidence]
    first = evidence[0]
    person = hd.sr.PersonObserverIdentifyingAttributes(
        name=review.observer_name, organization_name=review.organization
    )
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person, observer_identifying_attributes=person
        )
    )
    groups = [_reviewed_group(first, finding) for finding in review.findings]
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=PROCEDURE_CT_CHEST,
        imaging_measurements=groups or None,
    )
    content = report[0]
    content.ContentSequence.append(
        hd.sr.TextContentItem(codes.DCM.Impression, review.impression, "CONTAINS")
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER + 1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Basira",
        series_description="Radiologist review of AI findings",
        content_date=review.signed_at.date(),
        content_time=review.signed_at.time(),
    )


def _reviewed_group(
    source: Dataset, finding: ReviewedFinding
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    centre = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([finding.center_lps_mm], dtype=np.float64),
        frame_of_reference_uid=source.FrameOfReferenceUID,
        source_series=hd.sr.SourceSeriesForSegmentation(source.SeriesInstanceUID),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=finding.label),
        referenced_volume_surface=centre,
        finding_type=basira_codes.FINDING_TYPE,
        finding_category=basira_codes.FINDING_CATEGORY,
        finding_sites=[hd.sr.FindingSite(basira_codes.LUNG)],
        geometric_purpose=codes.DCM.Center,
        measurements=[
            hd.sr.Measurement(
                name=basira_codes.DIAMETER,
                value=finding.diameter_mm,
                unit=basira_codes.UNIT_MILLIMETRE,
            )
        ],
    )
