"""Column types shared by the models and the migrations (keep them stable: migrations use them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp column holds)."""
    return datetime.now(UTC)


def naive_utc(value: datetime) -> datetime:
    """An aware datetime as a :class:`UTCDateTime` column stores it: naive, in UTC."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp with microsecond precision on every back end.

    Stored naive (SQLite text, MySQL ``DATETIME(6)``, PostgreSQL ``TIMESTAMP``) so the value
    does not depend on a server or session time zone; aware datetimes are converted to UTC
    on the way in and every value comes back aware (``tzinfo=UTC``). Naive input is refused:
    it is always a bug.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """MySQL's plain DATETIME drops fractions of a second: use DATETIME(6) there."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware datetime -> naive UTC."""
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Naive UTC -> aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
