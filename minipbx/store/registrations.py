"""Persisted registrar bindings (re-exported by :mod:`minipbx.store.repos`).

The registrar keeps its location service in memory and writes bindings through
:class:`RegistrationRepo` (write-through or write-behind batches with
:meth:`~RegistrationRepo.replace_many`), so that registrations survive a restart:
:meth:`~RegistrationRepo.load_active` at start, :meth:`~RegistrationRepo.purge_expired` now
and then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.coltypes import utcnow
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
        async with self._db.write("save registrations") as session:
            aors = list(changes)
            for start in range(0, len(aors), CHUNK):
                chunk = aors[start : start + CHUNK]
                await session.execute(delete(Registration).where(Registration.aor.in_(chunk)))
            rows = [b for bindings in changes.values() for b in bindings]
            live = await _live_user_ids(session, {b.user_id for b in rows})
            kept = [b for b in rows if b.user_id in live]
            if len(kept) < len(rows):
                log.info(
                    "store.registrations_skipped reason=user_deleted count=%d",
                    len(rows) - len(kept),
                )
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


async def _live_user_ids(session: AsyncSession, user_ids: set[int]) -> set[int]:
    ids = sorted(user_ids)
    live: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        live.update(await session.scalars(select(User.id).where(User.id.in_(chunk))))
    return live


def _registration_values(binding: RegistrationRecord, now: datetime) -> dict[str, Any]:
    values = {name: getattr(binding, name) for name in _REGISTRATION_FIELDS}
    if values["updated_at"] is None:
        values["updated_at"] = now
    return values
