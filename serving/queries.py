"""Tenant-scoped lookups: every read of patient data goes through here and filters on the
tenant, so another tenant's study or job is simply not found (404, never 403)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.errors import JobNotFoundError, StudyNotFoundError
from serving.models import Instance, Job, JobStatus, Study
from serving.schemas import JobPublic, ModelPublic, ReasonPublic, StudyPublic, WithheldPublic

__all__ = [
    "job_public",
    "job_withheld",
    "latest_job",
    "study_public",
    "tenant_job",
    "tenant_study",
]


def tenant_study(session: Session, tenant_id: str, study_uid: str) -> Study:
    study = session.scalar(
        select(Study).where(Study.tenant_id == tenant_id, Study.study_instance_uid == study_uid)
    )
    if study is None:
        raise StudyNotFoundError(
            "No study with this Study Instance UID was received from your hospital.",
            study_instance_uid=study_uid,
        )
    return study


def tenant_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.id == job_id))
    if job is None:
        raise JobNotFoundError("No job with this id belongs to your hospital.", job_id=job_id)
    return job


def latest_job(session: Session, study: Study) -> Job | None:
    return session.scalar(
        select(Job)
        .where(Job.tenant_id == study.tenant_id, Job.study_id == study.id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
    )


def job_public(job: Job, study_uid: str) -> JobPublic:
    ended = job.finished_at is not None
    return JobPublic(
        id=job.id,
        study_instance_uid=study_uid,
        status=job.status,
        reasons=[ReasonPublic(**reason) for reason in job.reasons],
        withheld=[WithheldPublic(**item) for item in job_withheld(job)],
        attempts=job.attempts,
        not_before=job.not_before if job.status == JobStatus.QUEUED else None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        model=ModelPublic(name=job.model_name, version=job.model_version)
        if job.model_name and job.model_version
        else None,
        result_url=f"/v1/studies/{study_uid}/result" if ended else None,
    )


def job_withheld(job: Job) -> list[dict[str, Any]]:
    """The ``withheld`` items of the job's result JSON (none before it ends)."""
    if not job.result_json:
        return []
    return list(json.loads(job.result_json).get("withheld", []))


def study_public(session: Session, study: Study) -> StudyPublic:
    n_instances, n_series = session.execute(
        select(
            func.count(Instance.id), func.count(func.distinct(Instance.series_instance_uid))
        ).where(Instance.tenant_id == study.tenant_id, Instance.study_id == study.id)
    ).one()
    job = latest_job(session, study)
    return StudyPublic(
        study_instance_uid=study.study_instance_uid,
        n_instances=n_instances,
        n_series=n_series,
        first_received_at=study.created_at,
        last_received_at=study.last_received_at,
        latest_job=job_public(job, study.study_instance_uid) if job else None,
    )
