"""The viewer's JSON and binary API under ``/ui/api``: worklist, series metadata, slices,
feedback, sign-off and the review SR. Session cookie auth; writes need the CSRF header."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pipelines.result import DiagnosisLabel
from serving.audit import list_events
from serving.deps import ServicesDep, SessionDep
from serving.errors import ForbiddenError, ResultNotReadyError
from serving.models import Job
from serving.queries import latest_job, tenant_study
from serving.schemas import StudyUID
from serving.services import Services
from serving.ui.deps import RadiologistDep, UiStateDep, UserDep, ui_audit
from serving.ui.models import Role
from serving.ui.planes import Plane, encode_plane
from serving.ui.review_sr import review_sr_bytes
from serving.ui.reviews import (
    FeedbackCreate,
    feedback_rows,
    find_review,
    record_feedback,
    sign_off,
)
from serving.ui.viewer import SeriesView, encode_slice, series_metadata
from serving.ui.worklist import (
    SortOrder,
    WorklistFilter,
    WorklistSort,
    WorkStatus,
    worklist,
)

router = APIRouter(prefix="/ui/api", tags=["ui"], include_in_schema=False)

#: Slices may sit in the browser's private cache while the session lasts (they never change).
SLICE_CACHE = "private, max-age=600"


class SignOff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    impression: str = Field(min_length=1, max_length=8000)


def _job(session: Session, tenant_id: str, study_uid: str) -> Job:
    job = latest_job(session, tenant_study(session, tenant_id, study_uid))
    if job is None:
        raise ResultNotReadyError("The study has not been queued for analysis yet.")
    return job


class WorklistQuery(BaseModel):
    """The worklist's query parameters (see :class:`~serving.ui.worklist.WorklistFilter`)."""

    model_config = ConfigDict(extra="forbid")

    status: WorkStatus | None = None
    label: DiagnosisLabel | None = None
    q: str = Field(default="", max_length=64)
    patient_id: str = Field(default="", max_length=64)
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    sort: WorklistSort = WorklistSort.SUSPICION
    order: SortOrder = SortOrder.ASC
    offset: int = Field(default=0, ge=0, le=1_000_000)
    limit: int = Field(default=50, ge=1, le=200)


@router.get("/worklist")
def get_worklist(
    request: Request,
    user: UserDep,
    services: ServicesDep,
    session: SessionDep,
    query: Annotated[WorklistQuery, Query()],
) -> dict[str, Any]:
    """One page of the hospital's studies, most suspicious first unless sorted otherwise,
    with patient identifiers (this hospital's signed-in users only; the audit event records
    the read, never the search)."""
    where = WorklistFilter(
        query.status, query.label, query.q, query.patient_id, query.date_from, query.date_to
    )
    with services.auditor.audited(ui_audit(user, request, "ui.worklist.read")):
        page = worklist(
            session,
            user.tenant_id,
            where,
            sort=query.sort,
            order=query.order,
            offset=query.offset,
            limit=query.limit,
        )
        return page.to_dict()


async def _view(
    services: Services, ui: UiStateDep, tenant_id: str, study_uid: str
) -> tuple[Job, SeriesView]:
    return await run_in_threadpool(_load_view, services, ui, tenant_id, study_uid)


def _load_view(
    services: Services, ui: UiStateDep, tenant_id: str, study_uid: str
) -> tuple[Job, SeriesView]:
    """The study's latest job and its series laid out (headers only; cached per job)."""
    with services.db.session() as session:
        job = _job(session, tenant_id, study_uid)
        return job, ui.series.get(session, services.store, job)


@router.get("/studies/{study_uid}/meta")
async def get_metadata(
    study_uid: StudyUID, request: Request, user: UserDep, services: ServicesDep, ui: UiStateDep
) -> dict[str, Any]:
    """Geometry, slice UIDs, the AI result with findings mapped to slices, and the header
    fields shown on screen (read from the stored DICOM now, kept nowhere)."""
    with services.auditor.audited(ui_audit(user, request, "ui.study.open", study_uid)):
        job, view = await _view(services, ui, user.tenant_id, study_uid)
        ui.volumes.warm(job.id, view)
        return {"study_instance_uid": study_uid, **series_metadata(view, job)}


@router.get("/studies/{study_uid}/slices/{k}")
async def get_slice(
    study_uid: StudyUID,
    k: Annotated[int, PathParam(ge=0, le=100_000)],
    request: Request,
    user: UserDep,
    services: ServicesDep,
    ui: UiStateDep,
) -> Response:
    """Slice ``k`` as raw little-endian int16 HU (rows x columns), gzipped when accepted,
    decoded from its own file (never waiting for the whole series). Covered by the study's
    ``ui.study.open`` audit event, not one event per slice."""
    gzipped = "gzip" in request.headers.get("accept-encoding", "")

    def encoded() -> bytes:
        _, view = _load_view(services, ui, user.tenant_id, study_uid)
        return encode_slice(view, k, gzipped=gzipped)

    body = await run_in_threadpool(encoded)
    headers = {"Cache-Control": SLICE_CACHE, "Vary": "Accept-Encoding, Cookie"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.get("/studies/{study_uid}/planes/{plane}/{index}")
async def get_plane(
    study_uid: StudyUID,
    plane: Plane,
    index: Annotated[int, PathParam(ge=0, le=100_000)],
    user: UserDep,
    services: ServicesDep,
    ui: UiStateDep,
    slab_mm: Annotated[float, Query(ge=0, le=50)] = 0,
) -> Response:
    """Image ``index`` of ``plane`` (coronal ``[k, i]`` at j, sagittal ``[k, j]`` at i, axial
    ``[j, i]`` at k), the maximum over a slab ``slab_mm`` thick centred there when given, as
    gzipped little-endian int16 HU, cut from the series volume (decoded once per series).
    Covered by the study's ``ui.study.open`` audit event, as slices are."""

    def encoded() -> bytes:
        job, view = _load_view(services, ui, user.tenant_id, study_uid)
        return encode_plane(ui.volumes.get(job.id, view), view, plane, index, slab_mm)

    body = await run_in_threadpool(encoded)
    headers = {
        "Cache-Control": SLICE_CACHE,
        "Vary": "Accept-Encoding, Cookie",
        "Content-Encoding": "gzip",
    }
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.get("/studies/{study_uid}/review")
def get_review(
    study_uid: StudyUID, request: Request, user: UserDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    """The review of the study's latest analysis with every feedback row, oldest first."""
    with services.auditor.audited(ui_audit(user, request, "ui.review.read", study_uid)):
        job = _job(session, user.tenant_id, study_uid)
        review = find_review(session, job)
        return {
            "job_id": job.id,
            "status": review.status if review else None,
            "locked": bool(review and review.locked),
            "impression": review.impression if review else "",
            "signed_by": review.signer.username if review and review.signer else None,
            "signed_at": review.signed_at.isoformat() if review and review.signed_at else None,
            "feedback": [_feedback_public(row) for row in feedback_rows(session, job)],
        }


def _feedback_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "finding_id": row.finding_id,
        "action": row.action,
        "reason": row.reason,
        "center_lps_mm": row.center_lps_mm,
        "diameter_mm": row.diameter_mm,
        "comment": row.comment,
        "user": row.user.username,
        "at": row.at.isoformat(),
        "model_name": row.model_name,
        "model_version": row.model_version,
    }


@router.post("/studies/{study_uid}/feedback", status_code=201)
async def post_feedback(
    study_uid: StudyUID,
    body: FeedbackCreate,
    request: Request,
    user: RadiologistDep,
    services: ServicesDep,
    ui: UiStateDep,
) -> dict[str, Any]:
    """Record one action; an added or moved finding sent in voxels is placed in LPS mm."""
    entry = ui_audit(user, request, f"ui.feedback.{body.action}", study_uid)
    with services.auditor.audited(entry):
        if body.center_ijk is not None and body.center_lps_mm is None:
            _, view = await _view(services, ui, user.tenant_id, study_uid)
            lps = np.append(np.asarray(body.center_ijk, float), 1.0) @ view.affine_lps.T
            body = body.model_copy(update={"center_lps_mm": tuple(float(v) for v in lps[:3])})
        with services.db.session() as session:
            job = _job(session, user.tenant_id, study_uid)
            return _feedback_public(record_feedback(session, job, user, body))


@router.post("/studies/{study_uid}/signoff")
def post_signoff(
    study_uid: StudyUID,
    body: SignOff,
    request: Request,
    user: RadiologistDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Record the final impression and lock the review. The sign-off commits in its own
    session before the audit event is written: on SQLite an uncommitted write (the review
    created by a sign-off with no feedback before it) would hold the lock the audit's own
    session waits for, until the request failed."""
    entry = ui_audit(user, request, "ui.review.sign", study_uid)
    with services.auditor.audited(entry), services.db.session() as session:
        review = sign_off(session, _job(session, user.tenant_id, study_uid), user, body.impression)
        return {"status": review.status, "locked": review.locked}


@router.get("/studies/{study_uid}/review/sr")
def get_review_sr(
    study_uid: StudyUID, request: Request, user: UserDep, services: ServicesDep, session: SessionDep
) -> Response:
    """The signed review as a DICOM Comprehensive 3D SR, the radiologist as person observer."""
    with services.auditor.audited(ui_audit(user, request, "ui.review.sr.read", study_uid)):
        job = _job(session, user.tenant_id, study_uid)
        body = review_sr_bytes(session, services.store, job)
        return Response(body, media_type="application/dicom")


@router.get("/audit")
def get_audit(
    request: Request, user: UserDep, services: ServicesDep, session: SessionDep
) -> list[dict[str, str]]:
    """The hospital's latest audit events (admins only)."""
    if user.role != Role.ADMIN:
        raise ForbiddenError("The audit log is for admin accounts.", role=user.role)
    with services.auditor.audited(ui_audit(user, request, "audit.read")):
        return [
            {
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "resource": e.resource,
                "outcome": e.outcome,
            }
            for e in list_events(session, tenant_id=user.tenant_id, limit=200)
        ]
