"""Which series Basira analyses, decided from headers, with a coded reason for every refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from pipelines.dicom.index import index_inputs
from pipelines.dicom.selection import SelectionRules
from tests.pipelines.dicom.conftest import PYDICOM_FILES


def _reasons(paths: list[Path], tmp_path: Path, **rules: object) -> list[str]:
    index = index_inputs(paths, workdir=tmp_path / "work", rules=SelectionRules(**rules))  # type: ignore[arg-type]
    (series,) = [s for study in index.studies for s in study.series]
    return [r.code for r in series.reasons]


def _edit(paths: list[Path], **attributes: object) -> list[Path]:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return paths


def test_regular_series_is_analysable_and_selected(make_series, tmp_path):
    index = index_inputs(make_series(), workdir=tmp_path)
    (study,) = index.studies
    assert study.selected_series is not None and study.selected_series.analysable


def test_thinnest_analysable_series_is_selected(make_series, tmp_path):
    thick = make_series(step_mm=3.0, study_instance_uid="1.2.3.4", series_number=2)
    thin = make_series(step_mm=1.0, study_instance_uid="1.2.3.4", series_number=3)
    study = index_inputs(thick + thin, workdir=tmp_path).studies[0]
    selected = study.selected_series
    assert selected is not None
    assert selected.instances[0].slice_thickness_mm == 1.0
    assert sum(s.selected for s in study.series) == 1


def test_mr_image_is_not_ct(tmp_path):
    assert _reasons([PYDICOM_FILES / "MR_small.dcm"], tmp_path) == ["dicom.not_ct"]


def test_structured_report_is_not_an_image(tmp_path):
    assert _reasons([PYDICOM_FILES / "test-SR.dcm"], tmp_path) == ["dicom.not_an_image"]


@pytest.mark.parametrize("name", ["rtplan.dcm", "waveform_ecg.dcm"])
def test_rt_and_waveform_objects_are_not_images(tmp_path, name):
    assert _reasons([PYDICOM_FILES / name], tmp_path) == ["dicom.not_an_image"]


def test_dicom_seg_is_not_an_image(tmp_path):
    assert _reasons([PYDICOM_FILES / "liver_expb_1frame.dcm"], tmp_path) == ["dicom.not_an_image"]


def test_dicomdir_is_refused_as_not_an_image(make_series, tmp_path):
    fileset = FileSet()
    fileset.add(pydicom.dcmread(make_series((2, 8, 8))[0]))
    fileset.write(tmp_path / "media")
    index = index_inputs([tmp_path / "media" / "DICOMDIR"], workdir=tmp_path / "w")
    assert [r.code for r in index.rejected_files] == ["dicom.not_an_image"]


def test_secondary_capture_claiming_ct_is_not_ct(make_series, tmp_path):
    paths = _edit(make_series(), SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    assert _reasons(paths, tmp_path) == ["dicom.not_ct"]


def test_real_colour_secondary_capture_is_refused_as_not_ct(tmp_path):
    assert _reasons([PYDICOM_FILES / "SC_rgb_rle.dcm"], tmp_path) == ["dicom.not_ct"]


def test_colour_image_labelled_ct_is_refused_as_colour(make_series, tmp_path):
    paths = _edit(make_series(), PhotometricInterpretation="RGB", SamplesPerPixel=3)
    assert _reasons(paths, tmp_path) == ["dicom.colour_image"]


def test_derived_iodine_map_is_not_hounsfield(make_series, tmp_path):
    paths = _edit(
        make_series(), ImageType=["DERIVED", "PRIMARY", "AXIAL", "IODINE"], RescaleType="MG/ML"
    )
    assert _reasons(paths, tmp_path) == ["dicom.not_hounsfield"]


def test_localizer_is_refused(make_series, tmp_path):
    paths = _edit(make_series(), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    assert "series.localizer" in _reasons(paths, tmp_path)


def test_reformat_is_not_original(make_series, tmp_path):
    paths = _edit(make_series(), ImageType=["DERIVED", "SECONDARY", "REFORMATTED"])
    assert "series.not_original" in _reasons(paths, tmp_path)


def test_sagittal_series_is_not_axial(make_series, tmp_path):
    paths = make_series(orientation=(0, 1, 0, 0, 0, -1))
    assert _reasons(paths, tmp_path) == ["series.not_axial"]


def test_thick_slices_are_out_of_range(make_series, tmp_path):
    assert _reasons(make_series(step_mm=8.0), tmp_path) == ["series.slice_thickness_out_of_range"]


def test_short_series_has_too_few_slices(make_series, tmp_path):
    assert _reasons(make_series((5, 8, 8)), tmp_path) == ["series.too_few_slices"]


def test_geometry_problems_are_reported_from_headers(make_series, tmp_path):
    paths = make_series()
    paths[7].unlink()
    assert _reasons(paths[:7] + paths[8:], tmp_path) == ["series.missing_slices"]


def test_duplicate_sop_instance_uid_is_reported(make_series, tmp_path):
    paths = make_series()
    shutil.copy(paths[0], paths[0].parent / "again.dcm")
    assert "series.duplicate_slices" in _reasons([paths[0].parent], tmp_path)


def test_missing_position_is_missing_attribute(make_series, tmp_path):
    paths = make_series()
    ds = pydicom.dcmread(paths[3])
    del ds.ImagePositionPatient
    ds.save_as(paths[3])
    assert _reasons(paths, tmp_path) == ["dicom.missing_attribute"]


def test_unsupported_transfer_syntax_is_reported_before_reading(make_series, tmp_path):
    paths = make_series()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
        ds.save_as(path, enforce_file_format=True)
    assert _reasons(paths, tmp_path) == ["dicom.unsupported_transfer_syntax"]
