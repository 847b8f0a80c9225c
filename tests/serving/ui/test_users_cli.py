"""``basira users create`` against a real service database, then sign in with the password."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.cli import Basira
from tests.serving.conftest import make_tenant, service_env
from tests.serving.ui.conftest import login


def test_users_create_prints_a_generated_password_once_that_signs_in(
    basira: Basira, ui_client: TestClient, ui_settings: Settings, service_release: Path
) -> None:
    make_tenant(ui_settings, "Hôpital Ibn Sina")
    done = basira.run(
        "users",
        "create",
        "Hôpital Ibn Sina",
        "amina",
        env=service_env(ui_settings.data_dir, service_release, 0),
    )
    assert done.returncode == 0, done.stderr
    password = next(
        line.split(": ", 1)[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("password")
    )
    assert login(ui_client, "Hôpital Ibn Sina", "amina", password)


def test_users_create_reads_the_password_from_stdin_and_refuses_a_duplicate(
    basira: Basira, ui_client: TestClient, ui_settings: Settings, service_release: Path
) -> None:
    make_tenant(ui_settings, "Hôpital Ibn Sina")
    args = ("users", "create", "Hôpital Ibn Sina", "karim", "--role", "admin", "--password-stdin")
    done = basira.run(
        *args,
        stdin="a long enough secret\n",
        env=service_env(ui_settings.data_dir, service_release, 0),
    )
    assert done.returncode == 0, done.stderr
    assert "password" not in done.stdout
    again = basira.run(
        *args,
        stdin="a long enough secret\n",
        env=service_env(ui_settings.data_dir, service_release, 0),
    )
    assert again.returncode == 3
    assert "error[user.exists]" in again.stderr + again.stdout
