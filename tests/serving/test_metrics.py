"""``GET /metrics``: queue depth from the database, job latency from the worker, HTTP traffic by
route template (never a study UID), and the model, in Prometheus' text format."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import Settings
from tests.serving.conftest import Tenant, multipart_files
from tests.serving.test_upload_flow import run_worker_once


def sample(exposition: str, metric: str, /, **labels: str) -> float | None:
    """The value of the sample ``metric`` whose labels include ``labels`` (None if absent)."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == metric and labels.items() <= s.labels.items():
                return float(s.value)
    return None


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")  # no key: a Prometheus scraper holds no tenant key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def test_metrics_follow_an_upload_through_the_queue_and_the_worker(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    )
    uid = upload.json()["study_instance_uid"]
    assert client.get(f"/v1/studies/{uid}", headers=hospital.headers).status_code == 200
    before = scrape(client)
    assert sample(before, "basira_database_up") == 1
    assert sample(before, "basira_jobs", status="queued") == 1
    assert sample(before, "basira_jobs", status="completed") == 0
    assert sample(before, "basira_model_info") is None  # no worker here, no result yet

    run_worker_once(client)
    after = scrape(client)

    assert sample(after, "basira_jobs", status="queued") == 0
    assert sample(after, "basira_jobs", status="completed") == 1
    assert sample(after, "basira_jobs_finished_total", status="completed") == 1
    assert sample(after, "basira_job_latency_seconds_count", status="completed") == 1
    run_s = sample(after, "basira_job_run_seconds_sum", status="completed")
    latency_s = sample(after, "basira_job_latency_seconds_sum", status="completed")
    assert run_s is not None and latency_s is not None and 0 < run_s <= latency_s
    job = client.get(f"/v1/jobs/{upload.json()['job_id']}", headers=hospital.headers).json()
    model = job["model"]
    assert sample(after, "basira_model_info", source="latest_result", **model) == 1
    by_route = {"method": "GET", "route": "/v1/studies/{study_uid}", "status": "200"}
    assert sample(after, "basira_http_requests_total", **by_route) == 1
    posted = {"method": "POST", "route": "/v1/studies", "status": "202"}
    assert sample(after, "basira_http_requests_total", **posted) == 1
    assert uid not in after  # paths carry study UIDs; labels carry templates


def test_requests_answered_before_routing_are_labelled_by_their_route(
    settings: Settings,
) -> None:
    small = settings.model_copy(update={"max_request_bytes": 100})
    with TestClient(create_app(small)) as client:
        too_large = client.post("/v1/studies", content=b"x" * 1000)
        assert too_large.status_code == 413
        assert client.get("/no/such/page").status_code == 404
        text = scrape(client)
    assert sample(text, "basira_http_requests_total", route="/v1/studies", status="413") == 1
    assert sample(text, "basira_http_requests_total", route="unmatched", status="404") == 1


def test_each_app_counts_only_its_own_requests(settings: Settings, tmp_path: Path) -> None:
    other_settings = settings.model_copy(update={"data_dir": tmp_path / "other"})
    with TestClient(create_app(settings)) as one, TestClient(create_app(other_settings)) as two:
        for _ in range(3):
            one.get("/healthz")
        two.get("/healthz")
        labels = {"method": "GET", "route": "/healthz", "status": "200"}
        assert sample(scrape(one), "basira_http_requests_total", **labels) == 3
        assert sample(scrape(two), "basira_http_requests_total", **labels) == 1


def _engine_info(client: TestClient) -> dict[str, str]:
    for family in text_string_to_metric_families(scrape(client)):
        for s in family.samples:
            if s.name == "basira_engine_info":
                return dict(s.labels)
    return {}


def test_metrics_name_the_cpu_and_the_engine_the_worker_chose_measured_then_cached_or_pinned(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker times the engines at start (``inference_engine: auto``), caches the choice,
    and a restarted service reuses it; a pinned engine is reported as such."""
    from pipelines.cpu import cpu_info

    cpu = cpu_info()
    settings = settings.model_copy(update={"engine_cache": tmp_path / "engine-choice.json"})
    cache = settings.resolved_engine_cache
    for expected in ("measured", "cached"):
        with TestClient(create_app(settings)) as client:
            services = client.app.state.services  # type: ignore[attr-defined]
            worker = services.new_worker()
            services.worker = worker
            assert worker.load_model() and worker.model is not None
            exposition = scrape(client)
            engine = _engine_info(client)
        runtime = worker.model.runtime
        assert sample(exposition, "basira_cpu_info", model=cpu.model, isa=" ".join(cpu.isa)) == 1
        assert sample(exposition, "basira_cpu_info", avx512=str(int(cpu.has_avx512))) == 1
        assert engine["chosen_by"] == expected == runtime.chosen_by.value
        assert engine["engine"] == runtime.chosen.engine
        assert engine["threads"] == "1"  # the fixture's inference_threads: the only count timed
        assert engine["window_batch_ms"]
        assert cache.is_file()

    pinned = settings.model_copy(update={"inference_engine": "onnx"})
    with TestClient(create_app(pinned)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        services.worker = services.new_worker()
        assert services.worker.load_model()
        engine = _engine_info(client)
    assert engine["chosen_by"] == "pinned" and engine["engine"] == "onnx"
    assert engine["providers"].endswith("CPUExecutionProvider")
