"""The audit log: every access to patient data, who made it, from where, and how it ended.

Events are written in their own transaction, so a refused or failed request is still audited
even when its own work is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipelines.errors import BasiraError
from serving.db import Database
from serving.models import AuditEvent

__all__ = ["AuditEntry", "Auditor", "list_events"]


@dataclass
class AuditEntry:
    """One event being recorded; a route may name the resource once it knows it."""

    tenant_id: str | None
    actor: str
    action: str
    resource: str = ""
    client: str = ""
    outcome: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


class Auditor:
    """Writes audit events to the service database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, entry: AuditEntry) -> None:
        with self.db.session() as session:
            session.add(
                AuditEvent(
                    tenant_id=entry.tenant_id,
                    actor=entry.actor[:100],
                    action=entry.action,
                    resource=entry.resource[:100],
                    client=entry.client[:100],
                    outcome=entry.outcome[:50],
                )
            )

    @contextmanager
    def audited(self, entry: AuditEntry) -> Iterator[AuditEntry]:
        """Record ``entry`` when the block ends: ``ok``, the error's code, or ``error``."""
        try:
            yield entry
        except BasiraError as exc:
            entry.outcome = exc.code
            raise
        except BaseException:
            entry.outcome = "error"
            raise
        finally:
            self.record(entry)


def list_events(
    session: Session,
    *,
    tenant_id: str | None,
    since: datetime | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The newest events first; ``tenant_id`` None lists every tenant's (operators only)."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query.limit(limit)).all())
