"""Studies: upload one (multipart files or a zip), ask for its analysis, read its state and its
results (JSON, DICOM SEG, DICOM SR, FHIR)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from serving.deps import PrincipalDep, ServicesDep, SessionDep, audit_entry
from serving.errors import (
    EmptyUploadError,
    NothingAcceptedError,
    ResultNotReadyError,
    ResultObjectNotFoundError,
)
from serving.ingest import Door, IngestReport, expand_archives, ingest
from serving.jobs import enqueue_study
from serving.models import Job, JobStatus
from serving.multipart import spool_multipart
from serving.queries import job_public, job_withheld, latest_job, study_public, tenant_study
from serving.schemas import (
    ERRORS,
    ErrorBody,
    JobPublic,
    RejectedFilePublic,
    StudyAccepted,
    StudyPublic,
    StudyUID,
)
from serving.services import Services
from serving.storage import SpooledFile
from serving.tenants import Principal

router = APIRouter(prefix="/v1/studies", tags=["studies"])

MEDIA_TYPES = {
    "seg": "application/dicom",
    "sr": "application/dicom",
    "fhir": "application/fhir+json",
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                        }
                    },
                    "required": ["files"],
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=StudyAccepted,
    responses=ERRORS | {507: {"model": ErrorBody}},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_study(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> StudyAccepted:
    """Store one study's DICOM files (or zips of them) and queue its analysis.

    Every accepted file is on disk and recorded, and the job exists, before the answer is sent.
    Files that are not usable CT instances are listed in ``rejected_files`` with a code.
    """
    entry = audit_entry(principal, request, "study.upload")
    with services.auditor.audited(entry), services.store.workspace() as folder:
        parts = await spool_multipart(
            request.stream(),
            request.headers.get("content-type", ""),
            "multipart/form-data",
            folder,
            max_parts=services.settings.max_parts,
        )
        files = [part.file for part in parts if part.is_file]
        if not files:
            raise EmptyUploadError("The upload holds no file; send DICOM files in 'files'.")
        accepted = await run_in_threadpool(_store_upload, services, principal, files)
        entry.resource = accepted.study_instance_uid
        return accepted


def _store_upload(
    services: Services, principal: Principal, files: list[SpooledFile]
) -> StudyAccepted:
    expanded = expand_archives(files, services.archive_limits)
    with services.db.session() as session:
        report = ingest(
            session, services.store, principal.tenant_id, expanded, Door.UPLOAD, one_study=True
        )
        if not report.studies and not report.stored:
            raise NothingAcceptedError(
                f"None of the {len(expanded)} files is a usable CT instance.",
                rejected_files=[r.to_dict() for r in report.refused],
            )
        study = next(iter(report.studies.values())) if report.studies else None
        if study is None:  # every file was already stored: the same study, sent again
            study = tenant_study(session, principal.tenant_id, report.stored[0].study_instance_uid)
        job = enqueue_study(session, study)
        session.flush()
        return _accepted(study.study_instance_uid, job, report)


def _accepted(study_uid: str, job: Job, report: IngestReport) -> StudyAccepted:
    return StudyAccepted(
        study_instance_uid=study_uid,
        job_id=job.id,
        status=job.status,
        n_instances_stored=sum(not s.duplicate for s in report.stored),
        n_duplicates=sum(s.duplicate for s in report.stored),
        rejected_files=[RejectedFilePublic(**r.to_dict()) for r in report.refused],
    )


@router.get("/{study_uid}", response_model=StudyPublic, responses=ERRORS)
def get_study(
    study_uid: StudyUID,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> StudyPublic:
    """What was received for a study and the state of its latest analysis."""
    with services.auditor.audited(audit_entry(principal, request, "study.read", study_uid)):
        return study_public(session, tenant_study(session, principal.tenant_id, study_uid))


@router.post("/{study_uid}/analyze", status_code=202, response_model=JobPublic, responses=ERRORS)
def analyze_study(
    study_uid: StudyUID,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> JobPublic:
    """Queue the analysis of the study's current content now, without waiting for it to go
    quiet (idempotent: the same content gives the same job)."""
    with services.auditor.audited(audit_entry(principal, request, "study.analyze", study_uid)):
        study = tenant_study(session, principal.tenant_id, study_uid)
        job = enqueue_study(session, study)
        # Committed before the audit record: on SQLite an open write here would hold the
        # database lock the auditor's own transaction waits for. And a 202 means queued.
        session.commit()
        return job_public(job, study_uid)


@router.get(
    "/{study_uid}/result",
    responses=ERRORS
    | {
        200: {
            "description": "The result JSON (docs/schemas/result.schema.json)",
            "content": {"application/json": {}},
        }
    },
)
def get_result(
    study_uid: StudyUID,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> Response:
    """The result JSON of the study's latest analysis (published schema, ``schema_version``)."""
    with services.auditor.audited(audit_entry(principal, request, "result.read", study_uid)):
        job = _ended_job(session, principal, study_uid)
        if not job.result_json:  # the worker died on every attempt: the job's reasons say so
            raise ResultObjectNotFoundError(
                f"The analysis ended {job.status} without a result; see the job's reasons.",
                job_id=job.id,
                status=job.status,
                reasons=job.reasons,
            )
        return Response(job.result_json, media_type="application/json")


@router.get(
    "/{study_uid}/result/{kind}",
    responses=ERRORS
    | {
        200: {
            "description": "The DICOM SEG or SR (application/dicom) or the FHIR R4 bundle",
            "content": {"application/dicom": {}, "application/fhir+json": {}},
        }
    },
)
def get_result_object(
    study_uid: StudyUID,
    kind: Annotated[str, PathParam(pattern="^(seg|sr|fhir)$")],
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> Response:
    """The study's DICOM SEG, DICOM SR (TID 1500) or FHIR R4 DiagnosticReport bundle."""
    with services.auditor.audited(
        audit_entry(principal, request, f"result.{kind}.read", study_uid)
    ):
        job = _ended_job(session, principal, study_uid)
        name = job.result_files.get(kind)
        if not name:
            withheld = [item for item in job_withheld(job) if item.get("output") == kind]
            if withheld:
                raise ResultObjectNotFoundError(
                    f"The {kind.upper()} of this study was withheld: it could not be released "
                    "as written; the result JSON and the other objects were delivered.",
                    status=job.status,
                    withheld=withheld,
                )
            raise ResultObjectNotFoundError(
                f"The analysis of this study ended {job.status} without a {kind.upper()} "
                "(no findings, or not analysable).",
                status=job.status,
            )
        path = services.store.job_results_dir(job.tenant_id, job.id) / Path(name).name
        return FileResponse(
            path, media_type=MEDIA_TYPES[kind], filename=f"{study_uid}.{kind}{path.suffix}"
        )


def _ended_job(session: SessionDep, principal: Principal, study_uid: str) -> Job:
    study = tenant_study(session, principal.tenant_id, study_uid)
    job = latest_job(session, study)
    if job is None or not JobStatus(job.status).terminal:
        raise ResultNotReadyError(
            "The study's analysis has not ended yet; poll its job.",
            job_id=job.id if job else None,
            status=job.status if job else "not_queued",
        )
    return job
