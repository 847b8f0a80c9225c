"""The app factory: ``create_app(settings)`` builds the whole service; tests pass their own
settings (temporary database and storage) and get the same app production runs.

Every error leaves as ``{"code", "message", "detail"}`` with the status of its class in
:mod:`pipelines.errors` or :mod:`serving.errors`; an unexpected one is logged with an id and
answered 500 without a traceback.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import BasiraError, NotFoundError
from serving.errors import (
    InternalServiceError,
    InvalidParametersError,
    MethodNotAllowedError,
    RateLimitedError,
    ServiceRequestError,
)
from serving.metrics import MetricsMiddleware
from serving.middleware import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    security_headers,
)
from serving.routes import audit, dicomweb, health, jobs, metrics, studies
from serving.services import Services
from serving.settings import Settings
from serving.ui.app import install_ui

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Extra start-up steps (e.g. the DICOM listener) that take the running services.
StartHook = Callable[[Services], None]


def create_app(
    settings: Settings | None = None, *, start_hooks: tuple[StartHook, ...] = ()
) -> FastAPI:
    """The Basira service for ``settings`` (the environment's when None)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.from_settings(settings)
        app.state.services = services
        try:  # a failing start (e.g. the DICOM port is taken) stops what already started
            if settings.run_worker:
                services.start_worker()
            for hook in start_hooks:
                hook(services)
            yield
        finally:
            services.close()

    app = FastAPI(
        title="Basira",
        summary="Assisted lung-nodule detection on chest CT: submit DICOM, get calibrated results.",
        version="0.1.0",
        lifespan=lifespan,
    )
    for router in (health.router, studies.router, dicomweb.router, jobs.router, audit.router):
        app.include_router(router)
    app.include_router(metrics.router)
    install_ui(app, settings)
    _install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)  # outermost: it sees every answer, 413s included
    return app


def _allowed_methods(request: Request, named: str) -> str:
    """Every method some operation of the API accepts on this path, with the ones Starlette
    ``named`` (it names only the first route whose path matched, so ``OPTIONS
    /dicomweb/studies`` listed POST, STOW-RS, without GET, QIDO-RS)."""
    methods = {m.strip().upper() for m in named.split(",") if m.strip()}
    path = request.url.path
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BasiraError)
    async def basira_error(_request: Request, exc: BasiraError) -> JSONResponse:
        headers = {}
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(exc.detail.get("retry_after_s", 1))
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"location": list(map(str, e.get("loc", ()))), "problem": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        error = InvalidParametersError("The request does not match the API schema.", errors=errors)
        return JSONResponse(error.to_dict(), status_code=error.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: BasiraError
        if exc.status_code == 404:
            error = NotFoundError("No such resource.")
        elif exc.status_code == 405:
            error = MethodNotAllowedError("This path does not accept this HTTP method.")
        else:
            error = ServiceRequestError(str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.pop("Allow", ""))
        return JSONResponse(error.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("unexpected error %s", error_id, exc_info=exc)
        error = InternalServiceError(
            f"An unexpected error occurred; it was logged as {error_id}.", error_id=error_id
        )
        headers = {k.decode(): v.decode() for k, v in security_headers(request.url.path)}
        return JSONResponse(error.to_dict(), status_code=500, headers=headers)
