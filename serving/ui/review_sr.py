"""A signed review as DICOM: the source series' headers, the radiologist and the findings the
review confirmed, handed to :func:`pipelines.reports.sr.build_review_sr`."""

from __future__ import annotations

import io
import json

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines.reports.sr import ReviewedFinding, SignedReview, build_review_sr
from serving.errors import ReviewNotSignedError
from serving.models import Instance, Job, Tenant
from serving.storage import InstanceStore
from serving.ui.reviews import FinalFinding, feedback_rows, final_findings, find_review

__all__ = ["review_sr_bytes", "source_headers"]


def source_headers(session: Session, store: InstanceStore, job: Job) -> list[Dataset]:
    """Headers (no pixels) of the job's analysed series, the evidence the SR references."""
    series_uid = _series_uid(job)
    rows = session.execute(
        select(Instance.sha256, Instance.series_instance_uid).where(
            Instance.tenant_id == job.tenant_id, Instance.id.in_(job.instance_ids)
        )
    ).all()
    chosen = [sha for sha, uid in rows if uid == series_uid] or [sha for sha, _ in rows]
    return [
        pydicom.dcmread(store.instance_path(job.tenant_id, sha), stop_before_pixels=True)
        for sha in chosen
    ]


def _series_uid(job: Job) -> str:
    return str(json.loads(job.result_json or "{}").get("series_instance_uid", ""))


def _label(finding: FinalFinding) -> str:
    if finding.ai_finding_id is None:
        return "Finding added by radiologist"
    return f"AI finding {finding.ai_finding_id} {finding.origin} by radiologist"


def review_sr_bytes(session: Session, store: InstanceStore, job: Job) -> bytes:
    """The Part 10 bytes of the signed review's SR; ``review.not_signed`` before sign-off."""
    review = find_review(session, job)
    if review is None or not review.locked or review.signer is None or review.signed_at is None:
        raise ReviewNotSignedError("The review of this study is not signed yet.", job_id=job.id)
    tenant = session.get(Tenant, job.tenant_id)
    findings = [
        ReviewedFinding(f.center_lps_mm, f.diameter_mm, _label(f))
        for f in final_findings(job, feedback_rows(session, job))
    ]
    sr = build_review_sr(
        SignedReview(
            evidence=source_headers(session, store, job),
            observer_name=review.signer.username,
            organization=tenant.name if tenant else "",
            impression=review.impression,
            signed_at=review.signed_at,
            findings=findings,
        )
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
