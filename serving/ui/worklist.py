"""The worklist: a hospital's studies with their latest analysis and review state, one page at
a time, sorted by any column (most suspicious first, then longest waiting, by default),
filtered by status, AI label, study date and patient, and searched by patient ID, name or
accession number.

Everything is done by the database, so a page costs the same with ten or ten thousand
studies: searches are prefix ranges on indexed columns (:mod:`serving.models`), and the status
is one SQL expression over the latest job and its review.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    case,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from pipelines.result import DiagnosisLabel
from serving.errors import WorklistDateRangeError
from serving.models import Job, JobStatus, Study
from serving.study_header import StudyHeader, name_key
from serving.ui.models import Review, ReviewStatus

__all__ = [
    "SortOrder",
    "WorkStatus",
    "WorklistFilter",
    "WorklistPage",
    "WorklistRow",
    "WorklistSort",
    "worklist",
]


class WorkStatus(StrEnum):
    """What a radiologist needs to know about a study on the worklist."""

    ANALYSING = "analysing"
    NEW = "new"
    IN_REVIEW = "in_review"
    SIGNED = "signed"
    NOT_ANALYSABLE = "not_analysable"
    FAILED = "failed"


class WorklistSort(StrEnum):
    """The column a worklist is sorted by; ``suspicion`` is AI probability, highest first,
    then longest waiting (``order`` does not apply to it)."""

    SUSPICION = "suspicion"
    PATIENT_NAME = "patient_name"
    PATIENT_ID = "patient_id"
    ACCESSION = "accession_number"
    STUDY_DATE = "study_date"
    DESCRIPTION = "study_description"
    MODALITY = "modality"
    IMAGES = "n_images"
    LABEL = "label"
    PROBABILITY = "probability"
    FINDINGS = "n_findings"
    STATUS = "status"
    RECEIVED = "received_at"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class WorklistFilter:
    """Which studies a worklist page shows; empty or None fields do not filter.

    ``search`` matches the start of the patient ID, of the accession number or of the
    patient name, case and PN separators aside (``doe jo`` finds ``Doe^John``), or a whole
    Study Instance UID; ``patient_id`` is one patient's studies (exact); the study date
    range is inclusive.
    """

    status: WorkStatus | None = None
    label: DiagnosisLabel | None = None
    search: str = ""
    patient_id: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None


@dataclass(frozen=True)
class WorklistRow(StudyHeader):
    """One study on the worklist: its header fields (:class:`StudyHeader`; patient identifiers,
    for the study's tenant only) and its analysis."""

    study_instance_uid: str
    job_id: str
    status: WorkStatus
    label: str | None
    probability: float | None
    n_findings: int | None
    received_at: dt.datetime
    n_images: int

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["received_at"] = self.received_at.isoformat()
        row["study_date"] = self.study_date.isoformat() if self.study_date else None
        return row


@dataclass(frozen=True)
class WorklistPage:
    """``rows`` of ``total`` matching studies, from ``offset``."""

    total: int
    offset: int
    limit: int
    rows: list[WorklistRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "rows": [row.to_dict() for row in self.rows],
        }


#: The worklist status of a (latest job, review or NULL) pair, as SQL.
_STATUS: ColumnElement[str] = case(
    (Job.status == JobStatus.NOT_ANALYSABLE.value, WorkStatus.NOT_ANALYSABLE.value),
    (Job.status == JobStatus.FAILED.value, WorkStatus.FAILED.value),
    (Job.status != JobStatus.COMPLETED.value, WorkStatus.ANALYSING.value),
    (Review.id.is_(None), WorkStatus.NEW.value),
    (Review.status == ReviewStatus.SIGNED.value, WorkStatus.SIGNED.value),
    else_=WorkStatus.IN_REVIEW.value,
)

_SORT_COLUMNS: dict[WorklistSort, tuple[SQLColumnExpression[Any], ...]] = {
    WorklistSort.PATIENT_NAME: (Study.patient_name_key,),
    WorklistSort.PATIENT_ID: (Study.patient_id,),
    WorklistSort.ACCESSION: (Study.accession_number,),
    WorklistSort.STUDY_DATE: (Study.study_date, Study.study_time),
    WorklistSort.DESCRIPTION: (Study.study_description,),
    WorklistSort.MODALITY: (Study.modality,),
    WorklistSort.IMAGES: (Study.n_instances,),
    WorklistSort.LABEL: (Job.label,),
    WorklistSort.PROBABILITY: (Job.probability,),
    WorklistSort.FINDINGS: (Job.n_findings,),
    WorklistSort.STATUS: (_STATUS,),
    WorklistSort.RECEIVED: (Study.created_at,),
}


def worklist(
    session: Session,
    tenant_id: str,
    where: WorklistFilter,
    *,
    sort: WorklistSort = WorklistSort.SUSPICION,
    order: SortOrder = SortOrder.ASC,
    offset: int = 0,
    limit: int = 50,
) -> WorklistPage:
    """One page of the tenant's studies (latest job each) matching ``where``.

    Raises:
        WorklistDateRangeError: ``where.date_from`` is after ``where.date_to``.
    """
    if where.date_from and where.date_to and where.date_from > where.date_to:
        raise WorklistDateRangeError(
            "The study date range ends before it starts.",
            date_from=where.date_from.isoformat(),
            date_to=where.date_to.isoformat(),
        )
    query = _filtered(_latest_jobs(tenant_id), where)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(*_ordering(sort, order)).offset(offset).limit(limit)
    rows = [_row(study, job, status) for study, job, status in session.execute(page).all()]
    return WorklistPage(total, offset, limit, rows)


def _latest_jobs(tenant_id: str) -> Select[Study, Job, str]:
    """Each of the tenant's studies with its latest job (as :func:`serving.queries.latest_job`
    picks it), that job's review and the status. The latest job is a correlated lookup on
    ``ix_jobs_tenant_study_created``, so the plan starts from the studies' own indexes."""
    latest = (
        select(Job.id)
        .where(Job.tenant_id == tenant_id, Job.study_id == Study.id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
        .correlate(Study)
        .scalar_subquery()
    )
    return (
        select(Study, Job, _STATUS)
        .join(Job, Job.id == latest)
        .outerjoin(Review, (Review.job_id == Job.id) & (Review.tenant_id == tenant_id))
        .where(Study.tenant_id == tenant_id)
    )


def _filtered(query: Select[Study, Job, str], where: WorklistFilter) -> Select[Study, Job, str]:
    if where.status is not None:
        query = query.where(_STATUS == where.status.value)  # noqa: SIM300 (a SQL expression)
    if where.label is not None:
        query = query.where(Job.label == where.label.value)
    if where.patient_id:
        query = query.where(Study.patient_id == where.patient_id)
    if where.date_from is not None:
        query = query.where(Study.study_date >= where.date_from)
    if where.date_to is not None:
        query = query.where(Study.study_date <= where.date_to)
    text = where.search.strip()
    if text:
        query = query.where(
            or_(
                _starts_with(Study.patient_id, text),
                _starts_with(Study.accession_number, text),
                _starts_with(Study.patient_name_key, name_key(text)),
                Study.study_instance_uid == text,
            )
        )
    return query


def _starts_with(column: SQLColumnExpression[Any], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range its index answers: ``[prefix, prefix⁺)``,
    where ``prefix⁺`` is ``prefix`` with its last character's code point one higher (the
    columns compare bytes, and UTF-8 keeps code point order)."""
    if not prefix:
        return false()
    upper = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
    return and_(column >= prefix, column < upper)


def _ordering(sort: WorklistSort, order: SortOrder) -> list[ColumnElement[Any]]:
    """The ORDER BY of ``sort``: empty values last either way, then the study's id for a
    stable page order."""
    keys: list[ColumnElement[Any]]
    if sort is WorklistSort.SUSPICION:
        keys = [Job.probability.desc().nulls_last(), Study.created_at.asc()]
    elif order is SortOrder.DESC:
        keys = [column.desc().nulls_last() for column in _SORT_COLUMNS[sort]]
    else:
        keys = [column.asc().nulls_last() for column in _SORT_COLUMNS[sort]]
    return [*keys, Study.id.asc()]


def _row(study: Study, job: Job, status: str) -> WorklistRow:
    return WorklistRow(
        study_instance_uid=study.study_instance_uid,
        job_id=job.id,
        status=WorkStatus(status),
        label=job.label,
        probability=job.probability,
        n_findings=job.n_findings,
        received_at=study.created_at,
        n_images=study.n_instances or 0,
        **asdict(StudyHeader.of(study)),
    )
