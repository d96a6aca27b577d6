"""SIP trunks (passwords are write-only) and their live registration state."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter

from minipbx.store.pbxrecords import TRUNK_CHECKS, TrunkRecord
from minipbx.web.api.crud import crud_router, named_resource, owned, tenant_scope
from minipbx.web.api.schemas import (
    OutModel,
    RowId,
    TenantQuery,
    crud_models,
    wall,
)
from minipbx.web.auth import Admin, Ctx
from minipbx.web.context import TrunkView, WebContext

TRUNK_MODELS = crud_models(
    "Trunk",
    TrunkRecord,
    TRUNK_CHECKS,
    hidden=("password", "options"),
    extra_out={"password_set": (bool, ...), "options": (dict[str, Any], ...)},
    kinds={"options": dict[str, Any] | str},
    doc="A SIP trunk: a ``host`` (registration/digest) or ``allowed_ips`` (IP trunk). The "
    "password is write-only: ``password_set`` says whether there is one.",
)


class TrunkRegistration(OutModel):
    """The state of a trunk's registration at its provider (times in UTC)."""

    tenant_id: int
    name: str
    state: str
    registered_until: datetime | None
    last_status: int
    last_error: str
    next_try: datetime | None
    failures: int


async def _present(_: WebContext, trunk: TrunkRecord) -> dict[str, Any]:
    fields = asdict(trunk)
    fields["password_set"] = bool(fields.pop("password"))
    fields["options"] = json.loads(trunk.options or "{}")
    return fields


TRUNKS = named_resource(
    lambda ctx: ctx.trunks,
    what="trunk",
    path="/trunks",
    tag="trunks",
    models=TRUNK_MODELS,
    present=_present,
)


def _registration(view: TrunkView) -> TrunkRegistration:
    return TrunkRegistration(
        tenant_id=view.tenant_id,
        name=view.name,
        state=view.state,
        registered_until=wall(view.registered_until),
        last_status=view.last_status,
        last_error=view.last_error,
        next_try=wall(view.next_try),
        failures=view.failures,
    )


status_router = APIRouter(tags=["trunks"])


@status_router.get("/trunk-registrations", response_model=list[TrunkRegistration])
async def list_registrations(ctx: Ctx, principal: Admin, tenant_id: TenantQuery = None) -> Any:
    """Live registration state of every registering trunk."""
    scope = tenant_scope(principal, tenant_id)
    views = ctx.live.trunks()
    return [_registration(v) for v in views if scope is None or v.tenant_id == scope]


@status_router.get("/trunks/{row_id}/registration", response_model=TrunkRegistration | None)
async def trunk_registration(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
    """Live registration state of one trunk (null when it does not register)."""
    trunk = await owned(ctx, principal, TRUNKS, row_id)
    for view in ctx.live.trunks():
        if view.tenant_id == trunk.tenant_id and view.name == trunk.name:
            return _registration(view)
    return None


router = APIRouter()
router.include_router(status_router)
router.include_router(crud_router(TRUNKS))
