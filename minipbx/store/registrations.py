"""Persisted registrar bindings (re-exported by :mod:`minipbx.store.repos`).

The registrar keeps its location service in memory and writes bindings through
:class:`RegistrationRepo` (write-through or write-behind batches with
:meth:`~RegistrationRepo.replace_many`), so that registrations survive a restart:
:meth:`~RegistrationRepo.load_active` at start, :meth:`~RegistrationRepo.purge_expired` now
and then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.coltypes import naive_utc, utcnow
from minipbx.store.db import Database
from minipbx.store.models import Registration, User
from minipbx.store.records import RegistrationRecord

log = logging.getLogger(__name__)

CHUNK = 500  # rows per IN (...) list: well under every back end's parameter limit


class RegistrationRepo(Protocol):
    """Persisted registrar bindings, so registrations survive a restart."""

    async def replace(self, aor: str, bindings: Sequence[RegistrationRecord]) -> None:
        """Make ``bindings`` the complete set of bindings of ``aor`` (empty: remove all)."""
        ...

    async def replace_many(self, changes: Mapping[str, Sequence[RegistrationRecord]]) -> None:
        """:meth:`replace` for several AORs in one transaction (for write-behind batches)."""
        ...

    async def delete(self, aor: str) -> int:
        """Remove every binding of ``aor``; returns how many there were."""
        ...

    async def load_active(self, now: datetime | None = None) -> list[RegistrationRecord]:
        """Every binding that expires after ``now`` (default: the current time)."""
        ...

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete bindings that expired at or before ``now``; returns how many."""
        ...


_REGISTRATION_FIELDS = (
    "user_id",
    "aor",
    "contact",
    "expires_at",
    "received_transport",
    "received_host",
    "received_port",
    "params",
    "local",
    "nat",
    "path",
    "call_id",
    "cseq",
    "user_agent",
    "instance_id",
    "reg_id",
    "q",
    "updated_at",
)


_REGISTRATIONS = cast(Table, Registration.__table__)


def _registration_record(row: Registration) -> RegistrationRecord:
    return RegistrationRecord(**{name: getattr(row, name) for name in _REGISTRATION_FIELDS})


class SqlRegistrationRepo:
    """:class:`RegistrationRepo` on a SQL database."""

    def __init__(self, db: Database) -> None:
        """Use ``db`` for every call."""
        self._db = db

    async def replace(self, aor: str, bindings: Sequence[RegistrationRecord]) -> None:
        """Make ``bindings`` the complete set of bindings of ``aor`` (empty: remove all)."""
        await self.replace_many({aor: bindings})

    async def replace_many(self, changes: Mapping[str, Sequence[RegistrationRecord]]) -> None:
        """:meth:`replace` for several AORs in one transaction (for write-behind batches).

        Bindings of users deleted meanwhile are skipped (logged), not an error. Rows are
        inserted ``CHUNK`` at a time: the parameters of a whole storm's batch at once made
        the process grow by that peak for good (the allocator keeps what it got).
        """
        for aor, bindings in changes.items():
            for binding in bindings:
                if binding.aor != aor:
                    raise ValueError(f"binding for {binding.aor!r} given under AOR {aor!r}")
        if not changes:
            return
        now = utcnow()
        sqlite = self._db.is_sqlite
        async with self._db.write("save registrations") as session:
            await _delete_aors(session, list(changes), sqlite)
            rows = [b for bindings in changes.values() for b in bindings]
            live = await _live_user_ids(session, {b.user_id for b in rows}, sqlite)
            kept = [b for b in rows if b.user_id in live]
            if len(kept) < len(rows):
                log.info(
                    "store.registrations_skipped reason=user_deleted count=%d",
                    len(rows) - len(kept),
                )
            if sqlite:
                await _insert_sqlite(session, kept, now)
                return
            for start in range(0, len(kept), CHUNK):
                values = [_registration_values(b, now) for b in kept[start : start + CHUNK]]
                # Core, not the ORM's bulk insert: the same rows with less work each.
                await session.execute(insert(_REGISTRATIONS), values)

    async def delete(self, aor: str) -> int:
        """Remove every binding of ``aor``; returns how many there were."""
        async with self._db.write("delete registrations") as session:
            result = await session.execute(delete(Registration).where(Registration.aor == aor))
            return int(getattr(result, "rowcount", 0))

    async def load_active(self, now: datetime | None = None) -> list[RegistrationRecord]:
        """Every binding that expires after ``now`` (default: the current time)."""
        now = now or utcnow()
        async with self._db.read("load registrations") as session:
            stmt = (
                select(Registration)
                .where(Registration.expires_at > now)
                .order_by(Registration.aor, Registration.id)
            )
            return [_registration_record(row) for row in await session.scalars(stmt)]

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete bindings that expired at or before ``now``; returns how many."""
        now = now or utcnow()
        async with self._db.write("purge registrations") as session:
            result = await session.execute(
                delete(Registration).where(Registration.expires_at <= now)
            )
            count = int(getattr(result, "rowcount", 0))
        if count:
            log.info("store.registrations_purged count=%d", count)
        return count


# SQLite takes a whole list as one JSON parameter (json_each, JSON1: built in since 3.38;
# Debian's is 3.40), so a storm's batch is a few statements of one parameter each. An
# executemany binds each row in the driver's thread, which takes the GIL back from the
# event loop once a row: during a registration storm that hand-over cost the SIP side a
# quarter of its throughput (bench/sip_load.py).
SQLITE_ROWS_PER_INSERT = 2000
_SQLITE_DELETE = text("DELETE FROM registrations WHERE aor IN (SELECT value FROM json_each(:aors))")
_SQLITE_LIVE = text("SELECT id FROM users WHERE id IN (SELECT value FROM json_each(:ids))")
_SQLITE_INSERT = text(
    f"INSERT INTO registrations ({', '.join(_REGISTRATION_FIELDS)}) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_REGISTRATION_FIELDS)))
    + " FROM json_each(:rows)"
)


async def _delete_aors(session: AsyncSession, aors: list[str], sqlite: bool) -> None:
    if sqlite:
        await session.execute(_SQLITE_DELETE, {"aors": json.dumps(aors)})
        return
    for start in range(0, len(aors), CHUNK):
        chunk = aors[start : start + CHUNK]
        await session.execute(delete(Registration).where(Registration.aor.in_(chunk)))


async def _live_user_ids(session: AsyncSession, user_ids: set[int], sqlite: bool) -> set[int]:
    ids = sorted(user_ids)
    if sqlite:
        return set(await session.scalars(_SQLITE_LIVE, {"ids": json.dumps(ids)}))
    live: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        live.update(await session.scalars(select(User.id).where(User.id.in_(chunk))))
    return live


async def _insert_sqlite(
    session: AsyncSession, rows: list[RegistrationRecord], now: datetime
) -> None:
    """Insert ``rows`` with one statement and one parameter per ``SQLITE_ROWS_PER_INSERT``.

    The values are :func:`_registration_values` as the ORM's bind processors give them
    (:func:`sqlite_time` for the timestamps; a test holds the two equal).
    """
    for start in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        batch = [
            [_sqlite_value(v) for v in _registration_values(r, now).values()]
            for r in rows[start : start + SQLITE_ROWS_PER_INSERT]
        ]
        await session.execute(_SQLITE_INSERT, {"rows": json.dumps(batch)})


def _sqlite_value(value: object) -> object:
    if isinstance(value, datetime):
        return sqlite_time(value)
    return int(value) if isinstance(value, bool) else value


def sqlite_time(value: datetime) -> str:
    """An aware datetime as a SQLite DATETIME column stores it: naive UTC text with
    microseconds (what :class:`~minipbx.store.coltypes.UTCDateTime` binds there)."""
    return naive_utc(value).isoformat(" ", "microseconds")


def _registration_values(binding: RegistrationRecord, now: datetime) -> dict[str, Any]:
    values = {name: getattr(binding, name) for name in _REGISTRATION_FIELDS}
    if values["updated_at"] is None:
        values["updated_at"] = now
    return values
