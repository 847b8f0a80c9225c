"""The service's safety promises: rate limits per key (in process and shared through Redis),
request size limits that keep nothing, security headers, no traceback on an unexpected error,
readiness that tells the truth about the model, logs without study UIDs, idempotent jobs."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving import jobs
from serving.app import create_app
from serving.logs import make_handler, redact_uids
from serving.models import Instance, JobStatus
from serving.services import Services
from serving.settings import Settings
from tests.pipelines.test_predict import write_study
from tests.serving.conftest import Tenant, make_tenant, multipart_files
from tests.serving.test_metrics import sample
from tests.serving.test_upload_flow import run_worker_once

REDIS_URL = "redis://127.0.0.1:6379/0"
NO_JOB = "/v1/jobs/00000000-0000-4000-8000-000000000000"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def stored_instances(client: TestClient) -> int:
    with services_of(client).db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def limited_client(settings: Settings, **overrides: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


def assert_rate_limited(response: object) -> None:
    assert response.status_code == 429  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["code"] == "request.rate_limited"
    retry_after = int(response.headers["retry-after"])  # type: ignore[attr-defined]
    assert 1 <= retry_after <= 60 and body["detail"]["retry_after_s"] == retry_after


def test_each_key_gets_its_own_rate_limit(settings: Settings) -> None:
    with limited_client(settings, rate_limit_per_minute=3) as client:
        one, two = make_tenant(settings, "Hôpital A"), make_tenant(settings, "Hôpital B")
        for _ in range(3):
            assert client.get(NO_JOB, headers=one.headers).status_code == 404
        assert_rate_limited(client.get(NO_JOB, headers=one.headers))
        assert client.get(NO_JOB, headers=two.headers).status_code == 404


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip("no Redis answers at 127.0.0.1:6379: the shared rate-limit test is skipped")
    return REDIS_URL


def test_service_processes_share_a_key_rate_limit_through_redis(
    settings: Settings, redis_url: str
) -> None:
    """Two service processes behind one load balancer: one budget per key, not one each."""
    shared = {"rate_limit_per_minute": 3, "redis_url": redis_url}
    with limited_client(settings, **shared) as first, limited_client(settings, **shared) as second:
        hospital = make_tenant(settings, "Hôpital Redis")
        assert first.get(NO_JOB, headers=hospital.headers).status_code == 404
        assert second.get(NO_JOB, headers=hospital.headers).status_code == 404
        assert first.get(NO_JOB, headers=hospital.headers).status_code == 404
        assert_rate_limited(second.get(NO_JOB, headers=hospital.headers))
        assert_rate_limited(first.get(NO_JOB, headers=hospital.headers))


def test_bodies_over_the_limit_are_refused_413_declared_or_chunked(
    settings: Settings, study_files: list[Path]
) -> None:
    limit = 16 * 1024
    assert sum(path.stat().st_size for path in study_files[:8]) > limit
    with limited_client(settings, max_request_bytes=limit) as client:
        hospital = make_tenant(settings, "Hôpital Limite")
        declared = client.post(
            "/v1/studies", files=multipart_files(study_files[:8]), headers=hospital.headers
        )
        body = declared.json()
        assert (declared.status_code, body["code"]) == (413, "request.too_large")
        assert body["detail"]["limit_bytes"] == limit

        def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
            for path in study_files[:8]:
                yield path.read_bytes()

        chunked = client.post(
            "/v1/studies",
            content=chunks(),
            headers=hospital.headers | {"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert (chunked.status_code, chunked.json()["code"]) == (413, "request.too_large")
        assert stored_instances(client) == 0
        tmp = services_of(client).store.tmp_dir
        assert [p for p in tmp.rglob("*") if p.is_file()] == []


def test_every_answer_carries_the_security_headers(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    answers = [
        client.post("/v1/studies", files=multipart_files(study_files), headers=hospital.headers),
        client.get(NO_JOB),
        client.get(NO_JOB, headers=hospital.headers),
        client.get("/v1/nothing/here"),
        client.get("/healthz"),
        client.get("/metrics"),
    ]
    for response in answers:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)


def test_an_unexpected_error_is_a_500_with_an_error_id_and_no_traceback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr("serving.routes.jobs.tenant_job", broken)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        hospital = make_tenant(settings, "Hôpital Erreur")
        response = client.get(NO_JOB, headers=hospital.headers)
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "service.internal"
    error_id = body["detail"]["error_id"]
    assert error_id in body["message"]
    for leak in ("Traceback", "RuntimeError", "/srv/secret/path", 'File "'):
        assert leak not in response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the operator finds it by its id


def wait_for_model_check(client: TestClient, timeout_s: float = 60) -> dict[str, object]:
    """``/readyz`` once the in-process worker has tried to load its model."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, object] = client.get("/readyz").json()
        checks = body.get("checks") or body["detail"]["checks"]  # type: ignore[index]
        if checks["model"] != "loading" or time.monotonic() > deadline:  # type: ignore[index]
            return body
        time.sleep(0.1)


def test_readyz_is_503_while_the_worker_has_no_model_and_200_once_it_has(
    settings: Settings, tmp_path: Path
) -> None:
    nowhere = settings.model_copy(update={"run_worker": True, "model_dir": tmp_path / "none"})
    with TestClient(create_app(nowhere)) as client:
        body = wait_for_model_check(client)
        assert client.get("/readyz").status_code == 503
        assert body["code"] == "service.unavailable"
        assert body["detail"]["checks"] == {  # type: ignore[index]
            "database": "ok",
            "storage": "ok",
            "model": "model.not_found",
        }
        assert client.get("/healthz").status_code == 200  # alive, just not ready

    working = settings.model_copy(update={"run_worker": True})
    with TestClient(create_app(working)) as client:
        body = wait_for_model_check(client)
        assert client.get("/readyz").status_code == 200
        assert body == {
            "status": "ready",
            "checks": {"database": "ok", "storage": "ok", "model": "ok"},
        }
        metrics = client.get("/metrics").text
        assert sample(metrics, "basira_model_info", source="loaded") == 1


def test_inference_providers_are_read_from_the_environment_and_an_absent_one_keeps_it_unready(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASIRA_INFERENCE_PROVIDERS", " CPUExecutionProvider ,")
    from_env = Settings(data_dir=settings.data_dir, model_dir=settings.model_dir)
    assert from_env.inference_providers == ("CPUExecutionProvider",)
    monkeypatch.delenv("BASIRA_INFERENCE_PROVIDERS")

    cpu_only = settings.model_copy(update={"inference_providers": ("CPUExecutionProvider",)})
    with TestClient(create_app(cpu_only)) as client:
        worker = services_of(client).new_worker()
        assert worker.load_model() and worker.model is not None
        assert worker.model.engine.session.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]

    absent = settings.model_copy(
        update={"run_worker": True, "inference_providers": ("NoSuchExecutionProvider",)}
    )
    with TestClient(create_app(absent)) as client:
        body = wait_for_model_check(client)
        assert client.get("/readyz").status_code == 503
        assert body["detail"]["checks"]["model"] == "config.invalid"  # type: ignore[index]


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """What ``basira serve`` writes to stderr (its handler, at its INFO level) during a test."""
    stream, root = io.StringIO(), logging.getLogger()
    handler, level = make_handler(stream), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_logs_of_uploads_and_analyses_never_name_the_study(
    client: TestClient,
    hospital: Tenant,
    study_files: list[Path],
    tmp_path: Path,
    service_log: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One study analysed, another whose analysis crashes: the logs say what happened to which
    job, never which study (the audit log, not the application log, records access)."""
    h = hospital.headers
    done = client.post("/v1/studies", files=multipart_files(study_files), headers=h).json()
    client.get(f"/v1/studies/{done['study_instance_uid']}", headers=h)
    run_worker_once(client)
    client.get(f"/v1/studies/{done['study_instance_uid']}/result", headers=h)

    crashing = write_study(tmp_path / "crashing", "1.2.826.0.1.3680043.8.498.3")
    failed = client.post("/v1/studies", files=multipart_files(crashing), headers=h).json()
    worker = services_of(client).new_worker()
    assert worker.load_model() and worker.model is not None

    def crash(*_args: object) -> None:
        raise RuntimeError(f"simulated engine crash in {failed['study_instance_uid']}")

    monkeypatch.setattr(worker.model.engine, "predict", crash)
    assert worker.tick()
    job = client.get(f"/v1/jobs/{failed['job_id']}", headers=h).json()
    assert job["status"] == "failed"

    logged = service_log.getvalue()
    assert done["job_id"] in logged and "simulated engine crash in <uid>" in logged
    assert done["study_instance_uid"] not in logged
    assert failed["study_instance_uid"] not in logged
    series_uids = {pydicom.dcmread(path).SeriesInstanceUID for path in study_files[:1]}
    assert not any(uid in logged for uid in series_uids)


def test_the_same_upload_twice_is_the_same_job(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    files = multipart_files(study_files)
    first = client.post("/v1/studies", files=files, headers=hospital.headers).json()
    second = client.post("/v1/studies", files=files, headers=hospital.headers).json()
    assert second["job_id"] == first["job_id"]
    assert (second["n_instances_stored"], second["n_duplicates"]) == (0, len(study_files))
    assert stored_instances(client) == len(study_files)


def test_analyze_queues_a_failed_study_again_at_once(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    """The retry of a failed analysis answers at once (on SQLite the audit record used to wait
    30 s for the request's own uncommitted job write, then fail with 500)."""
    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    ).json()
    db = services_of(client).db
    with db.sessions() as session:
        job = jobs.claim_next(session, "worker-1", 60)
    assert job is not None
    failure = jobs.JobOutcome(JobStatus.FAILED, [], "{}", {}, "m", "1", None, 0)
    with db.session() as session:
        assert jobs.finish_job(session, job.id, "worker-1", failure) is not None

    started = time.monotonic()
    again = client.post(
        f"/v1/studies/{upload['study_instance_uid']}/analyze", headers=hospital.headers
    )
    assert time.monotonic() - started < 10
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.json()["status"]) == (upload["job_id"], "queued")
    with db.sessions() as session:
        assert jobs.queue_depth(session) == {"queued": 1}


def test_log_redaction_keeps_standard_uids_versions_and_addresses() -> None:
    kept = "transfer syntax 1.2.840.10008.1.2.4.50 refused; model 0.1.0 at 127.0.0.1"
    assert redact_uids(kept) == kept
    assert redact_uids("study 2.25.329800735698586629295641978511506172918.") == "study <uid>."
    assert redact_uids("series=1.2.826.0.1.3680043.8.498.7,") == "series=<uid>,"
