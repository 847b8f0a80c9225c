"""What every table module shares: the one declarative base and the column type of times.

The tables live in :mod:`serving.models` (the service's) and :mod:`serving.ui.models` (the review
UI's); :mod:`serving.db` imports both, so whoever opens a database has every table registered on
:attr:`Base.metadata`, whichever module was imported first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "UTCDateTime", "utcnow"]


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only kind of time the service stores)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no time zone: stored naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use serving.orm.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base of every table: the service's (:mod:`serving.models`) and the review UI's
    (:mod:`serving.ui.models`)."""
