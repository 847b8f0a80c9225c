"""The study-level header fields a worklist row shows (patient, accession, date, description),
read once per study from a stored instance's header and kept on :class:`serving.models.Study`.

Why kept in the database and not read at view time: sorting, filtering and searching thousands
of studies by patient or accession needs them in indexed columns. They are patient
identifiers: only the study's tenant reads them (every query filters on it), and nothing here
logs them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import cast

import pydicom
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from sqlalchemy import String, select
from sqlalchemy.orm import Session

from serving.models import Instance, Study
from serving.storage import InstanceStore

__all__ = ["StudyHeader", "describe_stored_studies", "name_key", "read_study_header"]

log = logging.getLogger(__name__)

_TAGS = [
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "Modality",
]
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class StudyHeader:
    """What the worklist shows of a study; empty strings and None where the header has none."""

    patient_name: str
    patient_id: str
    accession_number: str
    study_date: dt.date | None
    study_time: str
    study_description: str
    modality: str

    @classmethod
    def of(cls, study: Study) -> StudyHeader:
        """The fields as ``study`` keeps them (a field never read is empty)."""
        return cls(
            patient_name=study.patient_name or "",
            patient_id=study.patient_id or "",
            accession_number=study.accession_number or "",
            study_date=study.study_date,
            study_time=study.study_time or "",
            study_description=study.study_description or "",
            modality=study.modality or "",
        )

    def apply_to(self, study: Study) -> None:
        """Record these fields on ``study`` with the name's search key, each cut to its
        column's length (a value longer than DICOM allows is shortened, not refused)."""
        values = {f.name: getattr(self, f.name) for f in fields(StudyHeader)}
        texts = {name: value for name, value in values.items() if isinstance(value, str)}
        texts["patient_name_key"] = name_key(self.patient_name)
        for column, value in texts.items():
            length = cast(String, Study.__table__.c[column].type).length
            setattr(study, column, value[:length])
        study.study_date = self.study_date


def name_key(text: str) -> str:
    """``text`` folded for name search: upper case, the PN separators ``^`` and ``=`` and runs
    of white space as one space (``"Doe^John"`` and ``"doe john"`` both give ``"DOE JOHN"``)."""
    return _SPACES.sub(" ", text.replace("^", " ").replace("=", " ")).strip().upper()


def read_study_header(path: Path) -> StudyHeader:
    """The study fields of the DICOM instance at ``path``; a missing or invalid date reads as
    None, any other missing field as empty.

    Raises:
        InvalidDicomError: ``path`` is not a DICOM file.
        OSError: ``path`` cannot be read.
    """
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    return StudyHeader(
        patient_name=_person_name(ds.get("PatientName")),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_date(_text(ds, "StudyDate")),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"),
    )


def _person_name(value: object) -> str:
    """The alphabetic form of a PN value; the first name of a multi-valued one (a header may
    list several, DICOM allows it), and the raw text of a value that is not a person name."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    if value is None:
        return ""
    return str(value.alphabetic if isinstance(value, PersonName) else value).strip()


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _date(value: str) -> dt.date | None:
    """A DICOM DA (``YYYYMMDD``) as a date; None when empty or not a valid date."""
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


def describe_stored_studies(session: Session, store: InstanceStore) -> int:
    """Fill the header fields of the studies stored before the worklist kept them (a database
    upgraded from an earlier version), from one stored instance each; returns how many.

    Run whenever the services open the database (``basira serve``, ``basira worker`` and the
    service's CLI commands); on an up-to-date database it is one query that finds no study (a
    scan of the studies table: no index covers ``patient_id IS NULL`` across hospitals). A study
    whose file cannot be read keeps empty fields and is not tried again.
    """
    undescribed = session.execute(
        select(Study, Instance.sha256)
        .join(Instance, Instance.study_id == Study.id)
        .where(Study.patient_id.is_(None))
        .order_by(Study.id, Instance.id)
    ).all()
    described: set[int] = set()
    for study, sha256 in undescribed:
        if study.id in described:
            continue
        described.add(study.id)
        try:
            header = read_study_header(store.instance_path(study.tenant_id, sha256))
        except Exception as exc:  # best-effort display fields: never stop a start for them
            log.warning("study header fields not readable: %s", type(exc).__name__)
            header = StudyHeader("", "", "", None, "", "", "")
        header.apply_to(study)
    return len(described)
