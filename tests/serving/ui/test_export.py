"""``basira feedback export``: a signed review becomes a pseudonymised case that prepare reads,
with the re-identification key apart (0600), audited, and refusals with their codes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from pipelines.datasets.manifest import read_manifest
from pipelines.datasets.prepare import PrepareConfig, prepare_manifest
from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.read import read_series_volume
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from pipelines.transforms import PreprocessConfig
from serving.audit import Auditor, list_events
from serving.db import Database
from serving.errors import KeyFileInsideOutputError, NoSignedReviewsError
from serving.orm import utcnow
from serving.settings import Settings
from serving.storage import InstanceStore
from serving.ui.export import ExportRequest, export_feedback
from tests.cli import Basira
from tests.pipelines.test_intended_use import chest_hu
from tests.pipelines.test_predict import SHAPE
from tests.serving.conftest import service_env
from tests.serving.ui.conftest import Analysed, login

PATIENT = CTSeriesInfo(
    uid_seed="feedback-export",
    patient_name="Haddad^Amina",
    patient_id="MRN-77341",
    accession_number="ACC-99812",
    study_date=dt.date(2024, 3, 7),
    slice_thickness_mm=2.5,
    extra={
        "PatientBirthDate": "19610412",
        "InstitutionName": "Hopital Ibn Sina Rabat",
        "ReferringPhysicianName": "Bennani^Youssef",
    },
)
IDENTIFIERS = ["Haddad", "MRN-77341", "ACC-99812", "19610412", "Ibn Sina", "Bennani", "20240307"]


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    """The fixtures' small chest CT (64 slices), carrying a real patient's kind of identifiers."""
    affine = affine_from_dicom(
        (1, 0, 0, 0, 1, 0), (10.0, 10.0), (-160.0, -160.0, 80.0), (0, 0, -2.5)
    )
    return write_ct_series(chest_hu(SHAPE), affine, tmp_path / "identified", PATIENT)


def _sign_with_an_added_finding(client: TestClient, analysed: Analysed) -> list[float]:
    uid = analysed.study_uid
    csrf = login(client, analysed.hospital.name, "rad")
    headers = {"X-CSRF-Token": csrf}
    for finding in client.get(f"/ui/api/studies/{uid}/meta").json()["findings"]:
        body = {"action": "reject", "finding_id": finding["id"], "reason": "vessel"}
        assert client.post(f"/ui/api/studies/{uid}/feedback", json=body, headers=headers).is_success
    added = client.post(
        f"/ui/api/studies/{uid}/feedback",
        json={"action": "add", "center_ijk": [16, 16, 30], "diameter_mm": 12},
        headers=headers,
    )
    assert added.status_code == 201, added.text
    signed = client.post(
        f"/ui/api/studies/{uid}/signoff", json={"impression": "x"}, headers=headers
    )
    assert signed.is_success
    centre: list[float] = added.json()["center_lps_mm"]
    return centre


def test_cli_exports_a_signed_review_that_prepare_reads_with_the_key_apart(
    basira: Basira,
    ui_client: TestClient,
    ui_settings: Settings,
    service_release: Path,
    analysed: Analysed,
    study_files: list[Path],
    tmp_path: Path,
) -> None:
    out, key = tmp_path / "feedback", tmp_path / "private" / "key.json"
    args = ("feedback", "export", "--out", str(out), "--key-file", str(key))
    nothing = basira.run(*args, env=service_env(ui_settings.data_dir, service_release, 0))
    assert nothing.returncode == 3 and "error[feedback.no_signed_reviews]" in nothing.stderr
    usage = basira.run(
        "feedback",
        "export",
        "--out",
        str(out),
        env=service_env(ui_settings.data_dir, service_release, 0),
    )
    assert usage.returncode == 2

    centre = _sign_with_an_added_finding(ui_client, analysed)
    done = basira.run(
        *args,
        "--tenant",
        analysed.hospital.name,
        env=service_env(ui_settings.data_dir, service_release, 0),
    )
    assert done.returncode == 0, done.stderr

    manifest = read_manifest(out / "manifest.json")
    (case,) = manifest.cases
    assert case.source == manifest.source == "radiologist_review"
    assert case.reviewed_model and case.reviewed_model.startswith("lung-nodule-unet ")
    assert [(lesion.center_lps_mm, lesion.diameter_mm) for lesion in case.lesions] == [
        (pytest.approx(tuple(centre)), 12.0)
    ]
    exported = sorted((out / case.image).iterdir())
    secrets = [*IDENTIFIERS, analysed.study_uid]
    secrets += [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study_files
    ]
    for path in [out / "manifest.json", *exported]:
        data = path.read_bytes()
        assert [s for s in secrets if s.encode() in data] == [], path.name
    assert not list(out.rglob("key*"))

    original, copy = read_series_volume(study_files[0].parent), read_series_volume(out / case.image)
    np.testing.assert_array_equal(original.array_hu, copy.array_hu)
    np.testing.assert_allclose(original.affine_lps, copy.affine_lps)

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    reidentify = json.loads(key.read_text())
    assert reidentify["patients"] == [{"pseudonym": case.patient_id, "patient_id": "MRN-77341"}]
    assert reidentify["studies"][0]["study_instance_uid"] == analysed.study_uid

    db = Database(ui_settings.resolved_database_url)
    with db.session() as session:
        events = list_events(session, tenant_id=None, action="feedback.export")
        assert (events[-1].actor, events[-1].outcome) == ("cli", "feedback.no_signed_reviews")
        assert (events[0].actor, events[0].resource) == ("cli", analysed.study_uid)
    db.dispose()

    preprocess = PreprocessConfig(target_spacing_mm=(10.0, 10.0, 5.0))
    index = prepare_manifest(
        out / "manifest.json", tmp_path / "prepared", PrepareConfig(preprocess=preprocess)
    )
    assert index.failures == [] and [c.n_lesions for c in index.cases] == [1]


def test_a_key_file_inside_the_output_folder_is_refused(
    ui_settings: Settings, tmp_path: Path
) -> None:
    db = Database(ui_settings.resolved_database_url)
    db.create_schema()
    request = ExportRequest(tmp_path / "out", tmp_path / "out" / "sub" / "key.json")
    store = InstanceStore(ui_settings.resolved_storage_dir)
    with pytest.raises(KeyFileInsideOutputError) as refused:
        export_feedback(db, store, Auditor(db), request)
    assert refused.value.code == "feedback.key_inside_output"
    assert not (tmp_path / "out").exists()
    db.dispose()


def test_a_review_signed_without_findings_is_a_negative_case_and_since_filters(
    ui_client: TestClient, ui_settings: Settings, analysed: Analysed, tmp_path: Path
) -> None:
    csrf = login(ui_client, analysed.hospital.name, "rad")
    signed = ui_client.post(
        f"/ui/api/studies/{analysed.study_uid}/signoff",
        json={"impression": "No nodule."},
        headers={"X-CSRF-Token": csrf},
    )
    assert signed.is_success
    db = Database(ui_settings.resolved_database_url)
    store, auditor = InstanceStore(ui_settings.resolved_storage_dir), Auditor(db)
    later = ExportRequest(tmp_path / "a", tmp_path / "a.key", since=utcnow() + dt.timedelta(1))
    with pytest.raises(NoSignedReviewsError):
        export_feedback(db, store, auditor, later)
    summary = export_feedback(db, store, auditor, ExportRequest(tmp_path / "b", tmp_path / "b.key"))
    db.dispose()
    assert (summary.n_cases, summary.n_negative, summary.n_lesions) == (1, 1, 0)
    preprocess = PreprocessConfig(target_spacing_mm=(10.0, 10.0, 5.0))
    index = prepare_manifest(
        summary.manifest_path, tmp_path / "prepared", PrepareConfig(preprocess=preprocess)
    )
    assert index.failures == [] and [c.has_lesion for c in index.cases] == [False]
