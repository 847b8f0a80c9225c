"""PS3.15 Basic Profile pseudonymisation: nothing identifying left in the bytes, same volume."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from pipelines.dicom.deidentify import Pseudonymiser, deidentify_file
from pipelines.dicom.read import read_series_volume
from pipelines.errors import NotDicomError
from tests.pipelines.dicom.conftest import SeriesFactory

IDENTIFYING = {
    "patient_name": "Haddad^Amina",
    "patient_id": "MRN-77341",
    "accession_number": "ACC-99812",
    "study_date": dt.date(2024, 3, 7),
}
BIRTH_DATE = "19610412"
INSTITUTION = "Hopital Ibn Sina Rabat"
REFERRER = "Bennani^Youssef"


def _identifying_series(make_series: SeriesFactory, **info: object) -> list[Path]:
    """A CT series with the attributes a hospital's files carry, private tags and references."""
    paths = make_series(
        (6, 8, 8),
        **IDENTIFYING,
        patient_age="063Y",
        extra={
            "PatientBirthDate": BIRTH_DATE,
            "InstitutionName": INSTITUTION,
            "InstitutionAddress": "1 Avenue Mohammed V",
            "ReferringPhysicianName": REFERRER,
            "OperatorsName": "Alaoui^Karim",
            "StationName": "CT-ROOM-2",
            "DeviceSerialNumber": "SN-4471",
            "OtherPatientIDs": "OLD-5521",
        },
        **info,
    )
    for path in paths:
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0029, "HOSPITAL PACS", create=True)
        block.add_new(0x10, "LO", IDENTIFYING["patient_id"])
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = pydicom.dcmread(paths[0]).SOPInstanceUID
        ds.ReferencedImageSequence = DicomSequence([ref])
        ds.file_meta.SourceApplicationEntityTitle = "PACS_MAIN"
        ds.save_as(path, enforce_file_format=True)
    return paths


def _originals(paths: list[Path]) -> list[str]:
    first = pydicom.dcmread(paths[0])
    uids = [str(first.StudyInstanceUID), str(first.SeriesInstanceUID)]
    uids.append(str(first.FrameOfReferenceUID))
    uids += [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
    return uids


def test_deidentified_series_holds_no_identifier_and_reads_to_the_same_volume(
    make_series: SeriesFactory, tmp_path: Path
) -> None:
    paths = _identifying_series(make_series)
    pseudonymiser = Pseudonymiser()
    out = tmp_path / "deid"
    for n, path in enumerate(paths):
        deidentify_file(path, out / f"IM{n:04d}.dcm", pseudonymiser)

    secrets = [*_originals(paths), "Haddad", "Amina", "MRN-77341", BIRTH_DATE, "ACC-99812"]
    secrets += [INSTITUTION, "Bennani", "Alaoui", "CT-ROOM-2", "SN-4471", "OLD-5521", "PACS_MAIN"]
    secrets += ["20240307", "HOSPITAL PACS", "Mohammed"]
    for written in sorted(out.iterdir()):
        data = written.read_bytes()
        assert [s for s in secrets if s.encode() in data] == [], written.name

    before, after = read_series_volume(paths[0].parent), read_series_volume(out)
    np.testing.assert_array_equal(before.array_hu, after.array_hu)
    np.testing.assert_allclose(before.affine_lps, after.affine_lps)


def test_pseudonyms_are_consistent_and_references_stay_coherent(
    make_series: SeriesFactory, tmp_path: Path
) -> None:
    paths = _identifying_series(make_series)
    pseudonymiser = Pseudonymiser()
    written = [deidentify_file(p, tmp_path / "deid" / p.name, pseudonymiser) for p in paths]
    assert len({str(ds.SeriesInstanceUID) for ds in written}) == 1
    assert len({str(ds.FrameOfReferenceUID) for ds in written}) == 1
    first = written[0]
    original = pydicom.dcmread(paths[0])
    assert str(first.StudyInstanceUID) == pseudonymiser.uid(str(original.StudyInstanceUID))
    assert all(
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
        for ds in written
    )
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == original.SOPClassUID  # a DICOM-defined UID is kept
    assert first.PatientName == first.PatientID == pseudonymiser.patients["MRN-77341"]
    assert first.PatientIdentityRemoved == "YES"
    code = first.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    for emptied in ("StudyDate", "AccessionNumber", "PatientBirthDate", "ReferringPhysicianName"):
        assert emptied in first and not first[emptied].value
    for removed in ("InstitutionName", "PatientAge", "SeriesDate", "OperatorsName"):
        assert removed not in first
    kept = ("SliceThickness", "RescaleIntercept", "Modality", "BodyPartExamined", "PixelSpacing")
    assert all(first.get(k) == original.get(k) for k in kept)


def test_two_patients_get_two_stable_pseudonyms(make_series: SeriesFactory, tmp_path: Path) -> None:
    pseudonymiser = Pseudonymiser()
    a = make_series((4, 8, 8), patient_id="A-1")
    b = make_series((4, 8, 8), patient_id="B-2")
    names = {
        str(deidentify_file(p, tmp_path / "o" / f"{i}.dcm", pseudonymiser).PatientID)
        for i, p in enumerate([*a, *b])
    }
    assert len(names) == 2 and set(pseudonymiser.patients) == {"A-1", "B-2"}


def test_a_file_that_is_not_dicom_raises_not_dicom(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(NotDicomError) as raised:
        deidentify_file(text, tmp_path / "o.dcm", Pseudonymiser())
    assert raised.value.code == "dicom.not_dicom"
