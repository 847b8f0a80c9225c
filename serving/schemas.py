"""Request and response bodies of the API (``<Entity>Public`` is what a client sees), and what
every router shares about them: the Study Instance UID path parameter and the documented error
responses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, Field

__all__ = [
    "ERRORS",
    "UID_PATTERN",
    "AuditEventPublic",
    "ErrorBody",
    "JobPublic",
    "ModelPublic",
    "ReasonPublic",
    "RejectedFilePublic",
    "StudyAccepted",
    "StudyPublic",
    "StudyUID",
    "WithheldPublic",
]

#: A DICOM UID: dot-separated decimal numbers.
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
#: A Study Instance UID in a path (``/v1/studies/{study_uid}``, ``/ui/studies/{study_uid}``).
StudyUID = Annotated[str, PathParam(max_length=64, pattern=UID_PATTERN)]


class ErrorBody(BaseModel):
    """Every error: a stable code (``docs/errors.md``), one sentence, machine-readable detail."""

    code: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


#: The error answers every API route documents (a route adds its own, e.g. 403 or 507).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 422, 429)
}


class RejectedFilePublic(BaseModel):
    path: str
    code: str
    message: str


class StudyAccepted(BaseModel):
    """An upload that was stored and queued for analysis."""

    study_instance_uid: str
    job_id: str
    status: str
    n_instances_stored: int
    n_duplicates: int
    rejected_files: list[RejectedFilePublic]


class ReasonPublic(BaseModel):
    code: str
    message: str


class WithheldPublic(BaseModel):
    """What a completed analysis left out: a finding no output can show (``finding_id``) or an
    object that could not be released (``output``), with its code (``docs/errors.md``)."""

    code: str
    message: str
    output: str | None = None
    finding_id: int | None = None


class ModelPublic(BaseModel):
    name: str
    version: str


class JobPublic(BaseModel):
    """An analysis job: poll until ``status`` is completed, not_analysable or failed."""

    id: str
    study_instance_uid: str
    status: str
    reasons: list[ReasonPublic]
    #: completed jobs: findings left out of every output and result objects not released.
    withheld: list[WithheldPublic] = Field(default_factory=list)
    attempts: int
    #: a queued job waits until then (a STOW-RS transfer going quiet); null: as soon as a
    #: worker is free.
    not_before: datetime | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model: ModelPublic | None
    result_url: str | None


class StudyPublic(BaseModel):
    study_instance_uid: str
    n_instances: int
    n_series: int
    first_received_at: datetime
    last_received_at: datetime
    latest_job: JobPublic | None


class AuditEventPublic(BaseModel):
    at: datetime
    actor: str
    action: str
    resource: str
    client: str
    outcome: str
