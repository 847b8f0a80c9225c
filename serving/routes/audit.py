"""The audit log of the tenant, for its admin keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.audit import list_events
from serving.deps import AdminDep, ServicesDep, SessionDep, audit_entry
from serving.routes.studies import ERRORS
from serving.schemas import AuditEventPublic, ErrorBody

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "", response_model=list[AuditEventPublic], responses=ERRORS | {403: {"model": ErrorBody}}
)
def read_audit(
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
    session: SessionDep,
    since: datetime | None = None,
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
