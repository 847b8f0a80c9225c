"""Reviews: per-finding feedback, sign-off that locks, and the findings a signed review confirms.

The final findings of a review are what becomes a training label and what the review SR reports:
an AI finding counts when the radiologist's latest verdict on it is *accept* (as the AI placed
it) or *correct* (as corrected); a rejected finding, or one left without a verdict, does not; a
finding the radiologist added always counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.errors import (
    FeedbackFindingNotFoundError,
    ReasonRequiredError,
    ReviewError,
    ReviewLockedError,
)
from serving.models import Job, JobStatus
from serving.orm import utcnow
from serving.ui.models import FeedbackAction, FindingFeedback, Review, ReviewStatus
from serving.ui.sessions import SignedIn

__all__ = [
    "FeedbackCreate",
    "FinalFinding",
    "final_findings",
    "find_review",
    "open_review",
    "record_feedback",
    "sign_off",
]

Triple = tuple[float, float, float]


class FeedbackCreate(BaseModel):
    """One action sent by the viewer. ``center_ijk`` (source voxel) is mapped to LPS by the
    server; ``center_lps_mm`` may be sent instead."""

    model_config = ConfigDict(extra="forbid")

    action: FeedbackAction
    finding_id: int | None = Field(default=None, ge=1)
    reason: str = Field(default="", max_length=200)
    center_ijk: Triple | None = None
    center_lps_mm: Triple | None = None
    diameter_mm: float | None = Field(default=None, gt=0, le=300)
    comment: str = Field(default="", max_length=4000)


@dataclass(frozen=True)
class FinalFinding:
    """A finding a signed review confirms: where, how large, and where it came from."""

    center_lps_mm: Triple
    diameter_mm: float
    origin: str  # "accepted", "corrected" or "added"
    ai_finding_id: int | None


def ai_findings(job: Job) -> dict[int, dict[str, Any]]:
    result = json.loads(job.result_json or "{}")
    return {int(f["id"]): f for f in result.get("findings", [])}


def find_review(session: Session, job: Job) -> Review | None:
    return session.scalar(
        select(Review).where(Review.tenant_id == job.tenant_id, Review.job_id == job.id)
    )


def open_review(session: Session, job: Job) -> Review:
    """The job's review, created (in review) on the first action."""
    review = find_review(session, job)
    if review is None:
        review = Review(tenant_id=job.tenant_id, job_id=job.id)
        session.add(review)
        session.flush()
    return review


def _check(job: Job, review: Review, body: FeedbackCreate) -> None:
    if review.locked:
        raise ReviewLockedError("This review was signed off and is locked.", job_id=job.id)
    if job.status != JobStatus.COMPLETED:
        raise ReviewError("Only a completed analysis can be reviewed.", status=job.status)
    needs_finding = body.action in (
        FeedbackAction.ACCEPT,
        FeedbackAction.REJECT,
        FeedbackAction.CORRECT,
    )
    if needs_finding and body.finding_id not in ai_findings(job):
        raise FeedbackFindingNotFoundError(
            "The analysis reported no finding with this id.", finding_id=body.finding_id
        )
    if body.action == FeedbackAction.REJECT and not body.reason.strip():
        raise ReasonRequiredError("Say why the finding is rejected.", finding_id=body.finding_id)
    placed = body.center_lps_mm is not None and body.diameter_mm is not None
    if body.action == FeedbackAction.ADD and not placed:
        raise ReviewError("An added finding needs its centre and diameter.")
    if body.action == FeedbackAction.CORRECT and body.diameter_mm is None and not placed:
        raise ReviewError("A correction needs a new diameter or centre.")


def record_feedback(
    session: Session, job: Job, user: SignedIn, body: FeedbackCreate
) -> FindingFeedback:
    """Store one action (``body.center_lps_mm`` already resolved) on the job's open review."""
    review = open_review(session, job)
    _check(job, review, body)
    row = FindingFeedback(
        tenant_id=job.tenant_id,
        job_id=job.id,
        finding_id=None if body.action == FeedbackAction.ADD else body.finding_id,
        action=body.action,
        reason=body.reason.strip(),
        center_lps_mm=list(body.center_lps_mm) if body.center_lps_mm else None,
        diameter_mm=body.diameter_mm,
        comment=body.comment,
        user_id=user.user_id,
        model_name=job.model_name,
        model_version=job.model_version,
    )
    session.add(row)
    session.flush()
    return row


def sign_off(session: Session, job: Job, user: SignedIn, impression: str) -> Review:
    """Record the final impression and lock the review (once)."""
    review = open_review(session, job)
    if review.locked:
        raise ReviewLockedError("This review was already signed off.", job_id=job.id)
    review.status = ReviewStatus.SIGNED
    review.impression = impression.strip()
    review.signed_by = user.user_id
    review.signed_at = utcnow()
    review.locked = True
    return review


def feedback_rows(session: Session, job: Job) -> list[FindingFeedback]:
    return list(
        session.scalars(
            select(FindingFeedback)
            .where(FindingFeedback.tenant_id == job.tenant_id, FindingFeedback.job_id == job.id)
            .order_by(FindingFeedback.at, FindingFeedback.id)
        )
    )


def final_findings(job: Job, rows: list[FindingFeedback]) -> list[FinalFinding]:
    """The findings the review confirms (rules in the module docstring)."""
    verdicts: dict[int, FindingFeedback] = {}
    added: list[FinalFinding] = []
    for row in rows:
        if row.action == FeedbackAction.ADD and row.center_lps_mm and row.diameter_mm:
            added.append(FinalFinding(_triple(row.center_lps_mm), row.diameter_mm, "added", None))
        elif row.finding_id is not None and row.action != FeedbackAction.COMMENT:
            verdicts[row.finding_id] = row
    confirmed: list[FinalFinding] = []
    for finding_id, finding in sorted(ai_findings(job).items()):
        verdict = verdicts.get(finding_id)
        if verdict is None or verdict.action == FeedbackAction.REJECT:
            continue
        centre = _triple(finding["center_lps_mm"])
        diameter = float(finding["diameter_mm"])
        if verdict.action == FeedbackAction.CORRECT:
            centre = _triple(verdict.center_lps_mm) if verdict.center_lps_mm else centre
            diameter = verdict.diameter_mm or diameter
        origin = "corrected" if verdict.action == FeedbackAction.CORRECT else "accepted"
        confirmed.append(FinalFinding(centre, diameter, origin, finding_id))
    return confirmed + added


def _triple(values: list[float] | tuple[float, ...]) -> Triple:
    x, y, z = (float(v) for v in values)
    return (x, y, z)
