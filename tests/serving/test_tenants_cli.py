"""``basira tenants …`` as an operator runs it (a subprocess on the service's database): keys are
printed once and work, and every refusal is one ``error[code]: message`` line with exit 3."""

from __future__ import annotations

import os
import subprocess

from fastapi.testclient import TestClient

from serving.settings import Settings
from tests.cli import Basira
from tests.serving.conftest import Tenant

NO_JOB = "/v1/jobs/00000000-0000-0000-0000-000000000000"


def run_basira(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``basira ARGS`` with the environment pointing at ``settings``' data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASIRA_")}
    env["BASIRA_DATA_DIR"] = str(settings.data_dir)
    return Basira().run(*args, env=env, timeout=120)


def printed_key(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return next(
        line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("api key")
    )


def assert_refused(done: subprocess.CompletedProcess[str], code: str) -> None:
    """Exit 3 (bad input) and exactly one line on stderr naming the code; no traceback."""
    assert done.returncode == 3, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error[{code}]: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_created_tenant_key_works_until_its_keys_are_revoked(
    client: TestClient, settings: Settings
) -> None:
    created = run_basira(settings, "tenants", "create", "CHU Hassan II", "--ae-title", "CHU_FES")
    hospital = Tenant("CHU Hassan II", printed_key(created))
    assert "not shown again" in created.stderr
    listed = run_basira(settings, "tenants", "list")
    assert "CHU Hassan II" in listed.stdout and "ae=CHU_FES" in listed.stdout
    assert created.stdout.count(hospital.key) == 1  # shown once; the database keeps a hash
    assert client.get(NO_JOB, headers=hospital.headers).json()["code"] == "job.not_found"

    revoked = run_basira(settings, "tenants", "revoke-keys", "CHU Hassan II")
    assert revoked.stdout.strip() == "revoked 1 key(s) of CHU Hassan II"
    refused = client.get(NO_JOB, headers=hospital.headers)
    assert (refused.status_code, refused.json()["code"]) == (401, "auth.invalid_key")

    admin = Tenant(
        "CHU Hassan II",
        printed_key(run_basira(settings, "tenants", "add-key", "CHU Hassan II", "--role", "admin")),
    )
    assert client.get("/v1/audit", headers=admin.headers).status_code == 200


def test_tenant_commands_refuse_bad_input_with_one_coded_line(
    settings: Settings, hospital: Tenant
) -> None:
    """``hospital`` is "Hôpital Ibn Sina" with AE title IBNSINA_CT."""
    refusals = {
        "tenant.exists": ("create", "Hôpital Ibn Sina"),
        "tenant.ae_title_in_use": ("create", "CHU Mohammed VI", "--ae-title", "IBNSINA_CT"),
        "tenant.invalid_ae_title": ("create", "CHU Oujda", "--ae-title", "A_TITLE_OF_17_CHR"),
        "tenant.not_found": ("add-key", "Nowhere General"),
    }
    for code, args in refusals.items():
        assert_refused(run_basira(settings, "tenants", *args), code)
