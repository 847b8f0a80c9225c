"""The audit log of the tenant, for its admin keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BeforeValidator

from serving.audit import list_events
from serving.deps import AdminDep, ServicesDep, SessionDep, audit_entry
from serving.schemas import ERRORS, AuditEventPublic, ErrorBody

router = APIRouter(prefix="/v1/audit", tags=["audit"])

#: An RFC 3339 / ISO 8601 date-time, as the schema's ``format: date-time`` says; pydantic alone
#: would also take a bare number (``since=0.5``) as seconds since 1970.
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$"
)


def _iso_8601_only(value: object) -> object:
    """Refuse a ``since`` that is not a date-time string (a number, a bare date)."""
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("since must be an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z")
    return value


def _as_utc(value: datetime | None) -> datetime | None:
    """A ``since`` without an offset is UTC, like every time the service stores and shows."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get(
    "", response_model=list[AuditEventPublic], responses=ERRORS | {403: {"model": ErrorBody}}
)
def read_audit(
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
    session: SessionDep,
    since: Annotated[
        datetime | None, BeforeValidator(_iso_8601_only), AfterValidator(_as_utc)
    ] = None,
    action: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventPublic]:
    """Who accessed the tenant's patient data, newest first (reading it is audited too)."""
    with services.auditor.audited(audit_entry(admin, request, "audit.read")):
        events = list_events(
            session, tenant_id=admin.tenant_id, since=since, action=action, limit=limit
        )
        return [
            AuditEventPublic(
                at=e.at,
                actor=e.actor,
                action=e.action,
                resource=e.resource,
                client=e.client,
                outcome=e.outcome,
            )
            for e in events
        ]
