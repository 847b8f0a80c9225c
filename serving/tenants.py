"""Tenants (hospitals) and their API keys.

A key reads ``bsr_<prefix>_<secret>``: the prefix finds the row and names the key in the audit
log; only the SHA-256 of the whole key is stored (a 256-bit random secret needs no slow hash),
and the key is shown once, when it is issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.errors import (
    AETitleInUseError,
    InvalidAETitleError,
    InvalidCredentialsError,
    TenantExistsError,
    TenantNotFoundError,
)
from serving.models import ApiKey, KeyRole, Tenant
from serving.orm import utcnow

__all__ = [
    "IssuedTenant",
    "Principal",
    "authenticate_key",
    "create_tenant",
    "get_tenant",
    "issue_key",
    "revoke_keys",
    "validate_ae_title",
]

_KEY_PREFIX = "bsr"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a tenant, through one key with one role."""

    tenant_id: str
    key_prefix: str
    role: KeyRole

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"


@dataclass(frozen=True)
class IssuedTenant:
    """A new tenant with the secrets that are shown only now."""

    tenant: Tenant
    api_key: str
    webhook_secret: str | None


def validate_ae_title(ae_title: str) -> str:
    """The AE title as DICOM compares it (trailing spaces dropped), or InvalidAETitleError."""
    stripped = ae_title.strip()
    if not (1 <= len(stripped) <= 16) or "\\" in stripped or not stripped.isprintable():
        raise InvalidAETitleError(
            f"'{ae_title}' is not a valid AE title: 1-16 printable ASCII characters, no "
            "backslash, not only spaces.",
            ae_title=ae_title,
        )
    if not stripped.isascii():
        raise InvalidAETitleError(f"'{ae_title}' is not ASCII.", ae_title=ae_title)
    return stripped


def create_tenant(
    session: Session,
    name: str,
    *,
    ae_title: str | None = None,
    webhook_url: str | None = None,
) -> IssuedTenant:
    """Create a tenant with one integration key (and a webhook secret when a URL is given)."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantExistsError(f"A tenant named '{name}' already exists.", name=name)
    title = validate_ae_title(ae_title) if ae_title else None
    if title and session.scalar(select(Tenant).where(Tenant.ae_title == title)) is not None:
        raise AETitleInUseError(
            f"The AE title '{title}' already belongs to another tenant.", ae_title=title
        )
    secret = secrets.token_urlsafe(32) if webhook_url else None
    tenant = Tenant(name=name, ae_title=title, webhook_url=webhook_url, webhook_secret=secret)
    session.add(tenant)
    session.flush()
    return IssuedTenant(tenant, issue_key(session, tenant), secret)


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise TenantNotFoundError(f"No tenant is named '{name}'.", name=name)
    return tenant


def issue_key(session: Session, tenant: Tenant, role: KeyRole = KeyRole.INTEGRATION) -> str:
    """A new key for ``tenant``; the returned string is the only copy of it."""
    prefix = secrets.token_hex(6)
    key = f"{_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(tenant_id=tenant.id, prefix=prefix, key_sha256=_digest(key), role=role))
    session.flush()
    return key


def authenticate_key(session: Session, key: str) -> Principal:
    """The principal of a presented key, or InvalidCredentialsError."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _KEY_PREFIX:
        raise InvalidCredentialsError("The API key is not in Basira's format (bsr_…).")
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.key_sha256, _digest(key))
    ):
        raise InvalidCredentialsError("The API key is unknown or revoked.")
    return Principal(row.tenant_id, row.prefix, KeyRole(row.role))


def revoke_keys(session: Session, tenant: Tenant) -> int:
    """Revoke every key of ``tenant``; returns how many were active."""
    rows = session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
