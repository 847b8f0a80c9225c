"""The analysis worker: claims queued jobs and runs each study through the same
:class:`~pipelines.inference.predict.StudyAnalysis` that ``basira predict`` uses, so the service
and the CLI give the same result for the same study.

It runs as a thread of the service (the embedded default) or alone (``basira worker``), any
number of them against one PostgreSQL database. Each tick it also queues studies that have gone
quiet, takes back jobs whose worker died, and sends due webhooks. Logs carry job ids, never
patient identifiers.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select

from pipelines.dicom.index import StudyEntry, index_inputs
from pipelines.errors import BasiraError, NoDicomFoundError, PredictionFailedError
from pipelines.inference.predict import (
    EngineChoice,
    LoadedModel,
    StudyAnalysis,
    internal_error_reason,
    load_model,
)
from pipelines.reports import OutputFormat
from pipelines.result import ReasonResult, StudyResult, StudyStatus
from serving import jobs
from serving.db import Database
from serving.models import Instance, Job, JobStatus, Study
from serving.settings import Settings
from serving.storage import InstanceStore
from serving.webhooks import WebhookPolicy, deliver_due

__all__ = ["RESULT_SUFFIXES", "Worker"]

log = logging.getLogger(__name__)

#: The result objects a job keeps, by the name the API serves them under.
RESULT_SUFFIXES = {"seg": ".seg.dcm", "sr": ".sr.dcm", "fhir": ".fhir.json"}
_MODEL_RETRY_S = 30.0


class Worker:
    """Claims and analyses jobs until stopped."""

    def __init__(
        self,
        db: Database,
        store: InstanceStore,
        settings: Settings,
        *,
        on_finished: Callable[[Job], None] | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.on_finished = on_finished
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.model: LoadedModel | None = None
        self.model_error: BasiraError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._webhooks = WebhookPolicy(
            settings.webhook_max_attempts, settings.webhook_backoff_s, settings.webhook_timeout_s
        )

    def start(self) -> None:
        """Run the loop in a daemon thread (model loading happens there, off the request path)."""
        self._thread = threading.Thread(target=self.run, name="basira-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        """Load the model, then tick until stopped (a failed load is retried, jobs wait)."""
        while not self._stop.is_set() and self.model is None:
            if not self.load_model():
                self._stop.wait(_MODEL_RETRY_S)
        while not self._stop.is_set():
            try:
                busy = self.tick()
            except Exception:  # the loop must outlive a database hiccup; the job is kept
                log.exception("worker tick failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(self.settings.worker_poll_s)

    def load_model(self) -> bool:
        try:
            choice = EngineChoice(
                kind=self.settings.inference_engine,
                threads=self.settings.inference_threads,
                providers=self.settings.inference_providers or None,
                cache=self.settings.resolved_engine_cache,
            )
            self.model = load_model(self.settings.model_dir, choice)
        except BasiraError as exc:
            self.model_error = exc
            log.error("model not loaded: %s (%s)", exc.code, exc.message)
            return False
        self.model_error = None
        runtime = self.model.runtime
        log.info(
            "model %s %s loaded on %s (%s, on %s)",
            self.model.info.name,
            self.model.info.version,
            runtime.chosen.label,
            runtime.chosen_by.value,
            runtime.cpu.summary(),
        )
        return True

    def tick(self) -> bool:
        """Housekeeping, then at most one job; True when a job was processed."""
        with self.db.session() as session:
            jobs.enqueue_quiet_studies(session, self.settings.study_quiet_s)
            jobs.reclaim_expired(session, self.settings.job_max_attempts)
        deliver_due(self.db, self._webhooks)
        if self.model is None:
            return False
        with self.db.sessions() as session:
            job = jobs.claim_next(session, self.worker_id, self.settings.job_lease_s)
        if job is None:
            return False
        self.process(job)
        return True

    def process(self, job: Job) -> None:
        """Analyse a claimed job and record its outcome (discarded if the lease was lost)."""
        start = time.perf_counter()
        with self._lease(job.id):
            outcome = self._analyse(job)
        with self.db.session() as session:
            finished = jobs.finish_job(session, job.id, self.worker_id, outcome)
        if finished is None:
            log.warning("job %s: lease lost, outcome discarded", job.id)
            return
        log.info(
            "job %s %s in %.1f s (attempt %d)",
            job.id,
            finished.status,
            time.perf_counter() - start,
            finished.attempts,
        )
        if self.on_finished is not None:
            self.on_finished(finished)

    def _analyse(self, job: Job) -> jobs.JobOutcome:
        assert self.model is not None
        out_dir = self.store.job_results_dir(job.tenant_id, job.id)
        try:
            with tempfile.TemporaryDirectory(prefix="basira-job-") as workdir:
                entry = self._study_entry(job, Path(workdir))
                formats = frozenset(OutputFormat(f) for f in self.settings.output_formats)
                analysis = StudyAnalysis(self.model, out_dir, formats)
                result = next(iter(analysis.run([entry])))
        except BasiraError as exc:
            return self._refused(job, exc, out_dir)
        except Exception as exc:
            return self._refused(job, _unexpected(exc, job.id), out_dir)
        return self._outcome(result, out_dir)

    def _study_entry(self, job: Job, workdir: Path) -> StudyEntry:
        with self.db.sessions() as session:
            rows = session.execute(
                select(Instance.sha256).where(Instance.id.in_(job.instance_ids))
            ).all()
        paths = [self.store.instance_path(job.tenant_id, sha) for (sha,) in rows]
        index = index_inputs(paths, workdir=workdir)
        if not index.studies:
            raise NoDicomFoundError(
                f"None of the study's {len(paths)} stored files could be read again.",
                n_rejected=len(index.rejected_files),
            )
        if len(index.studies) > 1:
            raise _unexpected(
                RuntimeError(f"{len(index.studies)} studies in one job's files"), job.id
            )
        return index.studies[0]

    def _outcome(self, result: StudyResult, out_dir: Path) -> jobs.JobOutcome:
        files = {
            kind: path.name
            for kind, suffix in RESULT_SUFFIXES.items()
            for path in out_dir.glob(f"*{suffix}")
        }
        diagnosis = result.diagnosis
        return jobs.JobOutcome(
            status=JobStatus.ended(result.status),
            reasons=[reason.model_dump() for reason in result.reasons],
            result_json=result.to_json(),
            result_files=files,
            model_name=result.model.name,
            model_version=result.model.version,
            probability=diagnosis.probability if diagnosis else None,
            n_findings=len(result.findings),
            label=diagnosis.label.value if diagnosis else None,
        )

    def _refused(self, job: Job, exc: BasiraError, out_dir: Path) -> jobs.JobOutcome:
        """The outcome of a job that failed before the study's own analysis could answer."""
        assert self.model is not None
        with self.db.sessions() as session:
            study = session.get(Study, job.study_id)
        result = StudyResult(
            study_instance_uid=study.study_instance_uid if study else "unknown",
            series_instance_uid=None,
            status=StudyStatus.NOT_ANALYSABLE if exc.bad_input else StudyStatus.FAILED,
            reasons=[ReasonResult(code=exc.code, message=exc.message)],
            model=self.model.info,
        )
        return self._outcome(result, out_dir)

    @contextmanager
    def _lease(self, job_id: str) -> Iterator[None]:
        """Renew ``job_id``'s lease every quarter lease while the block runs."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.settings.job_lease_s / 4):
                with self.db.sessions() as session:
                    if not jobs.renew_lease(
                        session, job_id, self.worker_id, self.settings.job_lease_s
                    ):
                        return

        beat = threading.Thread(target=renew, name=f"basira-lease-{job_id[:8]}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            done.set()
            beat.join()


def _unexpected(exc: Exception, job_id: str) -> BasiraError:
    """``predict.failed`` with a plain sentence naming the error id; the exception and its
    traceback are logged under that id (with the job id), never shown."""
    return PredictionFailedError(internal_error_reason(exc, context=f"job {job_id}").message)
