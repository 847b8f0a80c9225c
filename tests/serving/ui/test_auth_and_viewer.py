"""Sign-in, sessions, CSRF, roles, tenant isolation, and the viewer's metadata and slices."""

from __future__ import annotations

import gzip
import re

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.db import Database
from serving.models import AuditEvent
from serving.settings import Settings
from serving.ui.models import Role
from tests.serving.conftest import make_tenant
from tests.serving.ui.conftest import Analysed, add_user, login


def test_wrong_password_is_refused_audited_and_rate_limited(
    ui_client: TestClient, analysed: Analysed, ui_settings: Settings
) -> None:
    page = ui_client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"hospital": analysed.hospital.name, "username": "rad", "password": "nope"}
    refused = ui_client.post("/ui/login", data={**form, "csrf_token": token})
    assert refused.status_code == 401
    assert "basira_session" not in ui_client.cookies
    db = Database(ui_settings.resolved_database_url)
    with db.session() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "ui.login")
        ).all()
    assert "ui.login_failed" in outcomes
    codes = set()
    for _ in range(ui_settings.ui_login_per_minute + 1):
        page = ui_client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        codes.add(ui_client.post("/ui/login", data={**form, "csrf_token": token}).status_code)
    assert 429 in codes  # request.rate_limited


def test_login_form_without_its_token_is_refused(ui_client: TestClient, analysed: Analysed) -> None:
    form = {"hospital": analysed.hospital.name, "username": "rad", "password": "x"}
    response = ui_client.post("/ui/login", data={**form, "csrf_token": "forged"})
    assert response.status_code == 403  # ui.csrf_failed


def test_session_cookie_is_httponly_strict_and_secure_unless_insecure_dev(
    ui_client: TestClient, analysed: Analysed
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    page = ui_client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = ui_client.post(
        "/ui/login",
        data={
            "hospital": analysed.hospital.name,
            "username": "rad",
            "password": "correct horse battery staple",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert "secure" not in cookie  # BASIRA_UI_INSECURE_COOKIES for plain-HTTP tests


def test_ui_pages_and_api_need_a_session(ui_client: TestClient) -> None:
    assert ui_client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"
    response = ui_client.get("/ui/api/worklist")
    assert response.status_code == 401
    assert response.json()["code"] == "ui.session_required"


def test_writes_without_csrf_header_are_refused(ui_client: TestClient, analysed: Analysed) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    response = ui_client.post(
        f"/ui/api/studies/{analysed.study_uid}/signoff", json={"impression": "x"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "ui.csrf_failed"


def test_logout_ends_the_session_server_side(ui_client: TestClient, analysed: Analysed) -> None:
    csrf = login(ui_client, analysed.hospital.name, "rad")
    cookie = ui_client.cookies.get("basira_session")
    ui_client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    ui_client.cookies.set("basira_session", cookie or "", path="/ui")
    assert ui_client.get("/ui/api/worklist").status_code == 401


def test_forms_need_a_session_then_its_csrf_token(
    ui_client: TestClient, ui_settings: Settings
) -> None:
    """Every form POST: a malformed form is refused first (422); without a live session the
    browser is sent to sign in, whatever token it sent; with one, a token not the session's is
    refused (403) and nothing is done."""
    forms = {"/ui/logout": {}, "/ui/locale": {"locale": "fr", "back": "/ui/studies/1.2.3"}}
    for path, fields in forms.items():
        signed_out = ui_client.post(
            path, data={**fields, "csrf_token": "forged"}, follow_redirects=False
        )
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/ui/login")
        assert ui_client.post(path, data=fields).status_code == 422
    viewer = ui_client.get("/ui/studies/1.2.3", follow_redirects=False)
    assert (viewer.status_code, viewer.headers["location"]) == (303, "/ui/login")

    hospital = make_tenant(ui_settings, "Hôpital Ibn Sina")
    add_user(ui_settings, hospital.name, "rad", Role.RADIOLOGIST)
    csrf = login(ui_client, hospital.name, "rad")
    for path, fields in forms.items():
        forged = ui_client.post(path, data={**fields, "csrf_token": "forged"})
        assert (forged.status_code, forged.json()["code"]) == (403, "ui.csrf_failed")
    assert '<html lang="en"' in ui_client.get("/ui/").text

    switched = ui_client.post(
        "/ui/locale", data={**forms["/ui/locale"], "csrf_token": csrf}, follow_redirects=False
    )
    assert (switched.status_code, switched.headers["location"]) == (303, "/ui/studies/1.2.3")
    assert '<html lang="fr"' in ui_client.get("/ui/").text
    out = ui_client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    assert ui_client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"
    db = Database(ui_settings.resolved_database_url)
    with db.session() as session:
        logouts = session.execute(
            select(AuditEvent.actor, AuditEvent.outcome).where(AuditEvent.action == "ui.logout")
        ).all()
    db.dispose()
    assert [tuple(row) for row in logouts] == [("user:rad", "ok")]


def test_idle_session_expires(
    ui_settings: Settings, analysed: Analysed, ui_client: TestClient
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    ui_client.app.state.services.settings = ui_settings.model_copy(  # type: ignore[attr-defined]
        update={"ui_session_idle_s": 1e-6}
    )
    assert ui_client.get("/ui/api/worklist").json()["code"] == "ui.session_required"


def test_worklist_lists_the_analysed_study_with_ai_result(
    ui_client: TestClient, analysed: Analysed
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    rows = ui_client.get("/ui/api/worklist").json()["rows"]
    assert [r["study_instance_uid"] for r in rows] == [analysed.study_uid]
    assert rows[0]["status"] == "new"
    assert rows[0]["probability"] is not None
    assert rows[0]["label"] in ("tumour_suspected", "no_tumour_suspected")
    assert ui_client.get("/ui/api/worklist", params={"status": "signed"}).json()["rows"] == []
    assert ui_client.get("/ui/api/worklist", params={"q": "9.9.9"}).json()["rows"] == []


def test_another_hospitals_user_sees_nothing(
    ui_client: TestClient, analysed: Analysed, ui_settings: Settings
) -> None:
    other = make_tenant(ui_settings, "Clinique du Parc")
    add_user(ui_settings, other.name, "rad", Role.RADIOLOGIST)
    login(ui_client, other.name, "rad")
    assert ui_client.get("/ui/api/worklist").json()["rows"] == []
    meta = ui_client.get(f"/ui/api/studies/{analysed.study_uid}/meta")
    assert meta.status_code == 404 and meta.json()["code"] == "study.not_found"
    assert ui_client.get(f"/ui/api/studies/{analysed.study_uid}/slices/0").status_code == 404


def test_metadata_and_slices_match_the_stored_series(
    ui_client: TestClient, analysed: Analysed
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    meta = ui_client.get(f"/ui/api/studies/{analysed.study_uid}/meta").json()
    n_k, n_j, n_i = meta["shape_kji"]
    assert n_k == len(meta["sop_instance_uids"]) == 64
    assert meta["header"]["PatientID"]  # read from the DICOM at view time
    for finding in meta["findings"]:
        assert finding["k_range"][0] <= finding["k"] <= finding["k_range"][1]
    raw = ui_client.get(
        f"/ui/api/studies/{analysed.study_uid}/slices/10",
        headers={"Accept-Encoding": "identity"},
    )
    assert raw.headers["cache-control"].startswith("private")
    hu = np.frombuffer(raw.content, "<i2").reshape(n_j, n_i)
    assert hu.min() < -500 and hu.max() > 0  # air and tissue in HU
    zipped = ui_client.get(
        f"/ui/api/studies/{analysed.study_uid}/slices/10", headers={"Accept-Encoding": "gzip"}
    )
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == raw.content or gzip.decompress(zipped.content) == raw.content
    missing = ui_client.get(f"/ui/api/studies/{analysed.study_uid}/slices/64")
    assert missing.json()["code"] == "viewer.slice_out_of_range"


def test_ui_has_its_own_csp_and_the_api_keeps_deny_all(
    ui_client: TestClient, analysed: Analysed
) -> None:
    page = ui_client.get("/ui/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert (
        ui_client.get("/healthz")
        .headers["content-security-policy"]
        .startswith("default-src 'none'")
    )


def test_study_open_is_audited_with_the_user(
    ui_client: TestClient, analysed: Analysed, ui_settings: Settings
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    ui_client.get(f"/ui/api/studies/{analysed.study_uid}/meta")
    db = Database(ui_settings.resolved_database_url)
    with db.session() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "ui.study.open")
        ).one()
    assert (event.actor, event.resource, event.outcome) == ("user:rad", analysed.study_uid, "ok")


def test_audit_page_is_for_admins_only(ui_client: TestClient, analysed: Analysed) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    assert ui_client.get("/ui/api/audit").json()["code"] == "auth.forbidden"
    login(ui_client, analysed.hospital.name, "it")
    assert ui_client.get("/ui/api/audit").status_code == 200
