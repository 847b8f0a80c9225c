"""The real server process: started by ``basira serve``, answering over loopback."""

from __future__ import annotations

import httpx

from tests.serving.conftest import RunningService


def test_basira_serve_starts_ready_and_refuses_requests_without_a_key(
    running_service: RunningService,
) -> None:
    ready = httpx.get(f"{running_service.base_url}/readyz").json()
    assert ready["checks"] == {"database": "ok", "storage": "ok", "model": "ok"}
    refused = httpx.get(f"{running_service.base_url}/v1/jobs/00000000-0000-0000-0000-000000000000")
    assert refused.status_code == 401
    assert refused.json()["code"] == "auth.missing_key"
    assert refused.headers["x-content-type-options"] == "nosniff"
