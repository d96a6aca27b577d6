"""A dial plan's rules editor, and "test a route" against the running router.

The editor is one form: a table row per rule (inputs ``r<row>.<field>``), a few blank
rows to add rules, a position to reorder and a remove box (removing needs the "confirm
removal" box too). Saving replaces the rule list through the API's own endpoint
function, so a rule is checked exactly as ``PUT /dial-plans/{id}/rules`` checks it; an
error is shown in the row and field it names.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.pbx.dialplan_router import DialPlanRouter, RoutingConfig, compile_routing, explain
from minipbx.store import NotFoundError
from minipbx.store.routing_data import load_routing_data
from minipbx.web.api import dialplans
from minipbx.web.api.crud import owned
from minipbx.web.api.dialplans import DIAL_PLANS, RuleIn, RulesIn
from minipbx.web.api.schemas import RowId, given
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.forms import (
    EXPECTED,
    GENERAL,
    Field,
    attempt,
    display,
    errors_of,
    fields_of,
    parse,
    text_of,
)
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
BLANK_ROWS = 3
MAX_ROWS = 500
RULE_FIELDS: list[Field] = fields_of(
    RuleIn,
    (
        "enabled",
        "pattern",
        "caller_pattern",
        "action",
        "target",
        "failover_target",
        "min_level",
        "time_condition",
        "strip",
        "prepend",
        "caller_id",
        "reject_status",
        "max_seconds",
    ),
)


def _row_values(rule: dict[str, Any]) -> dict[str, Any]:
    return {f.name: display(rule.get(f.name)) for f in RULE_FIELDS}


def _blank() -> dict[str, Any]:
    return {**_row_values({"enabled": True, "min_level": 1, "action": "local"}), "new": True}


async def _editor(
    request: Request,
    principal: Principal,
    plan: Any,
    rows: list[dict[str, Any]],
    errors: dict[str, str],
    row_errors: dict[int, dict[str, str]],
) -> Response:
    return await page(
        request,
        principal,
        "rules.html",
        422 if errors or row_errors else 200,
        plan=plan,
        fields=RULE_FIELDS,
        rows=rows,
        errors=errors,
        row_errors=row_errors,
    )


@router.get("/dial-plans/{row_id}/rules", response_class=HTMLResponse)
async def rules_page(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
) -> Response:
    """The rules editor of a plan."""
    plan = await owned(ctx, principal, DIAL_PLANS, row_id)
    rules = await ctx.dial_plans.list_rules(row_id)
    rows = [{**_row_values(asdict(rule)), "position": i + 1} for i, rule in enumerate(rules)]
    rows += [{**_blank(), "position": len(rows) + i + 1} for i in range(BLANK_ROWS)]
    return await _editor(request, principal, plan, rows, {}, {})


def _posted_rows(form: Any) -> list[dict[str, Any]]:
    """Every row of the posted editor, with its input values and flags."""
    try:
        count = min(int(text_of(form, "rows")), MAX_ROWS)
    except ValueError:
        count = 0
    rows = []
    for i in range(count):
        prefix = f"r{i}."
        values: dict[str, Any] = {f.name: text_of(form, prefix + f.name) for f in RULE_FIELDS}
        values["enabled"] = form.get(prefix + "enabled") is not None
        rows.append(
            {
                **values,
                "parsed": parse(form, RULE_FIELDS, prefix, new=True),
                "position": text_of(form, prefix + "position"),
                "new": form.get(prefix + "new") is not None,
                "remove": form.get(prefix + "remove") is not None,
            }
        )
    return rows


def _position(row: dict[str, Any], index: int) -> tuple[float, int]:
    try:
        return float(row["position"]), index
    except ValueError:
        return float(index + 1), index


@router.post("/dial-plans/{row_id}/rules", response_class=HTMLResponse)
async def save_rules(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
) -> Response:
    """Replace the plan's rules with the posted ones (in the order of their positions)."""
    plan = await owned(ctx, principal, DIAL_PLANS, row_id)
    form = await request.form()
    rows = _posted_rows(form)
    removing = [row for row in rows if row["remove"] and not row["new"]]
    if removing and form.get("confirm_remove") is None:
        message = f"Tick \u201cconfirm removal\u201d to remove {len(removing)} rule(s)."
        return await _editor(request, principal, plan, rows, {GENERAL: message}, {})
    kept = [
        i
        for i, row in sorted(enumerate(rows), key=lambda pair: _position(pair[1], pair[0]))
        if not row["remove"] and not (row["new"] and not row["pattern"] and not row["target"])
    ]
    row_errors: dict[int, dict[str, str]] = {}
    for k, i in enumerate(kept):  # every rule checked, so every bad one is marked at once
        try:
            dialplans.check_rule(k, given(RuleIn.model_validate(rows[i]["parsed"])))
        except EXPECTED as exc:
            row_errors[i] = {key.split(".")[-1]: msg for key, msg in errors_of(exc).items()}
    general: dict[str, str] = {}
    if not row_errors:
        body = RulesIn.model_validate({"rules": [rows[i]["parsed"] for i in kept]})
        _, general = await attempt(dialplans.replace_rules(ctx, principal, row_id, body))
    if row_errors or general:
        if not general:
            general[GENERAL] = "Some rules have errors (marked below); nothing was saved."
        return await _editor(request, principal, plan, rows, general, row_errors)
    return redirect(f"/dial-plans/{row_id}/rules", "saved")


# --- test a route ------------------------------------------------------------------------


def running_config(ctx: WebContext) -> RoutingConfig | None:
    """The routing configuration of the running PBX (None without one, e.g. in tests)."""
    app = getattr(ctx.live, "app", None)
    core = getattr(app, "core", None)
    pbx_router = getattr(getattr(core, "b2bua", None), "router", None)
    return pbx_router.config if isinstance(pbx_router, DialPlanRouter) else None


async def routing_config(ctx: WebContext) -> tuple[RoutingConfig, bool]:
    """(the running router's configuration, True), or one compiled from the database
    (trunk hosts not resolved) and False."""
    config = running_config(ctx)
    if config is not None:
        return config, True
    return compile_routing(await load_routing_data(ctx.db), lambda _: None), False


async def _tenant(ctx: WebContext, principal: Principal, given: str) -> Any:
    if principal.tenant_id is not None:
        return await ctx.web.get_tenant(principal.tenant_id)
    if given.isdigit():
        try:
            return await ctx.web.get_tenant(int(given))
        except NotFoundError:
            pass
    return await ctx.tenants.ensure_default()


@router.get("/route-test", response_class=HTMLResponse)
async def route_test(
    request: Request,
    ctx: Ctx,
    principal: ConsoleAdmin,
    tenant_id: str = "",
    caller: str = "",
    number: str = "",
    at: str = "",
) -> Response:
    """What the router would do with a call from ``caller`` to ``number`` (dry run)."""
    tenant = await _tenant(ctx, principal, tenant_id)
    errors: dict[str, str] = {}
    lines: list[str] = []
    live_config = False
    caller, number = caller.strip()[:64], number.strip()[:64]
    if caller or number:
        wall = time.time()
        if at.strip():
            try:
                wall = datetime.fromisoformat(at.strip()).timestamp()
            except ValueError:
                errors["at"] = "a date and time like 2026-05-01T09:30"
        user = await ctx.users.get(caller, domain=tenant.domain) if caller else None
        if user is None or user.tenant_id != tenant.id:
            errors["caller"] = f"no user {caller!r} in {tenant.domain}"
        if not number:
            errors["number"] = "the number dialled"
        if not errors:
            config, live_config = await routing_config(ctx)
            lines = [f"warning: {p}" for p in config.problems]
            lines += explain(config, tenant.id, caller, number, wall)
    tenants = await ctx.tenants.list_tenants() if principal.is_system else [tenant]
    return await page(
        request,
        principal,
        "route_test.html",
        422 if errors else 200,
        tenant=tenant,
        tenants=tenants,
        values={"caller": caller, "number": number, "at": at},
        errors=errors,
        lines=lines,
        live_config=live_config,
    )
