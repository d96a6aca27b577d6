"""Call record search: filters, paging (newest first), CSV download (the API's export)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.pbx.call import Disposition
from minipbx.store.webrepos import CdrFilter
from minipbx.web.api.crud import tenant_scope
from minipbx.web.auth import ConsoleAdmin, Ctx
from minipbx.web.console.render import page, query

router = APIRouter()
PAGE_SIZES = (25, 50, 100, 250)
DISPOSITIONS = tuple(d.value for d in Disposition)


def _moment(text: str, name: str, errors: dict[str, str]) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        errors[name] = "a date and time like 2026-05-01T09:30 (UTC)"
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/cdrs", response_class=HTMLResponse)
async def search(
    request: Request,
    ctx: Ctx,
    principal: ConsoleAdmin,
    since: str = "",
    until: str = "",
    caller: str = "",
    called: str = "",
    disposition: str = "",
    tenant_id: str = "",
    before_id: int | None = None,
    limit: int = 50,
) -> Response:
    """Records matching the filters, newest first, a page at a time."""
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {
        "since": since.strip()[:40],
        "until": until.strip()[:40],
        "caller": caller.strip()[:64],
        "called": called.strip()[:64],
        "disposition": disposition if disposition in DISPOSITIONS else "",
        "tenant_id": tenant_id if tenant_id.isdigit() and principal.is_system else "",
    }
    if disposition and disposition not in DISPOSITIONS:
        errors["disposition"] = "one of " + ", ".join(DISPOSITIONS)
    limit = limit if limit in PAGE_SIZES else 50
    where = CdrFilter(
        tenant_id=tenant_scope(
            principal, int(filters["tenant_id"]) if filters["tenant_id"] else None
        ),
        since=_moment(filters["since"], "since", errors),
        until=_moment(filters["until"], "until", errors),
        caller=filters["caller"] or None,
        called=filters["called"] or None,
        disposition=filters["disposition"] or None,
    )
    items = [] if errors else await ctx.web.search_cdrs(where, before_id=before_id, limit=limit)
    total = 0 if errors else await ctx.web.count_cdrs(where)
    next_before = items[-1].id if len(items) == limit else None
    return await page(
        request,
        principal,
        "cdrs.html",
        422 if errors else 200,
        items=items,
        total=total,
        filters=filters,
        errors=errors,
        dispositions=DISPOSITIONS,
        limit=limit,
        page_sizes=PAGE_SIZES,
        first_page=before_id is None,
        next_query=query(**filters, limit=limit, before_id=next_before) if next_before else "",
        first_query=query(**filters, limit=limit),
        export_query=query(**filters),
        tenants=await ctx.tenants.list_tenants() if principal.is_system else [],
    )
