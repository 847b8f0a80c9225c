"""DICOMweb for hospitals' imaging systems: STOW-RS stores instances (PS3.18 §10.5) and QIDO-RS
lists the tenant's studies and a study's series (PS3.18 §10.6), both in DICOM JSON.

Stored instances enter through :func:`serving.ingest.ingest` like every other door; a study
received this way is analysed once it has been quiet ``study_quiet_s`` seconds, or at once on
``POST /v1/studies/{uid}/analyze``. The database keeps UIDs and counts only, never patient names
or IDs, so QIDO answers with exactly that (least data). See ``docs/api.md``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import StringConstraints
from pydicom import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from serving.audit import AuditEntry
from serving.deps import PrincipalDep, ServicesDep, SessionDep, audit_entry
from serving.errors import (
    EmptyUploadError,
    InvalidParametersError,
    StorageFullError,
    UnsupportedMediaTypeError,
)
from serving.ingest import Door, IngestReport, Refusal, StoredInstance, ingest
from serving.jobs import enqueue_study
from serving.models import Instance, Study
from serving.multipart import Part, content_type_parameters, spool_multipart
from serving.orm import utcnow
from serving.queries import tenant_study
from serving.schemas import ERRORS, UID_PATTERN, StudyUID
from serving.services import Services

__all__ = ["FAILURE_REASONS", "router"]

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"

#: Failure Reason (0008,1197) of a refused instance, by Basira code (PS3.18 Table I.2-2; 0x0111
#: is PS3.7's "Duplicate SOP Instance"). The Basira code itself travels in a Warning header.
FAILURE_REASONS: dict[str, int] = {
    "storage.full": 0xA700,  # Refused: out of resources
    "dicom.colour_image": 0xA900,  # Error: data set does not match SOP class
    "dicom.not_hounsfield": 0xA900,
    "dicom.missing_attribute": 0xA900,
    "dicom.invalid_attribute": 0xA900,
    "dicom.pixel_data_short": 0xA900,
    "upload.study_mismatch": 0xA900,
    "dicom.not_dicom": 0xC000,  # Error: cannot understand
    "dicom.empty_file": 0xC000,
    "dicom.truncated": 0xC000,
    "dicom.absurd_length": 0xC000,
    "dicom.missing_transfer_syntax": 0xC000,
    "request.unsupported_media_type": 0xC000,
    "dicom.not_ct": 0x0122,  # Referenced SOP class not supported (MR, Secondary Capture, ...)
    "dicom.not_an_image": 0x0122,  # (SR, presentation states, DICOMDIR, ...)
    "dicom.duplicate_instance": 0x0111,  # Duplicate SOP Instance (different content)
}
#: Any other refusal: "Processing failure".
PROCESSING_FAILURE = 0x0110
#: Per-instance Warning header fields sent at most (clients read about 16 KiB of headers); the
#: rest are summed up in one more.
MAX_WARNINGS = 20
MAX_RESULTS = 1000
#: The largest ``offset`` a QIDO query takes: every database's OFFSET holds it (a larger one
#: overflowed the database's integer and failed as an internal error).
MAX_OFFSET = 2**31 - 1
MORE_RESULTS = '299 basira "There are additional results that can be requested"'
_UID = re.compile(UID_PATTERN)
#: A ``StudyInstanceUID`` query value: empty (every study) or UIDs separated by ``,`` or ``\``
#: (spaces around them ignored); at most 64 characters, so each UID is at most 64 too. The
#: schema publishes it, so clients know the rule the server enforces.
UID_LIST_PATTERN = r"^ *([0-9]+(\.[0-9]+)*( *[,\\] *[0-9]+(\.[0-9]+)*)*)? *$"
_STUDY_KEYS = {"StudyInstanceUID", "0020000D", "limit", "offset", "includefield", "fuzzymatching"}
_SERIES_KEYS = {"includefield", "fuzzymatching"}


def _dicom_json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {DICOM_JSON: {}}}


_STOW_RESPONSES: dict[int | str, dict[str, Any]] = ERRORS | {
    200: _dicom_json("Every instance was stored (Store Instances Response Module)."),
    202: _dicom_json("Some instances were stored, others failed (FailedSOPSequence)."),
    409: _dicom_json("No instance was stored; FailedSOPSequence says why for each."),
}
_STOW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            'multipart/related; type="application/dicom"': {
                "schema": {"type": "string", "format": "binary"}
            }
        },
    }
}
_QIDO_RESPONSES: dict[int | str, dict[str, Any]] = ERRORS | {
    200: _dicom_json("Matching results, an array of DICOM JSON data sets."),
    204: {"description": "No matching result."},
}


@dataclass(frozen=True)
class StowOutcome:
    """What one STOW-RS request stored (identical duplicates included) and refused."""

    stored: list[StoredInstance]
    failed: list[Refusal]
    #: the analysis job of each study stored (or re-sent), by Study Instance UID.
    jobs: dict[str, str] = field(default_factory=dict)

    @property
    def status_code(self) -> int:
        """200 all stored, 202 some failed, 409 none stored (PS3.18 Table 10.5.3-1)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    @property
    def studies(self) -> list[str]:
        return sorted({s.study_instance_uid for s in self.stored})


@router.post(
    "/studies", responses=_STOW_RESPONSES, openapi_extra=_STOW_BODY, response_class=Response
)
async def store_instances(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """STOW-RS: store the instances of any studies, one ``application/dicom`` part each."""
    entry = audit_entry(principal, request, "study.stow")
    return await _stow(request, principal.tenant_id, entry, services, None)


@router.post(
    "/studies/{study_uid}",
    responses=_STOW_RESPONSES,
    openapi_extra=_STOW_BODY,
    response_class=Response,
)
async def store_study_instances(
    study_uid: StudyUID, request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """STOW-RS: store instances of this study; an instance of another study fails alone."""
    entry = audit_entry(principal, request, "study.stow", study_uid)
    return await _stow(request, principal.tenant_id, entry, services, study_uid)


async def _stow(
    request: Request,
    tenant_id: str,
    entry: AuditEntry,
    services: Services,
    expected_study: str | None,
) -> Response:
    """Spool the parts, store them through ingest, answer with the Store Instances Response.

    Every accepted instance is on disk and committed before the answer is sent.
    """
    with services.auditor.audited(entry), services.store.workspace() as folder:
        content_type = request.headers.get("content-type", "")
        _check_part_type(content_type)
        parts = await spool_multipart(
            request.stream(),
            content_type,
            "multipart/related",
            folder,
            max_parts=services.settings.max_parts,
        )
        if not parts:
            raise EmptyUploadError("The request holds no part; send each instance as a part.")
        outcome = await run_in_threadpool(_store_parts, services, tenant_id, parts, expected_study)
        _audit_outcome(services, entry, outcome)
        return _stow_response(outcome, str(request.base_url))


def _check_part_type(content_type: str) -> None:
    """Refuse a ``multipart/related`` body whose ``type`` is not ``application/dicom`` (the
    metadata-and-bulk-data forms of STOW-RS are not read). Without ``type`` each part's own
    Content-Type decides."""
    media, params = content_type_parameters(content_type)
    part_type = params.get("type", DICOM).strip().lower()
    if media == "multipart/related" and part_type != DICOM:
        raise UnsupportedMediaTypeError(
            f'STOW-RS here reads multipart/related; type="{DICOM}", not type="{part_type}".',
            content_type=media,
            type=part_type,
            expected=DICOM,
        )


def _store_parts(
    services: Services, tenant_id: str, parts: Sequence[Part], expected_study: str | None
) -> StowOutcome:
    """Ingest the ``application/dicom`` parts; any other part fails alone. Storage that is full
    fails every instance (nothing is stored)."""
    files, failed = [], []
    for index, part in enumerate(parts, start=1):
        spooled = replace(part.file, name=f"part-{index}")  # client file names are not echoed
        if part.content_type == DICOM:
            files.append(spooled)
        else:
            error = UnsupportedMediaTypeError(
                f"{spooled.name} is {part.content_type or 'untyped'}, not {DICOM}."
            )
            failed.append(Refusal(spooled.name, error.code, error.message))
    try:
        with services.db.session() as session:
            report = ingest(
                session, services.store, tenant_id, files, Door.STOW, expected_study=expected_study
            )
            jobs = _queue_jobs(session, services, tenant_id, report)
    except StorageFullError as exc:
        failed += [Refusal(f.name, exc.code, exc.message) for f in files]
        return StowOutcome([], sorted(failed, key=_part_number))
    return StowOutcome(report.stored, sorted(failed + report.refused, key=_part_number), jobs)


def _queue_jobs(
    session: Session, services: Services, tenant_id: str, report: IngestReport
) -> dict[str, str]:
    """The analysis job of each study this request stored into, in the same transaction as its
    instances. It starts once the study has been quiet ``study_quiet_s`` (the transfer may go
    on over further requests, which retarget the same job) or at once on ``analyze``."""
    start = utcnow() + timedelta(seconds=services.settings.study_quiet_s)
    jobs = {}
    for uid in sorted({s.study_instance_uid for s in report.stored}):
        study = report.studies.get(uid) or tenant_study(session, tenant_id, uid)
        jobs[uid] = enqueue_study(session, study, not_before=start).id
    session.flush()
    return jobs


def _part_number(refusal: Refusal) -> int:
    """The position of a refused part in the request, so failures are listed in part order."""
    return int(refusal.name.removeprefix("part-"))


def _audit_outcome(services: Services, entry: AuditEntry, outcome: StowOutcome) -> None:
    """Name the study (one event per further study) and the most frequent refusal code:
    ``partial:<code>`` when others were stored, ``<code>`` when none was."""
    studies = outcome.studies
    entry.resource = entry.resource or (studies[0] if studies else "")
    if outcome.failed:
        code = Counter(r.code for r in outcome.failed).most_common(1)[0][0]
        entry.outcome = f"partial:{code}" if outcome.stored else code
    for study_uid in studies:
        if study_uid != entry.resource:
            services.auditor.record(replace(entry, resource=study_uid))


def _stow_response(outcome: StowOutcome, base_url: str) -> Response:
    ds = Dataset()
    studies = outcome.studies
    ds.RetrieveURL = _retrieve_url(base_url, studies[0]) if len(studies) == 1 else ""
    if outcome.failed:
        ds.FailedSOPSequence = [_failed_item(refusal) for refusal in outcome.failed]
    if outcome.stored:
        ds.ReferencedSOPSequence = [_referenced_item(s, base_url) for s in outcome.stored]
    response = Response(
        json.dumps(ds.to_json_dict()), status_code=outcome.status_code, media_type=DICOM_JSON
    )
    for warning in _warnings(outcome.failed):
        response.headers.append("Warning", warning)
    for study_uid, job_id in outcome.jobs.items():
        response.headers.append("Link", _job_link(base_url, study_uid, job_id))
    return response


def _job_link(base_url: str, study_uid: str, job_id: str) -> str:
    """``Link: <job URL>; rel="monitor"; anchor="<study URL>"``: the analysis job of a stored
    study (RFC 8288; ``monitor`` is the registered relation for a resource that reports the
    status of the request's processing). Headers, not the body: the Store Instances Response
    Module has no attribute for it, and DICOMweb clients read the body as that module."""
    return (
        f'<{_job_url(base_url, job_id)}>; rel="monitor"; '
        f'anchor="{_retrieve_url(base_url, study_uid)}"'
    )


def _job_url(base_url: str, job_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}"


def _failed_item(refusal: Refusal) -> Dataset:
    """The failed instance's UIDs when it had well-formed ones, and its Failure Reason."""
    item = Dataset()
    if sop_class_uid := _well_formed(refusal.sop_class_uid):
        item.ReferencedSOPClassUID = sop_class_uid
    if sop_instance_uid := _well_formed(refusal.sop_instance_uid):
        item.ReferencedSOPInstanceUID = sop_instance_uid
    item.FailureReason = FAILURE_REASONS.get(refusal.code, PROCESSING_FAILURE)
    return item


def _referenced_item(stored: StoredInstance, base_url: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = stored.sop_class_uid
    item.ReferencedSOPInstanceUID = stored.sop_instance_uid
    item.RetrieveURL = _retrieve_url(
        base_url, stored.study_instance_uid, stored.series_instance_uid, stored.sop_instance_uid
    )
    return item


def _warnings(failed: Sequence[Refusal]) -> list[str]:
    """``Warning: 299 basira "<SOP Instance UID or part-N>: <Basira code>"`` per failed instance
    (the Failed SOP Sequence has no text attribute). A UID that is not well formed is replaced
    by the part name, so a file's content never shapes a header."""
    notes = [
        f"{_well_formed(r.sop_instance_uid) or r.name}: {r.code}" for r in failed[:MAX_WARNINGS]
    ]
    rest = failed[MAX_WARNINGS:]
    if rest:
        codes = ", ".join(sorted({r.code for r in rest}))
        notes.append(f"{len(rest)} more instances failed: {codes}")
    return [f'299 basira "{note}"' for note in notes]


def _well_formed(uid: str) -> str:
    """``uid`` when it is a UID (digits and dots, at most 64 characters), else ''."""
    return uid if len(uid) <= 64 and _UID.match(uid) else ""


def _retrieve_url(base_url: str, study: str, series: str = "", instance: str = "") -> str:
    """The PS3.18 resource URL of a study, series or instance (Studies Retrieve paths)."""
    url = f"{base_url.rstrip('/')}/dicomweb/studies/{study}"
    if series:
        url += f"/series/{series}"
    if instance:
        url += f"/instances/{instance}"
    return url


@router.get("/studies", responses=_QIDO_RESPONSES, response_class=Response)
def search_for_studies(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
    study_instance_uid: Annotated[
        list[Annotated[str, StringConstraints(max_length=64, pattern=UID_LIST_PATTERN)]] | None,
        Query(alias="StudyInstanceUID"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """QIDO-RS: the tenant's studies (UID, modalities, series and instance counts), optionally
    matching a list of Study Instance UIDs (keyword or tag ``0020000D``); ``includefield`` and
    ``fuzzymatching`` change nothing (every stored attribute is returned, UIDs match exactly)."""
    with services.auditor.audited(audit_entry(principal, request, "study.search")):
        _refuse_unsupported_keys(request, _STUDY_KEYS)
        uids = _uid_list([*(study_instance_uid or ()), *request.query_params.getlist("0020000D")])
        rows = _study_rows(session, principal.tenant_id, uids, limit + 1, offset)
        modalities = _modalities(session, principal.tenant_id, [row.id for row in rows[:limit]])
        results = [
            _study_result(row, modalities.get(row.id, []), str(request.base_url))
            for row in rows[:limit]
        ]
        return _search_response(results, more=len(rows) > limit)


@router.get("/studies/{study_uid}/series", responses=_QIDO_RESPONSES, response_class=Response)
def search_for_series(
    study_uid: StudyUID,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
) -> Response:
    """QIDO-RS: the series of one of the tenant's studies (UID, modality, instance count)."""
    with services.auditor.audited(audit_entry(principal, request, "study.search", study_uid)):
        _refuse_unsupported_keys(request, _SERIES_KEYS)
        study = tenant_study(session, principal.tenant_id, study_uid)
        rows = session.execute(
            select(
                Instance.series_instance_uid,
                func.min(Instance.modality).label("modality"),
                func.count(Instance.id).label("n_instances"),
            )
            .where(Instance.tenant_id == principal.tenant_id, Instance.study_id == study.id)
            .group_by(Instance.series_instance_uid)
            .order_by(Instance.series_instance_uid)
        ).all()
        results = [_series_result(study_uid, row, str(request.base_url)) for row in rows]
        return _search_response(results, more=False)


def _refuse_unsupported_keys(request: Request, supported: set[str]) -> None:
    """Refuse query keys this origin server cannot match on: ignoring them (as PS3.18 permits)
    would widen a search silently, e.g. list every study for a patient's ID."""
    unsupported = sorted(set(request.query_params) - supported)
    if unsupported:
        raise InvalidParametersError(
            f"Searching by {', '.join(unsupported)} is not supported; the service keeps no "
            "patient or study descriptors.",
            errors=[
                {"location": ["query", key], "problem": "not supported for matching"}
                for key in unsupported
            ],
        )


def _uid_list(values: Sequence[str]) -> list[str]:
    """The UIDs of UID list matching: repeated keys, values separated by ',' or '\\' (an empty
    value matches every study)."""
    uids = [uid.strip() for value in values for uid in re.split(r"[,\\]", value) if uid.strip()]
    bad = [uid for uid in uids if not _well_formed(uid)]
    if bad:
        raise InvalidParametersError(
            "StudyInstanceUID must be UIDs (digits and dots, at most 64 characters).",
            errors=[
                {"location": ["query", "StudyInstanceUID"], "problem": f"not a UID: {uid[:70]!r}"}
                for uid in bad
            ],
        )
    return uids


def _study_rows(
    session: Session, tenant_id: str, uids: Sequence[str], limit: int, offset: int
) -> Sequence[Any]:
    """One page of the tenant's studies with their instance and series counts, oldest first."""
    query = (
        select(
            Study.id,
            Study.study_instance_uid,
            func.count(Instance.id).label("n_instances"),
            func.count(func.distinct(Instance.series_instance_uid)).label("n_series"),
        )
        .join(Instance, (Instance.study_id == Study.id) & (Instance.tenant_id == tenant_id))
        .where(Study.tenant_id == tenant_id)
        .group_by(Study.id, Study.study_instance_uid)
        .order_by(Study.id)
        .limit(limit)
        .offset(offset)
    )
    if uids:
        query = query.where(Study.study_instance_uid.in_(uids))
    return session.execute(query).all()


def _modalities(session: Session, tenant_id: str, study_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = session.execute(
        select(Instance.study_id, Instance.modality)
        .where(Instance.tenant_id == tenant_id, Instance.study_id.in_(study_ids))
        .distinct()
    ).all()
    found: dict[int, list[str]] = {}
    for study_id, modality in rows:
        found.setdefault(study_id, []).append(modality)
    return {study_id: sorted(values) for study_id, values in found.items()}


def _study_result(row: Any, modalities: list[str], base_url: str) -> dict[str, Any]:
    ds = Dataset()
    ds.StudyInstanceUID = row.study_instance_uid
    ds.ModalitiesInStudy = modalities
    ds.NumberOfStudyRelatedSeries = row.n_series
    ds.NumberOfStudyRelatedInstances = row.n_instances
    ds.RetrieveURL = _retrieve_url(base_url, row.study_instance_uid)
    return ds.to_json_dict()


def _series_result(study_uid: str, row: Any, base_url: str) -> dict[str, Any]:
    ds = Dataset()
    ds.Modality = row.modality
    ds.SeriesInstanceUID = row.series_instance_uid
    ds.NumberOfSeriesRelatedInstances = row.n_instances
    ds.RetrieveURL = _retrieve_url(base_url, study_uid, row.series_instance_uid)
    return ds.to_json_dict()


def _search_response(results: list[dict[str, Any]], *, more: bool) -> Response:
    """200 with the results, or 204 when there is none (PS3.18 Table 10.6.3-1); a Warning says
    when a further page exists."""
    if not results:
        return Response(status_code=204)
    response = Response(json.dumps(results), media_type=DICOM_JSON)
    if more:
        response.headers.append("Warning", MORE_RESULTS)
    return response
