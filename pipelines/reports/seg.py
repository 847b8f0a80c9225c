"""DICOM Segmentation (BINARY) of the findings, one segment per finding, on the source grid.

BINARY, not LABELMAP: LABELMAP SEG is unknown to pydicom 3.0.2, dcmtk 3.6.7 and the PACS built on
them. BINARY cannot be compressed, so only frames where a segment is present are written.

Geometry: frame ``k`` of the mask is paired with the source instance of slice ``k`` (the headers
ordered like the volume, whatever the file order or the patient position), so highdicom copies
that instance's ImagePositionPatient and references it in the frame's DerivationImageSequence.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipelines.findings import Finding
from pipelines.reports import codes as basira_codes
from pipelines.reports.study import AlgorithmInfo, AnalysedStudy

__all__ = [
    "SEG_SERIES_NUMBER",
    "algorithm_identification",
    "build_seg",
    "frame_segment_number",
    "segment_label_mask",
]

#: Series number of the SEG; SR and key images use the next numbers.
SEG_SERIES_NUMBER = 9001


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.AlgorithmIdentificationSequence:
    """The model as a SEG segment's algorithm identification (family: artificial intelligence)."""
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        source=algorithm.manufacturer,
    )


def segment_label_mask(study: AnalysedStudy) -> np.ndarray:
    """The findings mask relabelled to segment numbers, ``[k, j, i]`` uint8 (0 = background)."""
    lookup = np.zeros(256, dtype=np.uint8)
    for finding in study.findings:
        lookup[finding.id] = study.segment_number(finding)
    mask = study.findings_mask.astype(np.uint8, copy=False)
    if all(lookup[finding.id] == finding.id for finding in study.findings):
        return mask  # ids 1..n already are the segment numbers (as basira predict numbers them)
    labels = np.zeros_like(mask)
    inside = mask != 0
    labels[inside] = lookup[mask[inside]]
    return labels


def build_seg(study: AnalysedStudy) -> hd.seg.Segmentation:
    """The BINARY SEG of ``study``'s findings, referencing every source instance.

    Raises:
        ValueError: the study has no findings (a SEG needs at least one segment).
    """
    if not study.findings:
        raise ValueError("a SEG needs at least one finding; write none for an empty study")
    algorithm = study.algorithm
    labels = segment_label_mask(study)
    created = study.created
    return hd.seg.Segmentation(
        source_images=study.headers_in_volume_order,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment(study, f) for f in study.ordered_findings()],
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.version,
        series_description=f"AI findings ({algorithm.label})",
        content_label="AI_FINDINGS",
        content_description="Lung nodule candidates; not for diagnosis without review",
        omit_empty_frames=bool(labels.any()),
        content_date=created.date(),
        content_time=created.time(),
        series_date=created.date(),
        series_time=created.time(),
    )


def _segment(study: AnalysedStudy, finding: Finding) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=study.segment_number(finding),
        segment_label=f"AI finding {finding.id}",
        segmented_property_category=basira_codes.FINDING_CATEGORY,
        segmented_property_type=basira_codes.FINDING_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(study.algorithm),
        tracking_uid=study.tracking_uid(finding),
        tracking_id=f"AI finding {finding.id}",
        anatomic_regions=[basira_codes.LUNG],
    )


def frame_segment_number(seg: Dataset, frame_item: Dataset) -> int | None:
    """The segment a SEG frame belongs to: from its per-frame item, or from the shared
    functional groups where every frame has the same one (highdicom writes a lone segment
    there); None when neither says."""
    for group in (frame_item, *seg.get("SharedFunctionalGroupsSequence", [])):
        if "SegmentIdentificationSequence" in group:
            return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    return None
