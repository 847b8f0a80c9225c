"""The C-STORE door with real peers: pynetdicom and dcmtk's storescu against the listener that
``create_app`` start hooks (or ``basira serve``) run, on loopback."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    LegacyConvertedEnhancedCTImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from sqlalchemy import func, select

from pipelines.dicom.write_ct import ENCODERS
from serving.app import create_app
from serving.audit import list_events
from serving.dimse import (
    STORAGE_SOP_CLASSES,
    CStoreListener,
    CStoreStatus,
    start_dicom_listener,
    status_for,
)
from serving.errors import UnknownAETitleError
from serving.models import Instance
from serving.services import Services
from serving.settings import Settings
from tests.serving.conftest import RunningService, Tenant, make_tenant

SENDER = "IBNSINA_CT"


@contextmanager
def listening(settings: Settings) -> Iterator[tuple[TestClient, int]]:
    """The app with its C-STORE listener on an ephemeral loopback port (``dicom_port=0``)."""
    settings = settings.model_copy(update={"dicom_host": "127.0.0.1", "dicom_port": 0})
    with TestClient(create_app(settings, start_hooks=(start_dicom_listener,))) as client:
        yield client, listener_of(client).port


def listener_of(client: TestClient) -> CStoreListener:
    listener = services_of(client).background[0]
    assert isinstance(listener, CStoreListener)
    return listener


def services_of(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def hospital(settings: Settings) -> Tenant:
    return make_tenant(settings, "Hôpital Ibn Sina", ae_title=SENDER)


@contextmanager
def association(
    port: int, *, calling: str = SENDER, syntaxes: Sequence[str] = (ExplicitVRLittleEndian,)
) -> Iterator[Association]:
    """An association from ``calling`` proposing the CT storage classes in ``syntaxes``."""
    ae = AE(ae_title=calling)
    for sop_class in (*STORAGE_SOP_CLASSES, SecondaryCaptureImageStorage):
        ae.add_requested_context(sop_class, list(syntaxes))
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    assoc = ae.associate("127.0.0.1", port, ae_title="BASIRA")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send(
    port: int,
    objects: Sequence[Path | Dataset],
    *,
    syntaxes: Sequence[str] = (ExplicitVRLittleEndian,),
) -> list[Dataset]:
    """C-STORE ``objects`` from the hospital's AE on one association; their response statuses."""
    with association(port, syntaxes=syntaxes) as assoc:
        assert assoc.is_established
        return [assoc.send_c_store(obj) for obj in objects]


def n_instances(client: TestClient) -> int:
    with services_of(client).db.session() as session:
        return int(session.scalar(select(func.count(Instance.id))) or 0)


def cstore_outcomes(client: TestClient) -> list[tuple[str, str, str]]:
    """(actor, client, outcome) of every C-STORE audit event, oldest first."""
    with services_of(client).db.session() as session:
        events = list_events(session, tenant_id=None, action="study.cstore", limit=1000)
        return [(e.actor, e.client, e.outcome) for e in reversed(events)]


def wait_for_job(
    get: Callable[..., httpx.Response], url: str, headers: dict[str, str], timeout_s: float = 180.0
) -> dict[str, Any]:
    """Poll ``GET url`` (``/v1/studies/{uid}``) until its latest job has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = get(url, headers=headers)
        job = response.json().get("latest_job") if response.status_code == 200 else None
        if job and job["status"] not in ("queued", "running"):
            return dict(response.json())
        time.sleep(0.5)
    raise AssertionError(f"no finished job for {url} in {timeout_s} s")


@pytest.mark.slow
def test_cstore_study_is_stored_queued_after_quiet_and_analysed(
    settings: Settings, hospital: Tenant, study_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"run_worker": True, "study_quiet_s": 2.0})
    study_uid = dcmread(study_files[0], stop_before_pixels=True).StudyInstanceUID
    caplog.set_level(logging.DEBUG, logger="serving")
    with listening(settings) as (client, port):
        statuses = send(port, study_files)
        assert [s.Status for s in statuses] == [CStoreStatus.SUCCESS] * len(study_files)
        study = wait_for_job(client.get, f"/v1/studies/{study_uid}", hospital.headers)
        assert study["latest_job"]["status"] == "completed", study
        assert study["n_instances"] == len(study_files)
        outcomes = cstore_outcomes(client)
    assert outcomes == [(f"ae:{SENDER}", "127.0.0.1", "ok")] * len(study_files)
    instance_uid = dcmread(study_files[0], stop_before_pixels=True).SOPInstanceUID
    for identifier in (study_uid, instance_uid, "Anonymous", "ANON"):
        assert identifier not in caplog.text


def test_unknown_calling_ae_is_rejected_at_association_and_audited(
    settings: Settings, hospital: Tenant
) -> None:
    with listening(settings) as (client, port):
        with association(port, calling="STRANGER") as assoc:
            assert assoc.is_rejected
            reply = assoc.acceptor.primitive
            assert reply is not None
            # rejected-permanent, by the service user, calling AE title not recognised
            assert (reply.result, reply.result_source, reply.diagnostic) == (0x01, 0x01, 0x03)
        outcomes = cstore_outcomes(client)
    assert outcomes == [("ae:STRANGER", "127.0.0.1", UnknownAETitleError.code)]


def test_tenant_created_while_listening_is_accepted_without_restart(settings: Settings) -> None:
    with listening(settings) as (_client, port):
        with association(port, calling="LATE_PACS") as assoc:
            assert assoc.is_rejected
        make_tenant(settings, "Late Hospital", ae_title="LATE_PACS")
        with association(port, calling="LATE_PACS") as assoc:
            assert assoc.is_established


def test_wrong_called_ae_title_is_rejected(settings: Settings, hospital: Tenant) -> None:
    with listening(settings) as (client, port):
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="NOT_BASIRA")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive is not None
        assert assoc.acceptor.primitive.diagnostic == 0x07  # called AE title not recognised
        # pynetdicom audits through EVT_REJECTED after the A-ASSOCIATE-RJ has left: wait for it
        deadline = time.monotonic() + 10
        while not cstore_outcomes(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cstore_outcomes(client) == [(f"ae:{SENDER}", "127.0.0.1", "association.rejected")]


def test_cecho_succeeds(settings: Settings, hospital: Tenant) -> None:
    with listening(settings) as (_client, port), association(port) as assoc:
        assert assoc.send_c_echo().Status == CStoreStatus.SUCCESS


def as_ct(name: str) -> Dataset:
    """A pydicom test object relabelled CT Image Storage: a non-CT object reaching the CT
    context, as a misconfigured modality or a screenshot 'saved as CT' would."""
    ds = dcmread(get_testdata_file(name))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    return ds


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("MR_small.dcm", "dicom.not_ct"),
        ("SC_rgb_small_odd.dcm", "dicom.colour_image"),
        ("rtplan.dcm", "dicom.not_an_image"),
    ],
)
def test_non_ct_object_gets_a900_and_nothing_is_stored(
    settings: Settings, hospital: Tenant, name: str, code: str
) -> None:
    with listening(settings) as (client, port):
        [status] = send(port, [as_ct(name)])
        assert status.Status == CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS == 0xA900
        assert status.ErrorComment == code
        assert n_instances(client) == 0
        assert cstore_outcomes(client) == [(f"ae:{SENDER}", "127.0.0.1", code)]


def test_secondary_capture_is_refused_at_negotiation(settings: Settings, hospital: Tenant) -> None:
    """Only CT storage is negotiated: a real Secondary Capture finds no accepted context."""
    capture = dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    with listening(settings) as (client, port), association(port) as assoc:
        refused = [cx.abstract_syntax for cx in assoc.rejected_contexts]
        assert SecondaryCaptureImageStorage in refused
        with pytest.raises(ValueError, match="presentation context"):
            assoc.send_c_store(capture)
        assert n_instances(client) == 0


def test_identical_resend_is_success_and_stored_once(
    settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    with listening(settings) as (client, port):
        first = send(port, study_files[:1])
        again = send(port, study_files[:1])
        assert [s.Status for s in first + again] == [CStoreStatus.SUCCESS] * 2
        assert n_instances(client) == 1


def test_same_sop_instance_with_other_content_is_refused_and_the_first_kept(
    settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    changed = dcmread(study_files[0])
    changed.SeriesDescription = "edited after sending"
    with listening(settings) as (client, port):
        [first, second] = send(port, [study_files[0], changed])
        assert first.Status == CStoreStatus.SUCCESS
        assert second.Status == CStoreStatus.CANNOT_UNDERSTAND
        assert second.ErrorComment == "dicom.duplicate_instance"
        assert n_instances(client) == 1


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
def test_compressed_series_is_accepted_and_stored_as_received(
    settings: Settings, hospital: Tenant, study_files: list[Path], syntax: str
) -> None:
    sent = []
    for path in study_files[:3]:
        ds = dcmread(path)
        ds.compress(syntax, encoding_plugin=ENCODERS[syntax])
        sent.append(ds)
    with listening(settings) as (client, port):
        statuses = send(port, sent, syntaxes=(syntax,))
        assert [s.Status for s in statuses] == [CStoreStatus.SUCCESS] * 3
        stored = sorted(services_of(client).store.root.glob("instances/*/*/*"))
    assert len(stored) == 3
    by_uid = {ds.SOPInstanceUID: ds for ds in sent}
    for path in stored:
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.PixelData == by_uid[ds.SOPInstanceUID].PixelData  # the encoded frames as sent


def test_negotiation_prefers_lossless_compression_and_never_picks_lossy_over_lossless(
    settings: Settings, hospital: Tenant
) -> None:
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(
        CTImageStorage, [ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless]
    )
    ae.add_requested_context(EnhancedCTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian])
    ae.add_requested_context(LegacyConvertedEnhancedCTImageStorage, [JPEGBaseline8Bit])
    with listening(settings) as (_client, port):
        assoc = ae.associate("127.0.0.1", port, ae_title="BASIRA")
        accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assoc.release()
    assert accepted == {
        CTImageStorage: RLELossless,
        EnhancedCTImageStorage: ExplicitVRLittleEndian,
        LegacyConvertedEnhancedCTImageStorage: JPEGBaseline8Bit,  # already lossy at the sender
    }


def test_instance_with_short_pixel_data_gets_a900(
    settings: Settings, hospital: Tenant, study_files: list[Path]
) -> None:
    short = dcmread(study_files[0])
    short.PixelData = short.PixelData[: len(short.PixelData) // 2]
    with listening(settings) as (client, port):
        [status] = send(port, [short])
        assert status.Status == CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert status.ErrorComment == "dicom.pixel_data_short"
        assert n_instances(client) == 0


def test_truncated_stream_gets_c000(
    settings: Settings,
    hospital: Tenant,
    study_files: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sender that streams a cut file's bytes as they are (pynetdicom's chunked send)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    whole = study_files[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - 700])  # ends inside Pixel Data
    with listening(settings) as (client, port):
        [status] = send(port, [cut])
        assert status.Status == CStoreStatus.CANNOT_UNDERSTAND == 0xC000
        assert status.ErrorComment == "dicom.truncated"
        assert n_instances(client) == 0


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"max_request_bytes": 1024}, "request.too_large"),
        ({"min_free_bytes": 2**62}, "storage.full"),
    ],
)
def test_too_large_or_no_space_gets_a700_and_nothing_is_stored(
    settings: Settings, hospital: Tenant, study_files: list[Path], limits: dict, code: str
) -> None:
    with listening(settings.model_copy(update=limits)) as (client, port):
        [status] = send(port, study_files[:1])
        assert status.Status == CStoreStatus.OUT_OF_RESOURCES == 0xA700
        assert status.ErrorComment == code
        assert n_instances(client) == 0


def test_unexpected_failure_gets_a700_and_is_logged_by_id_without_identifiers(
    settings: Settings,
    hospital: Tenant,
    study_files: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken storage volume (its spool folder replaced by a file): the PACS is told to retry."""
    with listening(settings) as (client, port):
        spool = services_of(client).store.tmp_dir
        spool.rmdir()
        spool.write_bytes(b"")
        [status] = send(port, study_files[:1])
        assert status.Status == CStoreStatus.OUT_OF_RESOURCES
        assert status.ErrorComment == "service.internal"
        assert cstore_outcomes(client) == [(f"ae:{SENDER}", "127.0.0.1", "service.internal")]
    [failure] = [r for r in caplog.records if r.name == "serving.dimse" and r.levelname == "ERROR"]
    assert "NotADirectoryError" in failure.getMessage()
    assert str(spool) not in caplog.text  # the exception's message (here a path) is not logged


def test_status_table_sends_unlisted_refusals_as_cannot_understand() -> None:
    assert status_for("dicom.not_dicom") == CStoreStatus.CANNOT_UNDERSTAND
    assert status_for(UnknownAETitleError.code) == CStoreStatus.NOT_AUTHORISED


def test_taken_dicom_port_fails_start_and_stops_what_had_started(settings: Settings) -> None:
    with listening(settings) as (_client, port):
        taken = settings.model_copy(
            update={"dicom_host": "127.0.0.1", "dicom_port": port, "run_worker": True}
        )
        app = create_app(taken, start_hooks=(start_dicom_listener,))
        with pytest.raises(OSError), TestClient(app):
            pass
    alive = [t.name for t in threading.enumerate() if t.name == "basira-worker" and t.is_alive()]
    assert alive == []


def storescu_or_skip() -> str:
    found = shutil.which("storescu")
    if found is None:
        pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")
    return found


@pytest.mark.slow
def test_storescu_stores_a_series_into_basira_serve(
    running_service: RunningService, study_files: list[Path]
) -> None:
    storescu = storescu_or_skip()
    tenant = running_service.create_tenant("Hôpital Ibn Sina", "--ae-title", SENDER)
    port = str(running_service.dicom_port)
    done = subprocess.run(
        [storescu, "-aet", SENDER, "-aec", "BASIRA", "127.0.0.1", port, *map(str, study_files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr + running_service.log_tail()
    study_uid = dcmread(study_files[0], stop_before_pixels=True).StudyInstanceUID
    with httpx.Client(base_url=running_service.base_url, timeout=10) as http:
        study = wait_for_job(http.get, f"/v1/studies/{study_uid}", tenant.headers)
    assert study["n_instances"] == len(study_files)
    assert study["latest_job"]["status"] == "completed", study
    assert study_uid not in running_service.log_tail(100_000)


@pytest.mark.parametrize(
    ("exposure", "bound"), [({}, "127.0.0.1"), ({"dicom_host": "0.0.0.0"}, "0.0.0.0")]
)
def test_the_listener_binds_loopback_unless_exposure_is_set(
    settings: Settings, exposure: dict[str, str], bound: str
) -> None:
    """Like the HTTP API, the C-STORE listener answers only this machine until an operator
    exposes it (BASIRA_DICOM_HOST)."""
    assert Settings.model_fields["dicom_host"].default == "127.0.0.1"
    settings = settings.model_copy(update={"dicom_port": 0, **exposure})
    with TestClient(create_app(settings, start_hooks=(start_dicom_listener,))) as client:
        server = listener_of(client)._server
        assert server is not None
        assert server.server_address[0] == bound
