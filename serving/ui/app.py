"""The review UI on an app: :func:`install_ui` adds its routes, static assets, per-app state and
Content-Security-Policy, and sends a page or form request without a live session to sign in."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.ratelimit import make_rate_limiter
from serving.settings import Settings
from serving.ui import api, pages
from serving.ui.deps import SignInRedirect, UiState
from serving.ui.viewer import SeriesCache

__all__ = ["UI_CSP", "install_ui"]

HERE = Path(__file__).parent
#: Everything from this origin only: no inline script or style, no CDN, no framing.
UI_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    b"frame-ancestors 'none'"
)


def install_ui(app: FastAPI, settings: Settings) -> None:
    """Add the UI's routes, static assets, state and CSP to ``app``."""
    app.state.ui = UiState(
        templates=Jinja2Templates(directory=HERE / "templates"),
        series=SeriesCache(settings.ui_volume_cache),
        login_limiter=make_rate_limiter(settings.ui_login_per_minute, settings.redis_url),
    )
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.add_exception_handler(SignInRedirect, pages.redirect_to_sign_in)
    app.add_middleware(UiCspMiddleware)


class UiCspMiddleware:
    """Give every ``/ui`` response the UI's Content-Security-Policy."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/ui") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", UI_CSP))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_csp)
