"""A real ``basira serve`` with an analysed study and a radiologist, and Debian's Chromium
driven by Playwright, for the browser tests and the UI benchmark."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipelines.dicom.read import read_series_volume
from tests.serving.conftest import RunningService, Tenant, multipart_files

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


def submit_and_wait(service: RunningService, hospital: Tenant, files: list[Path]) -> str:
    """Upload a study through the real API and wait for its analysis; returns its UID."""
    response = httpx.post(
        f"{service.base_url}/v1/studies",
        files=multipart_files(files),
        headers=hospital.headers,
        timeout=120,
    )
    response.raise_for_status()
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = httpx.get(f"{service.base_url}/v1/jobs/{job_id}", headers=hospital.headers).json()
        if job["status"] in ("completed", "not_analysable", "failed"):
            assert job["status"] == "completed", job
            return str(response.json()["study_instance_uid"])
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not end: {service.log_tail()}")


def place_two_findings(service: RunningService, files: list[Path]) -> None:
    """Give the analysed job two findings at known places (the test release is an untrained
    network, so what it finds is arbitrary; the UI is what is under test)."""
    volume = read_series_volume(files)
    n_k, n_j, n_i = volume.shape
    db = sqlite3.connect(service.data_dir / "basira.db")
    (job_id, result_json), *_ = db.execute("SELECT id, result_json FROM jobs").fetchall()
    result = json.loads(result_json)
    findings = []
    for number, (i, j, k) in enumerate(
        [(n_i * 0.3, n_j * 0.45, n_k * 0.5), (n_i * 0.7, n_j * 0.55, n_k * 0.4)], start=1
    ):
        lps = volume.ijk_to_lps(np.array([i, j, k]))
        findings.append(
            {
                "id": number,
                "center_lps_mm": [float(v) for v in lps],
                "center_ijk": [float(i), float(j), float(k)],
                "diameter_mm": 12.0 - 3 * number,
                "volume_ml": 0.5,
                "confidence": 0.9 - 0.3 * number,
                "referenced_sop_instance_uid": volume.provenance.sop_instance_uids[round(k)],
            }
        )
    result["findings"] = findings
    db.execute(
        "UPDATE jobs SET result_json = ?, n_findings = 2 WHERE id = ?",
        (json.dumps(result), job_id),
    )
    db.commit()
    db.close()
