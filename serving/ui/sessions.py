"""Server-side UI sessions and CSRF protection.

The browser holds only a random token in an HttpOnly, SameSite=Strict cookie (``Secure`` unless
the operator runs plain-HTTP development with ``BASIRA_UI_INSECURE_COOKIES``); the database keeps
its SHA-256, the user, a synchronizer CSRF token and the times that end it (idle timeout and
maximum age). Every state-changing request must echo the CSRF token (header ``X-CSRF-Token``
from scripts, hidden field ``csrf_token`` from forms), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from serving.errors import CsrfError, SessionRequiredError
from serving.orm import utcnow
from serving.settings import Settings
from serving.ui.models import UiSession, User

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "SignedIn",
    "check_csrf",
    "end_session",
    "resolve_session",
    "start_session",
]

COOKIE_NAME = "basira_session"
CSRF_HEADER = "x-csrf-token"
#: At most this often a request renews its session's idle timer (seconds).
RENEW_EVERY_S = 30.0


@dataclass(frozen=True)
class SignedIn:
    """The user behind a request's session, detached from the database session."""

    user_id: int
    tenant_id: str
    username: str
    role: str
    locale: str
    csrf_token: str

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"user:{self.username}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, user: User) -> str:
    """Open a session for ``user``; returns the cookie token (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    session.add(
        UiSession(
            token_sha256=_digest(token),
            user_id=user.id,
            tenant_id=user.tenant_id,
            csrf_token=secrets.token_urlsafe(32),
        )
    )
    return token


def resolve_session(session: Session, token: str | None, settings: Settings) -> SignedIn:
    """The signed-in user of ``token``, renewing its idle timer; SessionRequiredError when the
    token is missing, unknown, idle too long or too old (an ended session is deleted)."""
    row = session.get(UiSession, _digest(token)) if token else None
    if row is None:
        raise SessionRequiredError("Sign in to use the review UI.")
    now = utcnow()
    idle = now - row.last_seen_at > timedelta(seconds=settings.ui_session_idle_s)
    too_old = now - row.created_at > timedelta(seconds=settings.ui_session_max_s)
    if idle or too_old or row.user.disabled:
        session.delete(row)
        raise SessionRequiredError("Your session has ended; sign in again.")
    if now - row.last_seen_at >= _renew_every(settings):
        row.last_seen_at = now
    user = row.user
    return SignedIn(user.id, user.tenant_id, user.username, user.role, user.locale, row.csrf_token)


def _renew_every(settings: Settings) -> timedelta:
    """How stale ``last_seen_at`` may get before a request renews it: a few seconds' slack on
    a 30-minute idle timeout spares a database write per request (300 per scroll through a
    series, each a SQLite commit with fsync)."""
    return timedelta(seconds=min(RENEW_EVERY_S, settings.ui_session_idle_s / 10))


def end_session(session: Session, token: str | None) -> None:
    """Log out: the session row is deleted, so the cookie is worthless even if kept."""
    if token:
        session.execute(delete(UiSession).where(UiSession.token_sha256 == _digest(token)))


def check_csrf(signed_in: SignedIn, sent: str | None) -> None:
    """Refuse a state-changing request whose CSRF token is not the session's."""
    if not sent or not hmac.compare_digest(sent.encode(), signed_in.csrf_token.encode()):
        raise CsrfError("The request lacks this session's CSRF token; reload the page.")
