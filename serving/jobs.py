"""Durable analysis jobs in the database.

A job is recorded in the same transaction as the instances it analyses, so an acknowledged
study always has one. Workers claim a job with a conditional update (the same code on SQLite and
PostgreSQL, where ``SKIP LOCKED`` also spares contention), hold it under a lease they renew, and
a job whose worker died (crash, kill, power cut) is taken up again when its lease runs out, at
most ``max_attempts`` times. Jobs are idempotent per study content: the same instances give the
same job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.models import Instance, Job, JobStatus, Study, Tenant, WebhookDelivery
from serving.orm import utcnow

__all__ = [
    "RETRIES_EXHAUSTED",
    "JobOutcome",
    "claim_next",
    "content_sha256",
    "enqueue_quiet_studies",
    "enqueue_study",
    "finish_job",
    "queue_depth",
    "reclaim_expired",
    "renew_lease",
]

#: The reason code of a job whose every attempt ended with its worker gone.
RETRIES_EXHAUSTED = "job.retries_exhausted"


@dataclass(frozen=True)
class JobOutcome:
    """What an analysis produced, to be recorded on its job."""

    status: JobStatus
    reasons: list[dict[str, str]]
    result_json: str
    result_files: dict[str, str]
    model_name: str
    model_version: str
    probability: float | None
    n_findings: int
    #: The diagnosis label (``pipelines.result.DiagnosisLabel``), None without a diagnosis.
    label: str | None = None


def content_sha256(instances: Sequence[Instance]) -> str:
    """The identity of a study's content: its (SOP Instance UID, file SHA-256) pairs, sorted."""
    digest = hashlib.sha256()
    for uid, sha in sorted((inst.sop_instance_uid, inst.sha256) for inst in instances):
        digest.update(f"{uid}\0{sha}\n".encode())
    return digest.hexdigest()


def enqueue_study(session: Session, study: Study, *, not_before: datetime | None = None) -> Job:
    """The job analysing ``study``'s current content: the existing one, or a queued one.

    ``not_before``: the job is not claimed before then (a STOW-RS transfer, which may go on
    over further requests); None: at once (an upload, ``analyze``, a study gone quiet). A
    queued job of the study that no worker has taken yet follows the study's content: it is
    retargeted to the new content rather than a second job being queued, so the job a sender
    was told about analyses the whole transfer. A job that ended ``failed`` is queued again
    (a retry after a transient fault); any other existing job is returned as it is.
    """
    instances = session.scalars(select(Instance).where(Instance.study_id == study.id)).all()
    digest = content_sha256(instances)
    study.needs_analysis = False
    existing = _job_for(session, study, digest)
    if existing is None:
        existing = _retarget_pending(session, study, digest, instances, not_before)
    if existing is None:
        try:
            with session.begin_nested():
                existing = Job(
                    tenant_id=study.tenant_id,
                    study_id=study.id,
                    content_sha256=digest,
                    instance_ids=sorted(inst.id for inst in instances),
                    status=JobStatus.QUEUED,
                    reasons=[],
                    attempts=0,
                    result_files={},
                    not_before=not_before,
                )
                session.add(existing)
            return existing
        except IntegrityError:  # queued concurrently by another request
            existing = _job_for(session, study, digest)
            assert existing is not None
    if existing.status == JobStatus.FAILED:
        _requeue(existing, attempts=0)
        existing.reasons = []
        existing.not_before = not_before
    elif existing.status == JobStatus.QUEUED:
        existing.not_before = _later_start(existing.not_before, not_before)
    return existing


def _retarget_pending(
    session: Session,
    study: Study,
    digest: str,
    instances: Sequence[Instance],
    not_before: datetime | None,
) -> Job | None:
    """The study's queued, never-started job, now analysing ``digest``; None when there is
    none (or a worker claimed it meanwhile: the conditional update then matches nothing)."""
    pending = session.scalar(
        select(Job)
        .where(
            Job.tenant_id == study.tenant_id,
            Job.study_id == study.id,
            Job.status == JobStatus.QUEUED,
            Job.attempts == 0,
        )
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    if pending is None:
        return None
    try:
        with session.begin_nested():
            moved = session.execute(
                update(Job)
                .where(Job.id == pending.id, Job.status == JobStatus.QUEUED, Job.attempts == 0)
                .values(
                    content_sha256=digest,
                    instance_ids=sorted(inst.id for inst in instances),
                    not_before=_later_start(pending.not_before, not_before),
                )
                .execution_options(synchronize_session=False)
            )
    except IntegrityError:  # the same content was queued concurrently: that job is the one
        return _job_for(session, study, digest)
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Job, pending.id, populate_existing=True)


def _later_start(current: datetime | None, asked: datetime | None) -> datetime | None:
    """At once when anyone asks for at once; otherwise the later of the two waits."""
    if current is None or asked is None:
        return None
    return max(current, asked)


def enqueue_quiet_studies(session: Session, quiet_s: float, now: datetime | None = None) -> int:
    """Queue every study that received instances and has been quiet ``quiet_s`` seconds."""
    cutoff = (now or utcnow()) - timedelta(seconds=quiet_s)
    studies = session.scalars(
        select(Study).where(Study.needs_analysis.is_(True), Study.last_received_at <= cutoff)
    ).all()
    for study in studies:
        enqueue_study(session, study)
    return len(studies)


def reclaim_expired(session: Session, max_attempts: int, now: datetime | None = None) -> int:
    """Queue again the running jobs whose lease ran out (or fail them after ``max_attempts``).

    Each job is taken back by a conditional update, so two workers reclaiming at once never
    both act on it: a stale second write would otherwise turn a job that a third worker had
    just claimed back into ``queued``. On PostgreSQL, rows another worker is taking back are
    skipped rather than waited for.
    """
    now = now or utcnow()
    expired = session.scalars(
        select(Job.id)
        .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    reclaimed = 0
    for job_id in expired:
        taken = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .values(lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]  # finished or renewed meanwhile
            continue
        job = session.get(Job, job_id, populate_existing=True)
        assert job is not None  # the update above just matched it
        if job.attempts >= max_attempts:
            _fail_exhausted(session, job, now)
        else:
            _requeue(job, attempts=job.attempts)
        reclaimed += 1
    return reclaimed


def _fail_exhausted(session: Session, job: Job, now: datetime) -> None:
    job.status = JobStatus.FAILED
    job.finished_at = now
    job.reasons = [
        {
            "code": RETRIES_EXHAUSTED,
            "message": f"The analysis stopped without a result {job.attempts} times "
            "(worker lost); it is not retried again.",
        }
    ]
    _notify(session, job)


def claim_next(
    session: Session, worker_id: str, lease_s: float, now: datetime | None = None
) -> Job | None:
    """Take the oldest queued job for ``worker_id`` under a lease, or None when none is queued."""
    now = now or utcnow()
    candidates = (
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            or_(Job.not_before.is_(None), Job.not_before <= now),
        )
        .order_by(Job.created_at)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for job_id in session.scalars(candidates.limit(8)).all():
        claimed = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.QUEUED,
                or_(Job.not_before.is_(None), Job.not_before <= now),
            )
            .values(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                attempts=Job.attempts + 1,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            session.commit()
            return session.get(Job, job_id, populate_existing=True)
    session.commit()
    return None


def renew_lease(session: Session, job_id: str, worker_id: str, lease_s: float) -> bool:
    """Extend the lease of a job this worker still holds; False when it lost it."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


def finish_job(session: Session, job_id: str, worker_id: str, outcome: JobOutcome) -> Job | None:
    """Record ``outcome`` on the job if ``worker_id`` still holds it (else None: discarded).

    The hold is checked by a conditional update, so a job taken back meanwhile (its lease ran
    out) is never overwritten by the worker that lost it.
    """
    held = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None  # the update above just matched it
    job.status = outcome.status
    job.reasons = outcome.reasons
    job.result_json = outcome.result_json
    job.result_files = outcome.result_files
    job.model_name = outcome.model_name
    job.model_version = outcome.model_version
    job.probability = outcome.probability
    job.label = outcome.label
    job.n_findings = outcome.n_findings
    job.finished_at = utcnow()
    _notify(session, job)
    return job


def queue_depth(session: Session) -> dict[str, int]:
    """Number of jobs per status (the ``/metrics`` queue depth)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


def _job_for(session: Session, study: Study, digest: str) -> Job | None:
    return session.scalar(
        select(Job).where(
            Job.tenant_id == study.tenant_id,
            Job.study_id == study.id,
            Job.content_sha256 == digest,
        )
    )


def _requeue(job: Job, *, attempts: int) -> None:
    job.status = JobStatus.QUEUED
    job.attempts = attempts
    job.worker_id = None
    job.lease_expires_at = None
    job.started_at = None
    job.finished_at = None


def _notify(session: Session, job: Job) -> None:
    """Queue a webhook delivery for a job that just ended, if its tenant has a webhook."""
    tenant = session.get(Tenant, job.tenant_id)
    if tenant is None or not tenant.webhook_url:
        return
    study = session.get(Study, job.study_id)
    payload = {
        "event": "job.finished",
        "job_id": job.id,
        "study_instance_uid": study.study_instance_uid if study else None,
        "status": str(job.status),
        "reasons": job.reasons,
        "result_url": f"/v1/studies/{study.study_instance_uid}/result" if study else None,
    }
    session.add(
        WebhookDelivery(
            tenant_id=job.tenant_id,
            job_id=job.id,
            url=tenant.webhook_url,
            payload=json.dumps(payload, sort_keys=True),
        )
    )
