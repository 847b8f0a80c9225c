"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Served without an API key, like ``/healthz``: it holds counts, timings and the model version,
never patient data or tenant names (requests are labelled by route template), and API keys
belong to tenants while a scraper belongs to the operator. Keep it off the public ingress
(docs/operations.md).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def metrics(services: ServicesDep) -> Response:
    """Queue depth, job latency, HTTP traffic and the model version, for Prometheus."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
