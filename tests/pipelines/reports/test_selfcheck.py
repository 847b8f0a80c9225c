"""Geometry self-check: passes on what the writers produce, fails closed on corrupted objects."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest

from pipelines.dicom.read import read_series_volume
from pipelines.errors import OutputGeometryError
from pipelines.reports import (
    AnalysedStudy,
    OutputFormat,
    build_key_images,
    build_seg,
    build_sr,
    check_key_images,
    check_seg,
    check_sr,
    read_source_headers,
    write_each_output,
    write_outputs,
)
from pipelines.reports import writer as writer_module
from tests.pipelines.reports.conftest import ALGORITHM, findings_from_labels

GEOMETRIES = {
    "head-first": {"step_mm": -1.25},
    "feet-first": {"step_mm": 1.25, "patient_position": "FFS"},
    "head-first shuffled": {"step_mm": -1.25, "shuffle": True},
    "feet-first shuffled": {"step_mm": 1.25, "patient_position": "FFS", "shuffle": True},
}


def _read_back(dataset, path):
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _shift_first_frame_one_slice(seg, study: AnalysedStudy):
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    step = study.volume.affine_lps[:3, 2]
    position.ImagePositionPatient = [float(v) for v in np.add(position.ImagePositionPatient, step)]
    return seg


@pytest.mark.parametrize("series", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_write_outputs_releases_every_object_after_the_checks_pass(make_study, tmp_path, series):
    study = make_study(**series)
    out = tmp_path / "out"
    paths = write_outputs(study, out, list(OutputFormat))
    uid = study.volume.provenance.study_instance_uid
    assert sorted(p.name for p in paths) == sorted(
        [f"{uid}.{name}" for name in ("seg.dcm", "sr.dcm", "key-1.dcm", "key-2.dcm", "fhir.json")]
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert json.loads((out / f"{uid}.fhir.json").read_text())["resourceType"] == "Bundle"


def test_only_the_key_findings_get_key_images(make_study, tmp_path):
    study = replace(make_study(), key_image_ids=frozenset({2}))
    uid = study.volume.provenance.study_instance_uid
    paths = write_outputs(study, tmp_path, [OutputFormat.KEY_IMAGES, OutputFormat.SEG])
    assert sorted(p.name for p in paths) == [f"{uid}.key-2.dcm", f"{uid}.seg.dcm"]
    none = replace(study, key_image_ids=frozenset())
    assert write_outputs(none, tmp_path / "none", [OutputFormat.KEY_IMAGES]) == []
    with pytest.raises(ValueError, match="key_image_ids"):
        replace(study, key_image_ids=frozenset({3}))


def test_seg_frame_shifted_by_one_slice_fails_the_check(make_study, tmp_path):
    study = make_study(step_mm=1.25, patient_position="FFS", shuffle=True)
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    check_seg(seg, study)
    with pytest.raises(OutputGeometryError) as raised:
        check_seg(_shift_first_frame_one_slice(seg, study), study)
    assert raised.value.code == "output.geometry_mismatch"
    assert raised.value.detail["object"] == "SEG"


def test_seg_frame_off_the_slice_grid_fails_the_check(make_study, tmp_path):
    study = make_study()
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 0.3 for v in position.ImagePositionPatient]
    with pytest.raises(OutputGeometryError, match="not on a source slice"):
        check_seg(seg, study)


def test_seg_with_flipped_orientation_fails_the_check(make_study, tmp_path):
    study = make_study()
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    plane = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    plane.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    with pytest.raises(OutputGeometryError, match="orientation"):
        check_seg(seg, study)


def test_seg_whose_mask_differs_from_the_one_written_fails_the_check(make_study, tmp_path):
    study = make_study()
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    other = np.roll(study.findings_mask, 1, axis=2)
    shifted = replace(study, findings_mask=other)
    with pytest.raises(OutputGeometryError, match="mask re-read differs"):
        check_seg(seg, shifted)


def test_sr_point_off_the_finding_centre_fails_the_check(make_study, tmp_path):
    study = make_study(step_mm=1.25)
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    sr = _read_back(build_sr(study, seg), tmp_path / "sr.dcm")
    check_sr(sr, study, seg)
    point = next(_scoord3d_items(sr))
    point.GraphicData = [
        float(v) for v in np.add(point.GraphicData, study.volume.affine_lps[:3, 2])
    ]
    with pytest.raises(OutputGeometryError, match="not the finding centre"):
        check_sr(sr, study, seg)


def test_sr_in_another_frame_of_reference_fails_the_check(make_study, tmp_path):
    study = make_study()
    seg = _read_back(build_seg(study), tmp_path / "seg.dcm")
    sr = _read_back(build_sr(study, seg), tmp_path / "sr.dcm")
    for item in _scoord3d_items(sr):
        item.ReferencedFrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(OutputGeometryError, match="another frame of reference"):
        check_sr(sr, study, seg)


def _scoord3d_items(dataset):
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == "SCOORD3D":
            yield item
        yield from _scoord3d_items(item)


def test_key_image_of_the_wrong_slice_fails_the_check(make_study, tmp_path):
    study = make_study(step_mm=1.25, shuffle=True)
    images = [
        _read_back(image, tmp_path / f"k{n}.dcm") for n, image in enumerate(build_key_images(study))
    ]
    check_key_images(images, study)
    uids = study.volume.provenance.sop_instance_uids
    k = study.nearest_slice(study.ordered_findings()[0])
    images[0].SourceImageSequence[0].ReferencedSOPInstanceUID = uids[k + 1]
    with pytest.raises(OutputGeometryError, match="references another slice"):
        check_key_images(images, study)


def test_failed_check_releases_nothing(make_study, tmp_path, monkeypatch):
    study = make_study()

    def corrupted_seg(analysed: AnalysedStudy):
        return _shift_first_frame_one_slice(build_seg(analysed), analysed)

    monkeypatch.setattr(writer_module, "build_seg", corrupted_seg)
    out = tmp_path / "out"
    with pytest.raises(OutputGeometryError):
        write_outputs(study, out, ["seg", "sr", "fhir"])
    assert list(out.iterdir()) == []


def test_study_without_findings_gets_only_the_fhir_report(make_study, tmp_path):
    study = make_study()
    empty = replace(study, findings_mask=np.zeros_like(study.findings_mask), findings=[])
    paths = write_outputs(empty, tmp_path, list(OutputFormat))
    assert [p.suffix for p in paths] == [".json"]


def test_study_with_one_finding_releases_seg_and_sr(make_study, tmp_path):
    """highdicom puts a lone segment's identification in the shared functional groups."""
    study = make_study()
    first = study.findings[0]
    mask = np.where(study.findings_mask == first.id, first.id, 0).astype(np.uint8)
    single = replace(study, findings_mask=mask, findings=[first])
    paths = write_outputs(single, tmp_path, ["seg", "sr"])
    uid = study.volume.provenance.study_instance_uid
    assert sorted(p.name for p in paths) == [f"{uid}.seg.dcm", f"{uid}.sr.dcm"]
    seg = pydicom.dcmread(next(p for p in paths if p.name.endswith("seg.dcm")))
    assert len(seg.SegmentSequence) == 1


def test_a_segment_without_frames_fails_the_check(make_study):
    """Every frame of the SEG relabelled to segment 1: segment 2 has none left (the issue 15
    SEG, whose last segment had no frame, passed the check before)."""
    study = make_study()
    seg = build_seg(study)
    for item in seg.PerFrameFunctionalGroupsSequence:
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 1
    with pytest.raises(OutputGeometryError, match="segment has no frame") as raised:
        check_seg(seg, study)
    assert raised.value.detail["finding"] == 2


def test_a_seg_that_highdicom_mis_packs_is_withheld_alone_with_a_code(make_series, tmp_path):
    """Found by the property test: highdicom 0.28.2 packs BINARY frames of fewer than 8 pixels
    one by one (its check reads ``rows * columns // 8`` where ``% 8`` is meant), so the frames
    read back shifted. The self-check catches it: the SEG, and the SR that measures on it, are
    withheld with codes; the FHIR report is released."""
    paths = make_series(shape=(20, 2, 3))
    volume = read_series_volume(paths)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[4, 0, 1], mask[9, 1, 2] = 1, 2
    study = AnalysedStudy(
        volume=volume,
        source_headers=read_source_headers(paths),
        findings_mask=mask,
        findings=findings_from_labels(mask, volume),
        algorithm=ALGORITHM,
    )
    written = write_each_output(study, tmp_path / "out", ["seg", "sr", "fhir"])
    assert [(w.output.value, w.code) for w in written.withheld] == [
        ("seg", "output.geometry_mismatch"),
        ("sr", "output.invalid"),
    ]
    assert "mask re-read differs" in written.withheld[0].message
    uid = volume.provenance.study_instance_uid
    assert [p.name for p in written.paths] == [f"{uid}.fhir.json"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{uid}.fhir.json"]
