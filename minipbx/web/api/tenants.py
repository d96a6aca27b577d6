"""Tenants (SIP domains) with their quotas and default dial plan.

System admins create, change and delete tenants; a tenant admin sees its own tenant and
may change only its name and default dial plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import HTTPException
from pydantic import Field

from minipbx.store import InvalidInputError, TenantRecord
from minipbx.store.checks import INT_MAX
from minipbx.web.api.crud import Resource, crud_router
from minipbx.web.api.schemas import RefId, input_model, record_model
from minipbx.web.auth import Principal
from minipbx.web.context import WebContext
from minipbx.web.errors import FieldError

Quota = Annotated[int, Field(ge=1, le=INT_MAX)] | None
QUOTAS = ("max_users", "max_concurrent_calls", "max_call_seconds", "free_account")
_KINDS = {name: Quota for name in QUOTAS[:3]} | {
    "domain": str,
    "name": str,
    "realm": str | None,
    "is_default": bool,
    "free_account": bool,
    "dial_plan_id": RefId | None,
}
_TENANT_ADMIN_FIELDS = frozenset({"name", "dial_plan_id"})

TenantOut = record_model(
    "Tenant",
    TenantRecord,
    extra={"dial_plan_id": (int | None, ...)},
    doc="A tenant: a SIP domain, its fixed digest realm, quotas (null: no limit) and "
    "default dial plan.",
)
TenantCreate = input_model(
    "TenantCreate",
    None,
    ("domain", "name", "realm", "is_default", *QUOTAS),
    required=("domain",),
    kinds=_KINDS,
    doc="A new tenant; the realm defaults to the domain and never changes afterwards.",
)
TenantUpdate = input_model(
    "TenantUpdate",
    None,
    ("domain", "name", *QUOTAS, "dial_plan_id"),
    kinds=_KINDS,
    doc="Changes to a tenant; a tenant admin may change only name and dial_plan_id.",
)


async def _list(ctx: WebContext, tenant_id: int | None) -> Sequence[TenantRecord]:
    rows = await ctx.tenants.list_tenants()
    return [t for t in rows if tenant_id is None or t.id == tenant_id]


async def _get(ctx: WebContext, tenant_id: int) -> TenantRecord:
    return await ctx.web.get_tenant(tenant_id)


async def _add(ctx: WebContext, _: Principal, __: int, fields: dict[str, Any]) -> TenantRecord:
    quotas = {name: fields.pop(name) for name in QUOTAS if name in fields}
    tenant = await ctx.tenants.create(
        fields["domain"],
        realm=fields.get("realm"),
        name=fields.get("name") or "",
        is_default=bool(fields.get("is_default")),
    )
    if quotas:
        tenant = await ctx.tenants.set_quotas(tenant.domain, **quotas)
    return tenant


async def _set_plan(ctx: WebContext, tenant_id: int, plan_id: int | None) -> None:
    try:
        await ctx.dial_plans.set_tenant_plan(tenant_id, plan_id)
    except InvalidInputError:
        raise FieldError(
            ("body", "dial_plan_id"), f"no dial plan with id {plan_id} in this tenant"
        ) from None


async def _change(
    ctx: WebContext, principal: Principal, tenant: TenantRecord, fields: dict[str, Any]
) -> TenantRecord:
    if not principal.is_system and set(fields) - _TENANT_ADMIN_FIELDS:
        raise HTTPException(403, "a tenant admin may change only name and dial_plan_id")
    if "dial_plan_id" in fields:
        await _set_plan(ctx, tenant.id, fields.pop("dial_plan_id"))
    if "name" in fields:
        tenant = await ctx.web.rename_tenant(tenant.id, fields.pop("name") or "")
    if fields.get("domain") not in (None, tenant.domain):
        tenant = await ctx.tenants.rename(tenant.domain, fields["domain"])
    fields.pop("domain", None)
    quotas = {name: fields[name] for name in QUOTAS if name in fields}
    if quotas:
        tenant = await ctx.tenants.set_quotas(tenant.domain, **quotas)
    return tenant


async def _remove(ctx: WebContext, tenant: TenantRecord) -> None:
    await ctx.web.remove_tenant(tenant.id)


async def _present(ctx: WebContext, tenant: TenantRecord) -> dict[str, Any]:
    plans = await ctx.web.tenant_plans()
    return {**asdict(tenant), "dial_plan_id": plans.get(tenant.id)}


TENANTS: Resource[TenantRecord] = Resource(
    what="tenant",
    path="/tenants",
    tag="tenants",
    out=TenantOut,
    list_rows=_list,
    get_row=_get,
    create=TenantCreate,
    update=TenantUpdate,
    add_row=_add,
    change_row=_change,
    remove_row=_remove,
    present=_present,
    tenant_of=lambda tenant: tenant.id,
    system_writes=True,
)
router = crud_router(TENANTS)
