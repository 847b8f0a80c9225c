"""Who may call the API: a tenant's key, never a missing, malformed, unknown or revoked one; the
audit log for the tenant's admin keys only, recording who read what, from where, how it ended."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.audit import list_events
from serving.services import Services
from serving.settings import Settings
from serving.tenants import get_tenant, revoke_keys
from tests.serving.conftest import Tenant, admin_key, make_tenant, multipart_files

NO_JOB = "/v1/jobs/00000000-0000-0000-0000-000000000000"
NO_STUDY = "/v1/studies/1.2.826.0.1.999"


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "auth.missing_key"),
        ({"Authorization": "Bearer "}, "auth.missing_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "auth.missing_key"),
        ({"Authorization": "Bearer not-a-basira-key"}, "auth.invalid_key"),
        ({"Authorization": "Bearer bsr_000000000000_unknownsecret"}, "auth.invalid_key"),
    ],
)
def test_requests_without_a_valid_key_are_refused_401_and_audited(
    client: TestClient, hospital: Tenant, headers: dict[str, str], code: str
) -> None:
    for path in (NO_STUDY, NO_JOB, "/v1/audit"):
        response = client.get(path, headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, code)
    with services_of(client).db.sessions() as session:
        events = list_events(session, tenant_id=None, action="auth")
    assert [(e.actor, e.outcome) for e in events] == [("anonymous", code)] * 3
    assert events[0].resource == "/v1/audit" and events[0].client == "testclient"


def test_a_revoked_key_is_refused_like_an_unknown_one(client: TestClient, hospital: Tenant) -> None:
    assert client.get(NO_JOB, headers=hospital.headers).json()["code"] == "job.not_found"
    with services_of(client).db.session() as session:
        assert revoke_keys(session, get_tenant(session, hospital.name)) == 1
    refused = client.get(NO_JOB, headers=hospital.headers)
    assert (refused.status_code, refused.json()["code"]) == (401, "auth.invalid_key")


def test_the_audit_log_is_for_admin_keys_and_records_who_read_what_from_where(
    client: TestClient, settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    forbidden = client.get("/v1/audit", headers=hospital.headers)
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "auth.forbidden")

    upload = client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    ).json()
    uid, job_id = upload["study_instance_uid"], upload["job_id"]
    assert client.get(f"/v1/studies/{uid}", headers=hospital.headers).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=hospital.headers).status_code == 200
    assert client.get(NO_STUDY, headers=hospital.headers).status_code == 404
    other = make_tenant(settings, "Clinique Al Madina")
    assert client.get(f"/v1/studies/{uid}", headers=other.headers).status_code == 404

    admin = Tenant(hospital.name, admin_key(settings, hospital.name))
    events = client.get("/v1/audit", headers=admin.headers)
    assert events.status_code == 200
    actor = "key:" + hospital.key.split("_")[1]
    seen = [
        (e["actor"], e["action"], e["resource"], e["client"], e["outcome"]) for e in events.json()
    ]
    assert seen == [  # newest first; the other tenant's attempt is in its own log
        (actor, "study.read", "1.2.826.0.1.999", "testclient", "study.not_found"),
        (actor, "job.read", job_id, "testclient", "ok"),
        (actor, "study.read", uid, "testclient", "ok"),
        (actor, "study.upload", uid, "testclient", "ok"),
    ]
    assert all(e["at"] for e in events.json())
    reread = client.get("/v1/audit", params={"limit": 1}, headers=admin.headers).json()
    assert [(e["action"], e["outcome"]) for e in reread] == [("audit.read", "ok")]
