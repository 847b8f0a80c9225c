"""A hospital's worklist of many studies written straight into the database, as ingest and the
worker would leave them (one study row with its header fields, one ended job each, some
reviews): the worklist's index tests and ``python -m benchmarks ui`` seed 10,000 this way,
since uploading and analysing as many real series would take hours."""

from __future__ import annotations

import datetime as dt
import json
import random

from sqlalchemy import func, insert, select

from pipelines.result import DiagnosisLabel
from serving.db import Database
from serving.models import Job, JobStatus, Study
from serving.ui.models import Review, ReviewStatus

__all__ = ["FAMILY_NAMES", "seed_worklist"]

FAMILY_NAMES = ("HADDAD", "BENALI", "MARTIN", "DUBOIS", "KHOURY", "NASSER", "LEROY", "SALEH")
_GIVEN = ("AMINA", "YOUSSEF", "CLAIRE", "KARIM", "LINA", "OMAR", "JULIE", "SAMIR")
_START = dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)


def seed_worklist(db: Database, tenant_id: str, n_studies: int, *, seed: int = 7) -> None:
    """``n_studies`` studies of ``n_studies // 3`` patients for ``tenant_id``: patient IDs
    ``P000000``…, accession numbers ``A0000000``…, study dates over 2026, one job each
    (completed with a probability and label, a few analysing or not analysable), and a
    review on every fifth completed study (every other one of those signed)."""
    rng = random.Random(seed)
    with db.session() as session:
        first_id = (session.scalar(select(func.max(Study.id))) or 0) + 1
    studies, jobs, reviews = [], [], []
    n_patients = max(1, n_studies // 3)
    for n in range(n_studies):
        patient = rng.randrange(n_patients)
        given, family = _GIVEN[patient % len(_GIVEN)], FAMILY_NAMES[patient % len(FAMILY_NAMES)]
        received = _START + dt.timedelta(minutes=47 * n)
        studies.append(
            {
                "id": first_id + n,
                "tenant_id": tenant_id,
                "study_instance_uid": f"2.25.{seed}{first_id + n:09d}",
                "created_at": received,
                "last_received_at": received,
                "n_instances": rng.randrange(60, 400),
                "patient_name": f"{family}^{given}",
                "patient_name_key": f"{family} {given}",
                "patient_id": f"P{patient:06d}",
                "accession_number": f"A{n:07d}",
                "study_date": received.date(),
                "study_time": received.strftime("%H%M%S"),
                "study_description": "CT CHEST",
                "modality": "CT",
            }
        )
        jobs.append(_job(rng, tenant_id, first_id + n, received))
        if jobs[-1]["status"] == JobStatus.COMPLETED and n % 5 == 0:
            signed = n % 10 == 0
            reviews.append(
                {
                    "tenant_id": tenant_id,
                    "job_id": jobs[-1]["id"],
                    "status": ReviewStatus.SIGNED if signed else ReviewStatus.IN_REVIEW,
                }
            )
    with db.session() as session:
        session.execute(insert(Study), studies)
        session.execute(insert(Job), jobs)
        if reviews:
            session.execute(insert(Review), reviews)


def _job(
    rng: random.Random, tenant_id: str, study_id: int, received: dt.datetime
) -> dict[str, object]:
    n = study_id
    status = JobStatus.COMPLETED
    if n % 50 == 1:
        status = JobStatus.RUNNING
    elif n % 50 == 2:
        status = JobStatus.NOT_ANALYSABLE
    probability = round(rng.random(), 4) if status == JobStatus.COMPLETED else None
    label = None
    if probability is not None:
        suspected = probability >= 0.5
        label = DiagnosisLabel.TUMOUR_SUSPECTED if suspected else DiagnosisLabel.NO_TUMOUR_SUSPECTED
    return {
        "id": f"job-{tenant_id[:8]}-{n:08d}",
        "tenant_id": tenant_id,
        "study_id": study_id,
        "content_sha256": f"{n:064d}",
        "instance_ids": [],
        "status": status,
        "reasons": [],
        "result_files": {},
        "result_json": json.dumps({"diagnosis": {"label": label}}) if label else None,
        "created_at": received,
        "probability": probability,
        "label": label,
        "n_findings": rng.randrange(0, 6) if probability is not None else None,
    }
