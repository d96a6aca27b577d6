"""The in-memory user directory the call path reads (a lookup never waits on the database).

:class:`UserDirectory` holds every tenant and user (with HA1s) in dictionaries. It is loaded
at start and reloaded when the ``users_version`` counter moves: every tenant or user write,
whichever process makes it (the CLI while the server runs), bumps the counter in the same
transaction, and the server calls :meth:`UserDirectory.refresh_if_changed` every second or
two (or runs :meth:`UserDirectory.watch`), which costs one primary-key read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from minipbx.store.db import Database
from minipbx.store.errors import StoreError
from minipbx.store.models import USERS_VERSION, Tenant, User
from minipbx.store.records import TenantRecord, UserRecord
from minipbx.store.repos import USER_SELECT, read_version, tenant_record

log = logging.getLogger(__name__)

Listener = Callable[["UserDirectory"], None]


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """Everything the directory holds, read as of ``version``."""

    version: int
    tenants: tuple[TenantRecord, ...]
    users: tuple[UserRecord, ...]


class DirectorySource(Protocol):
    """Where a :class:`UserDirectory` loads from."""

    async def users_version(self) -> int:
        """The current change counter (cheap: called every second or two)."""
        ...

    async def snapshot(self) -> DirectorySnapshot:
        """All tenants and users, with a version no newer than the data read."""
        ...


class SqlDirectorySource:
    """:class:`DirectorySource` reading a SQL database."""

    def __init__(self, db: Database) -> None:
        """Read from ``db``."""
        self._db = db

    async def users_version(self) -> int:
        """One primary-key read of the ``users_version`` counter."""
        async with self._db.read("read users version") as session:
            return await read_version(session, USERS_VERSION)

    async def snapshot(self) -> DirectorySnapshot:
        """Read the version first, then the data, in one transaction.

        Where the isolation level lets a concurrent write show between the two reads, the
        data can only be newer than the version, so the next poll reloads again: a change
        is never missed.
        """
        async with self._db.read("load users") as session:
            version = await read_version(session, USERS_VERSION)
            tenants = tuple(tenant_record(t) for t in await session.scalars(select(Tenant)))
            rows = await session.execute(USER_SELECT.order_by(User.id))
            users = tuple(UserRecord(**row._mapping) for row in rows)
        return DirectorySnapshot(version, tenants, users)


class StaticDirectorySource:
    """An in-memory :class:`DirectorySource` for tests and tools: no database."""

    def __init__(
        self, tenants: Iterable[TenantRecord] = (), users: Iterable[UserRecord] = ()
    ) -> None:
        """Start at version 1 with these records."""
        self._snapshot = DirectorySnapshot(1, tuple(tenants), tuple(users))

    def replace(self, tenants: Iterable[TenantRecord], users: Iterable[UserRecord]) -> None:
        """Swap the data and bump the version, as a database write would."""
        version = self._snapshot.version + 1
        self._snapshot = DirectorySnapshot(version, tuple(tenants), tuple(users))

    async def users_version(self) -> int:
        """The version of the current data."""
        return self._snapshot.version

    async def snapshot(self) -> DirectorySnapshot:
        """The current data."""
        return self._snapshot


class UserDirectory:
    """Tenants and users in memory: ``lookup`` is a dictionary read, never a query.

    An unknown domain (the server's IP address, a host name nobody configured) resolves to
    the default tenant. Disabled users are returned too (check ``enabled``), so the caller
    decides how to answer them.
    """

    def __init__(self, source: DirectorySource) -> None:
        """Serve data from ``source``; call :meth:`load` before the first lookup."""
        self._source = source
        self._version: int | None = None
        self._tenants: dict[str, TenantRecord] = {}
        self._default: TenantRecord | None = None
        self._users: dict[tuple[int, str], UserRecord] = {}
        self._by_id: dict[int, UserRecord] = {}
        self._listeners: list[Listener] = []

    @classmethod
    def for_database(cls, db: Database) -> UserDirectory:
        """A directory reading ``db``."""
        return cls(SqlDirectorySource(db))

    @property
    def version(self) -> int | None:
        """The ``users_version`` of the data held; None before :meth:`load`."""
        return self._version

    def __len__(self) -> int:
        return len(self._by_id)

    async def load(self) -> None:
        """(Re)load everything from the source. Raises StoreError."""
        snap = await self._source.snapshot()
        tenants = {t.domain: t for t in snap.tenants}
        defaults = sorted((t for t in snap.tenants if t.is_default), key=lambda t: t.id)
        users = {(u.tenant_id, u.extension): u for u in snap.users}
        # Swap whole dictionaries: a lookup never sees half a reload.
        self._tenants, self._default = tenants, (defaults[0] if defaults else None)
        self._users, self._by_id = users, {u.id: u for u in snap.users}
        previous, self._version = self._version, snap.version
        log.info(
            "store.directory_loaded version=%s previous=%s tenants=%d users=%d",
            snap.version,
            previous,
            len(tenants),
            len(users),
        )
        for listener in list(self._listeners):
            listener(self)

    async def refresh_if_changed(self) -> bool:
        """Reload when the source's version moved; True if it reloaded. Raises StoreError."""
        if self._version is None:
            await self.load()
            return True
        if await self._source.users_version() == self._version:
            return False
        await self.load()
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Call :meth:`refresh_if_changed` every ``interval`` seconds until cancelled.

        A database error is logged and retried at the next tick; the data held stays in use.
        """
        while True:
            try:
                await self.refresh_if_changed()
            except StoreError as exc:
                log.warning("store.directory_refresh_failed error=%r", str(exc))
            await asyncio.sleep(interval)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(directory)`` after every (re)load, e.g. to drop removed users."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _require_loaded(self) -> None:
        if self._version is None:
            raise RuntimeError("UserDirectory used before load()")

    def tenant_for(self, domain: str) -> TenantRecord | None:
        """The tenant serving ``domain`` (a host, case-insensitive), else the default one.

        None only when the domain is unknown and there is no default tenant.
        """
        self._require_loaded()
        tenant = self._tenants.get(domain.lower().removesuffix("."))
        return tenant if tenant is not None else self._default

    def lookup(self, domain: str, extension: str) -> UserRecord | None:
        """The user ``extension`` of the tenant serving ``domain``, or None.

        A known domain answers only for its own users; an unknown one means the default
        tenant. Extensions compare exactly (SIP user parts are case-sensitive).
        """
        tenant = self.tenant_for(domain)
        if tenant is None:
            return None
        return self._users.get((tenant.id, extension))

    def get_by_id(self, user_id: int) -> UserRecord | None:
        """The user with this id (e.g. of a persisted registration), or None."""
        self._require_loaded()
        return self._by_id.get(user_id)

    def users(self) -> list[UserRecord]:
        """Every user held, in id order."""
        self._require_loaded()
        return sorted(self._by_id.values(), key=lambda u: u.id)
