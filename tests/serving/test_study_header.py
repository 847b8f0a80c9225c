"""The worklist's header fields read from real DICOM files written with pydicom, including the
headers a PACS sends that the common case does not show: several patient names, a bad date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from serving.study_header import read_study_header


def _write(path: Path, **fields: object) -> Path:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_header_with_several_patient_names_gives_the_first(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.dcm",
        PatientName=["HADDAD^AMINA", "HADDAD^A"],
        PatientID="P1",
        AccessionNumber="ACC1",
        StudyDate="20260307",
    )
    header = read_study_header(path)
    assert header.patient_name == "HADDAD^AMINA"
    assert (header.patient_id, header.accession_number) == ("P1", "ACC1")
    assert header.study_date == dt.date(2026, 3, 7)


def test_missing_fields_and_an_invalid_date_read_as_empty(tmp_path: Path) -> None:
    header = read_study_header(_write(tmp_path / "b.dcm", StudyDate="2026-13-45"))
    assert header.patient_name == "" and header.patient_id == ""
    assert header.study_date is None
    assert header.modality == "CT"
