"""Reads and writes the web console and REST API need beyond the other repositories.

The other repositories address users by extension and tenants by domain, as the CLI and
the call path do; the API addresses everything by id and filters call records and
voicemail for its search pages. Conventions as in :mod:`minipbx.store.pbxrepos`: one
transaction a method, frozen records out, InvalidInputError naming the field,
NotFoundError for a missing row, ConflictError for a refused write; writes bump the
change counters the call path polls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from minipbx.store.cdrs import CdrRecord, cdr_record
from minipbx.store.checks import flag, integer, invalid, validate
from minipbx.store.coltypes import utcnow
from minipbx.store.crud import DbRepo, bump_all, get_row, to_record
from minipbx.store.errors import ConflictError, InvalidInputError, NotFoundError
from minipbx.store.models import (
    DIAL_PLANS_VERSION,
    RATES_VERSION,
    SETTINGS_VERSION,
    TRUNKS_VERSION,
    USERS_VERSION,
    Cdr,
    Tenant,
    User,
    VoicemailMessage,
)
from minipbx.store.pbxrecords import VOICEMAIL_CHECKS, VoicemailRecord
from minipbx.store.records import TenantRecord, UserRecord, check_email, check_name
from minipbx.store.repos import USER_SELECT, tenant_record

log = logging.getLogger(__name__)

#: Every counter: deleting a tenant removes rows of every kind the call path caches.
_ALL_COUNTERS = (
    USERS_VERSION,
    TRUNKS_VERSION,
    DIAL_PLANS_VERSION,
    RATES_VERSION,
    SETTINGS_VERSION,
)
MAX_PAGE = 10_000


def _name(field: str, value: Any) -> str:
    """A display name (see ``check_name``), the error naming ``field``."""
    try:
        if not isinstance(value, str):
            raise InvalidInputError
        return check_name(value)
    except InvalidInputError:
        raise invalid(field, "at most 255 characters, no control characters") from None


def _email(field: str, value: Any) -> str | None:
    """An e-mail address or None (see ``check_email``), the error naming ``field``."""
    try:
        if value is not None and not isinstance(value, str):
            raise InvalidInputError
        return check_email(value)
    except InvalidInputError:
        raise invalid(field, f"{value!r} is not an e-mail address") from None


_USER_FIELDS = {"display_name": _name, "email": _email, "enabled": flag()}
_LIMIT = integer(1, MAX_PAGE)


def _escape_like(text: str) -> str:
    """``text`` for a LIKE pattern with ``\\`` as the escape character."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Which call records a search wants; every field None (or empty) matches all.

    ``caller`` and ``called`` match anywhere in the caller / called number; ``disposition``
    exactly (``ANSWERED``, ``NO ANSWER``, ``BUSY``, ``FAILED``, ``CANCELLED``); ``since``
    (inclusive) and ``until`` (exclusive) bound the end time.
    """

    tenant_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    caller: str | None = None
    called: str | None = None
    disposition: str | None = None

    def where(self) -> list[Any]:
        """The SQL conditions of this filter."""
        conditions: list[Any] = []
        if self.tenant_id is not None:
            conditions.append(Cdr.tenant_id == self.tenant_id)
        if self.since is not None:
            conditions.append(Cdr.end_time >= self.since)
        if self.until is not None:
            conditions.append(Cdr.end_time < self.until)
        if self.caller:
            conditions.append(Cdr.caller_number.like(f"%{_escape_like(self.caller)}%", "\\"))
        if self.called:
            conditions.append(Cdr.called_number.like(f"%{_escape_like(self.called)}%", "\\"))
        if self.disposition:
            conditions.append(Cdr.disposition == self.disposition.upper())
        return conditions


class SqlWebRepo(DbRepo):
    """Tenants and users by id, voicemail and call record searches (for minipbx.web)."""

    # --- tenants ---------------------------------------------------------------------------

    async def get_tenant(self, tenant_id: int) -> TenantRecord:
        """The tenant with this id; NotFoundError if there is none."""
        async with self._db.read("get tenant") as session:
            return tenant_record(await get_row(session, Tenant, tenant_id, "tenant"))

    async def tenant_plans(self) -> dict[int, int | None]:
        """Tenant id -> id of its default dial plan (None: none)."""
        async with self._db.read("read tenant dial plans") as session:
            rows = await session.execute(select(Tenant.id, Tenant.dial_plan_id))
            return {tenant_id: plan_id for tenant_id, plan_id in rows}

    async def rename_tenant(self, tenant_id: int, name: str) -> TenantRecord:
        """Change a tenant's display name (its domain: ``SqlTenantRepo.rename``)."""
        value = _name("name", name)
        async with self._db.write("rename tenant") as session:
            tenant = await get_row(session, Tenant, tenant_id, "tenant")
            tenant.name = value
            await session.flush()
            await bump_all(session, (USERS_VERSION,))
            return tenant_record(tenant)

    async def remove_tenant(self, tenant_id: int) -> None:
        """Delete a tenant and everything in it (foreign keys cascade); its call records
        stay. The default tenant cannot be deleted (ConflictError)."""
        async with self._db.write("remove tenant") as session:
            tenant = await get_row(session, Tenant, tenant_id, "tenant")
            if tenant.is_default:
                raise ConflictError(f"tenant {tenant.domain!r} is the default tenant")
            domain = tenant.domain
            await session.execute(delete(Tenant).where(Tenant.id == tenant_id))
            await bump_all(session, _ALL_COUNTERS)
        log.info("store.tenant_removed id=%s domain=%s", tenant_id, domain)

    # --- users -----------------------------------------------------------------------------

    async def get_user(self, user_id: int) -> UserRecord:
        """The user with this id; NotFoundError if there is none."""
        async with self._db.read("get user") as session:
            row = (await session.execute(USER_SELECT.where(User.id == user_id))).first()
            if row is None:
                raise NotFoundError(f"no user with id {user_id}")
            return UserRecord(**row._mapping)

    async def count_users(self, tenant_id: int | None = None) -> int:
        """How many users one tenant (or every tenant, None) has."""
        stmt = select(func.count(User.id))
        if tenant_id is not None:
            stmt = stmt.where(User.tenant_id == tenant_id)
        async with self._db.read("count users") as session:
            return int(await session.scalar(stmt) or 0)

    async def update_user(self, user_id: int, **fields: Any) -> UserRecord:
        """Change ``display_name``, ``email`` or ``enabled`` of a user (password:
        ``SqlUserRepo.set_password``; service settings: ``SqlUserSettingsRepo``)."""
        values = validate(_USER_FIELDS, fields)
        async with self._db.write("update user") as session:
            user = await get_row(session, User, user_id, "user")
            for name, value in values.items():
                setattr(user, name, value)
            user.updated_at = utcnow()
            await session.flush()
            await bump_all(session, (USERS_VERSION,))
        log.info("store.user_updated user_id=%s fields=%s", user_id, ",".join(values))
        return await self.get_user(user_id)

    # --- voicemail -------------------------------------------------------------------------

    async def list_voicemail(
        self,
        *,
        tenant_id: int | None = None,
        user_id: int | None = None,
        folder: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[VoicemailRecord]:
        """Messages, newest first, of a tenant / a user / a folder; page with ``before_id``."""
        stmt = select(VoicemailMessage).order_by(VoicemailMessage.id.desc())
        stmt = stmt.limit(_LIMIT("limit", limit))
        if tenant_id is not None:
            stmt = stmt.where(VoicemailMessage.tenant_id == tenant_id)
        if user_id is not None:
            stmt = stmt.where(VoicemailMessage.user_id == user_id)
        if folder is not None:
            checked = validate(VOICEMAIL_CHECKS, {"folder": folder})["folder"]
            stmt = stmt.where(VoicemailMessage.folder == checked)
        if before_id is not None:
            stmt = stmt.where(VoicemailMessage.id < before_id)
        async with self._db.read("list voicemail") as session:
            return [to_record(VoicemailRecord, row) for row in await session.scalars(stmt)]

    # --- call records ----------------------------------------------------------------------

    async def search_cdrs(
        self,
        where: CdrFilter,
        *,
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[CdrRecord]:
        """Records matching ``where``: newest first below ``before_id``, or oldest first
        above ``after_id`` when that is given (exports page forward with it)."""
        stmt = select(Cdr).where(*where.where()).limit(_LIMIT("limit", limit))
        if after_id is not None:
            stmt = stmt.where(Cdr.id > after_id).order_by(Cdr.id)
        else:
            stmt = stmt.order_by(Cdr.id.desc())
            if before_id is not None:
                stmt = stmt.where(Cdr.id < before_id)
        async with self._db.read("search call records") as session:
            return [cdr_record(row) for row in await session.scalars(stmt)]

    async def count_cdrs(self, where: CdrFilter) -> int:
        """How many records match ``where``."""
        stmt = select(func.count(Cdr.id)).where(*where.where())
        async with self._db.read("count call records") as session:
            return int(await session.scalar(stmt) or 0)

    async def get_cdr(self, cdr_id: int) -> CdrRecord:
        """One call record by its local id; NotFoundError if there is none."""
        async with self._db.read("get call record") as session:
            return cdr_record(await get_row(session, Cdr, cdr_id, "call record"))
