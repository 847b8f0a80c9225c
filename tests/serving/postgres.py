"""PostgreSQL for the service tests: a private schema per test session on the server named by
``BASIRA_TEST_POSTGRES_URL``, so parallel pytest workers (and engineers) never share tables.

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

from serving.db import Base, Database

__all__ = ["POSTGRES_URL_ENV", "SKIP_MESSAGE", "empty_tables", "private_schema", "schema_url"]

POSTGRES_URL_ENV = "BASIRA_TEST_POSTGRES_URL"
SKIP_MESSAGE = "BASIRA_TEST_POSTGRES_URL not set: PostgreSQL tests skipped"


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
