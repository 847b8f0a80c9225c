"""Comprehensive 3D SR (TID 1500): written, parsed back with highdicom, compared with findings."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from pydicom.sr.codedict import codes

from pipelines.reports import AnalysedStudy, build_seg, build_sr
from tests.pipelines.reports.conftest import StudyFactory


def _round_trip(make_study: StudyFactory, tmp_path: Path, **series: object):
    study = make_study(**series)
    build_seg(study).save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    build_sr(study, seg).save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    return study, seg, hd.sr.srread(tmp_path / "sr.dcm")


@pytest.mark.parametrize("step_mm", [-1.25, 1.25], ids=["head-first", "feet-first"])
def test_sr_groups_locate_each_finding_centre_in_the_source_frame(make_study, tmp_path, step_mm):
    study, _, sr = _round_trip(make_study, tmp_path, step_mm=step_mm, shuffle=True)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(study.findings) == 2
    for group, finding in zip(groups, study.ordered_findings(), strict=True):
        assert group.tracking_uid == study.tracking_uid(finding)
        assert group.reference_type == hd.sr.CodedConcept("121231", "DCM", "Volume Surface")
        surface = group.roi
        assert surface.graphic_type == hd.sr.GraphicTypeValues3D.POINT
        assert surface.frame_of_reference_uid == study.volume.provenance.frame_of_reference_uid
        np.testing.assert_allclose(surface.graphic_data[0], finding.center_lps_mm, atol=1e-4)
        series = surface.source_series_for_segmentation.value
        assert series == study.volume.provenance.series_instance_uid
        assert group.finding_type.value == "27925004"


def test_sr_measures_diameter_volume_and_confidence_with_ucum_units(make_study, tmp_path):
    study, seg, sr = _round_trip(make_study, tmp_path)
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    finding = study.ordered_findings()[0]
    measured = {m.name.meaning: m for m in group.get_measurements()}
    assert measured["Diameter"].value == pytest.approx(finding.diameter_mm)
    assert measured["Diameter"].unit.value == "mm"
    assert measured["Volume"].value == pytest.approx(finding.volume_ml)
    assert measured["Volume"].unit.value == "ml"
    assert measured["Certainty of Finding"].value == pytest.approx(finding.confidence)
    assert measured["Certainty of Finding"].unit.value == "1"
    source = measured["Volume"].referenced_images[0]
    assert source.referenced_sop_instance_uid == seg.SOPInstanceUID
    frames = [
        n
        for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1)
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
    ]
    assert source.referenced_frame_numbers == frames


def test_sr_names_the_algorithm_and_lists_seg_and_source_as_evidence(make_study, tmp_path):
    study, seg, sr = _round_trip(make_study, tmp_path)
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    for name, value in (
        (codes.DCM.AlgorithmName, "basira-unet"),
        (codes.DCM.AlgorithmVersion, "1.2.0"),
    ):
        items = find_content_items(group[0], name=name, recursive=True)
        assert [item.value for item in items] == [value]
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert seg.SOPInstanceUID in evidence
    assert set(study.volume.provenance.sop_instance_uids) <= evidence
    assert sr.StudyInstanceUID == study.volume.provenance.study_instance_uid
    assert sr.PatientID == study.reference_header.PatientID


def test_sr_of_a_study_without_findings_is_refused(make_study, tmp_path):
    study = make_study()
    empty = AnalysedStudy(
        volume=study.volume,
        source_headers=study.source_headers,
        findings_mask=np.zeros_like(study.findings_mask),
        findings=[],
        algorithm=study.algorithm,
    )
    with pytest.raises(ValueError, match="at least one finding"):
        build_sr(empty, pydicom.Dataset())
