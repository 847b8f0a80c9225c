"""Dependencies of the UI routes: its per-app state, the signed-in user, CSRF and roles, and the
audit entry of a UI action.

The script API (``/ui/api``) answers a request without a live session with
``ui.session_required``; pages and forms call :func:`page_user` and :func:`form_user` instead,
which send the browser to the sign-in page (:class:`SignInRedirect`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from serving.audit import AuditEntry
from serving.deps import ServicesDep, client_address
from serving.errors import ForbiddenError, SessionRequiredError
from serving.ratelimit import RateLimiter
from serving.ui.models import Role
from serving.ui.planes import VolumeCache
from serving.ui.sessions import COOKIE_NAME, CSRF_HEADER, SignedIn, check_csrf, resolve_session
from serving.ui.viewer import SeriesCache

__all__ = [
    "CsrfUserDep",
    "RadiologistDep",
    "SignInRedirect",
    "UiState",
    "UiStateDep",
    "UserDep",
    "form_user",
    "page_user",
    "ui_audit",
]


@dataclass
class UiState:
    """What the UI keeps per app: templates, series layouts, decoded volumes (for the coronal
    and sagittal planes and slabs), the login rate limiter."""

    templates: Jinja2Templates
    series: SeriesCache
    login_limiter: RateLimiter
    volumes: VolumeCache = field(default_factory=VolumeCache)


def get_ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


UiStateDep = Annotated[UiState, Depends(get_ui_state)]


def get_user(request: Request, services: ServicesDep) -> SignedIn:
    """The session's user (its idle timer renewed); ``ui.session_required`` otherwise."""
    with services.db.session() as session:
        return resolve_session(session, request.cookies.get(COOKIE_NAME), services.settings)


UserDep = Annotated[SignedIn, Depends(get_user)]


class SignInRedirect(Exception):
    """A page or form request without a live session; the UI answers it with a redirect to the
    sign-in page (:func:`serving.ui.pages.redirect_to_sign_in`)."""


def page_user(request: Request, services: ServicesDep) -> SignedIn:
    """The signed-in user of a page or form request (its idle timer renewed);
    :class:`SignInRedirect` without a live session."""
    try:
        return get_user(request, services)
    except SessionRequiredError as exc:
        raise SignInRedirect from exc


def form_user(request: Request, services: ServicesDep, csrf_token: str) -> SignedIn:
    """The signed-in user of a form POST, after its ``csrf_token`` field is checked against the
    session's (``ui.csrf_failed``); :class:`SignInRedirect` without a live session.

    Called by the handler, after FastAPI has validated the form, so a malformed form is refused
    (422) before the session is looked at.
    """
    user = page_user(request, services)
    check_csrf(user, csrf_token)
    return user


def get_csrf_user(request: Request, user: UserDep) -> SignedIn:
    """The user of a state-changing script request, after its ``X-CSRF-Token`` check."""
    check_csrf(user, request.headers.get(CSRF_HEADER))
    return user


CsrfUserDep = Annotated[SignedIn, Depends(get_csrf_user)]


def get_radiologist(user: CsrfUserDep) -> SignedIn:
    """Only radiologists record findings and sign: an admin account administers, it does not
    report."""
    if user.role != Role.RADIOLOGIST:
        raise ForbiddenError("Only a radiologist may review and sign.", role=user.role)
    return user


RadiologistDep = Annotated[SignedIn, Depends(get_radiologist)]


def ui_audit(user: SignedIn, request: Request, action: str, resource: str = "") -> AuditEntry:
    return AuditEntry(user.tenant_id, user.actor, action, resource, client_address(request))
