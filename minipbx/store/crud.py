"""Shared building blocks of the PBX data repositories (:mod:`minipbx.store.pbxrepos`).

- :func:`to_record`: an ORM row to its frozen record (fields named like the columns);
- :func:`get_row`, :func:`check_refs`: NotFoundError / InvalidInputError for missing rows;
- :func:`flush_unique`: a unique violation becomes a :class:`ConflictError` with a message
  an operator can act on (any other integrity error stays a generic store error);
- :class:`TenantNamedRepo`: create/read/update/delete of per-tenant rows with a unique name
  (trunks, dial plans, rate tables), driven by a :class:`TableSpec`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.checks import MONEY_STEP, Check, invalid, validate
from minipbx.store.db import Database
from minipbx.store.errors import ConflictError, NotFoundError
from minipbx.store.models import Base, Tenant
from minipbx.store.repos import bump_version

log = logging.getLogger(__name__)

R = TypeVar("R")
M = TypeVar("M", bound=Base)


def to_record(record: type[R], row: object) -> R:
    """Build ``record`` from the same-named attributes of ``row``."""
    names = (f.name for f in dataclasses.fields(record))  # type: ignore[arg-type]
    return record(**{name: getattr(row, name) for name in names})


def as_money(value: object) -> Decimal:
    """A database amount (Decimal, or float/int from SQLite aggregates) with 6 decimals."""
    return Decimal(str(value if value is not None else 0)).quantize(MONEY_STEP)


async def get_row(session: AsyncSession, model: type[M], row_id: int, what: str) -> M:
    """The row of ``model`` with this primary key; NotFoundError naming ``what``."""
    row = await session.get(model, row_id)
    if row is None:
        raise NotFoundError(f"no {what} with id {row_id}")
    return row


async def get_locked(session: AsyncSession, model: type[M], row_id: int, what: str) -> M:
    """:func:`get_row` taking a row lock (PostgreSQL/MySQL; SQLite writers are serialised)."""
    row = await session.get(model, row_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no {what} with id {row_id}")
    return row


# field name -> (model, what it is called in messages)
Refs = Mapping[str, tuple[type[Base], str]]


async def check_refs(
    session: AsyncSession, refs: Refs, values: Mapping[str, Any], tenant_id: int
) -> None:
    """Each id in ``values`` named in ``refs`` must be a row of the same tenant."""
    for name, (model, what) in refs.items():
        row_id = values.get(name)
        if row_id is None:
            continue
        row = await session.get(model, row_id)
        if row is None or getattr(row, "tenant_id", None) != tenant_id:
            raise invalid(name, f"no {what} with id {row_id} in tenant {tenant_id}")


def is_unique_violation(exc: IntegrityError) -> bool:
    """True when the driver reports a duplicate key (SQLite, PostgreSQL, MySQL wording)."""
    message = str(exc.orig).lower()
    return "unique" in message or "duplicate" in message


async def flush_unique(session: AsyncSession, conflict: str) -> None:
    """Flush; a unique-constraint violation raises ``ConflictError(conflict)``."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise ConflictError(conflict) from exc
        raise


async def bump_all(session: AsyncSession, counters: Iterable[str]) -> None:
    """Bump each Meta counter in ``counters`` (see :func:`minipbx.store.repos.bump_version`)."""
    for name in counters:
        await bump_version(session, name)


class DbRepo:
    """A repository over one :class:`Database` (every method is one transaction)."""

    def __init__(self, db: Database) -> None:
        """Use ``db`` for every call."""
        self._db = db


@dataclass(frozen=True, slots=True)
class TableSpec(Generic[R]):
    """How a :class:`TenantNamedRepo` handles one table.

    ``key`` is the column unique in a tenant (``name``, a card's ``number``); ``checks``
    lists the fields callers may set (the key among them); ``required`` those that cannot
    be empty; ``refs`` the foreign ids to check; ``check_row`` a cross-field check of a row
    about to be written; ``counters`` the Meta counters every write bumps, and
    ``remove_counters`` the extra ones a removal bumps (rows pointing at it are set NULL).
    """

    model: type[Base]
    record: type[R]
    what: str
    checks: Mapping[str, Check]
    key: str = "name"
    counters: tuple[str, ...] = ()
    remove_counters: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    refs: Refs = dataclasses.field(default_factory=dict)
    check_row: Callable[[Any], None] | None = None


AfterAdd = Callable[[AsyncSession, Any], Awaitable[None]]


class TenantNamedRepo(Generic[R]):
    """CRUD of per-tenant rows with a key unique in the tenant; one transaction a call.

    Subclasses set ``spec`` and write their own typed ``add`` on top of :meth:`_add`.
    """

    spec: ClassVar[TableSpec[Any]]

    def __init__(self, db: Database) -> None:
        """Use ``db`` for every call."""
        spec: TableSpec[R] = self.spec
        self._db = db
        self._spec = spec
        self._model: Any = spec.model
        self._key: Any = getattr(spec.model, spec.key)
        self._event = spec.what.replace(" ", "_")

    def _validate(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        values = validate(self._spec.checks, fields)
        for name in self._spec.required:
            if name in values and values[name] in (None, ""):
                raise invalid(name, f"a {self._spec.what} needs one")
        return values

    async def _write_row(self, session: AsyncSession, row: Any, values: Mapping[str, Any]) -> R:
        """Check references and cross-field rules, flush, bump the counters."""
        await check_refs(session, self._spec.refs, values, row.tenant_id)
        if self._spec.check_row is not None:
            self._spec.check_row(row)
        key = getattr(row, self._spec.key)
        conflict = f"{self._spec.what} {key!r} already exists in tenant {row.tenant_id}"
        await flush_unique(session, conflict)
        await bump_all(session, self._spec.counters)
        return to_record(self._spec.record, row)

    async def _add(
        self, tenant_id: int, fields: Mapping[str, Any], after: AfterAdd | None = None
    ) -> R:
        """Create a row in tenant ``tenant_id`` from ``fields`` (every required one given).

        InvalidInputError names a bad or missing field, NotFoundError an unknown tenant,
        ConflictError a key already used in the tenant. ``after(session, row)`` runs in the
        same transaction once the row has its id.
        """
        values = self._validate(fields)
        for name in (self._spec.key, *self._spec.required):
            if values.get(name) in (None, ""):
                raise invalid(name, f"a {self._spec.what} needs one")
        async with self._db.write(f"add {self._spec.what}") as session:
            await get_row(session, Tenant, tenant_id, "tenant")
            row = self._model(tenant_id=tenant_id, **values)
            session.add(row)
            record = await self._write_row(session, row, values)
            if after is not None:
                await after(session, row)
        log.info("store.%s_added tenant_id=%s id=%s", self._event, tenant_id, row.id)
        return record

    async def get(self, row_id: int) -> R:
        """The row with this id; NotFoundError if there is none."""
        async with self._db.read(f"get {self._spec.what}") as session:
            row = await get_row(session, self._model, row_id, self._spec.what)
            return to_record(self._spec.record, row)

    async def find(self, tenant_id: int, key: str) -> R | None:
        """The row of tenant ``tenant_id`` whose name (card: number) is ``key``, or None."""
        async with self._db.read(f"find {self._spec.what}") as session:
            stmt = select(self._model).where(
                self._model.tenant_id == tenant_id, self._key == key.strip()
            )
            row = await session.scalar(stmt)
            return None if row is None else to_record(self._spec.record, row)

    async def list_by_tenant(self, tenant_id: int | None = None) -> list[R]:
        """The rows of one tenant (every tenant when None), by tenant then name."""
        async with self._db.read(f"list {self._spec.what}s") as session:
            stmt = select(self._model).order_by(self._model.tenant_id, self._key)
            if tenant_id is not None:
                stmt = stmt.where(self._model.tenant_id == tenant_id)
            return [to_record(self._spec.record, row) for row in await session.scalars(stmt)]

    async def update(self, row_id: int, **fields: Any) -> R:
        """Change ``fields`` of a row (same checks as when adding); returns the new record."""
        values = self._validate(fields)
        async with self._db.write(f"update {self._spec.what}") as session:
            row = await get_row(session, self._model, row_id, self._spec.what)
            for name, value in values.items():
                setattr(row, name, value)
            record = await self._write_row(session, row, values)
        log.info("store.%s_updated id=%s fields=%s", self._event, row_id, ",".join(values))
        return record

    async def remove(self, row_id: int) -> None:
        """Delete a row (and, by foreign keys, what belongs to it); NotFoundError if absent."""
        async with self._db.write(f"remove {self._spec.what}") as session:
            row = await get_row(session, self._model, row_id, self._spec.what)
            await session.delete(row)
            await session.flush()
            await bump_all(session, self._spec.counters + self._spec.remove_counters)
        log.info("store.%s_removed id=%s", self._event, row_id)
