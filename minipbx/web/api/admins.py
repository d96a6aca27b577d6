"""Admin accounts (system admins only) and API tokens (each admin its own).

The last enabled system admin cannot be disabled or deleted (409): someone must be able
to log in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from minipbx.store import AdminRecord, ApiTokenRecord, ConflictError, NotFoundError
from minipbx.web.accounts import add_admin, create_token, set_admin_password
from minipbx.web.api.crud import Resource, crud_router, not_found
from minipbx.web.api.schemas import (
    ApiModel,
    OutModel,
    RefId,
    RowId,
    Text,
    input_model,
    optional,
    record_model,
)
from minipbx.web.auth import Admin, Ctx, Principal, system_admin
from minipbx.web.context import WebContext
from minipbx.web.errors import FieldError

AdminOut = record_model(
    "Admin",
    AdminRecord,
    exclude=("password_hash",),
    doc="A console/API login (tenant_id null: a system admin).",
)
_KINDS = {"username": str, "password": str, "enabled": bool}
AdminCreate = input_model(
    "AdminCreate",
    None,
    ("username", "password", "enabled"),
    required=("username", "password"),
    kinds=_KINDS,
    extra={"tenant_id": optional(RefId | None, "The tenant it manages (null: system admin)")},
)
AdminUpdate = input_model("AdminUpdate", None, ("password", "enabled"), kinds=_KINDS)


class TokenOut(OutModel):
    """An API token (the token itself is shown only when it is created)."""

    id: int
    admin_id: int
    username: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    """A new API token: ``token`` is shown this once; send it as ``Authorization: Bearer``."""

    token: str


class TokenCreate(ApiModel):
    """A new token of ``username`` (system admins) or of the caller."""

    name: Annotated[Text, Field(max_length=255)] = ""
    username: Text | None = None


async def _list(ctx: WebContext, _: int | None) -> Sequence[AdminRecord]:
    return await ctx.admins.list_admins()


async def _get(ctx: WebContext, admin_id: int) -> AdminRecord:
    return await ctx.admins.get(admin_id)


async def _add(
    ctx: WebContext, _: Principal, __: int | None, fields: dict[str, Any]
) -> AdminRecord:
    tenant_id = fields.get("tenant_id")
    if tenant_id is not None:
        try:
            await ctx.web.get_tenant(tenant_id)
        except NotFoundError:
            raise FieldError(("body", "tenant_id"), f"no tenant with id {tenant_id}") from None
    return await add_admin(
        ctx.admins,
        ctx.passwords,
        fields["username"],
        fields["password"],
        tenant_id=tenant_id,
        enabled=fields.get("enabled", True),
    )


async def _keep_a_system_admin(ctx: WebContext, admin: AdminRecord) -> None:
    """ConflictError when ``admin`` is the last enabled system admin."""
    if admin.tenant_id is not None or not admin.enabled:
        return
    others = [
        a
        for a in await ctx.admins.list_admins()
        if a.tenant_id is None and a.enabled and a.id != admin.id
    ]
    if not others:
        raise ConflictError(f"{admin.username!r} is the last enabled system admin")


async def _change(
    ctx: WebContext, _: Principal, admin: AdminRecord, fields: dict[str, Any]
) -> AdminRecord:
    if fields.get("enabled") is False:
        await _keep_a_system_admin(ctx, admin)
    if fields.get("password") is not None:
        admin = await set_admin_password(
            ctx.admins, ctx.passwords, admin.username, fields["password"]
        )
    if fields.get("enabled") is not None:
        admin = await ctx.admins.set_enabled(admin.username, fields["enabled"])
    return admin


async def _remove(ctx: WebContext, admin: AdminRecord) -> None:
    await _keep_a_system_admin(ctx, admin)
    await ctx.admins.remove(admin.username)


ADMINS: Resource[AdminRecord] = Resource(
    what="admin",
    path="/admins",
    tag="admins",
    out=AdminOut,
    list_rows=_list,
    get_row=_get,
    create=AdminCreate,
    update=AdminUpdate,
    add_row=_add,
    change_row=_change,
    remove_row=_remove,
    assign_tenant=False,
)

# --- tokens --------------------------------------------------------------------------------

tokens_router = APIRouter(prefix="/tokens", tags=["admins"])


async def _owner(ctx: WebContext, principal: Principal, username: str | None) -> AdminRecord:
    """The admin whose tokens are meant: the caller's own unless a system admin names one."""
    name = username if username is not None else principal.username
    admin = await ctx.admins.get_by_username(name) if name.strip() else None
    if admin is None or (not principal.is_system and admin.id != principal.admin_id):
        raise NotFoundError(f"no admin {name!r}")
    return admin


def _token(admin: AdminRecord, token: ApiTokenRecord) -> dict[str, Any]:
    return {**asdict(token), "username": admin.username}


@tokens_router.get("", response_model=list[TokenOut])
async def list_tokens(
    ctx: Ctx, principal: Admin, username: Annotated[str | None, Query(max_length=255)] = None
) -> Any:
    """The API tokens of the caller (or, for a system admin, of ``username``)."""
    admin = await _owner(ctx, principal, username)
    return [_token(admin, t) for t in await ctx.admins.list_tokens(admin.username)]


@tokens_router.post("", response_model=TokenCreated, status_code=201)
async def new_token(ctx: Ctx, principal: Admin, body: TokenCreate) -> Any:
    """Create an API token; the answer is the only time the token is shown."""
    admin = await _owner(ctx, principal, body.username)
    token, record = await create_token(ctx.admins, admin.username, body.name)
    return {**_token(admin, record), "token": token}


@tokens_router.delete("/{row_id}", status_code=204)
async def revoke(ctx: Ctx, principal: Admin, row_id: RowId) -> Response:
    """Revoke a token (the caller's own; a system admin: anyone's)."""
    owners = await ctx.admins.list_admins() if principal.is_system else []
    if not principal.is_system:
        owners = [await _owner(ctx, principal, None)]
    for admin in owners:
        if any(t.id == row_id for t in await ctx.admins.list_tokens(admin.username)):
            await ctx.admins.remove_token(row_id)
            ctx.token_touched.pop(row_id, None)
            return Response(status_code=204)
    raise not_found("API token", row_id)


router = APIRouter()
router.include_router(crud_router(ADMINS), dependencies=[Depends(system_admin)])
router.include_router(tokens_router)
