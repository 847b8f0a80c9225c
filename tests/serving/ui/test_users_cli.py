"""``basira users create`` against a real service database, then sign in with the password."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.serving.conftest import BASIRA, make_tenant, service_env
from tests.serving.ui.conftest import login


def _basira(
    settings: Settings, release: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = service_env(settings.data_dir, release, 0)
    return subprocess.run(
        [BASIRA, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_users_create_prints_a_generated_password_once_that_signs_in(
    ui_client: TestClient, ui_settings: Settings, service_release: Path
) -> None:
    make_tenant(ui_settings, "Hôpital Ibn Sina")
    done = _basira(ui_settings, service_release, "users", "create", "Hôpital Ibn Sina", "amina")
    assert done.returncode == 0, done.stderr
    password = next(
        line.split(": ", 1)[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("password")
    )
    assert login(ui_client, "Hôpital Ibn Sina", "amina", password)


def test_users_create_reads_the_password_from_stdin_and_refuses_a_duplicate(
    ui_client: TestClient, ui_settings: Settings, service_release: Path
) -> None:
    make_tenant(ui_settings, "Hôpital Ibn Sina")
    args = ("users", "create", "Hôpital Ibn Sina", "karim", "--role", "admin", "--password-stdin")
    done = _basira(ui_settings, service_release, *args, stdin="a long enough secret\n")
    assert done.returncode == 0, done.stderr
    assert "password" not in done.stdout
    again = _basira(ui_settings, service_release, *args, stdin="a long enough secret\n")
    assert again.returncode == 3
    assert "error[user.exists]" in again.stderr + again.stdout
