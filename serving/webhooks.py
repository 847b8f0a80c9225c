"""Signed webhook deliveries, retried with exponential backoff.

Each request carries ``X-Basira-Timestamp`` and ``X-Basira-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``"<timestamp>.<body>"`` under the tenant's webhook secret, so a receiver can
check both origin and freshness. A 2xx answer ends the delivery; anything else is retried after
``backoff_s × 2^(attempt-1)`` until ``max_attempts``, then the delivery is marked failed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from serving.db import Database
from serving.models import Tenant, WebhookDelivery, WebhookStatus
from serving.orm import utcnow

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookPolicy", "deliver_due", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Basira-Signature"
TIMESTAMP_HEADER = "X-Basira-Timestamp"


@dataclass(frozen=True)
class WebhookPolicy:
    max_attempts: int = 8
    backoff_s: float = 5.0
    timeout_s: float = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def deliver_due(db: Database, policy: WebhookPolicy, *, limit: int = 20) -> int:
    """Attempt the deliveries that are due; returns how many were attempted.

    Each delivery is claimed before it is sent, so several workers never send the same one at
    once; its HTTP request runs outside any database transaction and its outcome is recorded
    after.
    """
    with db.session() as session:
        due = session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == WebhookStatus.PENDING,
                WebhookDelivery.next_attempt_at <= utcnow(),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
    attempted = 0
    for delivery_id in due:
        claimed = _claim(db, delivery_id, policy)
        if claimed is None:  # another worker took it first
            continue
        url, payload, secret = claimed
        error = _post(url, payload.encode("utf-8"), secret, policy.timeout_s)
        with db.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is not None:
                _record(delivery, error, policy)
        attempted += 1
    return attempted


def _claim(db: Database, delivery_id: int, policy: WebhookPolicy) -> tuple[str, str, str] | None:
    """Take a due delivery (a conditional update: one taker wins) and hide it from the others
    for as long as one attempt may take; returns its URL, body and the tenant's secret.

    A worker that dies mid-attempt leaves the delivery pending: it is retried once hidden
    time has passed.
    """
    now = utcnow()
    # httpx applies the timeout per phase (connect, write, read, pool): allow all four.
    hidden_until = now + timedelta(seconds=4 * policy.timeout_s + 30)
    with db.session() as session:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == WebhookStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=hidden_until)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        url, payload, secret = session.execute(
            select(WebhookDelivery.url, WebhookDelivery.payload, Tenant.webhook_secret)
            .join(Tenant, Tenant.id == WebhookDelivery.tenant_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one()
    return url, payload, secret or ""


def _post(url: str, body: bytes, secret: str, timeout_s: float) -> str | None:
    """POST one signed notification; None on a 2xx answer, else what went wrong."""
    timestamp = str(int(utcnow().timestamp()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError
        return f"{type(exc).__name__}: {exc}"[:500]
    return None if response.is_success else f"HTTP {response.status_code}"


def _record(delivery: WebhookDelivery, error: str | None, policy: WebhookPolicy) -> None:
    delivery.attempts += 1
    if error is None:
        delivery.status = WebhookStatus.DELIVERED
        delivery.delivered_at = utcnow()
        delivery.last_error = None
        return
    delivery.last_error = error
    log.warning("webhook delivery %s attempt %d failed: %s", delivery.id, delivery.attempts, error)
    if delivery.attempts >= policy.max_attempts:
        delivery.status = WebhookStatus.FAILED
        return
    delay = policy.backoff_s * 2 ** (delivery.attempts - 1)
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
