"""A second hospital cannot see the first one's study by any route: every route answers it
exactly as it answers a study or job that does not exist (404, same body), so it cannot even
learn that the study is there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.serving.conftest import Tenant, make_tenant, multipart_files
from tests.serving.test_upload_flow import run_worker_once

MISSING_UID = "1.2.826.0.1.3680043.8.498.424242"
MISSING_JOB = "00000000-0000-4000-8000-000000000000"
STUDY_ROUTES = [
    ("GET", "/v1/studies/{uid}"),
    ("GET", "/v1/studies/{uid}/result"),
    ("GET", "/v1/studies/{uid}/result/seg"),
    ("GET", "/v1/studies/{uid}/result/sr"),
    ("GET", "/v1/studies/{uid}/result/fhir"),
    ("POST", "/v1/studies/{uid}/analyze"),
]


def answer(client: TestClient, method: str, path: str, tenant: Tenant, hidden: str) -> Any:
    """Status and JSON body, with the identifier asked for replaced by a placeholder."""
    response = client.request(method, path, headers=tenant.headers)
    return response.status_code, json.loads(response.text.replace(hidden, "<id>"))


def test_another_tenant_gets_the_answer_for_a_study_that_does_not_exist(
    client: TestClient, settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    ).json()
    uid, job_id = upload["study_instance_uid"], upload["job_id"]
    run_worker_once(client)
    intruder = make_tenant(settings, "Clinique Atlas")

    for method, route in STUDY_ROUTES:
        owner = client.request(method, route.format(uid=uid), headers=hospital.headers)
        assert owner.status_code in (200, 202), (route, owner.text)  # it is there to be seen
        seen = answer(client, method, route.format(uid=uid), intruder, uid)
        unknown = answer(client, method, route.format(uid=MISSING_UID), intruder, MISSING_UID)
        assert seen == unknown, route
        assert seen[0] == 404 and seen[1]["code"] == "study.not_found", route

    assert client.get(f"/v1/jobs/{job_id}", headers=hospital.headers).status_code == 200
    seen_job = answer(client, "GET", f"/v1/jobs/{job_id}", intruder, job_id)
    unknown_job = answer(client, "GET", f"/v1/jobs/{MISSING_JOB}", intruder, MISSING_JOB)
    assert seen_job == unknown_job
    assert seen_job[0] == 404 and seen_job[1]["code"] == "job.not_found"


def test_the_same_files_from_another_tenant_make_its_own_study_and_job(
    client: TestClient, settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    files = multipart_files(study_files)
    first = client.post("/v1/studies", files=files, headers=hospital.headers).json()
    other = make_tenant(settings, "Clinique Atlas")
    second = client.post("/v1/studies", files=files, headers=other.headers).json()
    assert second["job_id"] != first["job_id"]
    assert second["n_instances_stored"] == len(study_files)  # not "duplicates" of another's
    assert second["n_duplicates"] == 0
