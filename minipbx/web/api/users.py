"""Users (extensions) with their password (write-only) and every service setting.

A user's answer joins its record and its service settings (:class:`UserSettings`); the
voicemail PIN is write-only (``voicemail_pin_set`` says whether there is one) and the
balance read-only (it changes through ``/users/{id}/ledger``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from minipbx.store import InvalidInputError, UserRecord, UserSettings
from minipbx.store.checks import validate
from minipbx.store.pbxrecords import USER_SETTINGS_CHECKS
from minipbx.store.records import check_password
from minipbx.web.api.crud import Resource, crud_router
from minipbx.web.api.ledger import ledger_router
from minipbx.web.api.schemas import hints, input_model, record_model, tenant_field
from minipbx.web.auth import Principal
from minipbx.web.context import WebContext
from minipbx.web.errors import FieldError

SETTINGS = tuple(USER_SETTINGS_CHECKS)
_PROFILE = ("display_name", "email", "enabled")
_HIDDEN = ("ha1_md5", "ha1_sha256", "realm")
_KINDS = {**hints(UserRecord), **hints(UserSettings), "password": str}

UserOut = record_model(
    "User",
    UserRecord,
    exclude=_HIDDEN,
    extra={
        **{
            name: (kind, ...)
            for name, kind in hints(UserSettings).items()
            if name not in ("user_id", "voicemail_pin")
        },
        "voicemail_pin_set": (bool, ...),
    },
    doc="A user (extension) and its service settings.",
)
UserCreate = input_model(
    "UserCreate",
    None,
    ("extension", "password", *_PROFILE, *SETTINGS),
    required=("extension", "password"),
    kinds=_KINDS,
    extra=tenant_field(),
    doc="A new user: extension and SIP password, and any service setting.",
)
UserUpdate = input_model(
    "UserUpdate",
    None,
    ("password", *_PROFILE, *SETTINGS),
    kinds=_KINDS,
    doc="Changes to a user (the extension and tenant stay).",
)


def _split(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(profile and password fields, service settings checked by the store's rules)."""
    settings = {name: fields.pop(name) for name in SETTINGS if name in fields}
    if "password" in fields:
        try:
            check_password(fields["password"])
        except InvalidInputError as exc:
            raise FieldError(("body", "password"), str(exc)) from None
    return fields, validate(USER_SETTINGS_CHECKS, settings)


async def _list(ctx: WebContext, tenant_id: int | None) -> Sequence[UserRecord]:
    domain = None if tenant_id is None else (await ctx.web.get_tenant(tenant_id)).domain
    return await ctx.users.list_users(domain=domain)


async def _get(ctx: WebContext, user_id: int) -> UserRecord:
    return await ctx.web.get_user(user_id)


async def _add(ctx: WebContext, _: Principal, tenant_id: int, fields: dict[str, Any]) -> UserRecord:
    profile, settings = _split(fields)
    tenant = await ctx.web.get_tenant(tenant_id)
    user = await ctx.users.add(
        profile["extension"],
        profile["password"],
        name=profile.get("display_name") or "",
        email=profile.get("email"),
        domain=tenant.domain,
        enabled=profile.get("enabled", True),
    )
    if settings:
        try:
            await ctx.user_settings.update_settings(user.id, **settings)
        except InvalidInputError:
            await ctx.users.remove(user.extension, domain=user.domain)  # all or nothing
            raise
    return user


async def _change(
    ctx: WebContext, _: Principal, user: UserRecord, fields: dict[str, Any]
) -> UserRecord:
    profile, settings = _split(fields)
    password = profile.pop("password", None)
    if profile:
        user = await ctx.web.update_user(user.id, **profile)
    if password is not None:
        user = await ctx.users.set_password(user.extension, password, domain=user.domain)
    if settings:
        await ctx.user_settings.update_settings(user.id, **settings)
    return user


async def _remove(ctx: WebContext, user: UserRecord) -> None:
    await ctx.users.remove(user.extension, domain=user.domain)


async def _present(ctx: WebContext, user: UserRecord) -> dict[str, Any]:
    settings = asdict(await ctx.user_settings.get_settings(user.id))
    settings.pop("user_id")
    settings["voicemail_pin_set"] = bool(settings.pop("voicemail_pin"))
    record = {k: v for k, v in asdict(user).items() if k not in _HIDDEN}
    return {**record, **settings}


USERS: Resource[UserRecord] = Resource(
    what="user",
    path="/users",
    tag="users",
    out=UserOut,
    list_rows=_list,
    get_row=_get,
    create=UserCreate,
    update=UserUpdate,
    add_row=_add,
    change_row=_change,
    remove_row=_remove,
    present=_present,
)
router = APIRouter()
router.include_router(crud_router(USERS))
router.include_router(ledger_router(USERS, "user_id"))
