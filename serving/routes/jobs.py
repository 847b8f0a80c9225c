"""Jobs: the state of one analysis."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam

from serving.deps import PrincipalDep, ServicesDep, SessionDep, audit_entry
from serving.models import Study
from serving.queries import job_public, tenant_job
from serving.schemas import ERRORS, JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, PathParam(max_length=36, pattern=r"^[0-9a-f-]{36}$")]


@router.get("/{job_id}", response_model=JobPublic, responses=ERRORS)
def get_job(
    job_id: JobId,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> JobPublic:
    """The job's status (queued, running, completed, not_analysable, failed) and reasons."""
    with services.auditor.audited(audit_entry(principal, request, "job.read", job_id)):
        job = tenant_job(session, principal.tenant_id, job_id)
        study = session.get(Study, job.study_id)
        assert study is not None  # a job's study row is never deleted before the job
        return job_public(job, study.study_instance_uid)
