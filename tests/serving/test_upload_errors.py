"""Every way an upload or a request can be wrong gets its own code and status, and a refused
upload leaves nothing behind (no file in storage, no row in the database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving import jobs
from serving.app import create_app
from serving.models import Instance, JobStatus
from serving.services import Services
from serving.settings import Settings
from tests.pipelines.test_predict import write_study
from tests.serving.conftest import Tenant, make_tenant, multipart_files, zip_of

BOUNDARY = "basira-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def form_body(parts: list[tuple[str, str | None, bytes]], *, closed: bool = True) -> bytes:
    """A multipart/form-data body of (field, file name or None, bytes) parts."""
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (
            f'; filename="{filename}"' if filename else ""
        )
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


def nothing_stored(client: TestClient) -> bool:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    files = [p for p in (services.store.root / "instances").rglob("*") if p.is_file()]
    with services.db.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Instance))
    return files == [] and rows == 0


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body, after checking its status, code and shape."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "detail"} and body["code"] == code, body
    return body


def test_an_upload_without_files_is_empty(client: TestClient, hospital: Tenant) -> None:
    response = client.post(
        "/v1/studies",
        content=form_body([("comment", None, b"no files here")]),
        headers=hospital.headers | {"Content-Type": FORM},
    )
    refused(response, 422, "upload.empty")


def test_an_upload_of_only_unusable_files_says_why_for_each(
    client: TestClient, hospital: Tenant
) -> None:
    files = [
        ("files", ("report.pdf", b"%PDF-1.7 not an image", "application/pdf")),
        ("files", ("notes.txt", b"patient notes", "text/plain")),
    ]
    body = refused(
        client.post("/v1/studies", files=files, headers=hospital.headers),
        422,
        "upload.nothing_accepted",
    )
    rejected = body["detail"]["rejected_files"]
    assert [(r["path"], r["code"]) for r in rejected] == [
        ("report.pdf", "dicom.not_dicom"),
        ("notes.txt", "dicom.not_dicom"),
    ]
    assert nothing_stored(client)


def test_two_studies_in_one_upload_are_refused_whole(
    client: TestClient, hospital: Tenant, study_files: list[Path], tmp_path: Path
) -> None:
    other_study = write_study(tmp_path / "study-b", "1.2.826.0.1.3680043.8.498.2")
    response = client.post(
        "/v1/studies",
        files=multipart_files(study_files[:3] + other_study[:3]),
        headers=hospital.headers,
    )
    assert refused(response, 422, "upload.multiple_studies")["detail"] == {"n_studies": 2}
    assert nothing_stored(client)


def test_a_zip_member_climbing_out_of_the_archive_refuses_the_upload(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    archive = zip_of(study_files[:2], names=["ok.dcm", "../../etc/evil.dcm"])
    response = client.post(
        "/v1/studies",
        files=[("files", ("study.zip", archive, "application/zip"))],
        headers=hospital.headers,
    )
    refused(response, 422, "archive.unsafe_path")
    assert nothing_stored(client)


def test_a_zip_of_a_study_is_accepted_like_its_files(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    response = client.post(
        "/v1/studies",
        files=[("files", ("study.zip", zip_of(study_files), "application/zip"))],
        headers=hospital.headers,
    )
    assert response.status_code == 202, response.text
    assert response.json()["n_instances_stored"] == len(study_files)


def test_a_non_dicom_file_beside_good_ones_is_listed_and_the_rest_accepted(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    files = [*multipart_files(study_files), ("files", ("notes.txt", b"hello", "text/plain"))]
    response = client.post("/v1/studies", files=files, headers=hospital.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["n_instances_stored"] == len(study_files)
    assert [(r["path"], r["code"]) for r in body["rejected_files"]] == [
        ("notes.txt", "dicom.not_dicom")
    ]


def test_an_instance_sent_again_with_other_content_is_refused_and_the_first_kept(
    client: TestClient, hospital: Tenant, study_files: list[Path], tmp_path: Path
) -> None:
    first = client.post("/v1/studies", files=multipart_files(study_files), headers=hospital.headers)
    assert first.status_code == 202
    changed = pydicom.dcmread(study_files[0])
    changed.InstanceNumber = int(changed.InstanceNumber) + 1000
    altered = tmp_path / "altered.dcm"
    changed.save_as(altered)

    again = client.post(
        "/v1/studies",
        files=multipart_files([altered, *study_files[1:]]),
        headers=hospital.headers,
    )
    assert again.status_code == 202, again.text
    body = again.json()
    assert body["job_id"] == first.json()["job_id"]  # the study's content did not change
    assert body["n_duplicates"] == len(study_files) - 1
    assert [(r["path"], r["code"]) for r in body["rejected_files"]] == [
        ("altered.dcm", "dicom.duplicate_instance")
    ]


def test_a_cut_off_multipart_body_keeps_nothing(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    parts = [("files", p.name, p.read_bytes()) for p in study_files[:3]]
    truncated = form_body(parts, closed=False)[:-100]
    response = client.post(
        "/v1/studies", content=truncated, headers=hospital.headers | {"Content-Type": FORM}
    )
    refused(response, 400, "request.malformed_multipart")
    assert nothing_stored(client)


def test_an_upload_that_is_not_multipart_form_data_is_an_unsupported_media_type(
    client: TestClient, hospital: Tenant
) -> None:
    response = client.post("/v1/studies", json={"files": []}, headers=hospital.headers)
    body = refused(response, 415, "request.unsupported_media_type")
    assert body["detail"] == {"content_type": "application/json", "expected": "multipart/form-data"}


def test_more_files_than_the_limit_are_refused(settings: Settings, study_files: list[Path]) -> None:
    limited = settings.model_copy(update={"max_parts": 2})
    with TestClient(create_app(limited)) as client:
        hospital = make_tenant(limited, "Hôpital Ibn Tofail")
        response = client.post(
            "/v1/studies", files=multipart_files(study_files[:3]), headers=hospital.headers
        )
        assert refused(response, 413, "request.too_many_parts")["detail"] == {"limit": 2}
        assert nothing_stored(client)


def test_storage_below_its_reserve_refuses_the_upload_with_507(
    settings: Settings, study_files: list[Path]
) -> None:
    full = settings.model_copy(update={"min_free_bytes": 2**62})
    with TestClient(create_app(full)) as client:
        hospital = make_tenant(full, "Hôpital Ibn Tofail")
        response = client.post(
            "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
        )
        refused(response, 507, "storage.full")
        assert nothing_stored(client)


def test_path_parameters_routes_and_methods_are_checked(
    client: TestClient, hospital: Tenant
) -> None:
    for path in ("/v1/studies/not-a-uid", "/v1/jobs/42", "/v1/studies/1.2.3/result/png"):
        body = refused(
            client.get(path, headers=hospital.headers), 422, "request.invalid_parameters"
        )
        assert body["detail"]["errors"]
    refused(client.get("/v1/patients", headers=hospital.headers), 404, "resource.not_found")
    refused(
        client.delete("/v1/studies/1.2.3", headers=hospital.headers),
        405,
        "request.method_not_allowed",
    )


def test_missing_studies_jobs_and_results_have_their_own_codes(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    h = hospital.headers
    refused(client.get("/v1/studies/1.2.3", headers=h), 404, "study.not_found")
    refused(client.get("/v1/studies/1.2.3/result", headers=h), 404, "study.not_found")
    no_job = "/v1/jobs/00000000-0000-4000-8000-000000000000"
    refused(client.get(no_job, headers=h), 404, "job.not_found")

    upload = client.post("/v1/studies", files=multipart_files(study_files), headers=h).json()
    result = f"/v1/studies/{upload['study_instance_uid']}/result"
    body = refused(client.get(result, headers=h), 404, "result.not_ready")
    assert body["detail"] == {"job_id": upload["job_id"], "status": "queued"}

    services: Services = client.app.state.services  # type: ignore[attr-defined]
    with services.db.sessions() as session:
        job = jobs.claim_next(session, "worker-1", 60)
    assert job is not None
    ended = jobs.JobOutcome(JobStatus.NOT_ANALYSABLE, [], "{}", {}, "m", "1", None, 0)
    with services.db.session() as session:
        jobs.finish_job(session, job.id, "worker-1", ended)
    assert client.get(result, headers=h).status_code == 200
    body = refused(client.get(f"{result}/seg", headers=h), 404, "result.no_object")
    assert body["detail"] == {"status": "not_analysable"}
