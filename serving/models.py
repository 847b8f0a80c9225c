"""The service's tables: tenants and their keys, studies and their stored instances, analysis
jobs, webhook deliveries and the audit log.

Every row that holds patient data carries ``tenant_id`` and every query filters on it
(:mod:`serving.queries`). The database keeps identifiers (UIDs) and bookkeeping only; the
DICOM files themselves live in :mod:`serving.storage`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pipelines.result import StudyStatus
from serving.orm import Base, UTCDateTime, utcnow

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Instance",
    "Job",
    "JobStatus",
    "KeyRole",
    "Study",
    "Tenant",
    "WebhookDelivery",
    "WebhookStatus",
]

UID = String(64)


def _prefix_searchable(length: int) -> String:
    """A string column the worklist searches by prefix, compared byte by byte (the "C"
    collation on PostgreSQL, SQLite's default BINARY): a range ``[q, q⁺)`` on its B-tree index
    then finds exactly the values starting with ``q``, in either database."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def new_id() -> str:
    return str(uuid.uuid4())


class KeyRole(StrEnum):
    """What an API key may do: submit and fetch (``integration``), and read the audit log too."""

    INTEGRATION = "integration"
    ADMIN = "admin"


class JobStatus(StrEnum):
    """Where a job stands: queued, running, or ended the way its study's analysis ended (the
    words of :class:`~pipelines.result.StudyStatus`, mapped by :meth:`ended`)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = StudyStatus.COMPLETED.value
    NOT_ANALYSABLE = StudyStatus.NOT_ANALYSABLE.value
    FAILED = StudyStatus.FAILED.value

    @classmethod
    def ended(cls, status: StudyStatus) -> JobStatus:
        """The status of a job whose study's analysis ended with ``status``."""
        return _ENDED[status]

    @property
    def terminal(self) -> bool:
        return self in _ENDED.values()


#: How a job ends for each way a study's analysis can end.
_ENDED = {
    StudyStatus.COMPLETED: JobStatus.COMPLETED,
    StudyStatus.NOT_ANALYSABLE: JobStatus.NOT_ANALYSABLE,
    StudyStatus.FAILED: JobStatus.FAILED,
}


class WebhookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Tenant(Base):
    """A hospital: its studies are visible to its own keys and AE title only."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    ae_title: Mapped[str | None] = mapped_column(String(16), unique=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    #: Kept in clear: HMAC signing needs the secret itself (it signs, it grants no access).
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key of a tenant, stored as its SHA-256 (the key itself is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    #: The public part of the key, for lookup and for the audit log.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), default=KeyRole.INTEGRATION)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tenant: Mapped[Tenant] = relationship()


class Study(Base):
    """A study a tenant sent, by any way in, with the header fields its worklist row shows.

    The patient and study identifiers come from the first stored instance's header
    (:mod:`serving.study_header`); they are read by the tenant's signed-in users only and never
    logged. ``patient_name_key`` is the name folded for prefix search (upper case, PN
    separators as spaces).
    """

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("tenant_id", "study_instance_uid"),
        Index("ix_studies_tenant_patient_id", "tenant_id", "patient_id"),
        Index("ix_studies_tenant_patient_name", "tenant_id", "patient_name_key"),
        Index("ix_studies_tenant_accession", "tenant_id", "accession_number"),
        Index("ix_studies_tenant_study_date", "tenant_id", "study_date", "study_time"),
        Index("ix_studies_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: New instances arrived since the last job was queued (the quiet-period scheduler's cue).
    needs_analysis: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Instances stored for the study (duplicates not counted).
    n_instances: Mapped[int | None] = mapped_column(Integer, default=0)
    #: DICOM PN as sent (``FAMILY^GIVEN``), alphabetic group.
    patient_name: Mapped[str | None] = mapped_column(String(200))
    patient_name_key: Mapped[str | None] = mapped_column(_prefix_searchable(200))
    patient_id: Mapped[str | None] = mapped_column(_prefix_searchable(64))
    accession_number: Mapped[str | None] = mapped_column(_prefix_searchable(16))
    study_date: Mapped[date | None] = mapped_column(Date)
    #: DICOM TM as sent (``HHMMSS.FFFFFF``, any prefix of it), sorts in time order.
    study_time: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))


class Instance(Base):
    """One stored DICOM instance (the file is in storage under its SHA-256)."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("tenant_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_via: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """The analysis of one study's content (idempotent: one job per tenant, study and content)."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "study_id", "content_sha256"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_tenant_study_created", "tenant_id", "study_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    #: SHA-256 over the sorted (SOP Instance UID, file SHA-256) pairs the job analyses.
    content_sha256: Mapped[str] = mapped_column(String(64))
    #: The ``Instance.id`` values analysed (the study may grow after the job was queued).
    instance_ids: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A queued job is not claimed before this (a STOW-RS transfer that may go on); None: at once.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The study's result JSON (``pipelines.result.StudyResult``) once the job has ended.
    result_json: Mapped[str | None] = mapped_column(Text)
    #: Result objects written by the analysis: file name by kind (``seg``, ``sr``, ``fhir``).
    result_files: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))
    probability: Mapped[float | None]
    #: The result's diagnosis label (``pipelines.result.DiagnosisLabel``), None without one.
    label: Mapped[str | None] = mapped_column(String(32))
    n_findings: Mapped[int | None]

    study: Mapped[Study] = relationship()


class WebhookDelivery(Base):
    """One signed notification to a tenant's webhook, retried with backoff until delivered."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One access to patient data: who, what, when, from where, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tenant_id: Mapped[str | None] = mapped_column(String(36))
    #: ``key:<prefix>``, ``ae:<AE title>``, ``cli`` or ``anonymous``.
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    #: The study UID or job id the action touched (empty for listings).
    resource: Mapped[str] = mapped_column(String(100), default="")
    client: Mapped[str] = mapped_column(String(100), default="")
    outcome: Mapped[str] = mapped_column(String(50))
