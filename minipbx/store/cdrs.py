"""Call detail records: the record, the local repository and the shipping cursor.

A :class:`CdrRecord` is written once, when its call ends, by :meth:`SqlCdrRepo.add_many`
(one transaction for a batch: the CDR writer commits records in groups). Records are read
back in commit order (``id``) for shipping (:meth:`SqlCdrRepo.after`) and by time for
exports and reports (:meth:`SqlCdrRepo.between`). The MySQL copy lives in
:mod:`minipbx.store.cdr_mirror`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update

from minipbx.store.coltypes import utcnow
from minipbx.store.db import Database, describe_error
from minipbx.store.errors import ConflictError, StoreError
from minipbx.store.models import Cdr, CdrShipment
from minipbx.store.registrations import CHUNK


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One call attempt as billing and reports see it (columns of ``cdrs`` and MySQL ``cdr``).

    Times are aware UTC datetimes. ``duration``: seconds from start to end (3 decimals);
    ``billable_seconds``: answer to end, to the nearest second (0 when unanswered).
    The billing details (``rate_prefix`` to ``card_number``) are set by billing on a priced
    call and None otherwise (docs/cdr.md). ``id`` is the local row id, set on records read
    back from the database.
    """

    uuid: str
    call_id: str
    tenant_id: int | None
    tenant: str
    caller_number: str
    caller_name: str
    called_number: str
    routed_number: str
    route_type: str
    trunk: str | None
    start_time: datetime
    answer_time: datetime | None
    end_time: datetime
    duration: Decimal
    billable_seconds: int
    disposition: str
    sip_status: int
    reason_cause: str
    hangup_by: str
    cost: Decimal
    currency: str
    source_ip: str
    user_agent: str
    rate_prefix: str | None = None
    connection_fee: Decimal | None = None
    price_per_minute: Decimal | None = None
    billed_seconds: int | None = None
    card_number: str | None = None
    id: int | None = None

    def values(self) -> dict[str, Any]:
        """The columns to insert (everything but ``id``)."""
        return {name: getattr(self, name) for name in CDR_FIELDS}


#: Field (column) names of a CDR in their documented order, without the local ``id``.
CDR_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CdrRecord) if f.name != "id")

#: Longest value of each bounded text column (longer values are cut when a record is built).
CDR_LIMITS: dict[str, int] = {
    name: int(length)
    for name, column in Cdr.__table__.columns.items()
    if name in CDR_FIELDS and (length := getattr(column.type, "length", None))
}


def cdr_record(row: Cdr) -> CdrRecord:
    """The record of a ``cdrs`` ORM row."""
    return _from_columns([row.id, *(getattr(row, name) for name in CDR_FIELDS)])


_MS = Decimal("0.001")
_DURATION = CDR_FIELDS.index("duration")


def _from_columns(row: Sequence[Any]) -> CdrRecord:
    """A record from a row of :data:`_COLUMNS` (positional: cheaper than by name)."""
    values = list(row[1:])
    values[_DURATION] = Decimal(values[_DURATION]).quantize(_MS)
    build: Any = CdrRecord  # positional: fields in CDR_FIELDS order, then id
    record: CdrRecord = build(*values, row[0])
    return record


# Core columns in record order: reading through them skips the ORM's identity map (the
# shipper reads every record once; about 60 -> 25 us per record on the event loop).
_COLUMNS = [Cdr.__table__.c[name] for name in ("id", *CDR_FIELDS)]


@dataclass(frozen=True, slots=True)
class Backlog:
    """CDRs not yet in a shipping target: how many, and when the oldest of them ended."""

    count: int
    oldest_end: datetime | None


class CdrRepo(Protocol):
    """What the CDR writer and shipper need from the local database."""

    async def add_many(self, records: Sequence[CdrRecord], *, skip_known: bool = False) -> int:
        """Insert ``records`` in one transaction; returns how many were inserted."""
        ...

    async def after(self, last_id: int, limit: int) -> list[CdrRecord]:
        """Up to ``limit`` records with ``id > last_id``, in ``id`` order."""
        ...

    async def shipped_upto(self, target: str) -> int:
        """The id up to which every record is in ``target`` (0: none)."""
        ...

    async def mark_shipped(self, target: str, last_id: int, count: int) -> None:
        """Record that every record up to ``last_id`` (``count`` more) is in ``target``."""
        ...

    async def backlog(self, target: str) -> Backlog:
        """Records not yet in ``target``."""
        ...


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores our UTCDateTime in SQLite
_INSERT_SQLITE = (
    f"INSERT INTO cdrs ({', '.join(CDR_FIELDS)}) VALUES ({', '.join('?' * len(CDR_FIELDS))})"
)


def _sqlite_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(_SQLITE_TIME)
    if isinstance(value, Decimal):
        return float(value)  # what SQLAlchemy's Numeric binds on SQLite
    return value


_ADVANCE_SQLITE = (
    "UPDATE cdr_shipments SET last_id = ?, shipped = shipped + ?, updated_at = ? "
    "WHERE target = ? AND last_id < ?"
)
_START_SQLITE = (
    "INSERT OR IGNORE INTO cdr_shipments (target, last_id, shipped, updated_at) VALUES (?, ?, ?, ?)"
)


class _SqliteAppender:
    """Writes the CDR tables through a plain ``sqlite3`` connection in a thread of its own.

    Through the async engine a one-row transaction costs the event loop about 1 ms
    (statement compilation, ORM bulk path, a dozen thread hand-offs); here the loop builds
    the parameter tuples and waits on one future per batch, and the thread runs
    ``BEGIN IMMEDIATE; ...; COMMIT`` (same tables, same stored formats). Every write to
    ``cdrs`` and ``cdr_shipments`` goes through this one thread: two writers of our own
    would wait on each other's lock, and SQLite's busy handler sleeps up to 100 ms at a
    time, holding up the answers to BYEs that wait on the commit.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdr-writer")
        self._conn: sqlite3.Connection | None = None

    def _transaction(self, action: str, work: Callable[[sqlite3.Connection], object]) -> None:
        if self._conn is None:
            self._conn = self._db.sqlite_connect()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"{action}: {describe_error(exc)}") from exc
        except sqlite3.Error as exc:
            self._conn = None  # reopen next time (file replaced, disk error...)
            conn.close()
            raise StoreError(
                f"{action} failed on {self._db.display_url}: {describe_error(exc)}"
            ) from exc

    async def _run(self, action: str, work: Callable[[sqlite3.Connection], object]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._transaction, action, work)

    async def add(self, records: Sequence[CdrRecord]) -> None:
        rows = [tuple(_sqlite_value(getattr(r, n)) for n in CDR_FIELDS) for r in records]
        await self._run("save call records", lambda c: c.executemany(_INSERT_SQLITE, rows))

    async def advance(self, target: str, last_id: int, count: int) -> None:
        now = _sqlite_value(utcnow())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_START_SQLITE, (target, 0, 0, now))
            conn.execute(_ADVANCE_SQLITE, (last_id, count, now, target, last_id))

        await self._run("save CDR shipping state", work)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SqlCdrRepo:
    """:class:`CdrRepo` (and exports) on a SQL database."""

    def __init__(self, db: Database, *, threaded_sqlite: bool = False) -> None:
        """Use ``db`` for every call. ``threaded_sqlite``: on SQLite, :meth:`add_many`
        writes through a connection in a thread of its own (the server's CDR writer; call
        :meth:`close` at the end)."""
        self._db = db
        self._appender = _SqliteAppender(db) if threaded_sqlite and db.is_sqlite else None

    def close(self) -> None:
        """Stop the writer thread, if any."""
        if self._appender is not None:
            self._appender.close()

    async def add_many(self, records: Sequence[CdrRecord], *, skip_known: bool = False) -> int:
        """Insert ``records`` in one transaction, in the given order.

        ``skip_known``: leave out records whose ``uuid`` is already stored (re-importing a
        spool file after a crash); otherwise a known uuid is a :class:`ConflictError`.
        """
        if not records:
            return 0
        if self._appender is not None and not skip_known:
            await self._appender.add(records)
            return len(records)
        async with self._db.write("save call records") as session:
            rows = list(records)
            if skip_known:
                known: set[str] = set()
                for start in range(0, len(rows), CHUNK):
                    uuids = [r.uuid for r in rows[start : start + CHUNK]]
                    known.update(await session.scalars(select(Cdr.uuid).where(Cdr.uuid.in_(uuids))))
                rows = [r for r in rows if r.uuid not in known]
            if rows:
                await session.execute(insert(Cdr), [r.values() for r in rows])
            return len(rows)

    async def after(self, last_id: int, limit: int) -> list[CdrRecord]:
        """Up to ``limit`` records with ``id > last_id``, in ``id`` (commit) order."""
        async with self._db.read("read call records") as session:
            stmt = select(*_COLUMNS).where(Cdr.id > last_id).order_by(Cdr.id).limit(limit)
            return [_from_columns(row) for row in await session.execute(stmt)]

    async def between(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tenant_id: int | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[CdrRecord]:
        """Records that ended in ``[since, until)``, oldest first; page with ``after_id``."""
        async with self._db.read("read call records") as session:
            stmt = select(*_COLUMNS).where(Cdr.id > after_id)
            if since is not None:
                stmt = stmt.where(Cdr.end_time >= since)
            if until is not None:
                stmt = stmt.where(Cdr.end_time < until)
            if tenant_id is not None:
                stmt = stmt.where(Cdr.tenant_id == tenant_id)
            stmt = stmt.order_by(Cdr.id).limit(limit)
            return [_from_columns(row) for row in await session.execute(stmt)]

    async def count(self) -> int:
        """How many records are stored."""
        async with self._db.read("count call records") as session:
            return int(await session.scalar(select(func.count()).select_from(Cdr)) or 0)

    async def shipped_upto(self, target: str) -> int:
        """The id up to which every record is in ``target`` (0: none)."""
        async with self._db.read("read CDR shipping state") as session:
            value = await session.scalar(
                select(CdrShipment.last_id).where(CdrShipment.target == target)
            )
            return int(value or 0)

    async def mark_shipped(self, target: str, last_id: int, count: int) -> None:
        """Advance the cursor of ``target`` to ``last_id`` (never backwards)."""
        if self._appender is not None:
            await self._appender.advance(target, last_id, count)
            return
        async with self._db.write("save CDR shipping state") as session:
            result = await session.execute(
                update(CdrShipment)
                .where(CdrShipment.target == target, CdrShipment.last_id < last_id)
                .values(last_id=last_id, shipped=CdrShipment.shipped + count, updated_at=utcnow())
            )
            if getattr(result, "rowcount", 0) == 0:
                exists = await session.scalar(
                    select(CdrShipment.last_id).where(CdrShipment.target == target)
                )
                if exists is None:
                    session.add(
                        CdrShipment(
                            target=target, last_id=last_id, shipped=count, updated_at=utcnow()
                        )
                    )

    async def backlog(self, target: str) -> Backlog:
        """Records not yet in ``target``: count and the end time of the oldest."""
        last = await self.shipped_upto(target)
        async with self._db.read("read CDR backlog") as session:
            count, oldest_id = (
                await session.execute(select(func.count(), func.min(Cdr.id)).where(Cdr.id > last))
            ).one()
            oldest = None
            if oldest_id is not None:
                oldest = await session.scalar(select(Cdr.end_time).where(Cdr.id == oldest_id))
            return Backlog(int(count or 0), oldest)
