"""``basira feedback export``: signed reviews → a pseudonymised training dataset in the manifest
format, and a re-identification key kept apart.

Each signed review becomes one case: the series its job analysed, pseudonymised per PS3.15
Basic Profile (:mod:`pipelines.dicom.deidentify`) into ``DIR/cases/<case_id>/``, with the
review's final findings (:func:`serving.ui.reviews.final_findings`: accepted as the AI placed
them, corrected as the radiologist corrected them, added ones) as lesions in LPS mm. A review
that confirms nothing is a valid negative case. ``DIR/manifest.json`` is what ``basira prepare``
reads; lesions become spheres on the prepared grid, as for LUNA16.

The key (pseudonym ↔ original patient ID, study UID, tenant, job) is written only to the key
file, mode 0600, which must lie outside ``DIR`` so the dataset can be shared without it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines.datasets.lesions import sphere_volume_ml
from pipelines.datasets.manifest import Case, ImageFormat, Lesion, Manifest, write_manifest
from pipelines.dicom.deidentify import BASIC_PROFILE_CODE, Pseudonymiser, deidentify_file
from pipelines.errors import BasiraError, InputNotFoundError
from serving.audit import AuditEntry, Auditor
from serving.db import Database
from serving.errors import KeyFileInsideOutputError, NoSignedReviewsError
from serving.models import Instance, Job
from serving.orm import utcnow
from serving.storage import InstanceStore
from serving.ui.models import Review, ReviewStatus
from serving.ui.reviews import feedback_rows, final_findings

__all__ = ["ExportRequest", "ExportSummary", "export_feedback", "signed_reviews"]

#: ``Case.source`` and ``Manifest.source`` of every exported case.
SOURCE = "radiologist_review"
AUDIT_ACTION = "feedback.export"
KEY_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class ExportRequest:
    """Where to write, and which signed reviews (one tenant or all; signed at or after)."""

    out_dir: Path
    key_file: Path
    tenant_id: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class ExportSummary:
    manifest_path: Path
    n_cases: int
    n_negative: int
    n_lesions: int


@dataclass(frozen=True)
class _Exported:
    case: Case
    key: dict[str, str]


def export_feedback(
    db: Database,
    store: InstanceStore,
    auditor: Auditor,
    request: ExportRequest,
    *,
    on_case: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Export the signed reviews ``request`` selects; ``on_case(done, total)`` after each.

    Every exported study is audited (``feedback.export``, actor ``cli``); a refusal is audited
    with its code.

    Raises:
        KeyFileInsideOutputError: ``request.key_file`` lies inside ``request.out_dir``.
        NoSignedReviewsError: no signed review matches.
        NotDicomError: a stored instance is no longer a readable DICOM file.
    """
    try:
        return _export(db, store, auditor, request, on_case)
    except BasiraError as exc:
        auditor.record(AuditEntry(request.tenant_id, "cli", AUDIT_ACTION, outcome=exc.code))
        raise


def _export(
    db: Database,
    store: InstanceStore,
    auditor: Auditor,
    request: ExportRequest,
    on_case: Callable[[int, int], None] | None,
) -> ExportSummary:
    out = request.out_dir.resolve()
    if request.key_file.resolve().is_relative_to(out):
        raise KeyFileInsideOutputError(
            "The re-identification key file must not be inside the output folder.",
            key_file=str(request.key_file),
            out=str(request.out_dir),
        )
    pseudonymiser = Pseudonymiser()
    exported: list[_Exported] = []
    with db.session() as session:
        jobs = signed_reviews(session, tenant_id=request.tenant_id, since=request.since)
        if not jobs:
            raise NoSignedReviewsError("No signed review to export.", since=str(request.since))
        for n, job in enumerate(jobs, start=1):
            exported.append(
                _export_case(session, store, job, f"review-{n:05d}", out, pseudonymiser)
            )
            auditor.record(
                AuditEntry(job.tenant_id, "cli", AUDIT_ACTION, job.study.study_instance_uid)
            )
            if on_case is not None:
                on_case(n, len(jobs))
    cases = [item.case for item in exported]
    manifest = Manifest(name="radiologist-feedback", source=SOURCE, cases=cases)
    write_manifest(manifest, out / "manifest.json")
    write_key_file(request.key_file, _key(pseudonymiser, [item.key for item in exported]))
    return ExportSummary(
        manifest_path=out / "manifest.json",
        n_cases=len(cases),
        n_negative=sum(not case.lesions for case in cases),
        n_lesions=sum(len(case.lesions) for case in cases),
    )


def signed_reviews(session: Session, *, tenant_id: str | None, since: datetime | None) -> list[Job]:
    """The jobs of signed reviews, oldest signature first (one tenant's, or every tenant's)."""
    query = (
        select(Job)
        .join(Review, (Review.job_id == Job.id) & (Review.tenant_id == Job.tenant_id))
        .where(Review.status == ReviewStatus.SIGNED)
        .order_by(Review.signed_at, Review.id)
    )
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    if since is not None:
        query = query.where(Review.signed_at >= since)
    return list(session.scalars(query))


def _export_case(
    session: Session,
    store: InstanceStore,
    job: Job,
    case_id: str,
    out: Path,
    pseudonymiser: Pseudonymiser,
) -> _Exported:
    """Write the job's analysed series pseudonymised and describe it as a manifest case."""
    folder = out / "cases" / case_id
    first = _write_series(session, store, job, folder, pseudonymiser)
    thickness = first.get("SliceThickness")
    study_uid = job.study.study_instance_uid
    case = Case(
        case_id=case_id,
        patient_id=str(first.PatientID),
        image=folder.relative_to(out).as_posix(),
        image_format=ImageFormat.DICOM,
        lesions=_lesions(job, feedback_rows(session, job)),
        source=SOURCE,
        slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
        reviewed_model=f"{job.model_name} {job.model_version}",
    )
    key = {
        "case_id": case_id,
        "patient_pseudonym": str(first.PatientID),
        "study_instance_uid": study_uid,
        "pseudonym_study_instance_uid": pseudonymiser.uid(study_uid),
        "tenant_id": job.tenant_id,
        "job_id": job.id,
    }
    return _Exported(case, key)


def _write_series(
    session: Session, store: InstanceStore, job: Job, folder: Path, pseudonymiser: Pseudonymiser
) -> Dataset:
    """Pseudonymise the series the job analysed into ``folder``; returns its first dataset.

    Raises:
        InputNotFoundError: none of the series' instances is stored any more.
    """
    series_uid = json.loads(job.result_json or "{}").get("series_instance_uid")
    instances = session.scalars(
        select(Instance)
        .where(Instance.tenant_id == job.tenant_id, Instance.id.in_(job.instance_ids))
        .where(Instance.series_instance_uid == series_uid)
        .order_by(Instance.id)
    ).all()
    if not instances:
        raise InputNotFoundError(
            "The analysed series of a signed review is not stored.", job_id=job.id
        )
    shutil.rmtree(folder, ignore_errors=True)  # a previous export's files of this case
    files = [
        (store.instance_path(job.tenant_id, instance.sha256), folder / f"IM{n:05d}.dcm")
        for n, instance in enumerate(instances, start=1)
    ]
    first = deidentify_file(*files[0], pseudonymiser)
    for src, dst in files[1:]:
        deidentify_file(src, dst, pseudonymiser)
    return first


def _lesions(job: Job, rows: list[Any]) -> list[Lesion]:
    """The review's final findings as manifest lesions (numbered from 1)."""
    return [
        Lesion(
            id=n,
            center_lps_mm=finding.center_lps_mm,
            diameter_mm=finding.diameter_mm,
            volume_ml=round(sphere_volume_ml(finding.diameter_mm), 5),
        )
        for n, finding in enumerate(final_findings(job, rows), start=1)
    ]


def _key(pseudonymiser: Pseudonymiser, studies: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "schema_version": KEY_SCHEMA_VERSION,
        "created_at": utcnow().isoformat(),
        "deidentification": " ".join(BASIC_PROFILE_CODE),
        "patients": [
            {"pseudonym": pseudonym, "patient_id": original}
            for original, pseudonym in pseudonymiser.patients.items()
        ],
        "studies": studies,
    }


def write_key_file(path: Path, key: dict[str, Any]) -> None:
    """Write the key as JSON readable by its owner only (0600, also when it existed before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(key, handle, indent=2)
        handle.write("\n")
