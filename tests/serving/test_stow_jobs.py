"""STOW-RS names the analysis job of every study it stored (issue 15: an integrator had no way
from the response to the job), and a transfer over several requests stays one job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from serving.app import create_app
from serving.db import Database
from serving.models import Job
from serving.settings import Settings
from tests.serving.conftest import Tenant, make_tenant
from tests.serving.postgres import empty_tables
from tests.serving.test_dicomweb import dicom_parts, second_study, stow, uids
from tests.serving.test_upload_flow import run_worker_once

LINK = re.compile(r'<([^>]+)>; rel="monitor"; anchor="([^"]+)"')


def job_links(response) -> dict[str, str]:
    """Study URL -> job URL, from the response's Link header fields."""
    links = {}
    for field in response.headers.get_list("link"):
        for job_url, study_url in LINK.findall(field):
            links[study_url] = job_url
    return links


def test_stow_names_the_job_of_each_stored_study_and_a_split_transfer_stays_one_job(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    first = stow(client, hospital, dicom_parts(study_files[:30]))
    assert first.status_code == 200
    study_uid = uids(study_files[0])[0]
    ((study_url, job_url),) = job_links(first).items()
    assert study_url == f"http://testserver/dicomweb/studies/{study_uid}"
    job_id = job_url.rsplit("/", 1)[1]
    assert job_url == f"http://testserver/v1/jobs/{job_id}"

    job = client.get(job_url, headers=hospital.headers).json()
    assert (job["id"], job["status"], job["study_instance_uid"]) == (job_id, "queued", study_uid)
    assert job["not_before"] is not None

    rest = stow(client, hospital, dicom_parts(study_files[30:]))
    assert job_links(rest) == {study_url: job_url}  # the same job, now for the whole study

    run_worker_once(client)
    job = client.get(job_url, headers=hospital.headers).json()
    assert job["status"] == "completed" and job["attempts"] == 1
    db = Database(settings.resolved_database_url)
    with db.sessions() as session:
        (only,) = session.scalars(select(Job)).all()
        assert len(only.instance_ids) == len(study_files)
    db.dispose()


def test_stow_of_two_studies_names_both_jobs(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    other_uid, other_parts = second_study(study_files[:3])
    response = stow(client, hospital, dicom_parts(study_files[:3]) + other_parts)
    links = job_links(response)
    assert sorted(links) == sorted(
        f"http://testserver/dicomweb/studies/{uid}" for uid in (uids(study_files[0])[0], other_uid)
    )
    assert len(set(links.values())) == 2
    for job_url in links.values():
        assert client.get(job_url, headers=hospital.headers).json()["status"] == "queued"


def test_a_stored_study_waits_for_the_quiet_period_unless_analysed_now(
    settings: Settings, study_files: list[Path]
) -> None:
    quiet = settings.model_copy(update={"study_quiet_s": 600.0})
    with TestClient(create_app(quiet)) as client:
        hospital = make_tenant(quiet, "Hôpital Quiet")
        response = stow(client, hospital, dicom_parts(study_files))
        ((study_url, job_url),) = job_links(response).items()
        worker = run_worker_once(client)  # nothing is due: the transfer may go on
        assert client.get(job_url, headers=hospital.headers).json()["status"] == "queued"
        study_uid = study_url.rsplit("/", 1)[1]
        now = client.post(f"/v1/studies/{study_uid}/analyze", headers=hospital.headers).json()
        assert job_url.endswith(now["id"]) and now["not_before"] is None
        while worker.tick():
            pass
        assert client.get(job_url, headers=hospital.headers).json()["status"] == "completed"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_of_the_previous_version_gets_the_new_job_column(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """create_all adds missing tables only; jobs.not_before is added to an existing table."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_tables(url)
    db = Database(url)
    db.create_schema()
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN not_before"))
    db.create_schema()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(not_before) FROM jobs")).scalar() == 0
    db.dispose()
