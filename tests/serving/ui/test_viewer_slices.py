"""Viewer traffic: slices decoded one file at a time equal the decoded volume, before the series
was ever laid out; slice requests renew the session's idle timer at most every 30 s instead of
writing on each; a sign-off with no feedback before it commits before its audit event."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from pipelines.dicom.read import read_series_volume
from serving.db import Database
from serving.models import AuditEvent
from serving.settings import Settings
from serving.ui.models import UiSession
from serving.ui.viewer import hu_int16
from tests.serving.ui.conftest import Analysed, login


def test_slices_served_one_by_one_equal_the_decoded_volume(
    ui_client: TestClient, analysed: Analysed, study_files: list[Path]
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    expected = hu_int16(read_series_volume(study_files).array_hu)
    base = f"/ui/api/studies/{analysed.study_uid}"
    first = ui_client.get(f"{base}/slices/10", headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200  # asked before the metadata: nothing decoded yet
    n_k, n_j, n_i = ui_client.get(f"{base}/meta").json()["shape_kji"]
    assert (n_k, n_j, n_i) == expected.shape
    np.testing.assert_array_equal(np.frombuffer(first.content, "<i2"), expected[10].ravel())
    for k in range(n_k):
        raw = ui_client.get(f"{base}/slices/{k}", headers={"Accept-Encoding": "identity"})
        np.testing.assert_array_equal(
            np.frombuffer(raw.content, "<i2").reshape(n_j, n_i), expected[k]
        )


def test_signoff_without_feedback_commits_before_its_audit_event(
    ui_client: TestClient, analysed: Analysed, ui_settings: Settings
) -> None:
    csrf = login(ui_client, analysed.hospital.name, "rad")
    started = time.monotonic()
    signed = ui_client.post(
        f"/ui/api/studies/{analysed.study_uid}/signoff",
        json={"impression": "No nodule."},
        headers={"X-CSRF-Token": csrf},
    )
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"status": "signed", "locked": True}
    assert time.monotonic() - started < 10  # not the 30 s SQLite busy timeout
    db = Database(ui_settings.resolved_database_url)
    with db.session() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "ui.review.sign")
        ).one()
    db.dispose()
    assert (event.actor, event.outcome) == ("user:rad", "ok")


def _last_seen(settings: Settings, shift_s: float = 0.0) -> float:
    """The only session's ``last_seen_at`` (epoch s), after moving it ``shift_s`` back."""
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        row = session.scalars(select(UiSession)).one()
        row.last_seen_at -= timedelta(seconds=shift_s)
        seen = row.last_seen_at.timestamp()
    db.dispose()
    return seen


def test_slice_requests_renew_the_idle_timer_at_most_every_30_s(
    ui_client: TestClient, analysed: Analysed, ui_settings: Settings
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    before = _last_seen(ui_settings, shift_s=5)
    for k in range(3):
        assert ui_client.get(f"/ui/api/studies/{analysed.study_uid}/slices/{k}").status_code == 200
    assert _last_seen(ui_settings) == before  # 5 s stale: no write
    stale = _last_seen(ui_settings, shift_s=60)
    ui_client.get(f"/ui/api/studies/{analysed.study_uid}/slices/0")
    assert _last_seen(ui_settings) > stale + 60
