"""The one way an instance enters the service, whichever door it came by (upload, STOW-RS,
C-STORE): its header is read and judged by the same rules ``basira inspect`` applies, then it is
stored durably, deduplicated by SOP Instance UID, and recorded against its study.

The caller commits the session and only then acknowledges: an acknowledged instance is on disk
and in the database.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.dicom.archive import ArchiveLimits, extract_zip, is_zip
from pipelines.dicom.header import MEDIA_STORAGE_DIRECTORY, InstanceHeader, read_header
from pipelines.dicom.selection import check_content
from pipelines.errors import BasiraError, NotAnImageError
from serving.errors import DuplicateInstanceError, MultipleStudiesError, StudyMismatchError
from serving.models import Instance, Study
from serving.orm import utcnow
from serving.storage import InstanceStore, SpooledFile
from serving.study_header import read_study_header

__all__ = ["Door", "IngestReport", "Refusal", "StoredInstance", "expand_archives", "ingest"]

log = logging.getLogger(__name__)


class Door(StrEnum):
    """How an instance arrived."""

    UPLOAD = "upload"
    STOW = "stow"
    CSTORE = "cstore"


@dataclass(frozen=True)
class Refusal:
    """A file that was not stored, and why (the sender keeps it: nothing is lost)."""

    name: str
    code: str
    message: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.name, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class StoredInstance:
    """An instance that is durably stored (``duplicate``: it already was, byte for byte)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    duplicate: bool


@dataclass
class IngestReport:
    stored: list[StoredInstance] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    studies: dict[str, Study] = field(default_factory=dict)


def expand_archives(files: Sequence[SpooledFile], limits: ArchiveLimits) -> list[SpooledFile]:
    """``files`` with every zip replaced by its members (checked by the archive safety rules).

    Raises:
        ArchiveError: an archive is unsafe, too large or corrupt (the whole request is refused).
    """
    expanded: list[SpooledFile] = []
    for spooled in files:
        if not is_zip(spooled.path):
            expanded.append(spooled)
            continue
        dest = spooled.path.with_name(spooled.path.name + ".d")
        for member in extract_zip(spooled.path, dest, limits):
            expanded.append(_hashed(member.path, f"{spooled.name}!/{member.display_name}"))
        spooled.path.unlink(missing_ok=True)
    return expanded


def ingest(
    session: Session,
    store: InstanceStore,
    tenant_id: str,
    files: Sequence[SpooledFile],
    door: Door,
    *,
    one_study: bool = False,
    expected_study: str | None = None,
) -> IngestReport:
    """Judge, store and record ``files`` for ``tenant_id`` (spooled files are consumed).

    ``one_study`` refuses the whole batch when it spans several studies; ``expected_study``
    refuses (per file) instances of any other study.

    Raises:
        MultipleStudiesError: ``one_study`` and more than one study (nothing is stored).
        StorageFullError: the storage reserve would be crossed (nothing is stored).
    """
    report = IngestReport()
    judged: list[tuple[SpooledFile, InstanceHeader]] = []
    try:
        for spooled in files:
            header: InstanceHeader | None = None
            try:
                header = read_header(spooled.path, spooled.name)
                _judge(spooled, header, expected_study)
                judged.append((spooled, header))
            except BasiraError as exc:
                report.refused.append(_refusal(spooled.name, exc, header))
                spooled.path.unlink(missing_ok=True)
        studies = {header.study_instance_uid for _, header in judged}
        if one_study and len(studies) > 1:
            raise MultipleStudiesError(
                f"The upload holds instances of {len(studies)} studies; send one study per "
                "upload. Nothing was stored.",
                n_studies=len(studies),
            )
        store.check_space(sum(spooled.size_bytes for spooled, _ in judged))
        fresh = _deduplicate(session, tenant_id, judged, report)
        paths = store.commit_all([spooled for spooled, _ in fresh], tenant_id)
        _record_all(session, tenant_id, fresh, door, report)
        _describe_studies(report, fresh, paths)
    finally:
        for spooled, _ in judged:
            spooled.path.unlink(missing_ok=True)
    return report


def _judge(spooled: SpooledFile, header: InstanceHeader, expected_study: str | None) -> None:
    if header.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
        raise NotAnImageError(f"{spooled.name} is a DICOMDIR (an index of files).")
    check_content(header)
    if expected_study is not None and header.study_instance_uid != expected_study:
        raise StudyMismatchError(
            f"{spooled.name} belongs to another study than the one in the request URL.",
            expected=expected_study,
        )


def _deduplicate(
    session: Session,
    tenant_id: str,
    judged: list[tuple[SpooledFile, InstanceHeader]],
    report: IngestReport,
) -> list[tuple[SpooledFile, InstanceHeader]]:
    """The instances not stored yet; identical re-sends are reported stored (``duplicate``),
    a known SOP Instance UID with other content is refused."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.sha256).where(
            Instance.tenant_id == tenant_id,
            Instance.sop_instance_uid.in_({h.sop_instance_uid for _, h in judged}),
        )
    )
    known = {uid: sha for uid, sha in rows}
    fresh: dict[str, tuple[SpooledFile, InstanceHeader]] = {}
    for spooled, header in judged:
        uid = header.sop_instance_uid
        known_sha = known.get(uid) or (fresh[uid][0].sha256 if uid in fresh else None)
        if known_sha is None:
            fresh[uid] = (spooled, header)
        elif known_sha == spooled.sha256:
            report.stored.append(_stored(header, duplicate=True))
        else:
            report.refused.append(_refusal(spooled.name, _conflict(spooled, header), header))
    return list(fresh.values())


def _record_all(
    session: Session,
    tenant_id: str,
    fresh: list[tuple[SpooledFile, InstanceHeader]],
    door: Door,
    report: IngestReport,
) -> None:
    """Add the rows of durably stored instances in one savepoint; if a concurrent request
    stored one of them first, fall back to one savepoint per row to tell twins apart."""
    rows = [
        (spooled, header, _study_of(session, tenant_id, header, report))
        for spooled, header in fresh
    ]
    try:
        with session.begin_nested():
            session.add_all(_instance_row(tenant_id, study, sp, h, door) for sp, h, study in rows)
    except IntegrityError:
        for spooled, header, study in rows:
            try:
                report.stored.append(_record(session, tenant_id, spooled, header, study, door))
            except DuplicateInstanceError as exc:
                report.refused.append(_refusal(spooled.name, exc, header))
        return
    added = Counter(study.id for _, _, study in rows)
    for study in {study.id: study for _, _, study in rows}.values():
        _touch(study, added[study.id])
    report.stored.extend(_stored(header, duplicate=False) for _, header, _ in rows)


def _describe_studies(
    report: IngestReport, fresh: list[tuple[SpooledFile, InstanceHeader]], paths: list[Path]
) -> None:
    """Record the worklist's header fields on each study that has none yet, read from the
    first of its instances stored now (one header read per new study, not per instance).

    A header pydicom cannot read here (the fast scanner accepted it) leaves the fields for a
    later instance to fill: the instance itself is stored all the same.
    """
    pending = {uid for uid, study in report.studies.items() if study.patient_id is None}
    for (_, header), path in zip(fresh, paths, strict=True):
        uid = header.study_instance_uid
        if uid not in pending:
            continue
        try:
            read_study_header(path).apply_to(report.studies[uid])
        except Exception as exc:  # display fields only: the stored instance must not fail
            log.warning("study header fields not readable: %s", type(exc).__name__)
            continue
        pending.discard(uid)


def _study_of(
    session: Session, tenant_id: str, header: InstanceHeader, report: IngestReport
) -> Study:
    uid = header.study_instance_uid
    if uid not in report.studies:
        report.studies[uid] = _study(session, tenant_id, uid)
    return report.studies[uid]


def _record(
    session: Session,
    tenant_id: str,
    spooled: SpooledFile,
    header: InstanceHeader,
    study: Study,
    door: Door,
) -> StoredInstance:
    """Add one row; an identical concurrent twin counts as a duplicate, another is refused."""
    try:
        with session.begin_nested():
            session.add(_instance_row(tenant_id, study, spooled, header, door))
    except IntegrityError:
        existing = _instance(session, tenant_id, header.sop_instance_uid)
        if existing is None or existing.sha256 != spooled.sha256:
            raise _conflict(spooled, header) from None
        return _stored(header, duplicate=True)
    _touch(study, 1)
    return _stored(header, duplicate=False)


def _touch(study: Study, n_added: int) -> None:
    """Note ``n_added`` new instances on ``study``: the count is incremented in SQL, so
    concurrent requests adding to one study never lose each other's."""
    study.last_received_at = utcnow()
    study.needs_analysis = True
    study.n_instances = func.coalesce(Study.n_instances, 0) + n_added


def _conflict(spooled: SpooledFile, header: InstanceHeader) -> DuplicateInstanceError:
    return DuplicateInstanceError(
        f"{spooled.name}: SOP Instance {header.sop_instance_uid} was already received with "
        "different content; the first one is kept.",
        sop_instance_uid=header.sop_instance_uid,
    )


def _instance(session: Session, tenant_id: str, sop_instance_uid: str) -> Instance | None:
    return session.scalar(
        select(Instance).where(
            Instance.tenant_id == tenant_id, Instance.sop_instance_uid == sop_instance_uid
        )
    )


def _study(session: Session, tenant_id: str, study_uid: str) -> Study:
    """The tenant's study row, created when new (safe against a concurrent creator)."""
    query = select(Study).where(Study.tenant_id == tenant_id, Study.study_instance_uid == study_uid)
    study = session.scalar(query)
    if study is not None:
        return study
    try:
        with session.begin_nested():
            study = Study(tenant_id=tenant_id, study_instance_uid=study_uid)
            session.add(study)
        return study
    except IntegrityError:
        return session.scalars(query).one()


def _instance_row(
    tenant_id: str, study: Study, spooled: SpooledFile, header: InstanceHeader, door: Door
) -> Instance:
    return Instance(
        tenant_id=tenant_id,
        study_id=study.id,
        series_instance_uid=header.series_instance_uid,
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        modality=header.modality,
        sha256=spooled.sha256,
        size_bytes=spooled.size_bytes,
        received_via=door.value,
    )


def _stored(header: InstanceHeader, *, duplicate: bool) -> StoredInstance:
    return StoredInstance(
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_class_uid,
        header.sop_instance_uid,
        duplicate,
    )


def _refusal(name: str, exc: BasiraError, header: InstanceHeader | None = None) -> Refusal:
    return Refusal(
        name,
        exc.code,
        exc.message,
        header.sop_class_uid if header else str(exc.detail.get("sop_class_uid", "")),
        header.sop_instance_uid if header else "",
    )


def _hashed(path: Path, name: str) -> SpooledFile:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return SpooledFile(path, digest.hexdigest(), size, name)
