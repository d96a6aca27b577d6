"""Repositories: the only way the PBX reads and writes its data.

Each repository is a typed :class:`~typing.Protocol` (what the PBX depends on) with a SQL
implementation over a :class:`~minipbx.store.db.Database`. Every method is one transaction
and returns plain records (:mod:`minipbx.store.records`), never ORM objects.

Writes to data that a memory cache serves bump a :class:`~minipbx.store.models.Meta` counter
in the same transaction (:func:`bump_version`): tenants and users bump ``users_version``,
which :class:`~minipbx.store.directory.UserDirectory` polls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.coltypes import utcnow
from minipbx.store.csvimport import CsvUser, parse_users_csv
from minipbx.store.db import Database
from minipbx.store.errors import (
    ConflictError,
    CsvImportError,
    ImportProblem,
    InvalidInputError,
    NotFoundError,
)
from minipbx.store.models import USERS_VERSION, Meta, Registration, Tenant, User
from minipbx.store.records import (
    DEFAULT_DOMAIN,
    DEFAULT_REALM,
    Credentials,
    TenantRecord,
    UserRecord,
    check_email,
    check_extension,
    check_name,
    check_password,
    normalize_domain,
)
from minipbx.store.registrations import CHUNK as _CHUNK
from minipbx.store.registrations import RegistrationRepo as RegistrationRepo
from minipbx.store.registrations import SqlRegistrationRepo as SqlRegistrationRepo

log = logging.getLogger(__name__)


# --- change counters ---------------------------------------------------------------------


async def bump_version(session: AsyncSession, name: str) -> None:
    """Increment the :class:`Meta` counter ``name`` inside the caller's transaction."""
    result = await session.execute(
        update(Meta).where(Meta.name == name).values(version=Meta.version + 1, updated_at=utcnow())
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(Meta(name=name, version=1, updated_at=utcnow()))
        await session.flush()


async def read_version(session: AsyncSession, name: str) -> int:
    """The current value of the :class:`Meta` counter ``name`` (0 when absent)."""
    value = await session.scalar(select(Meta.version).where(Meta.name == name))
    return int(value or 0)


# --- protocols ---------------------------------------------------------------------------


class TenantRepo(Protocol):
    """Tenants (SIP domains)."""

    async def get_default(self) -> TenantRecord | None:
        """The default tenant, or None before :meth:`ensure_default`."""
        ...

    async def get_by_domain(self, domain: str) -> TenantRecord | None:
        """The tenant of exactly this domain (case-insensitive), or None."""
        ...

    async def ensure_default(
        self, domain: str = DEFAULT_DOMAIN, realm: str = DEFAULT_REALM
    ) -> TenantRecord:
        """The default tenant, created with ``domain`` and ``realm`` if there is none."""
        ...

    async def create(
        self, domain: str, *, realm: str | None = None, name: str = "", is_default: bool = False
    ) -> TenantRecord:
        """Create a tenant; the realm defaults to the domain and never changes afterwards."""
        ...

    async def rename(self, domain: str, new_domain: str) -> TenantRecord:
        """Change a tenant's domain; its realm (and so every stored HA1) stays valid."""
        ...

    async def set_quotas(self, domain: str, **quotas: int | bool | None) -> TenantRecord:
        """Change a tenant's quotas (see :meth:`SqlTenantRepo.set_quotas`)."""
        ...

    async def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, ordered by domain."""
        ...


class UserRepo(Protocol):
    """Users (extensions) and their digest credentials."""

    async def add(
        self,
        extension: str,
        password: str,
        *,
        name: str = "",
        email: str | None = None,
        domain: str | None = None,
        enabled: bool = True,
    ) -> UserRecord:
        """Create a user in ``domain`` (None: the default tenant, created if needed)."""
        ...

    async def remove(self, extension: str, *, domain: str | None = None) -> None:
        """Delete a user and its registrations; NotFoundError if there is no such user."""
        ...

    async def get(self, extension: str, *, domain: str | None = None) -> UserRecord | None:
        """The user of ``extension`` in ``domain``; unknown or None domain: the default tenant."""
        ...

    async def list_users(self, *, domain: str | None = None) -> list[UserRecord]:
        """Users of one tenant, or of all tenants when ``domain`` is None."""
        ...

    async def count(self) -> int:
        """How many users exist, over all tenants."""
        ...

    async def set_password(
        self, extension: str, password: str, *, domain: str | None = None
    ) -> UserRecord:
        """Replace a user's HA1s with those of a new password."""
        ...

    async def import_csv(
        self, text: str, *, source: str = "<csv>", replace: bool = False
    ) -> ImportResult:
        """Create (or with ``replace`` update) users from CSV text, all or nothing."""
        ...

    async def users_version(self) -> int:
        """The ``users_version`` change counter (bumped by every tenant or user write)."""
        ...


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What a CSV import did."""

    created: int
    updated: int


# --- SQL implementations -----------------------------------------------------------------


def tenant_record(row: Tenant) -> TenantRecord:
    """The detached record of a Tenant row."""
    return TenantRecord(
        id=row.id,
        name=row.name,
        domain=row.domain,
        realm=row.realm,
        is_default=row.is_default,
        created_at=row.created_at,
        max_users=row.max_users,
        max_concurrent_calls=row.max_concurrent_calls,
        max_call_seconds=row.max_call_seconds,
        free_account=row.free_account,
    )


async def _default_tenant(session: AsyncSession) -> Tenant | None:
    stmt = select(Tenant).where(Tenant.is_default.is_(True)).order_by(Tenant.id).limit(1)
    return await session.scalar(stmt)


async def _tenant_by_domain(session: AsyncSession, domain: str) -> Tenant | None:
    return await session.scalar(select(Tenant).where(Tenant.domain == normalize_domain(domain)))


async def _ensure_default(
    session: AsyncSession, domain: str = DEFAULT_DOMAIN, realm: str = DEFAULT_REALM
) -> Tenant:
    tenant = await _default_tenant(session)
    if tenant is not None:
        return tenant
    domain = normalize_domain(domain)
    if await _tenant_by_domain(session, domain) is not None:
        raise ConflictError(f"cannot create the default tenant: domain {domain!r} is taken")
    tenant = Tenant(name="Default", domain=domain, realm=realm, is_default=True)
    session.add(tenant)
    await session.flush()
    await bump_version(session, USERS_VERSION)
    log.info("store.tenant_created domain=%s realm=%s default=true", domain, realm)
    return tenant


class SqlTenantRepo:
    """:class:`TenantRepo` on a SQL database."""

    def __init__(self, db: Database) -> None:
        """Use ``db`` for every call."""
        self._db = db

    async def get_default(self) -> TenantRecord | None:
        """The default tenant, or None before :meth:`ensure_default`."""
        async with self._db.read("get default tenant") as session:
            tenant = await _default_tenant(session)
            return None if tenant is None else tenant_record(tenant)

    async def get_by_domain(self, domain: str) -> TenantRecord | None:
        """The tenant of exactly this domain (case-insensitive), or None."""
        async with self._db.read("get tenant") as session:
            tenant = await _tenant_by_domain(session, domain)
            return None if tenant is None else tenant_record(tenant)

    async def ensure_default(
        self, domain: str = DEFAULT_DOMAIN, realm: str = DEFAULT_REALM
    ) -> TenantRecord:
        """The default tenant, created with ``domain`` and ``realm`` if there is none."""
        async with self._db.write("ensure default tenant") as session:
            return tenant_record(await _ensure_default(session, domain, realm))

    async def create(
        self, domain: str, *, realm: str | None = None, name: str = "", is_default: bool = False
    ) -> TenantRecord:
        """Create a tenant; the realm defaults to the domain and never changes afterwards.

        ``is_default`` moves the default flag from the previous default tenant.
        """
        domain = normalize_domain(domain)
        realm = realm.strip() if realm is not None else domain
        if not realm:
            raise InvalidInputError("a tenant's realm cannot be empty")
        async with self._db.write("create tenant") as session:
            if await _tenant_by_domain(session, domain) is not None:
                raise ConflictError(f"domain {domain!r} already exists")
            if is_default:
                await session.execute(
                    update(Tenant).where(Tenant.is_default.is_(True)).values(is_default=False)
                )
            tenant = Tenant(
                name=check_name(name), domain=domain, realm=realm, is_default=is_default
            )
            session.add(tenant)
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info(
                "store.tenant_created domain=%s realm=%s default=%s", domain, realm, is_default
            )
            return tenant_record(tenant)

    async def rename(self, domain: str, new_domain: str) -> TenantRecord:
        """Change a tenant's domain; its realm (and so every stored HA1) stays valid."""
        new_domain = normalize_domain(new_domain)
        async with self._db.write("rename tenant") as session:
            tenant = await _tenant_by_domain(session, domain)
            if tenant is None:
                raise NotFoundError(f"unknown domain {domain!r}")
            if new_domain != tenant.domain and await _tenant_by_domain(session, new_domain):
                raise ConflictError(f"domain {new_domain!r} already exists")
            old, tenant.domain = tenant.domain, new_domain
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info("store.tenant_renamed old=%s new=%s realm=%s", old, new_domain, tenant.realm)
            return tenant_record(tenant)

    async def set_quotas(self, domain: str, **quotas: int | bool | None) -> TenantRecord:
        """Change a tenant's quotas: ``max_users``, ``max_concurrent_calls``,
        ``max_call_seconds`` (positive or None for no limit), ``free_account`` (bool).

        InvalidInputError names a bad field; lowering ``max_users`` below the users the
        tenant has is allowed (it only stops new ones).
        """
        values = _check_quotas(quotas)
        async with self._db.write("set tenant quotas") as session:
            tenant = await _tenant_by_domain(session, domain)
            if tenant is None:
                raise NotFoundError(f"unknown domain {domain!r}")
            for name, value in values.items():
                setattr(tenant, name, value)
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info("store.tenant_quotas domain=%s %s", tenant.domain, values)
            return tenant_record(tenant)

    async def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, ordered by domain."""
        async with self._db.read("list tenants") as session:
            rows = await session.scalars(select(Tenant).order_by(Tenant.domain))
            return [tenant_record(row) for row in rows]


_QUOTAS = ("max_users", "max_concurrent_calls", "max_call_seconds")


def _check_quotas(quotas: dict[str, int | bool | None]) -> dict[str, int | bool | None]:
    for name, value in quotas.items():
        if name == "free_account":
            if not isinstance(value, bool):
                raise InvalidInputError(f"invalid free_account: {value!r} (true or false)")
        elif name not in _QUOTAS:
            raise InvalidInputError(f"unknown quota {name!r} (one of {', '.join(_QUOTAS)})")
        elif value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidInputError(f"invalid {name}: {value!r} (a positive number, or none)")
    return quotas


async def _check_room(session: AsyncSession, tenant: Tenant, adding: int) -> None:
    """ConflictError when ``adding`` users would pass the tenant's ``max_users``."""
    limit = tenant.max_users
    if limit is None or adding <= 0:
        return
    have = await session.scalar(
        select(func.count()).select_from(User).where(User.tenant_id == tenant.id)
    )
    if int(have or 0) + adding > limit:
        raise ConflictError(f"domain {tenant.domain!r} has reached its limit of {limit} users")


def _is_domain(domain: str) -> bool:
    try:
        normalize_domain(domain)
    except InvalidInputError:
        return False  # an IP literal or junk: not a tenant, so the default one answers
    return True


# Plain columns in UserRecord field order (no ORM objects: loading 20,000 users for the
# directory stays well under 0.5 s). ``UserRecord(**row._mapping)`` builds a record from a row.
USER_SELECT = select(
    User.id,
    User.tenant_id,
    Tenant.domain,
    Tenant.realm,
    User.extension,
    User.display_name,
    User.email,
    User.ha1_md5,
    User.ha1_sha256,
    User.enabled,
    User.created_at,
    User.updated_at,
).join(Tenant, User.tenant_id == Tenant.id)


def user_record(user: User, domain: str, realm: str) -> UserRecord:
    """The detached record of a User row and its tenant's domain and realm."""
    return UserRecord(
        id=user.id,
        tenant_id=user.tenant_id,
        domain=domain,
        realm=realm,
        extension=user.extension,
        display_name=user.display_name,
        email=user.email,
        ha1_md5=user.ha1_md5,
        ha1_sha256=user.ha1_sha256,
        enabled=user.enabled,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


class SqlUserRepo:
    """:class:`UserRepo` on a SQL database."""

    def __init__(self, db: Database) -> None:
        """Use ``db`` for every call."""
        self._db = db

    async def _tenant(self, session: AsyncSession, domain: str | None, *, create: bool) -> Tenant:
        """The tenant a write names: None -> the default one (created if ``create``)."""
        if domain is None:
            tenant = await (_ensure_default(session) if create else _default_tenant(session))
            if tenant is None:
                raise NotFoundError("there is no default tenant yet")
            return tenant
        tenant = await _tenant_by_domain(session, domain)
        if tenant is None:
            raise NotFoundError(f"unknown domain {normalize_domain(domain)!r}")
        return tenant

    async def _user(self, session: AsyncSession, extension: str, domain: str | None) -> User:
        tenant = await self._tenant(session, domain, create=False)
        user = await session.scalar(
            select(User).where(User.tenant_id == tenant.id, User.extension == extension)
        )
        if user is None:
            raise NotFoundError(f"no extension {extension!r} in domain {tenant.domain!r}")
        return user

    async def add(
        self,
        extension: str,
        password: str,
        *,
        name: str = "",
        email: str | None = None,
        domain: str | None = None,
        enabled: bool = True,
    ) -> UserRecord:
        """Create a user in ``domain`` (None: the default tenant, created if needed).

        Raises InvalidInputError for a malformed value, NotFoundError for an unknown
        domain, ConflictError when the extension exists in that tenant.
        """
        check_extension(extension)
        check_password(password)
        name, email = check_name(name), check_email(email)
        async with self._db.write("add user") as session:
            tenant = await self._tenant(session, domain, create=True)
            taken = await session.scalar(
                select(User.id).where(User.tenant_id == tenant.id, User.extension == extension)
            )
            if taken is not None:
                raise ConflictError(
                    f"extension {extension!r} already exists in domain {tenant.domain!r}"
                )
            await _check_room(session, tenant, 1)
            creds = Credentials.from_password(extension, tenant.realm, password)
            user = User(
                tenant_id=tenant.id,
                extension=extension,
                display_name=name,
                email=email,
                ha1_md5=creds.ha1_md5,
                ha1_sha256=creds.ha1_sha256,
                enabled=enabled,
            )
            session.add(user)
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info("store.user_added domain=%s extension=%s", tenant.domain, extension)
            return user_record(user, tenant.domain, tenant.realm)

    async def remove(self, extension: str, *, domain: str | None = None) -> None:
        """Delete a user and its registrations; NotFoundError if there is no such user."""
        async with self._db.write("remove user") as session:
            user = await self._user(session, extension, domain)
            # Explicit rather than relying on ON DELETE CASCADE alone (foreign keys can be
            # off on a SQLite connection opened by another tool).
            await session.execute(delete(Registration).where(Registration.user_id == user.id))
            await session.delete(user)
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info("store.user_removed user_id=%s extension=%s", user.id, extension)

    async def get(self, extension: str, *, domain: str | None = None) -> UserRecord | None:
        """The user of ``extension`` in ``domain``; unknown or None domain: the default tenant."""
        async with self._db.read("get user") as session:
            tenant = None
            if domain is not None and _is_domain(domain):
                tenant = await _tenant_by_domain(session, domain)
            if tenant is None:
                tenant = await _default_tenant(session)
            if tenant is None:
                return None
            stmt = USER_SELECT.where(User.tenant_id == tenant.id, User.extension == extension)
            row = (await session.execute(stmt)).first()
            return None if row is None else UserRecord(**row._mapping)

    async def list_users(self, *, domain: str | None = None) -> list[UserRecord]:
        """Users of one tenant (NotFoundError if unknown), or of all when ``domain`` is None."""
        async with self._db.read("list users") as session:
            stmt = USER_SELECT.order_by(Tenant.domain, User.extension)
            if domain is not None:
                tenant = await self._tenant(session, domain, create=False)
                stmt = stmt.where(User.tenant_id == tenant.id)
            return [UserRecord(**row._mapping) for row in await session.execute(stmt)]

    async def count(self) -> int:
        """How many users exist, over all tenants."""
        async with self._db.read("count users") as session:
            return int(await session.scalar(select(func.count(User.id))) or 0)

    async def set_password(
        self, extension: str, password: str, *, domain: str | None = None
    ) -> UserRecord:
        """Replace a user's HA1s with those of a new password (the realm is the tenant's)."""
        check_password(password)
        async with self._db.write("set password") as session:
            user = await self._user(session, extension, domain)
            tenant = await session.get_one(Tenant, user.tenant_id)
            creds = Credentials.from_password(extension, tenant.realm, password)
            user.ha1_md5, user.ha1_sha256 = creds.ha1_md5, creds.ha1_sha256
            user.updated_at = utcnow()
            await session.flush()
            await bump_version(session, USERS_VERSION)
            log.info("store.password_changed domain=%s extension=%s", tenant.domain, extension)
            return user_record(user, tenant.domain, tenant.realm)

    async def users_version(self) -> int:
        """The ``users_version`` change counter (bumped by every tenant or user write)."""
        async with self._db.read("read users version") as session:
            return await read_version(session, USERS_VERSION)

    async def import_csv(
        self, text: str, *, source: str = "<csv>", replace: bool = False
    ) -> ImportResult:
        """Create users from CSV text (see :mod:`minipbx.store.csvimport`), all or nothing.

        Every row is checked first (format, unknown domain, extension repeated in the file,
        extension already present unless ``replace``); if any row is bad nothing is written
        and :class:`CsvImportError` lists every bad row with its line number. Otherwise all
        rows are written in one transaction. ``replace`` updates existing users' password,
        name and email instead of rejecting them.
        """
        parsed = parse_users_csv(text)
        if not parsed.header_ok:
            raise CsvImportError(source, parsed.problems)
        problems = list(parsed.problems)
        async with self._db.write("import users") as session:
            plan = await _plan_import(session, parsed.users, problems, replace=replace)
            if problems:
                problems.sort(key=lambda p: p.line)
                raise CsvImportError(source, problems)
            result = await _apply_import(session, plan)
            if result.created or result.updated:
                await bump_version(session, USERS_VERSION)
        log.info(
            "store.users_imported source=%s created=%d updated=%d",
            source,
            result.created,
            result.updated,
        )
        return result


@dataclass(slots=True)
class _ImportRow:
    row: CsvUser
    tenant: Tenant
    existing_id: int | None


async def _plan_import(
    session: AsyncSession, rows: list[CsvUser], problems: list[ImportProblem], *, replace: bool
) -> list[_ImportRow]:
    """Resolve tenants and find conflicts; append a problem for each bad row."""
    tenants = {t.domain: t for t in await session.scalars(select(Tenant))}
    default = None
    if any(row.domain is None for row in rows):
        default = await _ensure_default(session)
    seen: dict[tuple[int, str], int] = {}
    plan: list[_ImportRow] = []
    for row in rows:
        tenant = default if row.domain is None else tenants.get(row.domain)
        if tenant is None:
            problems.append(ImportProblem(row.line, f"unknown domain {row.domain!r}"))
            continue
        key = (tenant.id, row.extension)
        if key in seen:
            problems.append(
                ImportProblem(
                    row.line,
                    f"extension {row.extension!r} (domain {tenant.domain!r}) "
                    f"already on line {seen[key]}",
                )
            )
            continue
        seen[key] = row.line
        plan.append(_ImportRow(row, tenant, None))
    existing = await _existing_ids(session, [(p.tenant.id, p.row.extension) for p in plan])
    for item in plan:
        item.existing_id = existing.get((item.tenant.id, item.row.extension))
        if item.existing_id is not None and not replace:
            problems.append(
                ImportProblem(
                    item.row.line,
                    f"extension {item.row.extension!r} already exists "
                    f"in domain {item.tenant.domain!r}",
                )
            )
    return plan


async def _existing_ids(
    session: AsyncSession, keys: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], int]:
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, extension in keys:
        by_tenant.setdefault(tenant_id, []).append(extension)
    found: dict[tuple[int, str], int] = {}
    for tenant_id, extensions in by_tenant.items():
        for start in range(0, len(extensions), _CHUNK):
            chunk = extensions[start : start + _CHUNK]
            stmt = select(User.id, User.extension).where(
                User.tenant_id == tenant_id, User.extension.in_(chunk)
            )
            for user_id, extension in await session.execute(stmt):
                found[(tenant_id, extension)] = user_id
    return found


async def _apply_import(session: AsyncSession, plan: list[_ImportRow]) -> ImportResult:
    new_per_tenant: dict[int, tuple[Tenant, int]] = {}
    for item in plan:
        if item.existing_id is None:
            tenant, count = new_per_tenant.get(item.tenant.id, (item.tenant, 0))
            new_per_tenant[item.tenant.id] = (tenant, count + 1)
    for tenant, count in new_per_tenant.values():
        await _check_room(session, tenant, count)
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for item in plan:
        row = item.row
        creds = Credentials.from_password(row.extension, item.tenant.realm, row.password)
        values: dict[str, Any] = {
            "display_name": row.name,
            "email": row.email,
            "ha1_md5": creds.ha1_md5,
            "ha1_sha256": creds.ha1_sha256,
            "updated_at": now,
        }
        if item.existing_id is None:
            inserts.append(
                values
                | {"tenant_id": item.tenant.id, "extension": row.extension, "created_at": now}
            )
        else:
            updates.append(values | {"id": item.existing_id})
    if inserts:
        await session.execute(insert(User), inserts)
    if updates:
        await session.execute(update(User), updates)  # ORM bulk UPDATE by primary key
    return ImportResult(created=len(inserts), updated=len(updates))
