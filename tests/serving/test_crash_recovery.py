"""Kill the real service (SIGKILL) while it analyses a study: after a restart the job is taken
up again and completes, and nothing that was acknowledged is lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RunningService, Tenant, multipart_files


def wait_for_job(
    service: RunningService, tenant: Tenant, job_id: str, statuses: set[str], timeout_s: float
) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{service.base_url}/v1/jobs/{job_id}", headers=tenant.headers).json()
        if job.get("status") in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job never reached {statuses}: {job}\n{service.log_tail()}")


@pytest.mark.slow
def test_job_killed_mid_analysis_completes_after_restart_with_nothing_lost(
    running_service: RunningService, study_files: list[Path]
) -> None:
    service = running_service
    service.stop()
    service.env["BASIRA_JOB_LEASE_S"] = "2"
    service.start()
    tenant = service.create_tenant("Hôpital Avicenne")
    accepted = httpx.post(
        f"{service.base_url}/v1/studies",
        files=multipart_files(study_files),
        headers=tenant.headers,
        timeout=60,
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()

    wait_for_job(service, tenant, body["job_id"], {"running"}, timeout_s=60)
    service.kill()
    service.start()

    job = wait_for_job(
        service, tenant, body["job_id"], {"completed", "failed", "not_analysable"}, timeout_s=120
    )
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    study = httpx.get(
        f"{service.base_url}/v1/studies/{body['study_instance_uid']}", headers=tenant.headers
    ).json()
    assert study["n_instances"] == len(study_files)
    result = httpx.get(f"{service.base_url}{job['result_url']}", headers=tenant.headers)
    assert result.status_code == 200
    assert result.json()["status"] == "completed"
