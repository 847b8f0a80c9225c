"""The review UI's pages: sign in and out, the worklist, the viewer, and the language switch.

Pages render server-side with the page locale's catalog; a request without a live session is
sent to the sign-in page. Forms carry the CSRF token as a hidden field; the sign-in form, which
has no session yet, carries a double-submit token (cookie and field must match).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from pipelines.errors import BasiraError
from serving.audit import AuditEntry
from serving.deps import ServicesDep, client_address
from serving.models import Tenant
from serving.schemas import StudyUID
from serving.ui.accounts import authenticate_user
from serving.ui.deps import UiStateDep, form_user, page_user
from serving.ui.i18n import RTL_LOCALES, catalog, negotiate, translator
from serving.ui.models import Locale, User
from serving.ui.sessions import COOKIE_NAME, SignedIn, check_csrf, end_session
from serving.ui.sessions import start_session as open_session

router = APIRouter(prefix="/ui", include_in_schema=False)

LOGIN_CSRF_COOKIE = "basira_login_csrf"


def _render(
    ui: UiStateDep, request: Request, name: str, locale: Locale, status: int = 200, **ctx: Any
) -> HTMLResponse:
    context = {
        "t": translator(locale),
        "locale": locale.value,
        "dir": "rtl" if locale in RTL_LOCALES else "ltr",
        "catalog": catalog(locale),
        "locales": [loc.value for loc in Locale],
        **ctx,
    }
    return ui.templates.TemplateResponse(request, name, context, status_code=status)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


async def redirect_to_sign_in(_request: Request, _exc: Exception) -> Response:
    """The answer to a page or form request without a live session (an app exception handler)."""
    return _to_login()


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, ui: UiStateDep, services: ServicesDep, lang: str | None = None
) -> Response:
    """The sign-in form, in the requested or the browser's language."""
    locale = negotiate(lang, request.headers.get("accept-language", ""))
    return _login_form(request, ui, services, locale)


def _login_form(
    request: Request,
    ui: UiStateDep,
    services: ServicesDep,
    locale: Locale,
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    token = secrets.token_urlsafe(24)
    response = _render(ui, request, "login.html", locale, status, login_csrf=token, error=error)
    _set_cookie(response, services, LOGIN_CSRF_COOKIE, token, path="/ui/login")
    return response


def _set_cookie(
    response: Response, services: ServicesDep, name: str, value: str, *, path: str = "/ui"
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=not services.settings.ui_insecure_cookies,
        path=path,
    )


class LoginForm(BaseModel):
    """The sign-in form's fields."""

    model_config = ConfigDict(extra="forbid")

    hospital: str = Field(max_length=200)
    username: str = Field(max_length=100)
    password: str = Field(max_length=1000)
    csrf_token: str = Field(max_length=100)
    lang: str = Field(default="en", max_length=8)


@router.post("/login")
def login(
    request: Request,
    ui: UiStateDep,
    services: ServicesDep,
    form: Annotated[LoginForm, Form()],
) -> Response:
    """Check the password (rate limited per address and per name, audited) and open a session."""
    locale = negotiate(form.lang)
    entry = AuditEntry(None, f"user:{form.username[:80]}", "ui.login", "", client_address(request))
    try:
        with services.auditor.audited(entry):
            sent = request.cookies.get(LOGIN_CSRF_COOKIE, "")
            check_csrf(SignedIn(0, "", "", "", "", sent), form.csrf_token)
            ui.login_limiter.hit(f"ip:{client_address(request)}")
            ui.login_limiter.hit(f"user:{form.hospital}/{form.username}")
            token = _authenticate(services, entry, form)
    except BasiraError as exc:
        message = translator(locale)(f"error.{exc.code}")
        return _login_form(request, ui, services, locale, error=message, status=exc.http_status)
    response = RedirectResponse("/ui/", status_code=303)
    _set_cookie(response, services, COOKIE_NAME, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


def _authenticate(services: ServicesDep, entry: AuditEntry, form: LoginForm) -> str:
    with services.db.session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == form.hospital)) or ""
        user = authenticate_user(session, tenant_id, form.username, form.password)
        entry.tenant_id = user.tenant_id
        return open_session(session, user)


@router.post("/logout")
def logout(
    request: Request, services: ServicesDep, csrf_token: Annotated[str, Form(max_length=100)]
) -> Response:
    """End the session server-side and clear the cookie."""
    user = form_user(request, services, csrf_token)
    with services.db.session() as session:
        end_session(session, request.cookies.get(COOKIE_NAME))
    services.auditor.record(AuditEntry(user.tenant_id, user.actor, "ui.logout"))
    response = _to_login()
    response.delete_cookie(COOKIE_NAME, path="/ui")
    return response


@router.post("/locale")
def set_locale(
    request: Request,
    services: ServicesDep,
    locale: Annotated[Locale, Form()],
    csrf_token: Annotated[str, Form(max_length=100)],
    back: Annotated[str, Form(max_length=300)] = "/ui/",
) -> Response:
    """Switch the user's language (kept on the account)."""
    user = form_user(request, services, csrf_token)
    with services.db.session() as session:
        row = session.get(User, user.user_id)
        if row is not None:
            row.locale = locale
    target = back if back.startswith("/ui/") else "/ui/"
    return RedirectResponse(target, status_code=303)


@router.get("/", response_class=HTMLResponse)
def worklist_page(request: Request, ui: UiStateDep, services: ServicesDep) -> Response:
    """The worklist page; rows are loaded by script from ``/ui/api/worklist``."""
    user = page_user(request, services)
    return _render(ui, request, "worklist.html", Locale(user.locale), user=user)


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def viewer_page(
    study_uid: StudyUID, request: Request, ui: UiStateDep, services: ServicesDep
) -> Response:
    """The viewer of one study; images, findings and review load by script."""
    user = page_user(request, services)
    return _render(ui, request, "viewer.html", Locale(user.locale), user=user, study_uid=study_uid)
