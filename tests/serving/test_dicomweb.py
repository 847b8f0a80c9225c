"""DICOMweb: STOW-RS answers (200/202/409/415/400) in the standard DICOM JSON, QIDO-RS listings
scoped to the tenant, and end to end with dicomweb-client against the real server."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from serving.app import create_app
from serving.routes.dicomweb import MAX_WARNINGS
from serving.settings import Settings
from tests.serving.conftest import RunningService, Tenant, admin_key, make_tenant

BOUNDARY = "basira-stow-7f3a"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
BASE = "http://testserver/dicomweb/studies"

Parts = list[tuple[bytes, str]]


def related_body(parts: Parts) -> bytes:
    """A ``multipart/related`` body: one part per (bytes, Content-Type)."""
    body = b""
    for content, content_type in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def dicom_parts(paths: list[Path]) -> Parts:
    return [(p.read_bytes(), "application/dicom") for p in paths]


def stow(
    client: TestClient,
    tenant: Tenant,
    parts: Parts,
    *,
    study: str | None = None,
    content_type: str = STOW_TYPE,
) -> httpx.Response:
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    headers = {**tenant.headers, "Content-Type": content_type}
    return client.post(url, content=related_body(parts), headers=headers)


def variant(path: Path, **changes: Any) -> bytes:
    """The file at ``path`` with attributes changed, as Part 10 bytes."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def uids(path: Path) -> tuple[str, str, str, str]:
    """(study, series, SOP class, SOP instance) UIDs of a file."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID


def referenced(path: Path) -> dict[str, Any]:
    study, series, sop_class, sop = uids(path)
    return {
        "00081150": {"vr": "UI", "Value": [sop_class]},
        "00081155": {"vr": "UI", "Value": [sop]},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/{study}/series/{series}/instances/{sop}"]},
    }


def failed(reason: int, sop_class: str = "", sop: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop:
        item["00081155"] = {"vr": "UI", "Value": [sop]}
    return item


def audit_events(client: TestClient, settings: Settings, tenant: Tenant, action: str) -> list:
    key = admin_key(settings, tenant.name)
    response = client.get(
        "/v1/audit", params={"action": action}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def qido(client: TestClient, tenant: Tenant, query: str = "") -> httpx.Response:
    return client.get(f"/dicomweb/studies{query}", headers=tenant.headers)


# --- STOW-RS ------------------------------------------------------------------------------------


def test_stow_of_a_whole_study_answers_200_references_every_instance_and_is_audited(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    response = stow(client, hospital, dicom_parts(study_files))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    ds = pydicom.Dataset.from_json(response.json())
    study_uid = uids(study_files[0])[0]
    assert ds.RetrieveURL == f"{BASE}/{study_uid}"
    assert len(ds.ReferencedSOPSequence) == len(study_files)
    assert {item.ReferencedSOPInstanceUID for item in ds.ReferencedSOPSequence} == {
        uids(p)[3] for p in study_files
    }
    assert "FailedSOPSequence" not in ds
    assert "warning" not in response.headers

    study = client.get(f"/v1/studies/{study_uid}", headers=hospital.headers).json()
    assert study["n_instances"] == len(study_files)
    # issue 15: the job exists from the store on (the response names it) and starts once the
    # study is quiet (BASIRA_STUDY_QUIET_S, 0 in these settings), no longer created only then
    assert study["latest_job"]["status"] == "queued"
    assert f"/v1/jobs/{study['latest_job']['id']}>" in response.headers["link"]
    [event] = audit_events(client, settings, hospital, "study.stow")
    assert (event["resource"], event["outcome"]) == (study_uid, "ok")


def test_stow_answer_is_the_exact_store_instances_response(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    response = stow(client, hospital, dicom_parts(study_files[:2]))

    assert response.status_code == 200
    study_uid = uids(study_files[0])[0]
    assert response.json() == {
        "00081190": {"vr": "UR", "Value": [f"{BASE}/{study_uid}"]},
        "00081199": {"vr": "SQ", "Value": [referenced(p) for p in study_files[:2]]},
    }


def test_stow_with_some_refused_answers_202_with_failure_reasons_and_basira_codes(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    mr_uid = generate_uid()
    parts = [
        (study_files[0].read_bytes(), "application/dicom"),
        (
            variant(
                study_files[1], Modality="MR", SOPClassUID=MR_IMAGE_STORAGE, SOPInstanceUID=mr_uid
            ),
            "application/dicom",
        ),
        (b"these bytes are not DICOM", "application/dicom"),
        (study_files[2].read_bytes(), "text/plain"),
    ]
    response = stow(client, hospital, parts)

    assert response.status_code == 202, response.text
    study_uid = uids(study_files[0])[0]
    assert response.json() == {
        "00081190": {"vr": "UR", "Value": [f"{BASE}/{study_uid}"]},
        "00081198": {
            "vr": "SQ",
            "Value": [failed(0x0122, MR_IMAGE_STORAGE, mr_uid), failed(0xC000), failed(0xC000)],
        },
        "00081199": {"vr": "SQ", "Value": [referenced(study_files[0])]},
    }
    ds = pydicom.Dataset.from_json(response.json())
    assert [item.FailureReason for item in ds.FailedSOPSequence] == [0x0122, 0xC000, 0xC000]
    assert response.headers.get_list("warning") == [
        f'299 basira "{mr_uid}: dicom.not_ct"',
        '299 basira "part-3: dicom.not_dicom"',
        '299 basira "part-4: request.unsupported_media_type"',
    ]
    [event] = audit_events(client, settings, hospital, "study.stow")
    assert event["outcome"] == "partial:dicom.not_ct"


def test_stow_with_nothing_stored_answers_409_in_dicom_json(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    mr_uids = [generate_uid() for _ in range(2)]
    parts = [
        (
            variant(p, Modality="MR", SOPClassUID=MR_IMAGE_STORAGE, SOPInstanceUID=uid),
            "application/dicom",
        )
        for p, uid in zip(study_files, mr_uids, strict=False)
    ]
    response = stow(client, hospital, parts)

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/dicom+json"
    assert response.json() == {
        "00081190": {"vr": "UR"},
        "00081198": {"vr": "SQ", "Value": [failed(0x0122, MR_IMAGE_STORAGE, u) for u in mr_uids]},
    }
    assert qido(client, hospital).status_code == 204


def test_stow_summarises_warnings_past_the_limit(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    parts = [(b"not dicom", "application/dicom")] * (MAX_WARNINGS + 3)
    response = stow(client, hospital, parts)

    assert response.status_code == 409
    warnings = response.headers.get_list("warning")
    assert len(warnings) == MAX_WARNINGS + 1
    assert warnings[-1] == '299 basira "3 more instances failed: dicom.not_dicom"'


def test_stow_never_echoes_a_malformed_uid_of_a_refused_file(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    bad_uid = '1.2.3"\r\nX-Injected: yes'
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # pydicom writes it anyway
        mr = variant(
            study_files[0], Modality="MR", SOPClassUID=MR_IMAGE_STORAGE, SOPInstanceUID=bad_uid
        )
    response = stow(client, hospital, [(mr, "application/dicom")])

    assert response.status_code == 409
    assert response.json()["00081198"]["Value"] == [failed(0x0122, MR_IMAGE_STORAGE)]
    assert response.headers.get_list("warning") == ['299 basira "part-1: dicom.not_ct"']
    assert "x-injected" not in response.headers


@pytest.mark.parametrize(
    "content_type",
    [
        f"multipart/form-data; boundary={BOUNDARY}",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
        "application/dicom",
    ],
)
def test_stow_refuses_other_media_types_with_415(
    client: TestClient, hospital: Tenant, study_files: list[Path], content_type: str
) -> None:
    response = stow(client, hospital, dicom_parts(study_files[:1]), content_type=content_type)

    assert response.status_code == 415
    assert response.json()["code"] == "request.unsupported_media_type"
    assert qido(client, hospital).status_code == 204


def test_stow_of_a_truncated_body_is_400_and_stores_nothing(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    body = related_body(dicom_parts(study_files[:3]))
    cut = body[: len(body) - len(f"--{BOUNDARY}--\r\n") - 100]
    headers = {**hospital.headers, "Content-Type": STOW_TYPE}
    response = client.post("/dicomweb/studies", content=cut, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "request.malformed_multipart"
    assert qido(client, hospital).status_code == 204
    stored = [p for p in (settings.resolved_storage_dir / "instances").rglob("*") if p.is_file()]
    assert stored == []


def test_stow_without_parts_is_refused_as_empty(client: TestClient, hospital: Tenant) -> None:
    response = stow(client, hospital, [])

    assert response.status_code == 422
    assert response.json()["code"] == "upload.empty"


def test_stow_to_a_study_url_fails_instances_of_another_study(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    parts = dicom_parts(study_files[:2])
    response = stow(client, hospital, parts, study="1.2.3.4")

    assert response.status_code == 409
    assert response.json()["00081198"]["Value"] == [
        failed(0xA900, uids(p)[2], uids(p)[3]) for p in study_files[:2]
    ]
    assert response.headers.get_list("warning") == [
        f'299 basira "{uids(p)[3]}: upload.study_mismatch"' for p in study_files[:2]
    ]
    [event] = audit_events(client, settings, hospital, "study.stow")
    assert (event["resource"], event["outcome"]) == ("1.2.3.4", "upload.study_mismatch")

    study_uid = uids(study_files[0])[0]
    matching = stow(client, hospital, parts, study=study_uid)
    assert matching.status_code == 200
    assert matching.json()["00081190"]["Value"] == [f"{BASE}/{study_uid}"]


def test_stow_counts_identical_duplicates_as_stored_and_refuses_changed_ones(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    parts = dicom_parts(study_files[:3])
    assert stow(client, hospital, parts).status_code == 200
    again = stow(client, hospital, parts)
    assert again.status_code == 200
    assert len(again.json()["00081199"]["Value"]) == 3

    changed = stow(
        client, hospital, [(variant(study_files[0], InstanceNumber=999), "application/dicom")]
    )
    assert changed.status_code == 409
    _, _, sop_class, sop = uids(study_files[0])
    assert changed.json()["00081198"]["Value"] == [failed(0x0111, sop_class, sop)]
    assert changed.headers.get_list("warning") == [f'299 basira "{sop}: dicom.duplicate_instance"']
    [study] = qido(client, hospital).json()
    assert study["00201208"]["Value"] == [3]


def test_stow_when_storage_is_full_fails_every_instance_out_of_resources(
    settings: Settings, study_files: list[Path]
) -> None:
    full = settings.model_copy(update={"min_free_bytes": 10**18})
    with TestClient(create_app(full)) as client:
        tenant = make_tenant(full, "Full Hospital")
        response = stow(client, tenant, dicom_parts(study_files[:2]))

        assert response.status_code == 409
        assert response.json()["00081198"]["Value"] == [failed(0xA700), failed(0xA700)]
        assert response.headers.get_list("warning") == [
            '299 basira "part-1: storage.full"',
            '299 basira "part-2: storage.full"',
        ]
        [event] = audit_events(client, full, tenant, "study.stow")
        assert event["outcome"] == "storage.full"


# --- QIDO-RS ------------------------------------------------------------------------------------


def second_study(paths: list[Path]) -> tuple[str, Parts]:
    """The files of ``paths`` re-identified as one new study (new study, series, SOP UIDs)."""
    study, series = generate_uid(), generate_uid()
    parts = [
        (
            variant(
                p, StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=generate_uid()
            ),
            "application/dicom",
        )
        for p in paths
    ]
    return study, parts


def test_qido_lists_the_tenants_studies_with_matching_and_paging(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    first = uids(study_files[0])[0]
    second, parts = second_study(study_files[3:5])
    assert stow(client, hospital, dicom_parts(study_files[:3])).status_code == 200
    assert stow(client, hospital, parts).status_code == 200

    listing = qido(client, hospital)
    assert listing.status_code == 200
    assert listing.headers["content-type"] == "application/dicom+json"
    assert listing.json()[0] == {
        "0020000D": {"vr": "UI", "Value": [first]},
        "00080061": {"vr": "CS", "Value": ["CT"]},
        "00201206": {"vr": "IS", "Value": [1]},
        "00201208": {"vr": "IS", "Value": [3]},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/{first}"]},
    }
    assert [r["0020000D"]["Value"][0] for r in listing.json()] == [first, second]

    only = qido(client, hospital, f"?StudyInstanceUID={second}").json()
    assert [pydicom.Dataset.from_json(r).StudyInstanceUID for r in only] == [second]
    both = qido(client, hospital, f"?0020000D={first},{second}").json()
    assert len(both) == 2
    assert len(qido(client, hospital, "?StudyInstanceUID=").json()) == 2  # universal matching
    page = qido(client, hospital, "?limit=1")
    assert [r["0020000D"]["Value"][0] for r in page.json()] == [first]
    assert "additional results" in page.headers["warning"]
    last = qido(client, hospital, "?limit=1&offset=1")
    assert [r["0020000D"]["Value"][0] for r in last.json()] == [second]
    assert "warning" not in last.headers
    assert qido(client, hospital, "?offset=2").status_code == 204
    assert len(audit_events(client, settings, hospital, "study.search")) == 7


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=abc",
        "?offset=-1",
        "?offset=10588422908545045980426272768",  # found by schemathesis: was a 500
        "?PatientID=123",
        "?StudyInstanceUID=1.2.x",
    ],
)
def test_qido_refuses_bad_or_unsupported_parameters(
    client: TestClient, hospital: Tenant, query: str
) -> None:
    response = qido(client, hospital, query)

    assert response.status_code == 422
    assert response.json()["code"] == "request.invalid_parameters"


def test_qido_lists_a_studys_series(
    client: TestClient, hospital: Tenant, study_files: list[Path]
) -> None:
    assert stow(client, hospital, dicom_parts(study_files[:3])).status_code == 200
    study, series, _, _ = uids(study_files[0])

    response = client.get(f"/dicomweb/studies/{study}/series", headers=hospital.headers)

    assert response.status_code == 200
    assert response.json() == [
        {
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "0020000E": {"vr": "UI", "Value": [series]},
            "00201209": {"vr": "IS", "Value": [3]},
            "00081190": {"vr": "UR", "Value": [f"{BASE}/{study}/series/{series}"]},
        }
    ]


def test_another_tenant_never_sees_the_study_and_stores_its_own_copy(
    client: TestClient, hospital: Tenant, study_files: list[Path], settings: Settings
) -> None:
    parts = dicom_parts(study_files[:3])
    assert stow(client, hospital, parts).status_code == 200
    study = uids(study_files[0])[0]
    other = make_tenant(settings, "Clinique du Parc")

    assert qido(client, other).status_code == 204
    assert qido(client, other, f"?StudyInstanceUID={study}").status_code == 204
    series = client.get(f"/dicomweb/studies/{study}/series", headers=other.headers)
    assert series.status_code == 404
    assert series.json()["code"] == "study.not_found"

    copy = stow(client, other, parts[:1], study=study)
    assert copy.status_code == 200
    [theirs] = qido(client, other).json()
    assert theirs["00201208"]["Value"] == [1]
    [ours] = qido(client, hospital).json()
    assert ours["00201208"]["Value"] == [3]


# --- end to end ---------------------------------------------------------------------------------


def wait_for_completed_job(service: RunningService, tenant: Tenant, study: str) -> dict:
    """Poll the study until the worker has queued its job (after the quiet period), then the
    job until it ends."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = httpx.get(f"{service.base_url}/v1/studies/{study}", headers=tenant.headers).json()
        job = state["latest_job"]
        if job is not None:
            job = httpx.get(f"{service.base_url}/v1/jobs/{job['id']}", headers=tenant.headers)
            if job.json()["status"] not in ("queued", "running"):
                return dict(job.json())
        time.sleep(0.5)
    raise AssertionError(f"no job ended for {study}: {service.log_tail()}")


@pytest.mark.slow
def test_dicomweb_client_stores_searches_and_the_quiet_study_is_analysed(
    running_service: RunningService, study_files: list[Path]
) -> None:
    tenant = running_service.create_tenant("Hôpital Charles Nicolle")
    web = DICOMwebClient(url=f"{running_service.base_url}/dicomweb", headers=tenant.headers)
    datasets = [pydicom.dcmread(p) for p in study_files]

    answer = web.store_instances(datasets)

    assert len(answer.ReferencedSOPSequence) == len(datasets)
    [found] = web.search_for_studies()
    study = datasets[0].StudyInstanceUID
    found_ds = pydicom.Dataset.from_json(found)
    assert found_ds.StudyInstanceUID == study
    assert found_ds.NumberOfStudyRelatedInstances == len(datasets)
    assert web.search_for_studies(search_filters={"StudyInstanceUID": "1.2.3"}) == []

    mr = datasets[0].copy()
    mr.Modality, mr.SOPClassUID, mr.SOPInstanceUID = "MR", MR_IMAGE_STORAGE, generate_uid()
    with pytest.raises(requests.HTTPError) as refused:
        web.store_instances([mr])
    assert refused.value.response.status_code == 409

    job = wait_for_completed_job(running_service, tenant, study)
    assert job["status"] == "completed", job
