"""Repositories of the PBX data: user settings, admins and tokens, trunks, dial plans,
voicemail, settings (and, from :mod:`minipbx.store.billing`, rates, cards and the ledger).

As in :mod:`minipbx.store.repos`: each method is one transaction and returns frozen records
(:mod:`minipbx.store.pbxrecords`); bad values raise InvalidInputError naming the field,
missing rows NotFoundError, duplicates ConflictError. Writes to what the call path caches
bump a Meta counter in the same transaction: user settings ``users_version``, trunks
``trunks_version``, dial plans and their rules ``dial_plans_version``, settings
``settings_version`` (the rates, ``rates_version``, are in :mod:`minipbx.store.billing`).
Deleting a dial plan or rate table sets the users' references to NULL, so it also bumps
``users_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.billing import SqlCardRepo as SqlCardRepo
from minipbx.store.billing import SqlLedgerRepo as SqlLedgerRepo
from minipbx.store.billing import SqlRateRepo as SqlRateRepo
from minipbx.store.checks import invalid, validate
from minipbx.store.coltypes import utcnow
from minipbx.store.crud import (
    DbRepo,
    TableSpec,
    TenantNamedRepo,
    bump_all,
    check_refs,
    flush_unique,
    get_row,
    to_record,
)
from minipbx.store.errors import InvalidInputError, NotFoundError
from minipbx.store.models import (
    DIAL_PLANS_VERSION,
    SETTINGS_VERSION,
    TRUNKS_VERSION,
    USERS_VERSION,
    Admin,
    ApiToken,
    DialPlan,
    RateTable,
    Setting,
    Tenant,
    Trunk,
    User,
    VoicemailMessage,
)
from minipbx.store.models import DialPlanRule as RuleRow
from minipbx.store.pbxrecords import (
    ADMIN_CHECKS,
    DIAL_PLAN_CHECKS,
    RULE_CHECKS,
    RULE_TARGET_REQUIRED,
    SETTING_CHECKS,
    TOKEN_CHECKS,
    TRUNK_CHECKS,
    USER_SETTINGS_CHECKS,
    VOICEMAIL_CHECKS,
    VOICEMAIL_FOLDERS,
    AdminRecord,
    ApiTokenRecord,
    DialPlanRecord,
    DialPlanRule,
    TrunkRecord,
    UserSettings,
    VoicemailRecord,
)

log = logging.getLogger(__name__)

__all__ = [
    "SqlAdminRepo",
    "SqlCardRepo",
    "SqlDialPlanRepo",
    "SqlLedgerRepo",
    "SqlRateRepo",
    "SqlSettingsRepo",
    "SqlTrunkRepo",
    "SqlUserSettingsRepo",
    "SqlVoicemailRepo",
]


# --- user settings -------------------------------------------------------------------------

_USER_REFS = {"dial_plan_id": (DialPlan, "dial plan"), "rate_table_id": (RateTable, "rate table")}


def _user_settings(user: User) -> UserSettings:
    values = {name: getattr(user, name) for name in (*USER_SETTINGS_CHECKS, "balance")}
    return UserSettings(user_id=user.id, **values)


class SqlUserSettingsRepo(DbRepo):
    """Users' service settings (the columns :class:`~minipbx.store.records.UserRecord` omits)."""

    async def get_settings(self, user_id: int) -> UserSettings:
        """The settings of a user; NotFoundError if there is no such user."""
        async with self._db.read("get user settings") as session:
            return _user_settings(await get_row(session, User, user_id, "user"))

    async def update_settings(self, user_id: int, **fields: Any) -> UserSettings:
        """Change some settings; each value is checked (InvalidInputError names the field).

        ``dial_plan_id`` and ``rate_table_id`` must belong to the user's tenant (None clears
        them). ``balance`` is refused: it changes only through the ledger.
        """
        if "balance" in fields:
            raise invalid("balance", "changes only through the ledger (SqlLedgerRepo.add)")
        values = validate(USER_SETTINGS_CHECKS, fields)
        async with self._db.write("update user settings") as session:
            user = await get_row(session, User, user_id, "user")
            await check_refs(session, _USER_REFS, values, user.tenant_id)
            for name, value in values.items():
                setattr(user, name, value)
            await session.flush()
            await bump_all(session, (USERS_VERSION,))
            settings = _user_settings(user)
        log.info("store.user_settings_updated user_id=%s fields=%s", user_id, ",".join(values))
        return settings


# --- admins and API tokens -----------------------------------------------------------------


class SqlAdminRepo(DbRepo):
    """Console/API admins (by username) and their API tokens."""

    async def _admin(self, session: AsyncSession, username: str) -> Admin:
        admin = await session.scalar(select(Admin).where(Admin.username == username.strip()))
        if admin is None:
            raise NotFoundError(f"no admin {username!r}")
        return admin

    async def add(
        self,
        username: str,
        password_hash: str,
        *,
        tenant_id: int | None = None,
        enabled: bool = True,
    ) -> AdminRecord:
        """Create an admin (``tenant_id`` None: system-wide) with an argon2 PHC hash."""
        values = validate(
            ADMIN_CHECKS,
            {
                "username": username,
                "password_hash": password_hash,
                "tenant_id": tenant_id,
                "enabled": enabled,
            },
        )
        async with self._db.write("add admin") as session:
            if tenant_id is not None:
                await get_row(session, Tenant, tenant_id, "tenant")
            admin = Admin(**values)
            session.add(admin)
            await flush_unique(session, f"admin {values['username']!r} already exists")
            record = to_record(AdminRecord, admin)
        log.info("store.admin_added username=%s tenant_id=%s", record.username, tenant_id)
        return record

    async def get_by_username(self, username: str) -> AdminRecord | None:
        """The admin with this username, or None."""
        async with self._db.read("get admin") as session:
            admin = await session.scalar(select(Admin).where(Admin.username == username.strip()))
            return None if admin is None else to_record(AdminRecord, admin)

    async def get(self, admin_id: int) -> AdminRecord:
        """The admin with this id; NotFoundError if there is none."""
        async with self._db.read("get admin") as session:
            return to_record(AdminRecord, await get_row(session, Admin, admin_id, "admin"))

    async def list_admins(self) -> list[AdminRecord]:
        """Every admin, by username."""
        async with self._db.read("list admins") as session:
            rows = await session.scalars(select(Admin).order_by(Admin.username))
            return [to_record(AdminRecord, row) for row in rows]

    async def remove(self, username: str) -> None:
        """Delete an admin and its tokens; NotFoundError if there is no such admin."""
        async with self._db.write("remove admin") as session:
            admin = await self._admin(session, username)
            await session.execute(delete(ApiToken).where(ApiToken.admin_id == admin.id))
            await session.delete(admin)
        log.info("store.admin_removed username=%s", username)

    async def _change(self, username: str, action: str, **values: Any) -> AdminRecord:
        async with self._db.write(action) as session:
            admin = await self._admin(session, username)
            for name, value in values.items():
                setattr(admin, name, value)
            await session.flush()
            record = to_record(AdminRecord, admin)
        log.info("store.admin_changed username=%s fields=%s", username, ",".join(values))
        return record

    async def set_password(self, username: str, password_hash: str) -> AdminRecord:
        """Replace an admin's password hash (a PHC string)."""
        values = validate(ADMIN_CHECKS, {"password_hash": password_hash})
        return await self._change(username, "set admin password", **values)

    async def set_enabled(self, username: str, enabled: bool) -> AdminRecord:
        """Enable or disable an admin's logins and tokens."""
        values = validate(ADMIN_CHECKS, {"enabled": enabled})
        return await self._change(username, "enable admin", **values)

    async def touch_login(self, username: str, at: datetime | None = None) -> AdminRecord:
        """Record a successful login (``at`` defaults to now)."""
        return await self._change(username, "touch admin login", last_login_at=at or utcnow())

    async def add_token(self, username: str, name: str, token_hash: str) -> ApiTokenRecord:
        """Store an API token's SHA-256 (:func:`~minipbx.store.pbxrecords.hash_token`)."""
        values = validate(TOKEN_CHECKS, {"name": name, "token_hash": token_hash})
        async with self._db.write("add API token") as session:
            admin = await self._admin(session, username)
            token = ApiToken(admin_id=admin.id, **values)
            session.add(token)
            await flush_unique(session, "this API token is already registered")
            record = to_record(ApiTokenRecord, token)
        log.info("store.token_added username=%s token_id=%s", username, record.id)
        return record

    async def find_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        """The token with this SHA-256 hex, or None."""
        async with self._db.read("find API token") as session:
            stmt = select(ApiToken).where(ApiToken.token_hash == token_hash.strip().lower())
            token = await session.scalar(stmt)
            return None if token is None else to_record(ApiTokenRecord, token)

    async def list_tokens(self, username: str) -> list[ApiTokenRecord]:
        """The tokens of an admin, oldest first."""
        async with self._db.read("list API tokens") as session:
            admin = await self._admin(session, username)
            stmt = select(ApiToken).where(ApiToken.admin_id == admin.id).order_by(ApiToken.id)
            return [to_record(ApiTokenRecord, row) for row in await session.scalars(stmt)]

    async def touch_token(self, token_id: int, at: datetime | None = None) -> None:
        """Record a use of a token (``at`` defaults to now)."""
        async with self._db.write("touch API token") as session:
            token = await get_row(session, ApiToken, token_id, "API token")
            token.last_used_at = at or utcnow()

    async def remove_token(self, token_id: int) -> None:
        """Revoke a token; NotFoundError if there is no such token."""
        async with self._db.write("remove API token") as session:
            await session.delete(await get_row(session, ApiToken, token_id, "API token"))
        log.info("store.token_removed token_id=%s", token_id)


# --- trunks --------------------------------------------------------------------------------


def _check_trunk(row: Trunk) -> None:
    if not row.host and not row.allowed_ips:
        raise invalid("host", "a trunk needs a host, or allowed_ips for IP authentication")


_TRUNKS = TableSpec(
    model=Trunk,
    record=TrunkRecord,
    what="trunk",
    checks=TRUNK_CHECKS,
    counters=(TRUNKS_VERSION,),
    check_row=_check_trunk,
)


class SqlTrunkRepo(TenantNamedRepo[TrunkRecord]):
    """SIP trunks: ``add(tenant_id, name, host=..., ...)``, get, find, list, update, remove.

    The fields are those of :class:`~minipbx.store.pbxrecords.TrunkRecord` (see
    ``TRUNK_CHECKS``); a trunk needs a ``host`` or ``allowed_ips``.
    """

    spec = _TRUNKS

    async def add(self, tenant_id: int, name: str, **fields: Any) -> TrunkRecord:
        """Create trunk ``name`` in a tenant with ``fields`` (columns of :class:`TrunkRecord`)."""
        return await self._add(tenant_id, {"name": name, **fields})


# --- dial plans ----------------------------------------------------------------------------

_DIAL_PLANS = TableSpec(
    model=DialPlan,
    record=DialPlanRecord,
    what="dial plan",
    checks=DIAL_PLAN_CHECKS,
    counters=(DIAL_PLANS_VERSION,),
    remove_counters=(USERS_VERSION,),
)
_RULE_FIELDS = tuple(RULE_CHECKS)


def _check_rule(index: int, rule: DialPlanRule) -> dict[str, Any]:
    """The checked column values of ``rule``; errors name the rule by its position."""
    try:
        values = validate(RULE_CHECKS, {name: getattr(rule, name) for name in _RULE_FIELDS})
        if values["action"] in RULE_TARGET_REQUIRED and not values["target"]:
            raise invalid("target", f"action {values['action']!r} needs a target")
        if values["action"] == "reject" and values["reject_status"] is None:
            raise invalid("reject_status", "a reject rule needs a status from 400 to 699")
    except InvalidInputError as exc:
        raise InvalidInputError(f"rule {index + 1}: {exc}") from None
    return values


class SqlDialPlanRepo(TenantNamedRepo[DialPlanRecord]):
    """Dial plans (add, get, find, list, update, remove) and their ordered rules."""

    spec = _DIAL_PLANS

    async def add(self, tenant_id: int, name: str, *, description: str = "") -> DialPlanRecord:
        """Create an empty dial plan ``name`` in a tenant."""
        return await self._add(tenant_id, {"name": name, "description": description})

    async def replace_rules(
        self, plan_id: int, rules: Sequence[DialPlanRule]
    ) -> list[DialPlanRule]:
        """Make ``rules`` (in this order) the plan's rules, atomically; returns them stored.

        Every rule is checked before anything is written; the error names the rule
        (``rule 3: invalid action: ...``). ``id``/``dial_plan_id``/``position`` given are
        ignored.
        """
        checked = [_check_rule(index, rule) for index, rule in enumerate(rules)]
        async with self._db.write("replace dial plan rules") as session:
            plan = await get_row(session, DialPlan, plan_id, "dial plan")
            await session.execute(delete(RuleRow).where(RuleRow.dial_plan_id == plan_id))
            rows = [
                RuleRow(dial_plan_id=plan_id, position=position, **values)
                for position, values in enumerate(checked, start=1)
            ]
            session.add_all(rows)
            plan.updated_at = utcnow()
            await session.flush()
            await bump_all(session, (DIAL_PLANS_VERSION,))
            stored = [to_record(DialPlanRule, row) for row in rows]
        log.info("store.dial_plan_rules_replaced plan_id=%s rules=%d", plan_id, len(stored))
        return stored

    async def list_rules(self, plan_id: int) -> list[DialPlanRule]:
        """The plan's rules by position; NotFoundError for an unknown plan."""
        async with self._db.read("list dial plan rules") as session:
            await get_row(session, DialPlan, plan_id, "dial plan")
            stmt = select(RuleRow).where(RuleRow.dial_plan_id == plan_id).order_by(RuleRow.position)
            return [to_record(DialPlanRule, row) for row in await session.scalars(stmt)]

    async def set_tenant_plan(self, tenant_id: int, plan_id: int | None) -> None:
        """Make ``plan_id`` (a plan of the tenant; None: none) the tenant's default plan."""
        async with self._db.write("set tenant dial plan") as session:
            tenant = await get_row(session, Tenant, tenant_id, "tenant")
            refs = {"plan_id": (DialPlan, "dial plan")}
            await check_refs(session, refs, {"plan_id": plan_id}, tenant_id)
            tenant.dial_plan_id = plan_id
            await session.flush()
            await bump_all(session, (DIAL_PLANS_VERSION,))

    async def tenant_plan(self, tenant_id: int) -> int | None:
        """The id of the tenant's default dial plan, or None."""
        async with self._db.read("get tenant dial plan") as session:
            return (await get_row(session, Tenant, tenant_id, "tenant")).dial_plan_id


# --- voicemail -----------------------------------------------------------------------------


class SqlVoicemailRepo(DbRepo):
    """Voicemail messages (the WAV files are the caller's business: ``path`` only)."""

    async def add(
        self,
        user_id: int,
        path: str,
        received_at: datetime,
        *,
        duration_ms: int = 0,
        caller_number: str = "",
        caller_name: str = "",
        folder: str = "new",
    ) -> VoicemailRecord:
        """Record a new message for a user; NotFoundError for an unknown user."""
        values = validate(
            VOICEMAIL_CHECKS,
            {
                "path": path,
                "received_at": received_at,
                "duration_ms": duration_ms,
                "caller_number": caller_number,
                "caller_name": caller_name,
                "folder": folder,
            },
        )
        async with self._db.write("add voicemail") as session:
            user = await get_row(session, User, user_id, "user")
            message = VoicemailMessage(tenant_id=user.tenant_id, user_id=user_id, **values)
            session.add(message)
            await session.flush()
            record = to_record(VoicemailRecord, message)
        log.info("store.voicemail_added user_id=%s id=%s", user_id, record.id)
        return record

    async def get(self, message_id: int) -> VoicemailRecord:
        """One message; NotFoundError if there is none."""
        async with self._db.read("get voicemail") as session:
            row = await get_row(session, VoicemailMessage, message_id, "voicemail message")
            return to_record(VoicemailRecord, row)

    async def list_messages(self, user_id: int, folder: str | None = None) -> list[VoicemailRecord]:
        """A user's messages (of one folder, or all), oldest first."""
        stmt = select(VoicemailMessage).where(VoicemailMessage.user_id == user_id)
        if folder is not None:
            checked = validate(VOICEMAIL_CHECKS, {"folder": folder})["folder"]
            stmt = stmt.where(VoicemailMessage.folder == checked)
        stmt = stmt.order_by(VoicemailMessage.received_at, VoicemailMessage.id)
        async with self._db.read("list voicemail") as session:
            return [to_record(VoicemailRecord, row) for row in await session.scalars(stmt)]

    async def counts(self, user_id: int) -> dict[str, int]:
        """How many messages the user has in each folder (for message waiting, RFC 3842)."""
        stmt = (
            select(VoicemailMessage.folder, func.count(VoicemailMessage.id))
            .where(VoicemailMessage.user_id == user_id)
            .group_by(VoicemailMessage.folder)
        )
        async with self._db.read("count voicemail") as session:
            found = {folder: int(count) for folder, count in await session.execute(stmt)}
        return {folder: found.get(folder, 0) for folder in VOICEMAIL_FOLDERS}

    async def _change(self, message_id: int, action: str, **values: Any) -> VoicemailRecord:
        async with self._db.write(action) as session:
            row = await get_row(session, VoicemailMessage, message_id, "voicemail message")
            for name, value in values.items():
                setattr(row, name, value)
            await session.flush()
            await session.refresh(row)  # loads values computed in SQL (email_attempts + 1)
            return to_record(VoicemailRecord, row)

    async def move(self, message_id: int, folder: str) -> VoicemailRecord:
        """Move a message to ``folder`` (new, old or saved)."""
        values = validate(VOICEMAIL_CHECKS, {"folder": folder})
        return await self._change(message_id, "move voicemail", **values)

    async def mark_emailed(self, message_id: int, at: datetime | None = None) -> VoicemailRecord:
        """Record that the message was e-mailed (``at`` defaults to now)."""
        return await self._change(message_id, "mark voicemail emailed", emailed_at=at or utcnow())

    async def record_email_failure(self, message_id: int, error: str) -> VoicemailRecord:
        """Count a failed e-mail attempt and keep its error (one line, at most 1000 chars)."""
        message = " ".join(error.split())[:1000]
        return await self._change(
            message_id,
            "record voicemail email failure",
            email_attempts=VoicemailMessage.email_attempts + 1,
            email_error=message,
        )

    async def pending_email(self, max_attempts: int = 5, limit: int = 100) -> list[VoicemailRecord]:
        """Messages not yet e-mailed, of users with an address, under ``max_attempts``."""
        stmt = (
            select(VoicemailMessage)
            .join(User, User.id == VoicemailMessage.user_id)
            .where(
                VoicemailMessage.emailed_at.is_(None),
                VoicemailMessage.email_attempts < max_attempts,
                User.email.is_not(None),
                User.email != "",
            )
            .order_by(VoicemailMessage.id)
            .limit(limit)
        )
        async with self._db.read("list voicemail to e-mail") as session:
            return [to_record(VoicemailRecord, row) for row in await session.scalars(stmt)]

    async def remove(self, message_id: int) -> VoicemailRecord:
        """Delete a message; returns it (so the caller can delete its file)."""
        async with self._db.write("remove voicemail") as session:
            row = await get_row(session, VoicemailMessage, message_id, "voicemail message")
            record = to_record(VoicemailRecord, row)
            await session.delete(row)
        log.info("store.voicemail_removed id=%s user_id=%s", message_id, record.user_id)
        return record


# --- settings ------------------------------------------------------------------------------


def _of_tenant(tenant_id: int | None) -> Any:
    return Setting.tenant_id.is_(None) if tenant_id is None else Setting.tenant_id == tenant_id


def _setting_filter(key: str, tenant_id: int | None) -> Any:
    return (Setting.key == key) & _of_tenant(tenant_id)


class SqlSettingsRepo(DbRepo):
    """Key/value settings per tenant, or system-wide with ``tenant_id`` None (SMTP, ...).

    Writes bump ``settings_version`` first: that row lock serialises concurrent writers,
    which the unique (tenant_id, key) constraint cannot do for system-wide keys (NULL).
    """

    async def get(self, key: str, *, tenant_id: int | None = None) -> str | None:
        """The value of ``key`` for the tenant (or system-wide), or None."""
        async with self._db.read("get setting") as session:
            return await session.scalar(
                select(Setting.value).where(_setting_filter(key, tenant_id))
            )

    async def resolve(self, key: str, tenant_id: int) -> str | None:
        """The tenant's value of ``key``, else the system-wide one, else None."""
        value = await self.get(key, tenant_id=tenant_id)
        return value if value is not None else await self.get(key)

    async def set(self, key: str, value: str, *, tenant_id: int | None = None) -> None:
        """Create or replace ``key`` for the tenant (or system-wide)."""
        values = validate(SETTING_CHECKS, {"key": key, "value": value})
        async with self._db.write("set setting") as session:
            await bump_all(session, (SETTINGS_VERSION,))
            if tenant_id is not None:
                await get_row(session, Tenant, tenant_id, "tenant")
            row = await session.scalar(
                select(Setting).where(_setting_filter(values["key"], tenant_id))
            )
            if row is None:
                session.add(Setting(tenant_id=tenant_id, **values))
            else:
                row.value = values["value"]
            await flush_unique(session, f"setting {key!r} was written concurrently")
        log.info("store.setting_set tenant_id=%s key=%s", tenant_id, values["key"])

    async def delete(self, key: str, *, tenant_id: int | None = None) -> bool:
        """Remove ``key``; True if it existed."""
        async with self._db.write("delete setting") as session:
            await bump_all(session, (SETTINGS_VERSION,))
            result = await session.execute(delete(Setting).where(_setting_filter(key, tenant_id)))
            return bool(getattr(result, "rowcount", 0))

    async def list_settings(self, *, tenant_id: int | None = None) -> dict[str, str]:
        """Every key of the tenant (or the system-wide ones), sorted by key."""
        stmt = select(Setting.key, Setting.value).where(_of_tenant(tenant_id)).order_by(Setting.key)
        async with self._db.read("list settings") as session:
            return {key: value for key, value in await session.execute(stmt)}
