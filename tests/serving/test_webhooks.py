"""Webhooks against a real HTTP receiver on loopback: signed notices a hospital can verify with
the secret ``basira tenants create --webhook-url`` printed, retries with exponential backoff,
failure after the last attempt, and one send per delivery however many workers run."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving import jobs
from serving.db import Database
from serving.models import JobStatus, WebhookDelivery, WebhookStatus
from serving.services import Services
from serving.settings import Settings
from serving.tenants import create_tenant
from serving.webhooks import WebhookPolicy, deliver_due
from tests.serving.conftest import Tenant, multipart_files
from tests.serving.test_tenants_cli import run_basira
from tests.serving.test_upload_flow import run_worker_once


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A hospital's webhook endpoint: answers ``statuses`` in turn (the last one repeats)."""

    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def answer(self) -> int:
        return self.statuses[min(len(self.requests) - 1, len(self.statuses) - 1)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(Received(time.monotonic(), self.path, headers, body))
            time.sleep(state.delay_s)
            self.send_response(state.answer())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep the test output quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/basira/notify"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def signature_is_valid(secret: str, request: Received, *, max_age_s: float = 300) -> bool:
    """What a hospital's receiver does (docs/operations.md): recompute the HMAC, check age."""
    timestamp = request.headers["x-basira-timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= max_age_s
    sent = request.headers["x-basira-signature"]
    return fresh and hmac.compare_digest(sent, f"sha256={expected}")


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def ended_job_with_webhook(client: TestClient, url: str, study_files: list[Path]) -> str:
    """Upload a study for a new tenant with a webhook and end its job (no analysis needed);
    returns the tenant's webhook secret. The job's delivery is then due."""
    db = services_of(client).db
    with db.session() as session:
        issued = create_tenant(session, "Hôpital Avicenne", webhook_url=url)
    assert issued.webhook_secret
    hospital = Tenant("Hôpital Avicenne", issued.api_key)
    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    )
    assert upload.status_code == 202, upload.text
    with db.sessions() as session:
        job = jobs.claim_next(session, "worker-1", 60)
    assert job is not None
    done = jobs.JobOutcome(JobStatus.COMPLETED, [], "{}", {}, "lung-nodule-unet", "0.1.0", 0.1, 0)
    with db.session() as session:
        assert jobs.finish_job(session, job.id, "worker-1", done) is not None
    return issued.webhook_secret


def delivery(db: Database) -> WebhookDelivery:
    with db.sessions() as session:
        return session.scalars(select(WebhookDelivery)).one()


def test_a_finished_analysis_is_notified_signed_with_the_secret_the_cli_printed(
    client: TestClient, settings: Settings, study_files: list[Path], receiver: Receiver
) -> None:
    created = run_basira(
        settings, "tenants", "create", "Hôpital Ibn Rochd", "--webhook-url", receiver.url
    )
    assert created.returncode == 0, created.stderr
    printed = dict(line.split(": ", 1) for line in created.stdout.splitlines())
    hospital = Tenant("Hôpital Ibn Rochd", printed["api key"])
    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    ).json()

    run_worker_once(client)  # its last tick sends the due notice

    (notice,) = receiver.requests
    assert notice.path == "/basira/notify"
    assert notice.headers["content-type"] == "application/json"
    assert signature_is_valid(printed["webhook secret"], notice)
    assert not signature_is_valid("another tenant's secret", notice)
    uid = upload["study_instance_uid"]
    assert json.loads(notice.body) == {
        "event": "job.finished",
        "job_id": upload["job_id"],
        "study_instance_uid": uid,
        "status": "completed",
        "reasons": [],
        "result_url": f"/v1/studies/{uid}/result",
    }
    sent = delivery(services_of(client).db)
    assert (sent.status, sent.attempts, sent.delivered_at is not None) == ("delivered", 1, True)


def test_a_refused_notice_is_retried_after_the_backoff_then_delivered(
    client: TestClient, study_files: list[Path], receiver: Receiver
) -> None:
    receiver.statuses = [500, 200]
    secret = ended_job_with_webhook(client, receiver.url, study_files)
    db = services_of(client).db
    policy = WebhookPolicy(max_attempts=5, backoff_s=0.5, timeout_s=5)

    assert deliver_due(db, policy) == 1
    pending = delivery(db)
    assert (pending.status, pending.attempts, pending.last_error) == ("pending", 1, "HTTP 500")
    assert deliver_due(db, policy) == 0  # not due before its backoff has passed

    while deliver_due(db, policy) == 0:
        time.sleep(0.05)
    first, second = receiver.requests
    assert second.at - first.at >= policy.backoff_s
    assert first.body == second.body
    assert all(signature_is_valid(secret, request) for request in receiver.requests)
    done = delivery(db)
    assert (done.status, done.attempts, done.last_error) == ("delivered", 2, None)


def test_a_notice_refused_every_time_fails_after_the_last_attempt_with_doubling_delays(
    client: TestClient, study_files: list[Path], receiver: Receiver
) -> None:
    receiver.statuses = [503]
    ended_job_with_webhook(client, receiver.url, study_files)
    db = services_of(client).db
    policy = WebhookPolicy(max_attempts=3, backoff_s=0.2, timeout_s=5)

    deadline = time.monotonic() + 30
    while delivery(db).status == WebhookStatus.PENDING and time.monotonic() < deadline:
        deliver_due(db, policy)
        time.sleep(0.02)

    failed = delivery(db)
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 3, "HTTP 503")
    assert len(receiver.requests) == 3
    at = [request.at for request in receiver.requests]
    assert at[1] - at[0] >= 0.2 and at[2] - at[1] >= 0.4  # backoff_s × 2^(attempt-1)
    assert deliver_due(db, policy) == 0
    assert len(receiver.requests) == 3


def test_an_unusable_webhook_url_is_recorded_and_does_not_stop_the_worker(
    client: TestClient, study_files: list[Path]
) -> None:
    """httpx raises InvalidURL (not an HTTPError) for such a URL; it must not escape into the
    worker's tick, which would then never reach the analysis of any tenant's next job."""
    ended_job_with_webhook(client, "http://[::1", study_files)
    db = services_of(client).db

    assert deliver_due(db, WebhookPolicy(max_attempts=2, backoff_s=60, timeout_s=1)) == 1
    failed = delivery(db)
    assert failed.attempts == 1
    assert failed.last_error is not None and failed.last_error.startswith("InvalidURL")


def test_workers_delivering_at_once_send_each_notice_once(
    client: TestClient, settings: Settings, study_files: list[Path], receiver: Receiver
) -> None:
    receiver.delay_s = 0.5  # a slow receiver: the other worker looks while the first waits
    ended_job_with_webhook(client, receiver.url, study_files)
    workers = [Database(settings.resolved_database_url) for _ in range(3)]
    policy = WebhookPolicy(max_attempts=5, backoff_s=60, timeout_s=5)
    start = threading.Barrier(len(workers))

    def deliver(db: Database) -> None:
        start.wait()
        deliver_due(db, policy)

    threads = [threading.Thread(target=deliver, args=(db,)) for db in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(receiver.requests) == 1
    assert delivery(workers[0]).status == WebhookStatus.DELIVERED
    for db in workers:
        db.dispose()
