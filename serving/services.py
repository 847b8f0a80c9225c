"""What one running service holds: its settings, database, storage, auditor, rate limiter and
(when they run in this process) the worker and the DICOM listener."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.dicom.archive import ArchiveLimits
from pipelines.result import EngineRuntime, ModelInfo
from serving.audit import Auditor
from serving.db import Database
from serving.metrics import ServiceMetrics
from serving.ratelimit import RateLimiter, make_rate_limiter
from serving.settings import Settings
from serving.storage import InstanceStore
from serving.study_header import describe_stored_studies

if TYPE_CHECKING:
    from serving.worker import Worker

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    db: Database
    store: InstanceStore
    auditor: Auditor
    limiter: RateLimiter
    worker: Worker | None = None
    #: Started background components with a ``stop()`` (the DICOM listener), stopped last-first.
    background: list[Any] = field(default_factory=list)
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)

    def __post_init__(self) -> None:
        self.metrics.watch(self.db, self.loaded_model, self.loaded_runtime)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        db = Database(settings.resolved_database_url)
        db.create_schema()
        store = InstanceStore(settings.resolved_storage_dir, min_free_bytes=settings.min_free_bytes)
        with db.session() as session:
            describe_stored_studies(session, store)
        limiter = make_rate_limiter(settings.rate_limit_per_minute, settings.redis_url)
        return cls(settings, db, store, Auditor(db), limiter)

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_total_bytes=self.settings.max_archive_bytes,
            max_files=self.settings.max_archive_files,
        )

    def loaded_model(self) -> ModelInfo | None:
        """The model release this process's worker has loaded (None: no worker here, or its
        model is not loaded yet)."""
        if self.worker is None or self.worker.model is None:
            return None
        return self.worker.model.info

    def loaded_runtime(self) -> EngineRuntime | None:
        """How this process's worker runs its model (None: no worker here, or not loaded yet)."""
        if self.worker is None or self.worker.model is None:
            return None
        return self.worker.model.runtime

    def new_worker(self) -> Worker:
        """A worker on this service's database and storage whose finished jobs feed metrics."""
        from serving.worker import Worker

        return Worker(self.db, self.store, self.settings, on_finished=self.metrics.observe_job)

    def start_worker(self) -> None:
        self.worker = self.new_worker()
        self.worker.start()

    def close(self) -> None:
        for component in reversed(self.background):
            component.stop()
        if self.worker is not None:
            self.worker.stop()
        self.db.dispose()
