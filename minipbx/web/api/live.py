"""Live state of the running PBX: registrations, calls in progress, server status."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from minipbx import __version__
from minipbx.pbx.location import Binding
from minipbx.web.api.crud import check_tenant, not_found, tenant_scope
from minipbx.web.api.schemas import OutModel, TenantQuery, list_of, record_model, wall
from minipbx.web.auth import Admin, Ctx, Principal
from minipbx.web.context import CallView, WebContext

router = APIRouter(tags=["live"])


class RegistrationOut(OutModel):
    """A registered contact of a user (an address-of-record)."""

    tenant_id: int
    extension: str
    contact: str
    expires_at: datetime
    expires_in: int
    source: str
    transport: str
    nat: bool
    user_agent: str
    instance_id: str | None
    reg_id: int | None
    q: float | None
    path: list[str]


CallOut = record_model(
    "Call",
    CallView,
    exclude=("started_at", "answered_at"),
    extra={
        "started_at": (datetime, ...),
        "answered_at": (datetime | None, ...),
        "duration": (float, ...),
    },
    doc="A call in progress (times in UTC; duration: seconds since the answer).",
)


class ShippingOut(OutModel):
    """Copying of call records to the MySQL mirror."""

    target: str
    queued: int
    lag_seconds: float
    shipped: int
    last_error: str
    failing_since: datetime | None


class StatusOut(OutModel):
    """The server at a glance (counts are the caller's tenant's for a tenant admin)."""

    version: str
    started_at: datetime
    uptime_seconds: float
    tenants: int
    users: int
    registrations: int
    calls: int
    answered_calls: int
    trunks_registered: int
    trunks_registering: int
    cdr_shipping: ShippingOut | None


def _registration(binding: Binding, now: float) -> RegistrationOut:
    return RegistrationOut(
        tenant_id=binding.aor[0],
        extension=binding.aor[1],
        contact=binding.contact,
        expires_at=wall(binding.expires_at),  # type: ignore[arg-type]
        expires_in=binding.expires_in(now),
        source=binding.received.hostport,
        transport=binding.received.transport,
        nat=binding.nat,
        user_agent=binding.user_agent,
        instance_id=binding.instance_id,
        reg_id=binding.reg_id,
        q=binding.q,
        path=list(binding.path),
    )


def _call(call: CallView, now: float) -> dict[str, Any]:
    values = asdict(call)
    values["started_at"] = wall(call.started_at)
    values["answered_at"] = wall(call.answered_at)
    values["duration"] = round(now - call.answered_at, 3) if call.answered_at else 0.0
    return values


def _visible(scope: int | None, tenant_id: int) -> bool:
    """True when an object of ``tenant_id`` is in ``scope`` (see ``tenant_scope``)."""
    return scope is None or tenant_id == scope


@router.get("/registrations", response_model=list[RegistrationOut])
async def registrations(
    ctx: Ctx,
    principal: Admin,
    tenant_id: TenantQuery = None,
    extension: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """Registered contacts (unexpired), by tenant and extension."""
    scope = tenant_scope(principal, tenant_id)
    now = time.time()
    found = [
        _registration(b, now)
        for b in ctx.live.bindings()
        if b.expires_at > now
        and _visible(scope, b.aor[0])
        and (extension is None or b.aor[1] == extension)
    ]
    return sorted(found, key=lambda r: (r.tenant_id, r.extension, r.contact))


@router.get("/calls", response_model=list_of(CallOut))
async def calls(ctx: Ctx, principal: Admin, tenant_id: TenantQuery = None) -> Any:
    """Calls in progress, oldest first."""
    scope = tenant_scope(principal, tenant_id)
    now = time.time()
    found = [_call(c, now) for c in ctx.live.calls() if _visible(scope, c.tenant_id)]
    return sorted(found, key=lambda c: c["started_at"])


def _find_call(ctx: WebContext, principal: Principal, call_id: str) -> CallView:
    for call in ctx.live.calls():
        if call.id == call_id:
            check_tenant(principal, call.tenant_id, "call", call_id)
            return call
    raise not_found("call", call_id)


CallId = Annotated[str, Path(max_length=128, description="The call's id")]


@router.get("/calls/{call_id}", response_model=CallOut)
async def get_call(ctx: Ctx, principal: Admin, call_id: CallId) -> Any:
    """One call in progress."""
    return _call(_find_call(ctx, principal, call_id), time.time())


@router.delete("/calls/{call_id}", status_code=204)
async def hang_up(ctx: Ctx, principal: Admin, call_id: CallId) -> Response:
    """Hang up a call: BYE to both sides (CANCEL while it rings); its record says
    ``hangup_by=system``."""
    call = _find_call(ctx, principal, call_id)
    if not ctx.live.hangup(call.id):
        raise not_found("call", call_id)
    return Response(status_code=204)


@router.get("/status", response_model=StatusOut)
async def status(ctx: Ctx, principal: Admin) -> Any:
    """Version, uptime, counts, trunk registrations and CDR shipping."""
    own = principal.tenant_id
    now = time.time()
    active = [c for c in ctx.live.calls() if own is None or c.tenant_id == own]
    trunks = [t for t in ctx.live.trunks() if own is None or t.tenant_id == own]
    shipping = await ctx.live.cdr_shipping() if principal.is_system else None
    return StatusOut(
        version=__version__,
        started_at=wall(ctx.live.started_at),  # type: ignore[arg-type]
        uptime_seconds=round(max(now - ctx.live.started_at, 0.0), 3),
        tenants=len(await ctx.tenants.list_tenants()) if own is None else 1,
        users=await ctx.web.count_users(own),
        registrations=sum(
            1 for b in ctx.live.bindings() if b.expires_at > now and own in (None, b.aor[0])
        ),
        calls=len(active),
        answered_calls=sum(1 for c in active if c.answered_at is not None),
        trunks_registered=sum(1 for t in trunks if t.state == "registered"),
        trunks_registering=len(trunks),
        cdr_shipping=None
        if shipping is None
        else ShippingOut(**{**asdict(shipping), "failing_since": wall(shipping.failing_since)}),
    )
