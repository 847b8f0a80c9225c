"""Request dependencies: the service, a database session, the authenticated principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from serving.audit import AuditEntry
from serving.errors import ForbiddenError, InvalidCredentialsError, MissingCredentialsError
from serving.models import KeyRole
from serving.services import Services
from serving.tenants import Principal, authenticate_key

__all__ = [
    "AdminDep",
    "PrincipalDep",
    "ServicesDep",
    "SessionDep",
    "audit_entry",
    "client_address",
]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


#: Declares the scheme in the OpenAPI document; the key is checked by :func:`get_principal`.
_bearer = HTTPBearer(auto_error=False, description="The tenant's API key: `Bearer bsr_…`")


def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The key's principal, after its rate limit; failed attempts are audited."""
    try:
        if credentials is None or not credentials.credentials.strip():
            raise MissingCredentialsError("Send the API key as 'Authorization: Bearer <key>'.")
        with services.db.sessions() as session:
            principal = authenticate_key(session, credentials.credentials.strip())
    except (MissingCredentialsError, InvalidCredentialsError) as exc:
        services.limiter.hit(f"ip:{client_address(request)}")
        services.auditor.record(
            AuditEntry(
                None, "anonymous", "auth", request.url.path, client_address(request), exc.code
            )
        )
        raise
    services.limiter.hit(f"key:{principal.key_prefix}")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_admin(principal: PrincipalDep) -> Principal:
    if principal.role is not KeyRole.ADMIN:
        raise ForbiddenError("This needs an admin key of the tenant.", role=str(principal.role))
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


def audit_entry(
    principal: Principal, request: Request, action: str, resource: str = ""
) -> AuditEntry:
    return AuditEntry(
        principal.tenant_id, principal.actor, action, resource, client_address(request)
    )
