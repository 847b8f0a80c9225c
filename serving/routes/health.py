"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: the database, the
storage and, when it runs here, the worker's model are usable)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready; `detail.checks` says why"}})
def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, Any] = {"database": "ok", "storage": "ok"}
    try:
        services.db.ping()
    except Exception as exc:  # any driver error means the same thing: not ready
        checks["database"] = type(exc).__name__
    try:
        services.store.check_space()
    except Exception as exc:
        checks["storage"] = getattr(exc, "code", type(exc).__name__)
    worker = services.worker
    if worker is not None:
        checks["model"] = (
            "ok"
            if worker.model is not None
            else (worker.model_error.code if worker.model_error else "loading")
        )
    ready = all(value == "ok" for value in checks.values())
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        "code": "service.unavailable",
        "message": "The service is not ready.",
        "detail": {"checks": checks},
    }
    return JSONResponse(body, status_code=503)
