"""The DICOM C-STORE door: a pynetdicom Storage SCP started with the service.

A hospital's PACS opens an association with its own AE title as the calling AE title. That
title is looked up in the database when the association is requested (tenants are created while
the service runs), and an unknown one is rejected with an A-ASSOCIATE-RJ (rejected-permanent,
calling AE title not recognised). Each received instance is written in DICOM Part 10 form
exactly as it arrived (never decoded or re-encoded), then goes through :func:`serving.ingest.
ingest` like every other door; the database is committed before the answer, so *Success* means
the instance is on disk and recorded. Refusals get the C-STORE failure status of
:data:`STATUS_BY_OUTCOME`, with the Basira code as the response's Error Comment.

Every received instance and every rejected association is audited (actor ``ae:<AE title>``,
action ``study.cstore``). Logs carry AE titles, codes and error ids, never UIDs or names.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from weakref import WeakKeyDictionary

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    LegacyConvertedEnhancedCTImageStorage,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated names
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from pipelines.errors import (
    BasiraError,
    ColourImageError,
    InvalidAttributeError,
    MissingAttributeError,
    NotAnImageError,
    NotCTError,
    NotHounsfieldError,
    PixelDataLengthError,
)
from serving.audit import AuditEntry
from serving.errors import (
    DuplicateInstanceError,
    InternalServiceError,
    RequestTooLargeError,
    ServiceUnavailableError,
    StorageFullError,
    UnknownAETitleError,
)
from serving.ingest import Door, ingest
from serving.models import Tenant
from serving.services import Services

__all__ = [
    "STATUS_BY_OUTCOME",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "CStoreListener",
    "CStoreStatus",
    "start_dicom_listener",
    "status_for",
]

log = logging.getLogger(__name__)

#: The storage SOP classes accepted (anything else is refused at negotiation).
STORAGE_SOP_CLASSES = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)
#: Transfer syntaxes accepted for them, in the order of preference pynetdicom applies to each
#: proposed context: lossless compressed first (a PACS offering its stored compression keeps
#: it, and the transfer is smaller), then uncompressed, then lossy ones last, so that a sender
#: is never asked to compress lossily an image it also offers losslessly. The instance is
#: stored in the syntax it arrived in.
TRANSFER_SYNTAXES = (
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGExtended12Bit,
    JPEGBaseline8Bit,
)
#: The audit action of every C-STORE event (instances and rejected associations).
AUDIT_ACTION = "study.cstore"
OK = "ok"

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): result, source (service user) and diagnostics.
_REJECTED_PERMANENT, _REJECTED_TRANSIENT = 0x01, 0x02
_SOURCE_SERVICE_USER = 0x01
_NO_REASON_GIVEN, _CALLING_AE_NOT_RECOGNISED = 0x01, 0x03


class CStoreStatus(IntEnum):
    """The C-STORE response statuses Basira sends (PS3.4 Table B.2-1, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    #: The association was not mapped to a tenant (only if the association check was bypassed).
    NOT_AUTHORISED = 0x0124
    #: Retry later: storage is full, the instance is over the size limit, or we failed.
    OUT_OF_RESOURCES = 0xA700
    #: Do not retry: the object is not a CT image in Hounsfield units, or breaks the CT IOD.
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Do not retry: the object cannot be parsed, or its SOP Instance UID is taken.
    CANNOT_UNDERSTAND = 0xC000


#: Outcome (``ok`` or a Basira code) → C-STORE status; any other code: CANNOT_UNDERSTAND.
STATUS_BY_OUTCOME: Mapping[str, CStoreStatus] = {
    OK: CStoreStatus.SUCCESS,
    UnknownAETitleError.code: CStoreStatus.NOT_AUTHORISED,
    StorageFullError.code: CStoreStatus.OUT_OF_RESOURCES,
    RequestTooLargeError.code: CStoreStatus.OUT_OF_RESOURCES,
    ServiceUnavailableError.code: CStoreStatus.OUT_OF_RESOURCES,
    InternalServiceError.code: CStoreStatus.OUT_OF_RESOURCES,
    NotCTError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    NotAnImageError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    ColourImageError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    NotHounsfieldError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    MissingAttributeError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    InvalidAttributeError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    PixelDataLengthError.code: CStoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    # Same SOP Instance UID, other bytes: the first is kept, and the sender must know the
    # second was not (a Success would lose a correction silently; a retry cannot help).
    DuplicateInstanceError.code: CStoreStatus.CANNOT_UNDERSTAND,
}


def status_for(outcome: str) -> CStoreStatus:
    """The C-STORE status answering an instance whose ingestion ended with ``outcome``."""
    return STATUS_BY_OUTCOME.get(outcome, CStoreStatus.CANNOT_UNDERSTAND)


@dataclass(frozen=True)
class Peer:
    """A calling AE accepted for a tenant, for the length of one association."""

    ae_title: str
    tenant_id: str
    address: str

    @property
    def actor(self) -> str:
        return f"ae:{self.ae_title}"


class CStoreListener:
    """The Storage SCP of one service: pynetdicom's threaded server with Basira's handlers.

    Each association runs in its own pynetdicom thread; the handlers share nothing but the
    services (database sessions are per call) and the association → peer map.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self._peers: WeakKeyDictionary[Association, Peer] = WeakKeyDictionary()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the configured one, or the one chosen for port 0)."""
        if self._server is None:
            raise RuntimeError("the DICOM listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen on the configured host and port in pynetdicom's background threads.

        Raises:
            OSError: the port cannot be bound (the service then fails to start).
        """
        settings = self.services.settings
        ae = AE(ae_title=settings.dicom_ae_title)
        ae.require_called_aet = True
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        # pynetdicom's INFO lines repeat every message and its DEBUG lines quote UIDs.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        address = (settings.dicom_host, settings.dicom_port)
        self._server = ae.start_server(address, block=False, evt_handlers=handlers)
        log.info(
            "DICOM listener %s on %s:%d", settings.dicom_ae_title, settings.dicom_host, self.port
        )

    def stop(self) -> None:
        """Stop accepting, then abort open associations (an unanswered instance is re-sent by
        its PACS; one already stored is then an identical re-send, answered Success)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        for assoc in server.active_associations:
            assoc.abort()
        log.info("DICOM listener stopped")

    def _on_requested(self, event: Event) -> None:
        """Map the calling AE title to a tenant, or reject the association before negotiation.

        pynetdicom's ``require_calling_aet`` is a fixed list; this runs per association and
        reads the database, so a tenant created a moment ago is accepted. Any failure to decide
        rejects (transient): a notification handler's exception would otherwise let it in.
        """
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        ae_title = str(primitive.calling_ae_title if primitive else "").strip()
        address = assoc.requestor.address
        try:
            tenant_id = self._tenant_for(ae_title)
        except Exception as exc:
            outcome = _log_failure("tenant lookup", exc)
            self._audit(AuditEntry(None, f"ae:{ae_title}", AUDIT_ACTION, "", address, outcome))
            _reject(assoc, _REJECTED_TRANSIENT, _NO_REASON_GIVEN)
            return
        if tenant_id is None:
            log.warning("association refused: calling AE title %r is no tenant's", ae_title)
            outcome = UnknownAETitleError.code
            self._audit(AuditEntry(None, f"ae:{ae_title}", AUDIT_ACTION, "", address, outcome))
            _reject(assoc, _REJECTED_PERMANENT, _CALLING_AE_NOT_RECOGNISED)
            return
        with self._lock:
            self._peers[assoc] = Peer(ae_title, tenant_id, address)
        log.info("association requested by %s (tenant %s)", ae_title, tenant_id)

    def _on_rejected(self, event: Event) -> None:
        """Audit an association pynetdicom rejected after ours (wrong called AE title, too
        many associations)."""
        peer = self._peer(event.assoc)
        if peer is not None:
            entry = AuditEntry(peer.tenant_id, peer.actor, AUDIT_ACTION, "", peer.address)
            entry.outcome = "association.rejected"
            self._audit(entry)
            log.warning("association from %s rejected at negotiation", peer.ae_title)

    def _on_store(self, event: Event) -> Dataset:
        """Store one instance, audit it, and only then answer with its status."""
        peer = self._peer(event.assoc)
        if peer is None:
            return _status_dataset(UnknownAETitleError.code)
        entry = AuditEntry(peer.tenant_id, peer.actor, AUDIT_ACTION, client=peer.address)
        try:
            entry.resource, entry.outcome = self._receive(event, peer)
        except BasiraError as exc:
            entry.outcome = exc.code
        except Exception as exc:
            entry.outcome = _log_failure("C-STORE", exc)
        if not self._audit(entry):
            entry.outcome = InternalServiceError.code  # unaudited: make the PACS send it again
        if entry.outcome != OK:
            log.info("C-STORE from %s refused: %s", peer.ae_title, entry.outcome)
        return _status_dataset(entry.outcome)

    def _receive(self, event: Event, peer: Peer) -> tuple[str, str]:
        """Spool, judge, store and commit one received instance; (study UID, outcome).

        Raises:
            RequestTooLargeError: the instance is over ``max_request_bytes``.
            StorageFullError: storing it would eat the storage reserve.
        """
        limit = self.services.settings.max_request_bytes
        part10 = event.encoded_dataset()  # preamble, file meta, then the data set as received
        if len(part10) > limit:
            raise RequestTooLargeError(
                f"The instance is {len(part10)} bytes, over the limit of {limit}.",
                size_bytes=len(part10),
                limit_bytes=limit,
            )
        store = self.services.store
        name = f"C-STORE message {event.request.MessageID}"
        with store.workspace() as folder:
            spooled = store.spool((part10,), name, folder)
            with self.services.db.session() as session:
                report = ingest(session, store, peer.tenant_id, [spooled], Door.CSTORE)
        if report.stored:
            return report.stored[0].study_instance_uid, OK
        return "", report.refused[0].code

    def _tenant_for(self, ae_title: str) -> str | None:
        """The id of the tenant whose AE title this is (one indexed query per association)."""
        if not ae_title:
            return None
        with self.services.db.session() as session:
            return session.scalar(select(Tenant.id).where(Tenant.ae_title == ae_title))

    def _peer(self, assoc: Association) -> Peer | None:
        with self._lock:
            return self._peers.get(assoc)

    def _audit(self, entry: AuditEntry) -> bool:
        """Record ``entry``; False (and logged) when the audit log cannot be written."""
        try:
            self.services.auditor.record(entry)
        except Exception as exc:
            _log_failure("audit", exc)
            return False
        return True


def start_dicom_listener(services: Services) -> None:
    """Start hook for :func:`serving.app.create_app`: listen for C-STORE with the service and
    stop with it (``Services.close`` stops background components)."""
    listener = CStoreListener(services)
    listener.start()
    services.background.append(listener)


def _on_echo(_event: Event) -> int:
    """C-ECHO: the association was accepted, so the PACS's configuration is right."""
    return CStoreStatus.SUCCESS


def _reject(assoc: Association, result: int, diagnostic: int) -> None:
    """Send an A-ASSOCIATE-RJ and wait until it has left, as pynetdicom's own ACSE does."""
    assoc.acse.send_reject(result, _SOURCE_SERVICE_USER, diagnostic)
    assoc.kill()


def _status_dataset(outcome: str) -> Dataset:
    """The C-STORE response status, with the Basira code as Error Comment on refusal."""
    status = Dataset()
    status.Status = status_for(outcome)
    if outcome != OK:
        status.ErrorComment = outcome[:64]
    return status


def _log_failure(what: str, exc: BaseException) -> str:
    """Log an unexpected error by id, class and stack only (its message may quote UIDs)."""
    error_id = uuid.uuid4().hex[:12]
    stack = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s failed, error %s (%s)\n%s", what, error_id, type(exc).__name__, stack)
    return InternalServiceError.code
