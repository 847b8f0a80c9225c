"""Pseudonymise DICOM instances per DICOM PS3.15 Annex E, Basic Application Level Confidentiality
Profile (code 113100), without any option: dates are removed, not shifted.

One :class:`Pseudonymiser` serves one export, so that the same original gives the same pseudonym
in every file: Study, Series, SOP Instance and Frame of Reference UIDs, and every UID a file
references, are replaced consistently (a slice stack keeps its series and frame of reference,
references between objects stay valid); each patient gets one random pseudonym used as both
PatientName and PatientID. The mapping back stays in memory (:attr:`Pseudonymiser.patients`,
:meth:`Pseudonymiser.uid`) for the caller to store apart, as a re-identification key.

Actions, applied at every nesting level:

* the attributes of :data:`BASIC_PROFILE` are emptied (Z) or removed (X);
* every other UID (VR UI) is replaced (U) unless it is a DICOM-defined UID (``1.2.840.10008.*``:
  SOP classes, transfer syntaxes, coding schemes), which identifies nothing;
* every other person name (PN) and every other date, time or date-time (DA, TM, DT) is removed;
* private attributes, curves (50xx) and overlays (60xx) are removed; the file meta is rebuilt and
  the preamble zeroed;
* PatientIdentityRemoved, DeidentificationMethod(CodeSequence) and
  LongitudinalTemporalInformationModified record what was done.

Kept, because the model needs them and the profile does not list them: geometry (orientation,
position, spacing, thickness), pixel data and its description, rescale, modality, body part,
kernel, kVp, manufacturer and model. Burned-in text is not looked for (the Clean Pixel Data
option is not implemented); axial CT slices do not carry it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

from pipelines.errors import NotDicomError

__all__ = [
    "BASIC_PROFILE",
    "BASIC_PROFILE_CODE",
    "ProfileAction",
    "Pseudonymiser",
    "deidentify_file",
]

#: The DCM code of the Basic Application Level Confidentiality Profile (PS3.16 CID 7050).
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
#: UIDs defined by the standard itself (classes, transfer syntaxes): kept as they are.
DICOM_UID_ROOT = "1.2.840.10008."
#: Retired curve groups and repeating overlay groups, removed whole.
_REMOVED_GROUPS = (range(0x5000, 0x5100), range(0x6000, 0x6100))
_DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})


class ProfileAction(StrEnum):
    """The Annex E action codes applied here (D and U are handled by the generic rules)."""

    EMPTY = "Z"
    REMOVE = "X"


_Z = ProfileAction.EMPTY
_X = ProfileAction.REMOVE

#: Table E.1-1 Basic Profile actions for the attributes an image may carry (where the table
#: allows several, the strictest one a CT IOD still accepts: Z for Type 2, else X).
BASIC_PROFILE: dict[str, ProfileAction] = {
    "AccessionNumber": _Z,
    "StudyDate": _Z,
    "StudyTime": _Z,
    "ContentDate": _Z,
    "ContentTime": _Z,
    "ReferringPhysicianName": _Z,
    "StudyID": _Z,
    "PatientBirthDate": _Z,
    "PatientSex": _Z,
    "ContrastBolusAgent": _Z,
    "FillerOrderNumberImagingServiceRequest": _Z,
    "PlacerOrderNumberImagingServiceRequest": _Z,
    **dict.fromkeys(
        (
            "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
            "InstitutionCodeSequence", "StationName", "DeviceSerialNumber", "DetectorID",
            "GantryID", "PlateID", "ReferringPhysicianAddress",
            "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord",
            "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
            "RequestingPhysician", "RequestingService", "ConsultingPhysicianName",
            "ResponsiblePerson", "ResponsibleOrganization", "StudyDescription",
            "SeriesDescription", "ProtocolName", "ImageComments", "DerivationDescription",
            "AcquisitionDeviceProcessingDescription", "AdmittingDiagnosesDescription",
            "RequestedProcedureDescription", "RequestedProcedureID",
            "PerformedProcedureStepID", "PerformedProcedureStepDescription",
            "PerformedStationName", "PerformedLocation", "ScheduledProcedureStepID",
            "RequestAttributesSequence", "ReferencedPatientSequence", "ReferencedStudySequence",
            "ReferencedPerformedProcedureStepSequence", "IssuerOfPatientID", "OtherPatientIDs",
            "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
            "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight", "PatientAddress",
            "PatientMotherBirthName", "PatientTelephoneNumbers", "MilitaryRank",
            "BranchOfService", "MedicalRecordLocator", "MedicalAlerts", "Allergies",
            "CountryOfResidence", "RegionOfResidence", "EthnicGroup", "Occupation",
            "SmokingStatus", "AdditionalPatientHistory", "PregnancyStatus",
            "LastMenstrualDate", "PatientReligiousPreference", "PatientComments",
            "CurrentPatientLocation", "PatientInstitutionResidence", "TimezoneOffsetFromUTC",
            "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
            "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
            "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
        ),
        _X,
    ),
}  # fmt: skip
_PROFILE_TAGS = {int(Tag(keyword)): action for keyword, action in BASIC_PROFILE.items()}


@dataclass
class Pseudonymiser:
    """The replacements of one export: the same original always gets the same pseudonym.

    ``patients`` maps original PatientID (or, without one, the study's UID) to its pseudonym;
    ``uids`` maps original UIDs to theirs. Pseudonyms are random (not derived from the
    original), so they cannot be recomputed from a guessed identity.
    """

    prefix: str = "BASIRA"
    patients: dict[str, str] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)

    def uid(self, original: str) -> str:
        """The pseudonym UID of ``original`` (a new ``2.25.`` UUID-derived UID the first time)."""
        if original not in self.uids:
            self.uids[original] = str(generate_uid(prefix=None))
        return self.uids[original]

    def patient(self, original_id: str) -> str:
        """The pseudonym of the patient known as ``original_id``."""
        if original_id not in self.patients:
            self.patients[original_id] = f"{self.prefix}-{secrets.token_hex(6).upper()}"
        return self.patients[original_id]

    def deidentify(self, ds: Dataset) -> Dataset:
        """Apply the profile (module docstring) to ``ds`` in place and return it."""
        patient_key = str(ds.get("PatientID", "") or "") or str(ds.get("StudyInstanceUID", ""))
        pseudonym = self.patient(patient_key)
        ds.remove_private_tags()
        self._apply(ds)
        ds.PatientName = pseudonym
        ds.PatientID = pseudonym
        _mark(ds)
        if "SOPInstanceUID" in ds:
            ds.file_meta = _file_meta(ds)
        ds.preamble = b"\0" * 128
        return ds

    def _apply(self, ds: Dataset) -> None:
        for elem in list(ds):
            if any(elem.tag.group in groups for groups in _REMOVED_GROUPS):
                del ds[elem.tag]
            elif elem.tag in _PROFILE_TAGS:
                _act(ds, elem, _PROFILE_TAGS[elem.tag])
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._apply(item)
            elif elem.VR == "UI":
                elem.value = self._replace_uids(elem.value)
            elif elem.VR == "PN" or elem.VR in _DATE_TIME_VRS:
                del ds[elem.tag]

    def _replace_uids(self, value: object) -> object:
        if value in (None, ""):
            return value
        if isinstance(value, str):
            return value if value.startswith(DICOM_UID_ROOT) else self.uid(value)
        return [self._replace_uids(v) for v in value]  # type: ignore[attr-defined]


def _act(ds: Dataset, elem: DataElement, action: ProfileAction) -> None:
    if action is ProfileAction.REMOVE:
        del ds[elem.tag]
    else:
        elem.value = DicomSequence() if elem.VR == "SQ" else None


def _mark(ds: Dataset) -> None:
    """Record the de-identification in the dataset (PS3.15 E.1.1 step 4)."""
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    ds.DeidentificationMethod = "DICOM PS3.15 E.1 Basic Profile (Basira); dates removed"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = DicomSequence([code])


def _file_meta(ds: Dataset) -> FileMetaDataset:
    """A fresh file meta: no source, sending or receiving AE titles, the new SOP Instance UID."""
    old = getattr(ds, "file_meta", FileMetaDataset())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = old.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def deidentify_file(src: Path, dst: Path, pseudonymiser: Pseudonymiser) -> Dataset:
    """Read ``src``, pseudonymise it and write it as a Part 10 file at ``dst``.

    Returns the written dataset (pixel data included).

    Raises:
        NotDicomError: ``src`` is not a DICOM file.
    """
    try:
        ds = pydicom.dcmread(src)
    except InvalidDicomError as exc:
        raise NotDicomError(f"{src.name} is not a DICOM file.", path=src.name) from exc
    pseudonymiser.deidentify(ds)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return ds
