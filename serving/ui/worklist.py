"""The worklist: a hospital's studies with their latest analysis and review state, most
suspicious first, then longest waiting."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.models import Job, JobStatus, Study
from serving.ui.models import Review, ReviewStatus

__all__ = ["WorkStatus", "WorklistRow", "worklist"]


class WorkStatus(StrEnum):
    """What a radiologist needs to know about a study on the worklist."""

    ANALYSING = "analysing"
    NEW = "new"
    IN_REVIEW = "in_review"
    SIGNED = "signed"
    NOT_ANALYSABLE = "not_analysable"
    FAILED = "failed"


@dataclass(frozen=True)
class WorklistRow:
    study_instance_uid: str
    job_id: str
    status: WorkStatus
    label: str | None
    probability: float | None
    n_findings: int | None
    received_at: datetime

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["received_at"] = self.received_at.isoformat()
        return row


def _status(job: Job, review: Review | None) -> WorkStatus:
    if job.status == JobStatus.NOT_ANALYSABLE:
        return WorkStatus.NOT_ANALYSABLE
    if job.status == JobStatus.FAILED:
        return WorkStatus.FAILED
    if job.status != JobStatus.COMPLETED:
        return WorkStatus.ANALYSING
    if review is None:
        return WorkStatus.NEW
    return WorkStatus.SIGNED if review.status == ReviewStatus.SIGNED else WorkStatus.IN_REVIEW


def _label(job: Job) -> str | None:
    if job.probability is None:
        return None
    diagnosis = json.loads(job.result_json or "{}").get("diagnosis") or {}
    return str(diagnosis["label"]) if "label" in diagnosis else None


def worklist(
    session: Session, tenant_id: str, *, status: WorkStatus | None = None, search: str = ""
) -> list[WorklistRow]:
    """The tenant's studies (latest job each), filtered by status and a UID fragment."""
    latest = (
        select(Job.study_id, func.max(Job.created_at).label("at"))
        .where(Job.tenant_id == tenant_id)
        .group_by(Job.study_id)
        .subquery()
    )
    query = (
        select(Job, Study, Review)
        .join(latest, (Job.study_id == latest.c.study_id) & (Job.created_at == latest.c.at))
        .join(Study, Study.id == Job.study_id)
        .outerjoin(Review, (Review.job_id == Job.id) & (Review.tenant_id == tenant_id))
        .where(Job.tenant_id == tenant_id, Study.tenant_id == tenant_id)
    )
    if search:
        query = query.where(Study.study_instance_uid.contains(search.strip()))
    rows = [
        WorklistRow(
            study.study_instance_uid,
            job.id,
            _status(job, review),
            _label(job),
            job.probability,
            job.n_findings,
            study.created_at,
        )
        for job, study, review in session.execute(query).all()
    ]
    if status is not None:
        rows = [row for row in rows if row.status == status]
    rows.sort(key=lambda r: (-(r.probability if r.probability is not None else -1), r.received_at))
    return rows
