"""Soak (issue 15): 60 studies through all three doors (upload, STOW-RS, C-STORE) of a real
``basira serve`` on PostgreSQL with two ``basira worker`` processes, while one worker is killed
with SIGKILL at random moments, several times, mid-analysis, and started again.

Nothing is lost: every instance is stored and in the audit log, every study ends with exactly
one job, and that job ends with one result (completed) or one coded, documented refusal
(not_analysable, or failed with a documented code such as job.retries_exhausted).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select

from serving.db import Database
from serving.models import AuditEvent, Instance, Job, JobStatus, Study
from tests import reason_ledger
from tests.cli import BASIRA
from tests.pipelines.test_predict import write_study
from tests.serving.conftest import RunningService, Tenant, free_port, service_env
from tests.serving.postgres import empty_tables
from tests.serving.test_dicomweb import STOW_TYPE, dicom_parts, related_body

N_STUDIES = 60
#: Every 10th study has too few slices for the model's intended use: a coded refusal.
SHORT_EVERY = 10
KILLS = 4
AE_TITLE = "SOAK_CT"
DEADLINE_S = 900.0
DOCUMENTED = reason_ledger.documented_codes(reason_ledger.ERRORS_MD.read_text(encoding="utf-8"))


@dataclass
class WorkerProcess:
    """A ``basira worker`` process that can be killed (SIGKILL) and started again."""

    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 (kept open by the child)
        self.process = subprocess.Popen(
            [BASIRA, "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        self.pids.append(self.process.pid)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Sent:
    """What was sent, by door: studies, instances, requests."""

    studies: dict[str, str] = field(default_factory=dict)  # study UID -> door
    instances: set[str] = field(default_factory=set)
    uploads: int = 0
    stows: int = 0
    cstores: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def soak_service(
    tmp_path: Path, service_release: Path, postgres_url: str
) -> Iterator[tuple[RunningService, list[WorkerProcess], str]]:
    empty_tables(postgres_url)
    data_dir = tmp_path / "soak"
    data_dir.mkdir()
    http_port, dicom_port = free_port(), free_port()
    env = service_env(
        data_dir,
        service_release,
        dicom_port,
        BASIRA_DATABASE_URL=postgres_url,
        BASIRA_RUN_WORKER="false",
        BASIRA_JOB_LEASE_S="3",
        BASIRA_JOB_MAX_ATTEMPTS="8",
        BASIRA_STUDY_QUIET_S="5",
        BASIRA_RATE_LIMIT_PER_MINUTE="100000",
    )
    service = RunningService(f"http://127.0.0.1:{http_port}", http_port, dicom_port, env, data_dir)
    service.start()
    workers = [WorkerProcess(env, data_dir / f"worker-{n}.log") for n in range(2)]
    try:
        for worker in workers:
            worker.start()
        yield service, workers, postgres_url
    finally:
        for worker in workers:
            worker.stop()
        service.stop()


def _studies(root: Path) -> list[list[Path]]:
    return [
        write_study(
            root / f"study-{n:02d}",
            f"soak-{n}",
            shape=(20, 32, 32) if n % SHORT_EVERY == 0 else (64, 32, 32),
        )
        for n in range(N_STUDIES)
    ]


def _send(n: int, files: list[Path], service: RunningService, tenant: Tenant, sent: Sent) -> None:
    """Study ``n`` by its door: upload, STOW-RS in two requests, or C-STORE."""
    door = ("upload", "stow", "cstore")[n % 3]
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    if door == "upload":
        parts = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in files]
        r = httpx.post(
            f"{service.base_url}/v1/studies", files=parts, headers=tenant.headers, timeout=120
        )
        assert r.status_code == 202, r.text
        count = {"uploads": 1}
    elif door == "stow":
        half = len(files) // 2
        for chunk in (files[:half], files[half:]):
            r = httpx.post(
                f"{service.base_url}/dicomweb/studies",
                content=related_body(dicom_parts(chunk)),
                headers={**tenant.headers, "Content-Type": STOW_TYPE},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            assert 'rel="monitor"' in r.headers["link"]
        count = {"stows": 2}
    else:
        ae = AE(ae_title=AE_TITLE)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", service.dicom_port, ae_title="BASIRA")
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(path) for path in files]
        finally:
            assoc.release()
        assert all(int(s.Status) == 0 for s in statuses)
        count = {"cstores": len(files)}
    with sent.lock:
        sent.studies[str(ds.StudyInstanceUID)] = door
        sent.instances.update(
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
        )
        for name, value in count.items():
            setattr(sent, name, getattr(sent, name) + value)


def _killer(
    worker: WorkerProcess, db: Database, done: threading.Event, rng: random.Random
) -> list[str]:
    """Kill ``worker`` KILLS times at random moments, each while it runs a job when it gets one
    within a few seconds, and start it again; returns what each kill interrupted."""
    interrupted = []
    for _ in range(KILLS):
        if done.wait(rng.uniform(1.0, 6.0)):
            break
        pid = worker.process.pid if worker.process else 0
        running: list[str] = []
        deadline = time.monotonic() + 8.0
        while not running and time.monotonic() < deadline and not done.is_set():
            with db.sessions() as session:
                running = list(
                    session.scalars(
                        select(Job.id).where(
                            Job.status == JobStatus.RUNNING, Job.worker_id.like(f"%:{pid}:%")
                        )
                    )
                )
            time.sleep(0.05)
        worker.kill()
        interrupted.append(_still_held(db, running[0], pid) if running else "")
        time.sleep(rng.uniform(0.2, 2.0))
        worker.start()
    return interrupted


def _still_held(db: Database, job_id: str, pid: int) -> str:
    """``job_id`` when the killed worker ``pid`` still held it after the kill, else "".

    The job was seen running shortly before the kill; it may have finished in between, and a
    job that ended before the SIGKILL landed was not interrupted.
    """
    with db.sessions() as session:
        job = session.get(Job, job_id)
        held = (
            job is not None
            and job.status == JobStatus.RUNNING
            and f":{pid}:" in (job.worker_id or "")
        )
    return job_id if held else ""


def _all_ended(db: Database, n_studies: int) -> bool:
    with db.sessions() as session:
        studies = session.scalars(select(Study)).all()
        jobs = session.scalars(select(Job)).all()
    if len(studies) < n_studies or any(s.needs_analysis for s in studies):
        return False
    with_job = {job.study_id for job in jobs}
    ended = all(JobStatus(job.status).terminal for job in jobs)
    return ended and with_job == {s.id for s in studies}


@pytest.mark.slow
def test_no_study_is_lost_or_analysed_twice_while_a_worker_is_killed(
    soak_service: tuple[RunningService, list[WorkerProcess], str], tmp_path: Path
) -> None:
    service, workers, url = soak_service
    tenant = service.create_tenant("Hôpital Soak", "--ae-title", AE_TITLE)
    studies = _studies(tmp_path / "studies")
    db = Database(url)
    sent, done, rng = Sent(), threading.Event(), random.Random(15)
    with ThreadPoolExecutor(max_workers=1) as killing, ThreadPoolExecutor(max_workers=3) as doors:
        kills = killing.submit(_killer, workers[0], db, done, rng)
        for future in [
            doors.submit(_send, n, files, service, tenant, sent) for n, files in enumerate(studies)
        ]:
            future.result()
        deadline = time.monotonic() + DEADLINE_S
        while not _all_ended(db, N_STUDIES) and time.monotonic() < deadline:
            time.sleep(1.0)
        done.set()
        interrupted = kills.result()
    assert _all_ended(db, N_STUDIES), service.log_tail()
    _check_every_study_has_one_outcome(db, sent)
    _check_every_instance_is_stored_and_audited(db, sent)
    assert len(interrupted) == KILLS and len(workers[0].pids) == KILLS + 1
    taken_again = [job for job in interrupted if job]
    assert taken_again, "no kill landed while the worker ran a job"
    with db.sessions() as session:
        for job_id in taken_again:
            job = session.get(Job, job_id)
            assert job is not None and job.attempts >= 2 and JobStatus(job.status).terminal
    db.dispose()


def _check_every_study_has_one_outcome(db: Database, sent: Sent) -> None:
    with db.sessions() as session:
        studies = {s.id: s.study_instance_uid for s in session.scalars(select(Study))}
        jobs = session.scalars(select(Job)).all()
    assert sorted(studies.values()) == sorted(sent.studies)
    per_study: dict[str, list[Job]] = {}
    for job in jobs:
        per_study.setdefault(studies[job.study_id], []).append(job)
    for uid, study_jobs in per_study.items():
        assert len(study_jobs) == 1, (uid, sent.studies[uid], [j.status for j in study_jobs])
        (job,) = study_jobs
        codes = {reason["code"] for reason in job.reasons}
        assert codes <= DOCUMENTED, codes
        if job.status == JobStatus.COMPLETED:
            result = json.loads(job.result_json or "{}")
            assert result["status"] == "completed" and result["study_instance_uid"] == uid
        else:
            assert codes, (uid, job.status)
    assert len(per_study) == N_STUDIES
    refused = {uid for uid, jobs_ in per_study.items() if jobs_[0].status == "not_analysable"}
    assert len(refused) == N_STUDIES // SHORT_EVERY
    for uid in refused:
        assert "intended_use.too_few_slices" in {r["code"] for r in per_study[uid][0].reasons}


def _check_every_instance_is_stored_and_audited(db: Database, sent: Sent) -> None:
    with db.sessions() as session:
        stored = set(session.scalars(select(Instance.sop_instance_uid)))
        events = session.scalars(select(AuditEvent)).all()
    assert stored == sent.instances
    ok = [e for e in events if e.outcome == "ok"]
    by_action: dict[str, list[AuditEvent]] = {}
    for event in ok:
        by_action.setdefault(event.action, []).append(event)
    assert len(by_action.get("study.cstore", [])) == sent.cstores
    assert len(by_action.get("study.upload", [])) == sent.uploads
    assert len(by_action.get("study.stow", [])) == sent.stows
    audited = {e.resource for e in ok if e.action in {"study.cstore", "study.upload", "study.stow"}}
    assert audited == set(sent.studies)
