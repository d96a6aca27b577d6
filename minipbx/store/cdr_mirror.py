"""The MySQL/MariaDB copy of the call detail records (``cdr.mysql_url``).

External billing and reporting tools read table ``cdr`` there; its schema is documented in
``docs/cdr.md`` and created here when missing (it is not managed by the PBX's migrations:
the database belongs to the operator; columns added by later versions are added to an
existing table at the first write). Each CDR is inserted with its ``cdr_uuid``; the
column is unique and a known uuid is ignored, so re-sending a batch after a crash or a lost
acknowledgement never makes a second row (exactly once). Times are UTC, ``DATETIME(3)``.
"""

from __future__ import annotations

import hashlib
import logging
import operator
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    inspect,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from minipbx.store.cdrs import CDR_FIELDS, CdrRecord
from minipbx.store.db import _is_database_error, describe_error, parse_url
from minipbx.store.errors import StoreError

log = logging.getLogger("minipbx.cdr")

MIRROR_TABLE = "cdr"

_metadata = MetaData()
_DT = mysql.DATETIME(fsp=3)

#: The external ``cdr`` table (docs/cdr.md). ``id`` orders rows as they arrived.
cdr_table = Table(
    MIRROR_TABLE,
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("cdr_uuid", String(36), nullable=False, unique=True),
    Column("call_id", String(255), nullable=False),
    Column("tenant_id", Integer, nullable=True),
    Column("tenant", String(255), nullable=False),
    Column("caller_number", String(64), nullable=False),
    Column("caller_name", String(255), nullable=False),
    Column("called_number", String(64), nullable=False),
    Column("routed_number", String(64), nullable=False),
    Column("route_type", String(16), nullable=False),
    Column("trunk", String(255), nullable=True),
    Column("start_time", _DT, nullable=False),
    Column("answer_time", _DT, nullable=True),
    Column("end_time", _DT, nullable=False),
    Column("duration", Numeric(12, 3), nullable=False),
    Column("billable_seconds", Integer, nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("sip_status", Integer, nullable=False),
    Column("reason_cause", String(255), nullable=False),
    Column("hangup_by", String(16), nullable=False),
    Column("cost", Numeric(16, 6), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("source_ip", String(64), nullable=False),
    Column("user_agent", String(255), nullable=False),
    # Billing details (added later: _prepare_table adds them to tables made before).
    Column("rate_prefix", String(32), nullable=True),
    Column("connection_fee", Numeric(16, 6), nullable=True),
    Column("price_per_minute", Numeric(16, 6), nullable=True),
    Column("billed_seconds", Integer, nullable=True),
    Column("card_number", String(32), nullable=True),
    Index("ix_cdr_end_time", "end_time"),
    Index("ix_cdr_tenant_end_time", "tenant", "end_time"),
    mysql_charset="utf8mb4",
    mysql_engine="InnoDB",
)


def _prepare_table(conn: Connection) -> list[str]:
    """Create table ``cdr`` when missing; add the columns a table made by an earlier
    version lacks (all nullable: existing rows get NULL). Returns the added columns."""
    _metadata.create_all(conn, checkfirst=True)
    present = {column["name"].lower() for column in inspect(conn).get_columns(MIRROR_TABLE)}
    added = []
    for column in cdr_table.columns:
        if column.name.lower() in present:
            continue
        ddl = CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {MIRROR_TABLE} ADD COLUMN {ddl}")
        added.append(column.name)
    if added:
        columns = ",".join(added)
        log.info("event=cdr_mirror_columns_added table=%s columns=%s", MIRROR_TABLE, columns)
    return added


def mirror_url(url: str) -> URL:
    """Check a ``cdr.mysql_url``: a valid MySQL/MariaDB URL (StoreError otherwise)."""
    try:
        parsed = parse_url(url)
    except StoreError as exc:  # name this setting, not the PBX's own database URL
        reason = str(exc).removeprefix("bad database URL: ")
        if reason.startswith("cannot parse it"):
            reason = "cannot parse it"
        if "(" not in reason:
            reason += " (e.g. mysql+asyncmy://user:pw@host/db)"
        raise StoreError(f"bad cdr.mysql_url: {reason}") from None
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        raise StoreError(
            "bad cdr.mysql_url: CDR mirroring writes to MySQL or MariaDB "
            "(e.g. mysql+asyncmy://user:pw@host/db)"
        )
    return parsed


# One plain INSERT through the driver: building it with SQLAlchemy's MySQL insert cost
# about twice as much per record on the event loop (statement compilation, bind
# processors). Columns in CDR_FIELDS order; ``uuid`` is ``cdr_uuid`` there.
_COLUMNS = ", ".join("cdr_uuid" if name == "uuid" else name for name in CDR_FIELDS)
_INSERT = (
    f"INSERT INTO {MIRROR_TABLE} ({_COLUMNS}) "
    f"VALUES ({', '.join(['%s'] * len(CDR_FIELDS))}) "
    "ON DUPLICATE KEY UPDATE cdr_uuid = cdr_uuid"
)
_TIMES = tuple(CDR_FIELDS.index(name) for name in ("start_time", "answer_time", "end_time"))
_VALUES = operator.attrgetter(*CDR_FIELDS)


def _row(record: CdrRecord) -> tuple[Any, ...]:
    """The record's values for :data:`_INSERT` (times naive UTC, as the columns hold them)."""
    values = list(_VALUES(record))
    for index in _TIMES:
        value = values[index]
        if value is not None:
            values[index] = value.astimezone(UTC).replace(tzinfo=None)
    return tuple(values)


class CdrMirror:
    """Writes CDRs to table ``cdr`` of a MySQL/MariaDB database."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        """Check ``url`` (StoreError when malformed); no connection yet."""
        self.url = mirror_url(url)
        self.display_url = self.url.render_as_string(hide_password=True)
        #: Names this target in the shipping cursor: host, port and database, no user.
        where = f"mysql://{self.url.host or ''}:{self.url.port or 3306}/{self.url.database}"
        self.target = where if len(where) <= 200 else hashlib.sha256(where.encode()).hexdigest()
        self._engine: AsyncEngine = create_async_engine(
            self.url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            pool_recycle=3600,
            # Every use is engine.begin(), which commits or rolls back itself; the pool's
            # extra rollback on return only adds a round trip, and a server that died in
            # between made SQLAlchemy log a traceback ("Exception during reset").
            pool_reset_on_return=None,
            connect_args={"connect_timeout": connect_timeout},
        )
        self._table_ready = False

    async def insert(self, records: Sequence[CdrRecord]) -> None:
        """Insert ``records`` in one transaction; records whose uuid is there are skipped.

        Creates table ``cdr`` first if it does not exist, or adds the columns it lacks
        (a table created by an earlier version). Raises :class:`StoreError` with a
        one-line reason when the server cannot be reached or refuses.
        """
        try:
            async with self._engine.begin() as conn:
                if not self._table_ready:
                    await conn.run_sync(_prepare_table)
                    self._table_ready = True
                if records:
                    await conn.exec_driver_sql(_INSERT, [_row(r) for r in records])
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            self._table_ready = False
            reason = describe_error(exc)
            raise StoreError(f"CDR copy to {self.display_url} failed: {reason}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._engine.dispose()
