"""PostgreSQL for the service tests: a private schema per test session on the server named by
``BASIRA_TEST_POSTGRES_URL`` or, when that is not set, on one that answers on this machine
(``postgresql://postgres@127.0.0.1:5432/test``, trust authentication, as a developer's machine
and CI provide), so parallel pytest workers (and engineers) never share tables. Only when
neither is there are the PostgreSQL tests skipped, saying so.

The schema is chosen through the connection's ``options=-csearch_path=<schema>``, carried in the
URL, so the app, its workers and the CLI reach it with the same string an operator would set in
``BASIRA_DATABASE_URL``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from serving.db import Database
from serving.orm import Base

__all__ = [
    "LOCAL_POSTGRES_URL",
    "POSTGRES_URL_ENV",
    "SKIP_MESSAGE",
    "empty_tables",
    "postgres_base_url",
    "private_schema",
    "schema_url",
]

POSTGRES_URL_ENV = "BASIRA_TEST_POSTGRES_URL"
#: Tried when the variable is not set: the database every developer machine and CI run has.
LOCAL_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SKIP_MESSAGE = (
    "BASIRA_TEST_POSTGRES_URL not set and no PostgreSQL answers at 127.0.0.1:5432 (database "
    "test, user postgres): PostgreSQL tests skipped"
)


def postgres_base_url() -> str | None:
    """``BASIRA_TEST_POSTGRES_URL`` when set (CI keeps its own), else the local server when it
    answers, else None."""
    configured = os.environ.get(POSTGRES_URL_ENV)
    if configured:
        return configured
    probe = Database(LOCAL_POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        probe.ping()
    except OperationalError:
        return None
    finally:
        probe.dispose()
    return LOCAL_POSTGRES_URL


def schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with every connection's search path set to ``schema``."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def private_schema(base_url: str) -> Iterator[str]:
    """A new empty schema (its URL), dropped with everything in it at the end."""
    schema = f"basira_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = Database(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield schema_url(base_url, schema)
    finally:
        with admin.engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '30s'"))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def empty_tables(url: str) -> None:
    """Create the service's tables in ``url``'s schema if needed and delete every row."""
    db = Database(url)
    db.create_schema()
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    db.dispose()
