"""The one ingest path: judged, deduplicated, stored durably and recorded; what it refuses is
reported per file with a code, and a batch never half-applies a study split."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from serving import ingest as ingest_module
from serving.db import Database
from serving.ingest import Door, ingest
from serving.models import Instance
from serving.settings import Settings
from serving.storage import InstanceStore, SpooledFile
from serving.tenants import create_tenant


@pytest.fixture
def env(settings: Settings) -> tuple[Database, InstanceStore, str]:
    db = Database(settings.resolved_database_url)
    db.create_schema()
    with db.session() as session:
        tenant_id = create_tenant(session, "Hôpital Cheikh Zaid").tenant.id
    return db, InstanceStore(settings.resolved_storage_dir), tenant_id


def spooled(
    store: InstanceStore, folder: Path, path: Path, data: bytes | None = None
) -> SpooledFile:
    return store.spool([data if data is not None else path.read_bytes()], path.name, folder)


def changed(path: Path) -> bytes:
    """The same SOP instance with other content (a corrected re-send that kept its UID)."""
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "edited"
    out = path.with_suffix(".edited")
    ds.save_as(out)
    return out.read_bytes()


def count(db: Database) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count(Instance.id))) or 0)


def test_batch_stores_each_instance_once_and_refuses_a_conflicting_twin(
    env: tuple[Database, InstanceStore, str], study_files: list[Path]
) -> None:
    db, store, tenant_id = env
    first, second = study_files[:2]
    with store.workspace() as folder, db.session() as session:
        files = [
            spooled(store, folder, first),
            spooled(store, folder, first),
            spooled(store, folder, second),
            spooled(store, folder, second, changed(second)),
        ]
        report = ingest(session, store, tenant_id, files, Door.UPLOAD)
    assert [s.duplicate for s in report.stored] == [True, False, False]
    assert [r.code for r in report.refused] == ["dicom.duplicate_instance"]
    assert count(db) == 2
    stored = store.instance_path(tenant_id, files[0].sha256)
    assert stored.read_bytes() == first.read_bytes()


def test_concurrent_twin_found_at_insert_is_a_duplicate_or_a_refusal(
    env: tuple[Database, InstanceStore, str],
    study_files: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another request stores the same SOP instances between our lookup and our insert."""
    db, store, tenant_id = env
    first, second, third = study_files[:3]
    with store.workspace() as folder, db.session() as session:
        ingest(
            session,
            store,
            tenant_id,
            [spooled(store, folder, p) for p in (first, second)],
            Door.STOW,
        )
    monkeypatch.setattr(ingest_module, "_deduplicate", lambda _s, _t, judged, _r: list(judged))
    with store.workspace() as folder, db.session() as session:
        files = [
            spooled(store, folder, first),
            spooled(store, folder, second, changed(second)),
            spooled(store, folder, third),
        ]
        report = ingest(session, store, tenant_id, files, Door.STOW)
    assert sorted((s.sop_instance_uid, s.duplicate) for s in report.stored) == sorted(
        [
            (pydicom.dcmread(first).SOPInstanceUID, True),
            (pydicom.dcmread(third).SOPInstanceUID, False),
        ]
    )
    assert [r.code for r in report.refused] == ["dicom.duplicate_instance"]
    assert count(db) == 3


def test_refused_files_leave_nothing_in_storage(
    env: tuple[Database, InstanceStore, str], study_files: list[Path], tmp_path: Path
) -> None:
    db, store, tenant_id = env
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    with store.workspace() as folder, db.session() as session:
        report = ingest(session, store, tenant_id, [spooled(store, folder, junk)], Door.UPLOAD)
    assert [r.code for r in report.refused] == ["dicom.not_dicom"]
    assert [p for p in (store.root / "instances").rglob("*") if p.is_file()] == []
    assert [p for p in store.tmp_dir.rglob("*") if p.is_file()] == []
    assert count(db) == 0
