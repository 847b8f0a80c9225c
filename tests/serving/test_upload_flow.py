"""Upload → durable job → worker → results, through the app factory with a real release."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from serving import jobs
from serving.models import Job, JobStatus
from serving.orm import utcnow
from serving.settings import Settings
from serving.worker import Worker
from tests.serving.conftest import Tenant, multipart_files


def run_worker_once(client: TestClient) -> Worker:
    """Process what is queued with a worker of this app's services (no background thread)."""
    services = client.app.state.services  # type: ignore[attr-defined]
    worker: Worker = services.new_worker()
    assert worker.load_model()
    while worker.tick():
        pass
    return worker


def test_upload_is_stored_queued_then_analysed_with_every_result(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    response = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    )
    assert response.status_code == 202, response.text
    body = response.json()
    study_uid = body["study_instance_uid"]
    assert body["status"] == "queued"
    assert body["n_instances_stored"] == len(study_files)
    assert body["rejected_files"] == []

    job = client.get(f"/v1/jobs/{body['job_id']}", headers=hospital.headers).json()
    assert job["status"] == "queued"
    not_ready = client.get(f"/v1/studies/{study_uid}/result", headers=hospital.headers)
    assert not_ready.status_code == 404
    assert not_ready.json()["code"] == "result.not_ready"

    run_worker_once(client)

    job = client.get(f"/v1/jobs/{body['job_id']}", headers=hospital.headers).json()
    assert job["status"] == "completed", job
    assert job["model"]["name"] == "lung-nodule-unet"
    result = client.get(f"/v1/studies/{study_uid}/result", headers=hospital.headers)
    assert result.status_code == 200
    assert result.json()["study_instance_uid"] == study_uid
    assert result.json()["status"] == "completed"
    fhir = client.get(f"/v1/studies/{study_uid}/result/fhir", headers=hospital.headers)
    assert fhir.status_code == 200
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert fhir.json()["resourceType"] == "Bundle"


def test_a_job_whose_worker_died_on_every_attempt_has_no_result_but_says_why(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    body = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    ).json()
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.db.session() as session:
        job = session.get(Job, body["job_id"])
        job.status, job.attempts = JobStatus.RUNNING, 3
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    with services.db.session() as session:
        assert jobs.reclaim_expired(session, max_attempts=3) == 1

    response = client.get(
        f"/v1/studies/{body['study_instance_uid']}/result", headers=hospital.headers
    )
    assert response.status_code == 404
    error = response.json()
    assert error["code"] == "result.no_object"
    assert error["detail"]["status"] == "failed"
    assert [r["code"] for r in error["detail"]["reasons"]] == ["job.retries_exhausted"]
