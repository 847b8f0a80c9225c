"""DICOM SEG: written, read back with pydicom and highdicom, and compared with the source."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipelines.reports import build_seg
from pipelines.reports.seg import segment_label_mask
from tests.pipelines.reports.conftest import ALGORITHM, StudyFactory

GEOMETRIES = {
    "head-first": {"step_mm": -1.25},
    "feet-first": {"step_mm": 1.25, "patient_position": "FFS"},
    "shuffled files": {"step_mm": -1.25, "shuffle": True},
    "feet-first shuffled": {"step_mm": 1.25, "patient_position": "FFS", "shuffle": True},
}


def _round_trip(make_study: StudyFactory, tmp_path: Path, **series: object):
    study = make_study(**series)
    path = tmp_path / "seg.dcm"
    build_seg(study).save_as(path, enforce_file_format=True)
    return study, pydicom.dcmread(path)


@pytest.mark.parametrize("series", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_seg_frames_sit_on_the_source_slices_of_their_voxels(make_study, tmp_path, series):
    study, seg = _round_trip(make_study, tmp_path, **series)
    uids = study.volume.provenance.sop_instance_uids
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        i, j, k = study.volume.lps_to_ijk(position)
        assert abs(i) < 1e-4 and abs(j) < 1e-4 and abs(k - round(k)) < 1e-4
        k = round(k)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == uids[k]
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        np.testing.assert_array_equal(frames[index] > 0, study.findings_mask[k] == number)


@pytest.mark.parametrize("series", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_seg_read_by_highdicom_equals_the_mask_written(make_study, tmp_path, series):
    study, seg = _round_trip(make_study, tmp_path, **series)
    uids = list(study.volume.provenance.sop_instance_uids)
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True
    )
    np.testing.assert_array_equal(pixels, segment_label_mask(study))


def test_seg_holds_frames_only_where_a_segment_is_present(make_study, tmp_path):
    study, seg = _round_trip(make_study, tmp_path)
    present = sum(
        int(np.any(study.findings_mask[k] == f.id))
        for k in range(study.volume.shape[0])
        for f in study.findings
    )
    assert seg.NumberOfFrames == present == 5
    assert seg.SegmentationType == "BINARY"


def test_seg_identifies_algorithm_source_series_and_findings(make_study, tmp_path):
    study, seg = _round_trip(make_study, tmp_path)
    provenance = study.volume.provenance
    assert seg.StudyInstanceUID == provenance.study_instance_uid
    assert seg.FrameOfReferenceUID == provenance.frame_of_reference_uid
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == provenance.series_instance_uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
        provenance.sop_instance_uids
    )
    for segment, finding in zip(seg.SegmentSequence, study.ordered_findings(), strict=True):
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("basira-unet", "1.2.0")
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
        assert segment.TrackingUID == study.tracking_uid(finding)
        assert segment.SegmentLabel == f"AI finding {finding.id}"
    assert seg.ManufacturerModelName == ALGORITHM.name
    assert seg.SoftwareVersions == ALGORITHM.version


def test_seg_of_a_study_without_findings_is_refused(make_study):
    study = make_study()
    empty = type(study)(
        volume=study.volume,
        source_headers=study.source_headers,
        findings_mask=np.zeros_like(study.findings_mask),
        findings=[],
        algorithm=study.algorithm,
    )
    with pytest.raises(ValueError, match="at least one finding"):
        build_seg(empty)
