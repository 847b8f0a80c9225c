"""What schemathesis found, with all its checks, where the API and its published schema
disagreed (issue 15): each now answers as the schema says."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.serving.conftest import Tenant, admin_key


@pytest.mark.parametrize("since", ["0.5", "1700000000", "2026-01-31", "yesterday"])
def test_audit_since_that_is_not_a_date_time_is_refused(
    client: TestClient, hospital: Tenant, settings: Settings, since: str
) -> None:
    """The schema says ``format: date-time``; pydantic alone took ``0.5`` as seconds since 1970."""
    headers = {"Authorization": f"Bearer {admin_key(settings, hospital.name)}"}
    response = client.get("/v1/audit", params={"since": since}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "request.invalid_parameters"
    for good in ("2026-01-31T00:00:00Z", "2026-01-31T00:00", "2026-01-31T00:00:00.5+01:00"):
        assert client.get("/v1/audit", params={"since": good}, headers=headers).status_code == 200
    since_schema = next(
        p
        for p in client.get("/openapi.json").json()["paths"]["/v1/audit"]["get"]["parameters"]
        if p["name"] == "since"
    )["schema"]
    assert {"type": "string", "format": "date-time"} in since_schema["anyOf"]


def test_a_405_names_every_method_the_path_accepts(client: TestClient, hospital: Tenant) -> None:
    """STOW-RS (POST) and QIDO-RS (GET) share /dicomweb/studies: Starlette named only POST."""
    response = client.options("/dicomweb/studies", headers=hospital.headers)
    assert response.status_code == 405
    assert response.json()["code"] == "request.method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    single = client.delete("/v1/audit", headers=hospital.headers)
    assert (single.status_code, single.headers["allow"]) == (405, "GET, HEAD")


def test_qido_study_uid_parameter_publishes_the_rule_the_server_enforces(
    client: TestClient, hospital: Tenant
) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/dicomweb/studies"]["get"][
        "parameters"
    ]
    (uid,) = [p for p in parameters if p["name"] == "StudyInstanceUID"]
    items = uid["schema"]["anyOf"][0]["items"]
    assert items["maxLength"] == 64 and items["pattern"].startswith("^")
    for refused in ("1.2.x", "1..2", "1." + "2" * 70):
        response = client.get(
            "/dicomweb/studies", params={"StudyInstanceUID": refused}, headers=hospital.headers
        )
        assert response.status_code == 422
        assert response.json()["code"] == "request.invalid_parameters"
    for accepted in ("", "1.2.3", "1.2.3,1.2.4", "1.2.3\\1.2.4", " 1.2.3 , 1.2.4 "):
        response = client.get(
            "/dicomweb/studies", params={"StudyInstanceUID": accepted}, headers=hospital.headers
        )
        assert response.status_code == 204, (accepted, response.text)
