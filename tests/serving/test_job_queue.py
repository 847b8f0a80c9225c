"""The durable job queue on SQLite and on a real PostgreSQL server (``BASIRA_TEST_POSTGRES_URL``):
schema creation, claims by concurrent workers, leases that run out, bounded retries, finishing,
and a whole upload analysed on PostgreSQL.

Each queue test runs on both databases; the PostgreSQL runs skip, saying so, when no server is
named.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from pipelines.result import StudyStatus
from serving import jobs
from serving.app import create_app
from serving.db import Database
from serving.models import Job, JobStatus, Study
from serving.orm import Base, utcnow
from serving.settings import Settings
from serving.tenants import create_tenant
from tests.serving.conftest import make_tenant, multipart_files
from tests.serving.postgres import SKIP_MESSAGE, empty_tables, postgres_base_url, private_schema
from tests.serving.test_upload_flow import run_worker_once

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty service database: a SQLite file, or the session's PostgreSQL schema emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    empty_tables(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.create_schema()
    yield database
    database.dispose()


def queue_studies(db: Database, n: int) -> list[str]:
    """``n`` queued jobs of one new tenant (one per study), oldest first; returns their ids."""
    ids = []
    with db.session() as session:
        tenant = create_tenant(session, f"hospital-{n}").tenant
        for i in range(n):
            study = Study(tenant_id=tenant.id, study_instance_uid=f"1.2.826.0.1.{i + 1}")
            session.add(study)
            session.flush()
            ids.append(jobs.enqueue_study(session, study).id)
    return ids


def claim(db: Database, worker_id: str, lease_s: float = 60.0) -> Job | None:
    with db.sessions() as session:
        return jobs.claim_next(session, worker_id, lease_s)


def reclaim(db: Database, max_attempts: int, after_s: float) -> int:
    """Run the reclaimer as if ``after_s`` seconds had passed."""
    with db.session() as session:
        return jobs.reclaim_expired(session, max_attempts, utcnow() + timedelta(seconds=after_s))


def job_row(db: Database, job_id: str) -> Job:
    with db.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def outcome(status: JobStatus = JobStatus.COMPLETED) -> jobs.JobOutcome:
    return jobs.JobOutcome(
        status=status,
        reasons=[],
        result_json='{"status": "completed"}',
        result_files={},
        model_name="lung-nodule-unet",
        model_version="0.1.0",
        probability=0.2,
        n_findings=0,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_processes_starting_together_all_create_the_schema(backend: str, tmp_path: Path) -> None:
    """``basira serve`` and several ``basira worker`` started at once on an empty database."""
    if backend == "sqlite":
        # switching a fresh SQLite file to WAL raced on about 1 connection in 30: 10 fresh files
        for round_ in range(10):
            _start_together(nullcontext(f"sqlite:///{tmp_path / f'fresh{round_}.db'}"))
    else:
        base_url = postgres_base_url()
        if not base_url:
            pytest.skip(SKIP_MESSAGE)
        _start_together(private_schema(base_url))


def _start_together(fresh: AbstractContextManager[str]) -> None:
    errors: list[Exception] = []
    with fresh as url:
        databases = [Database(url) for _ in range(4)]
        start = threading.Barrier(len(databases))

        def create(db: Database) -> None:
            start.wait()
            try:
                db.create_schema()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert queue_studies(databases[0], 1)  # the tables are there and usable
        for db in databases:
            db.dispose()


@pytest.mark.parametrize("first", ["serving.models", "serving.ui.models", "serving.db"])
def test_the_schema_has_every_table_whichever_module_is_imported_first(first: str) -> None:
    """The service's and the UI's tables are created together, in a fresh interpreter that
    imported one table module before the database."""
    script = (
        f"import {first}\n"
        "from sqlalchemy import inspect\n"
        "from serving.db import Database\n"
        "db = Database('sqlite://')\n"
        "db.create_schema()\n"
        "print(*sorted(inspect(db.engine).get_table_names()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == sorted(Base.metadata.tables)
    assert {"tenants", "jobs", "users", "reviews"} <= set(done.stdout.split())


def test_a_job_ends_with_the_status_its_studys_analysis_ended_with() -> None:
    for status in StudyStatus:
        ended = JobStatus.ended(status)
        assert ended.terminal and ended.value == status.value
    assert [status for status in JobStatus if not status.terminal] == [
        JobStatus.QUEUED,
        JobStatus.RUNNING,
    ]


def test_two_workers_claiming_at_once_never_get_the_same_job(database_url: str) -> None:
    """Two workers (each with its own connection pool, as two processes) drain one queue."""
    workers = [Database(database_url) for _ in range(2)]
    workers[0].create_schema()
    expected = queue_studies(workers[0], 12)
    start = threading.Barrier(len(workers))
    claimed: dict[str, list[str]] = {"w0": [], "w1": []}

    def drain(name: str, db: Database) -> None:
        start.wait()
        while (job := claim(db, name)) is not None:
            claimed[name].append(job.id)

    threads = [threading.Thread(target=drain, args=(f"w{i}", db)) for i, db in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every_claim = claimed["w0"] + claimed["w1"]
    assert sorted(every_claim) == sorted(expected)  # each job once, none lost
    for name, ids in claimed.items():
        for job_id in ids:
            job = job_row(workers[0], job_id)
            assert (job.status, job.worker_id, job.attempts) == (JobStatus.RUNNING, name, 1)
    for db in workers:
        db.dispose()


def test_oldest_job_is_claimed_first_under_a_lease(db: Database) -> None:
    first, second = queue_studies(db, 2)
    job = claim(db, "w", lease_s=30)
    assert job is not None and job.id == first
    assert job.lease_expires_at is not None
    assert timedelta(seconds=25) < job.lease_expires_at - utcnow() <= timedelta(seconds=30)
    next_job = claim(db, "w")
    assert next_job is not None and next_job.id == second
    assert claim(db, "w") is None


def test_a_job_whose_worker_died_is_queued_again_then_failed_when_retries_run_out(
    db: Database,
) -> None:
    (job_id,) = queue_studies(db, 1)
    assert claim(db, "crashed-1", lease_s=60) is not None
    assert reclaim(db, max_attempts=2, after_s=30) == 0  # the lease still runs

    assert reclaim(db, max_attempts=2, after_s=61) == 1
    job = job_row(db, job_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 1, None)

    again = claim(db, "crashed-2", lease_s=60)
    assert again is not None and again.attempts == 2
    assert reclaim(db, max_attempts=2, after_s=61) == 1
    job = job_row(db, job_id)
    assert job.status == JobStatus.FAILED
    assert job.finished_at is not None
    assert [reason["code"] for reason in job.reasons] == [jobs.RETRIES_EXHAUSTED]
    assert claim(db, "w") is None  # a failed job is not retried by the queue


def test_finish_records_the_outcome_only_for_the_worker_that_holds_the_job(db: Database) -> None:
    (job_id,) = queue_studies(db, 1)
    assert claim(db, "slow", lease_s=60) is not None
    reclaim(db, max_attempts=3, after_s=61)  # "slow" lost its lease
    assert claim(db, "fresh", lease_s=60) is not None

    with db.session() as session:
        assert jobs.finish_job(session, job_id, "slow", outcome(JobStatus.FAILED)) is None
    assert job_row(db, job_id).status == JobStatus.RUNNING  # untouched: "fresh" holds it

    with db.session() as session:
        finished = jobs.finish_job(session, job_id, "fresh", outcome())
    assert finished is not None
    job = job_row(db, job_id)
    assert (job.status, job.model_version, job.lease_expires_at) == (
        JobStatus.COMPLETED,
        "0.1.0",
        None,
    )
    assert job.finished_at is not None
    with db.sessions() as session:
        assert jobs.queue_depth(session) == {"completed": 1}


def test_a_job_another_worker_is_taking_back_is_skipped_not_waited_for(
    postgres_url: str,
) -> None:
    """PostgreSQL: while one worker's reclaim holds an expired job, another's passes it by
    (``SKIP LOCKED``) instead of blocking on it or requeueing it a second time."""
    empty_tables(postgres_url)
    first, second = Database(postgres_url), Database(postgres_url)
    (job_id,) = queue_studies(first, 1)
    assert claim(first, "crashed", lease_s=60) is not None
    later = utcnow() + timedelta(seconds=61)
    with first.session() as holding:
        assert jobs.reclaim_expired(holding, 3, later) == 1  # not committed yet
        with second.session() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert jobs.reclaim_expired(other, 3, later) == 0
    assert job_row(first, job_id).status == JobStatus.QUEUED
    first.dispose()
    second.dispose()


def test_upload_on_postgresql_is_stored_queued_analysed_and_idempotent(
    postgres_url: str, settings: Settings, study_files: list[Path]
) -> None:
    empty_tables(postgres_url)
    pg_settings = settings.model_copy(update={"database_url": postgres_url})
    hospital = make_tenant(pg_settings, "Hôpital Cheikh Zaid")
    with TestClient(create_app(pg_settings)) as client:
        files = multipart_files(study_files)
        first = client.post("/v1/studies", files=files, headers=hospital.headers)
        assert first.status_code == 202, first.text
        again = client.post("/v1/studies", files=files, headers=hospital.headers)
        assert again.json()["job_id"] == first.json()["job_id"]
        assert again.json()["n_duplicates"] == len(study_files)

        run_worker_once(client)

        job = client.get(f"/v1/jobs/{first.json()['job_id']}", headers=hospital.headers)
        assert job.json()["status"] == "completed", job.text
        uid = first.json()["study_instance_uid"]
        result = client.get(f"/v1/studies/{uid}/result", headers=hospital.headers)
        assert result.status_code == 200
        assert result.json()["study_instance_uid"] == uid
    pg = Database(postgres_url)
    with pg.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
    pg.dispose()


def test_a_plain_postgresql_url_uses_the_psycopg_driver_basira_ships() -> None:
    """Operators paste ``postgresql://…`` URLs; SQLAlchemy would look for psycopg2 by default."""
    for url in ("postgresql://basira@db.internal/basira", "postgres://basira@db.internal/basira"):
        db = Database(url)  # no connection is made until the first query
        assert (db.engine.dialect.name, db.engine.dialect.driver) == ("postgresql", "psycopg")
        db.dispose()
