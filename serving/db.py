"""The database: one SQLAlchemy engine and session factory per service, SQLite by default and
PostgreSQL by URL with the same code.

SQLite gets WAL mode and a busy timeout so the worker thread and request threads can write
concurrently; every connection enforces foreign keys. The schema is every table of
:mod:`serving.models` and :mod:`serving.ui.models` (both imported here).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# The table modules register their tables on Base.metadata: imported here, every table exists
# for whoever opens a database, whatever was imported first.
from serving import models as _service_tables  # noqa: F401
from serving.orm import Base
from serving.ui import models as _ui_tables  # noqa: F401

__all__ = ["Database"]

#: The PostgreSQL advisory lock key that serialises schema creation ("BASIRA" in ASCII).
_SCHEMA_LOCK = 0x424153495241
_WAL_ATTEMPTS = 50
_WAL_RETRY_S = 0.1


class Database:
    """The engine and session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False, **engine_kwargs: Any) -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver we ship
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Statement parameters carry patient names and IDs (the worklist's columns): never in
        # an error message or a log line.
        engine_kwargs.setdefault("hide_parameters", True)
        if self.is_sqlite:
            engine_kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = create_engine(parsed, echo=echo, **engine_kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create the tables that do not exist yet (idempotent).

        The creation is serialised between processes: ``basira serve`` and several
        ``basira worker`` processes starting together would otherwise all see the tables
        missing and all but one fail creating them ("already exists"). PostgreSQL takes a
        transaction-scoped advisory lock; SQLite takes its write lock up front, since its
        Python driver opens no transaction around DDL by itself.
        """
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            elif self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            Base.metadata.create_all(conn)
            _add_missing_columns(conn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        """Raise when the database cannot answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


#: Columns added to existing tables after their first release: ``create_all`` creates missing
#: tables only, so a database made by an earlier version gets these by ``ALTER TABLE``.
_ADDED_COLUMNS = (
    ("jobs", "not_before"),
    ("jobs", "label"),
    ("studies", "n_instances"),
    ("studies", "patient_name"),
    ("studies", "patient_name_key"),
    ("studies", "patient_id"),
    ("studies", "accession_number"),
    ("studies", "study_date"),
    ("studies", "study_time"),
    ("studies", "study_description"),
    ("studies", "modality"),
)


def _count_instances(conn: Connection) -> None:
    """Each study's stored instances."""
    conn.execute(
        text(
            "UPDATE studies SET n_instances = (SELECT count(*) FROM instances "
            "WHERE instances.study_id = studies.id) WHERE n_instances IS NULL"
        )
    )


def _label_jobs(conn: Connection) -> None:
    """Each ended job's diagnosis label, read from its result JSON."""
    rows = conn.execute(
        text("SELECT id, result_json FROM jobs WHERE probability IS NOT NULL AND label IS NULL")
    ).all()
    for job_id, result_json in rows:
        label = (json.loads(result_json or "{}").get("diagnosis") or {}).get("label")
        conn.execute(
            text("UPDATE jobs SET label = :label WHERE id = :id"), {"label": label, "id": job_id}
        )


#: How an added column is filled on the rows that existed before it. The studies' header
#: fields are filled from their stored files by the service at start
#: (:func:`serving.study_header.describe_stored_studies`), which needs the storage.
_BACKFILLS: dict[tuple[str, str], Callable[[Connection], None]] = {
    ("studies", "n_instances"): _count_instances,
    ("jobs", "label"): _label_jobs,
}


def _add_missing_columns(conn: Connection) -> None:
    """Add the nullable columns of :data:`_ADDED_COLUMNS` that an existing table lacks, fill
    them on existing rows, and create the indexes an existing table lacks."""
    inspector = inspect(conn)
    for table_name, column_name in _ADDED_COLUMNS:
        present = {column["name"] for column in inspector.get_columns(table_name)}
        if column_name in present:
            continue
        column = Base.metadata.tables[table_name].c[column_name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f'ALTER TABLE "{table_name}" ADD COLUMN "{column_name}" {kind}'))
        if (table_name, column_name) in _BACKFILLS:
            _BACKFILLS[table_name, column_name](conn)
    for table in Base.metadata.sorted_tables:
        indexed = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                index.create(conn)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Put the database in WAL mode (persistent; a no-op once it is).

    While another connection is switching a fresh database to WAL, SQLite answers
    ``database is locked`` at once, without waiting on the busy timeout; serve and workers
    starting together hit it on about 1 connection in 30 (4 at once). Retry for up to ~5 s.
    """
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(_WAL_RETRY_S)
