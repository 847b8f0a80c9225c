"""UI fixtures: the service app with plain-HTTP cookies, an analysed study, and signed-in users."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.db import Database
from serving.settings import Settings
from serving.tenants import get_tenant
from serving.ui.accounts import create_user
from serving.ui.models import Role
from tests.serving.conftest import Tenant, make_tenant, multipart_files
from tests.serving.test_upload_flow import run_worker_once

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ui_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ui_insecure_cookies": True})


@pytest.fixture
def ui_client(ui_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ui_settings)) as test_client:
        yield test_client


def add_user(settings: Settings, hospital: str, username: str, role: Role) -> None:
    db = Database(settings.resolved_database_url)
    db.create_schema()
    with db.session() as session:
        create_user(session, get_tenant(session, hospital).id, username, PASSWORD, role=role)
    db.dispose()


@dataclass
class Analysed:
    hospital: Tenant
    study_uid: str


@pytest.fixture
def analysed(ui_client: TestClient, ui_settings: Settings, study_files: list[Path]) -> Analysed:
    """A hospital with a radiologist ``rad`` and an admin ``it``, and one analysed study."""
    hospital = make_tenant(ui_settings, "Hôpital Ibn Sina")
    add_user(ui_settings, hospital.name, "rad", Role.RADIOLOGIST)
    add_user(ui_settings, hospital.name, "it", Role.ADMIN)
    response = ui_client.post(
        "/v1/studies", files=multipart_files(study_files), headers=hospital.headers
    )
    assert response.status_code == 202, response.text
    run_worker_once(ui_client)
    return Analysed(hospital, response.json()["study_instance_uid"])


def login(client: TestClient, hospital: str, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token (from the worklist page)."""
    page = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    response = client.post(
        "/ui/login",
        data={
            "hospital": hospital,
            "username": username,
            "password": password,
            "csrf_token": token.group(1),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    worklist = client.get("/ui/")
    csrf = re.search(r'data-csrf="([^"]+)"', worklist.text)
    assert csrf, worklist.text
    return csrf.group(1)
