"""Call detail records: search with filters and paging, one record, CSV/JSON download."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response

from minipbx.pbx.call import Disposition
from minipbx.store import NotFoundError
from minipbx.store.cdrs import CDR_FIELDS, CdrRecord
from minipbx.store.cdrs_export import export_row
from minipbx.store.webrepos import CdrFilter
from minipbx.web.api.crud import check_tenant, not_found, tenant_scope
from minipbx.web.api.csvio import CSV_ANSWER, CSV_TYPE, download
from minipbx.web.api.schemas import OutModel, RowId, TenantQuery, record_model, utc
from minipbx.web.auth import Admin, Ctx
from minipbx.web.context import WebContext

PAGE = 1000
CdrOut = record_model("Cdr", CdrRecord)
DispositionName = Literal[tuple(d.value for d in Disposition)]  # type: ignore[valid-type]


class CdrPage(OutModel):
    """A page of records, newest first; ask for the next with ``before_id``."""

    items: list[CdrOut]  # type: ignore[valid-type]
    next_before_id: int | None
    total: int | None = None


async def cdr_filter(
    principal: Admin,
    tenant_id: TenantQuery = None,
    since: Annotated[
        datetime | None, Query(description="Ended at or after (UTC if no offset)")
    ] = None,
    until: Annotated[datetime | None, Query(description="Ended before (UTC if no offset)")] = None,
    caller: Annotated[
        str | None, Query(max_length=64, description="Caller number contains")
    ] = None,
    called: Annotated[
        str | None, Query(max_length=64, description="Called number contains")
    ] = None,
    disposition: DispositionName | None = None,  # type: ignore[valid-type]
) -> CdrFilter:
    """The search filters of a request (a tenant admin always searches its own tenant)."""
    return CdrFilter(
        tenant_id=tenant_scope(principal, tenant_id),
        since=utc(since),
        until=utc(until),
        caller=caller or None,
        called=called or None,
        disposition=disposition,
    )


Filter = Annotated[CdrFilter, Depends(cdr_filter)]
router = APIRouter(prefix="/cdrs", tags=["call records"])


@router.get("", response_model=CdrPage)
async def search(
    where: Filter,
    ctx: Ctx,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
    count: Annotated[bool, Query(description="Also count every matching record")] = False,
) -> Any:
    """Records matching the filters, newest first."""
    items = await ctx.web.search_cdrs(where, before_id=before_id, limit=limit)
    total = await ctx.web.count_cdrs(where) if count else None
    last = items[-1].id if len(items) == limit else None
    return {"items": items, "next_before_id": last, "total": total}


async def _pages(ctx: WebContext, where: CdrFilter) -> AsyncIterator[list[CdrRecord]]:
    after = 0
    while True:
        page = await ctx.web.search_cdrs(where, after_id=after, limit=PAGE)
        if not page:
            return
        yield page
        after = page[-1].id or after


async def _csv(ctx: WebContext, where: CdrFilter) -> AsyncIterator[str]:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n")
    writer.writeheader()
    async for page in _pages(ctx, where):
        for record in page:
            writer.writerow(export_row(record))
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


async def _json(ctx: WebContext, where: CdrFilter) -> AsyncIterator[str]:
    separator = "["
    async for page in _pages(ctx, where):
        for record in page:
            yield separator + "\n" + json.dumps(export_row(record), ensure_ascii=False)
            separator = ","
    yield "[]\n" if separator == "[" else "\n]\n"


@router.get("/export", response_class=Response, responses=CSV_ANSWER)
async def export(
    where: Filter,
    ctx: Ctx,
    format: Literal["csv", "json"] = "csv",
) -> Response:
    """Every matching record, oldest first, as CSV (columns as ``minipbx cdr export``)
    or a JSON array; streamed."""
    if format == "json":
        return download(_json(ctx, where), "cdrs.json", "application/json")
    return download(_csv(ctx, where), "cdrs.csv", CSV_TYPE)


@router.get("/{row_id}", response_model=CdrOut)
async def get_one(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
    """One record."""
    try:
        record = await ctx.web.get_cdr(row_id)
    except NotFoundError:
        raise not_found("call record", row_id) from None
    check_tenant(principal, record.tenant_id, "call record", row_id)
    return record
