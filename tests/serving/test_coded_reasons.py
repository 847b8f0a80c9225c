"""Only coded, plain reasons reach a hospital through the service, and one output that cannot be
written does not cost the study its result (issue 15). A real worker analyses a real upload; the
engine is swapped for one that crashes or plants findings, the writers are the real ones."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.worker import Worker
from tests.pipelines.reports.tamper import move_sr_points
from tests.pipelines.test_predict import BrokenEngine, SphereEngine
from tests.serving.conftest import Tenant, multipart_files

ERROR_ID = re.compile(r"logged as error ([0-9a-f]{12})")


def _worker_with_engine(client: TestClient, engine: object) -> Worker:
    worker: Worker = client.app.state.services.new_worker()  # type: ignore[attr-defined]
    assert worker.load_model() and worker.model is not None
    worker.model = dataclasses.replace(worker.model, engine=engine)
    return worker


def _upload(client: TestClient, hospital: Tenant, files: list[Path]) -> dict:
    response = client.post("/v1/studies", files=multipart_files(files), headers=hospital.headers)
    assert response.status_code == 202, response.text
    return response.json()


def test_an_unexpected_analysis_error_reaches_the_job_as_one_plain_code_and_the_log_as_a_traceback(
    client: TestClient, hospital: Tenant, study_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    upload = _upload(client, hospital, study_files)
    worker = _worker_with_engine(client, BrokenEngine())
    with caplog.at_level(logging.ERROR):
        assert worker.tick()

    job = client.get(f"/v1/jobs/{upload['job_id']}", headers=hospital.headers).json()
    assert job["status"] == "failed"
    (reason,) = job["reasons"]
    assert reason["code"] == "predict.failed"
    result = client.get(
        f"/v1/studies/{upload['study_instance_uid']}/result", headers=hospital.headers
    ).json()
    assert result["reasons"] == job["reasons"]
    for shown in (reason["message"], str(job), str(result)):
        assert "simulated engine crash" not in shown and "RuntimeError" not in shown
    error_id = ERROR_ID.search(reason["message"])
    assert error_id is not None
    (logged,) = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "simulated engine crash"


def test_an_output_that_fails_is_withheld_and_the_job_still_completes_with_its_diagnosis(
    client: TestClient,
    hospital: Tenant,
    study_files: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SR fails its geometry self-check (its point is moved off the finding)."""
    move_sr_points(monkeypatch, 5.0)
    upload = _upload(client, hospital, study_files)
    assert _worker_with_engine(client, SphereEngine((20, 15, 12))).tick()

    uid, headers = upload["study_instance_uid"], hospital.headers
    job = client.get(f"/v1/jobs/{upload['job_id']}", headers=headers).json()
    assert job["status"] == "completed" and job["reasons"] == []
    assert [(w["code"], w["output"]) for w in job["withheld"]] == [
        ("output.geometry_mismatch", "sr")
    ]
    result = client.get(f"/v1/studies/{uid}/result", headers=headers).json()
    assert result["diagnosis"] is not None and len(result["findings"]) == 1
    assert result["withheld"] == job["withheld"]
    assert client.get(f"/v1/studies/{uid}/result/seg", headers=headers).status_code == 200
    assert client.get(f"/v1/studies/{uid}/result/fhir", headers=headers).status_code == 200
    sr = client.get(f"/v1/studies/{uid}/result/sr", headers=headers)
    assert sr.status_code == 404
    assert sr.json()["code"] == "result.no_object"
    assert sr.json()["detail"]["withheld"] == job["withheld"]
