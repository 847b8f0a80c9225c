"""What one running service holds: its settings, database, storage, auditor, rate limiter and
(when they run in this process) the worker and the DICOM listener."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.dicom.archive import ArchiveLimits
from serving.audit import Auditor
from serving.db import Database
from serving.ratelimit import RateLimiter, make_rate_limiter
from serving.settings import Settings
from serving.storage import InstanceStore

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

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        db = Database(settings.resolved_database_url)
        db.create_schema()
        store = InstanceStore(settings.resolved_storage_dir, min_free_bytes=settings.min_free_bytes)
        limiter = make_rate_limiter(settings.rate_limit_per_minute, settings.redis_url)
        return cls(settings, db, store, Auditor(db), limiter)

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_total_bytes=self.settings.max_archive_bytes,
            max_files=self.settings.max_archive_files,
        )

    def start_worker(self) -> None:
        from serving.worker import Worker

        self.worker = Worker(self.db, self.store, self.settings)
        self.worker.start()

    def close(self) -> None:
        for component in reversed(self.background):
            component.stop()
        if self.worker is not None:
            self.worker.stop()
        self.db.dispose()
