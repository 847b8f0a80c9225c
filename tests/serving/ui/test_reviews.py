"""Feedback storage, sign-off lock, roles on writes, and the signed review as a DICOM SR."""

from __future__ import annotations

import io
from typing import Any

import pydicom
from fastapi.testclient import TestClient

from tests.serving.ui.conftest import Analysed, login


def _post(client: TestClient, uid: str, csrf: str, path: str, body: dict[str, Any]) -> Any:
    return client.post(f"/ui/api/studies/{uid}/{path}", json=body, headers={"X-CSRF-Token": csrf})


def _findings(client: TestClient, uid: str) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = client.get(f"/ui/api/studies/{uid}/meta").json()["findings"]
    return findings


def test_feedback_is_stored_with_user_model_and_time_then_signoff_locks(
    ui_client: TestClient, analysed: Analysed
) -> None:
    uid = analysed.study_uid
    csrf = login(ui_client, analysed.hospital.name, "rad")
    findings = _findings(ui_client, uid)
    if findings:
        assert (
            _post(
                ui_client,
                uid,
                csrf,
                "feedback",
                {"action": "accept", "finding_id": findings[0]["id"]},
            ).status_code
            == 201
        )
        no_reason = _post(
            ui_client, uid, csrf, "feedback", {"action": "reject", "finding_id": findings[0]["id"]}
        )
        assert no_reason.json()["code"] == "review.reason_required"
    unknown = _post(ui_client, uid, csrf, "feedback", {"action": "accept", "finding_id": 999})
    assert unknown.json()["code"] == "review.finding_not_found"
    bad_add = _post(ui_client, uid, csrf, "feedback", {"action": "add"})
    assert bad_add.json()["code"] == "review.invalid"
    added = _post(
        ui_client,
        uid,
        csrf,
        "feedback",
        {"action": "add", "center_ijk": [20, 30, 12], "diameter_mm": 7},
    )
    assert added.status_code == 201, added.text
    assert len(added.json()["center_lps_mm"]) == 3
    _post(
        ui_client,
        uid,
        csrf,
        "feedback",
        {"action": "comment", "comment": "calcified granuloma nearby"},
    )
    not_signed = ui_client.get(f"/ui/api/studies/{uid}/review/sr")
    assert not_signed.json()["code"] == "review.not_signed"

    review = ui_client.get(f"/ui/api/studies/{uid}/review").json()
    actions = [(row["action"], row["user"]) for row in review["feedback"]]
    assert actions[-2:] == [("add", "rad"), ("comment", "rad")]
    assert all(row["model_name"] == "lung-nodule-unet" and row["at"] for row in review["feedback"])
    assert ui_client.get("/ui/api/worklist").json()["rows"][0]["status"] == "in_review"

    signed = _post(ui_client, uid, csrf, "signoff", {"impression": "One 7 mm nodule, follow up."})
    assert signed.json() == {"status": "signed", "locked": True}
    again = _post(ui_client, uid, csrf, "feedback", {"action": "comment", "comment": "late"})
    assert again.status_code == 409 and again.json()["code"] == "review.locked"
    assert (
        _post(ui_client, uid, csrf, "signoff", {"impression": "x"}).json()["code"]
        == "review.locked"
    )
    assert ui_client.get("/ui/api/worklist").json()["rows"][0]["status"] == "signed"


def test_signed_review_exports_as_comprehensive_3d_sr_with_the_radiologist(
    ui_client: TestClient, analysed: Analysed
) -> None:
    uid = analysed.study_uid
    csrf = login(ui_client, analysed.hospital.name, "rad")
    _post(
        ui_client,
        uid,
        csrf,
        "feedback",
        {"action": "add", "center_ijk": [20, 30, 12], "diameter_mm": 7},
    )
    _post(ui_client, uid, csrf, "signoff", {"impression": "Nodule added by reader."})
    response = ui_client.get(f"/ui/api/studies/{uid}/review/sr")
    assert response.status_code == 200
    sr = pydicom.dcmread(io.BytesIO(response.content))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == uid
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert items["Person Observer Name"].PersonName == "rad"
    assert items["Impression"].TextValue == "Nodule added by reader."
    groups = items["Imaging Measurements"].ContentSequence
    labels = [
        c.TextValue
        for g in groups
        for c in g.ContentSequence
        if c.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"
    ]
    assert labels == ["Finding added by radiologist"]


def test_an_admin_account_may_not_review(ui_client: TestClient, analysed: Analysed) -> None:
    csrf = login(ui_client, analysed.hospital.name, "it")
    response = _post(ui_client, analysed.study_uid, csrf, "signoff", {"impression": "x"})
    assert response.status_code == 403 and response.json()["code"] == "auth.forbidden"
