"""Prometheus metrics of one service (``GET /metrics``).

Each service has its own :class:`~prometheus_client.CollectorRegistry` (never the global one),
so tests can build many apps in one process and each counts only its own traffic. What the
database knows (jobs per status, the model of the newest result) is read at scrape time, so the
numbers hold whichever process or worker changed them; what happens in this process (HTTP
requests, jobs its worker finished) is counted as it happens. The CPU the process runs on (its
model and the instruction sets that decide the engines' speed) and the engine its worker chose
(which backend and providers, how many threads, measured, cached or pinned) are info metrics, so
a dashboard can tell an AVX2-only host from an AVX-512 one.

Labels never carry patient identifiers: requests are labelled by route template
(``/v1/studies/{study_uid}``), not by the path a client sent, and no label names a tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from re import Pattern

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.cpu import cpu_info
from pipelines.result import EngineRuntime, ModelInfo
from serving.db import Database
from serving.jobs import queue_depth
from serving.models import Job, JobStatus

__all__ = ["LoadedModelSource", "LoadedRuntimeSource", "MetricsMiddleware", "ServiceMetrics"]

#: The model release this process's worker has loaded, asked at every scrape (None: no worker
#: here, or its model is not loaded yet).
LoadedModelSource = Callable[[], ModelInfo | None]
#: How this process's worker runs its model: the engine it chose and how (None: no worker here,
#: or its model is not loaded yet).
LoadedRuntimeSource = Callable[[], EngineRuntime | None]

#: Seconds; an analysis takes from seconds (small studies) to many minutes (a queue backlog).
_JOB_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: The route label of a request no route matched (a 404 for an unknown path).
UNMATCHED = "unmatched"


class ServiceMetrics:
    """The registry of one service and the instruments the service feeds."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "basira_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "basira_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body.",
            ["method", "route"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "basira_jobs_finished",
            "Jobs this process's worker finished, by final status.",
            ["status"],
            registry=self.registry,
        )
        self.job_latency = Histogram(
            "basira_job_latency_seconds",
            "Time from a job's creation (the study acknowledged) to its end, queueing included.",
            ["status"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.job_run = Histogram(
            "basira_job_run_seconds",
            "Time from a job's (last) start by a worker to its end: the analysis itself.",
            ["status"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        cpu = cpu_info()
        Info(
            "basira_cpu",
            "The CPU this process runs on: model, logical CPUs and the instruction sets that "
            "decide which kernels the engines run (/proc/cpuinfo flags).",
            registry=self.registry,
        ).info(
            {
                "model": cpu.model,
                "logical_cpus": str(cpu.logical_cpus),
                "isa": " ".join(cpu.isa),
                "caps": " ".join(cpu.caps),
                "avx2": str(int("avx2" in cpu.isa)),
                "avx512": str(int(cpu.has_avx512)),
                "vnni": str(int(bool({"avx512_vnni", "avx_vnni"} & set(cpu.isa)))),
                "amx": str(int("amx_tile" in cpu.isa)),
            }
        )
        self._state: Collector | None = None

    def watch(
        self,
        db: Database,
        loaded_model: LoadedModelSource,
        loaded_runtime: LoadedRuntimeSource = lambda: None,
    ) -> None:
        """Report ``db``'s state (queue depth, the model of the newest result), the model
        ``loaded_model`` names and the engine ``loaded_runtime`` describes at every scrape."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = _StateCollector(db, loaded_model, loaded_runtime)
        self.registry.register(self._state)

    def observe_job(self, job: Job) -> None:
        """Count a job that just ended (the worker's ``on_finished`` callback)."""
        status = str(job.status)
        self.jobs_finished.labels(status).inc()
        if job.finished_at is None:
            return
        self.job_latency.labels(status).observe((job.finished_at - job.created_at).total_seconds())
        if job.started_at is not None:
            self.job_run.labels(status).observe((job.finished_at - job.started_at).total_seconds())

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the service's database and its worker's model when Prometheus scrapes."""

    def __init__(
        self, db: Database, loaded_model: LoadedModelSource, loaded_runtime: LoadedRuntimeSource
    ) -> None:
        self.db = db
        self.loaded_model = loaded_model
        self.loaded_runtime = loaded_runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.loaded_runtime()
        if runtime is not None:
            yield _engine_info(runtime)
        up = GaugeMetricFamily(
            "basira_database_up", "1 when the database answered this scrape, else 0."
        )
        try:
            with self.db.sessions() as session:
                counts = queue_depth(session)
                model = self._model(session)
        except Exception:  # a scrape must answer even when the database does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(
            "basira_jobs",
            "Jobs in the database by status; status=queued is the queue depth.",
            labels=["status"],
        )
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        if model:
            info = InfoMetricFamily(
                "basira_model",
                "The model release: the one this process's worker loaded (source=loaded), "
                "else the one that produced the newest result (source=latest_result).",
            )
            info.add_metric([], model)
            yield info

    def _model(self, session: Session) -> dict[str, str]:
        loaded = self.loaded_model()
        if loaded is not None:
            return {
                "name": loaded.name,
                "version": loaded.version,
                "onnx_sha256": loaded.onnx_sha256,
                "source": "loaded",
            }
        row = session.execute(
            select(Job.model_name, Job.model_version)
            .where(Job.finished_at.is_not(None), Job.model_name.is_not(None))
            .order_by(Job.finished_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return {}
        return {"name": row[0] or "", "version": row[1] or "", "source": "latest_result"}


def _engine_info(runtime: EngineRuntime) -> Metric:
    """``basira_engine_info``: the backend, the providers its session runs on, its threads and how
    it was chosen; the chosen candidate's measured time per window batch when it was timed."""
    info = InfoMetricFamily(
        "basira_engine",
        "The engine this process's worker runs: backend, execution providers, threads, and "
        "whether it was measured on this host, cached from an earlier measurement or pinned.",
    )
    chosen = runtime.chosen
    timed = [t.window_batch_ms for t in runtime.candidates if t.candidate == chosen]
    info.add_metric(
        [],
        {
            "engine": chosen.engine,
            "providers": ",".join(runtime.providers),
            "threads": "default" if chosen.threads is None else str(chosen.threads),
            "chosen_by": runtime.chosen_by.value,
            "window_batch_ms": f"{timed[0]:.1f}" if timed and timed[0] is not None else "",
        },
    )
    return info


class MetricsMiddleware:
    """Count every HTTP request by method, route template and status, and time it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: list[tuple[Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                services.metrics.observe_request(
                    scope["method"], self.route_template(scope), status, time.perf_counter() - start
                )

    def route_template(self, scope: Scope) -> str:
        """The path template of the route that serves ``scope`` (never the raw path, which
        carries study UIDs), or :data:`UNMATCHED`."""
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str) and path:
            return path
        # Answered before routing (a body over the limit): match the API's documented paths.
        if self._templates is None:
            paths = scope["app"].openapi().get("paths", {})
            self._templates = [(compile_path(template)[0], template) for template in paths]
        for pattern, template in self._templates:
            if pattern.match(scope["path"]):
                return template
        return UNMATCHED
