"""Rate tables and their rates (by prefix), with CSV import and export, and quotes (what a
call costs: :mod:`minipbx.pbx.charging`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import Field

from minipbx.pbx.charging import RateIndex, RateRule, charge, max_seconds
from minipbx.store.pbxrecords import RATE_CHECKS, RATE_TABLE_CHECKS, RateRecord, RateTableRecord
from minipbx.web.api.crud import crud_router, named_resource, not_found, owned
from minipbx.web.api.csvio import CSV_ANSWER, CSV_BODY, download, once, read_csv_body
from minipbx.web.api.schemas import (
    Created,
    OutModel,
    RowId,
    crud_models,
    input_model,
    list_of,
    record_model,
)
from minipbx.web.auth import Admin, Ctx

RateOut = record_model("Rate", RateRecord)
RateCreate = input_model(
    "RateCreate",
    RateRecord,
    RATE_CHECKS,
    required=("prefix", "price_per_minute"),
    doc="A rate: the price of calls to numbers starting with ``prefix``.",
)

RATE_TABLES = named_resource(
    lambda ctx: ctx.rates,
    what="rate table",
    path="/rate-tables",
    tag="rates",
    models=crud_models("RateTable", RateTableRecord, RATE_TABLE_CHECKS),
)
rates_router = APIRouter(prefix="/rate-tables", tags=["rates"])


@rates_router.get("/{row_id}/rates", response_model=list_of(RateOut))
async def list_rates(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
    """The table's rates, by prefix and start."""
    await owned(ctx, principal, RATE_TABLES, row_id)
    return await ctx.rates.list_rates(row_id)


@rates_router.post("/{row_id}/rates", response_model=RateOut, status_code=201)
async def add_rate(ctx: Ctx, principal: Admin, row_id: RowId, body: RateCreate) -> Any:  # type: ignore[valid-type]
    """Add a rate (409 if the table has that prefix with that start already)."""
    await owned(ctx, principal, RATE_TABLES, row_id)
    fields = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    return await ctx.rates.add_rate(
        row_id, fields.pop("prefix"), fields.pop("price_per_minute"), **fields
    )


@rates_router.delete("/{row_id}/rates/{rate_id}", status_code=204)
async def remove_rate(ctx: Ctx, principal: Admin, row_id: RowId, rate_id: RowId) -> Response:
    """Delete one rate of the table."""
    await owned(ctx, principal, RATE_TABLES, row_id)
    if all(rate.id != rate_id for rate in await ctx.rates.list_rates(row_id)):
        raise not_found("rate", rate_id)
    await ctx.rates.remove_rate(rate_id)
    return Response(status_code=204)


@rates_router.get("/{row_id}/rates.csv", response_class=Response, responses=CSV_ANSWER)
async def export_rates(ctx: Ctx, principal: Admin, row_id: RowId) -> Response:
    """The table's rates as CSV (the import format)."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    return download(once(await ctx.rates.export_csv(row_id)), f"rates-{table.name}.csv")


@rates_router.post("/{row_id}/rates.csv", response_model=Created, openapi_extra=CSV_BODY)
async def import_rates(
    ctx: Ctx,
    principal: Admin,
    row_id: RowId,
    request: Request,
    replace: Annotated[bool, Query(description="The file becomes the whole rate list")] = False,
) -> Any:
    """Load rates from a CSV body (header ``prefix,price_per_minute,...``), all or nothing;
    422 lists every bad line."""
    await owned(ctx, principal, RATE_TABLES, row_id)
    text = await read_csv_body(request)
    result = await ctx.rates.import_csv(row_id, text, source="upload", replace=replace)
    return Created(created=result.created, updated=result.updated)


class QuoteOut(OutModel):
    """What a call to ``number`` costs under the table (docs/billing.md: the rules)."""

    number: str
    rate: RateOut  # type: ignore[valid-type]
    seconds: int = Field(description="The answered duration priced")
    billed_seconds: int = Field(description="After free seconds, minimum and increments")
    fee: Decimal
    duration_cost: Decimal
    total: Decimal
    currency: str
    max_seconds: int | None = Field(
        None,
        description="With ``balance``: the longest call it pays for (null: unlimited, "
        "-1: not even the connection fee)",
    )


@rates_router.get("/{row_id}/quote", response_model=QuoteOut)
async def quote(
    ctx: Ctx,
    principal: Admin,
    row_id: RowId,
    number: Annotated[str, Query(pattern=r"^\+?[0-9]{1,32}$", description="The number called")],
    seconds: Annotated[int, Query(ge=0, le=86_400, description="Answered duration")] = 60,
    balance: Annotated[
        Decimal | None,
        Query(ge=0, lt=10**10, decimal_places=6, description="Money available"),
    ] = None,
    at: Annotated[
        datetime | None, Query(description="When (ISO 8601, UTC without an offset; default now)")
    ] = None,
) -> Any:
    """The rate the table applies to ``number`` (longest prefix valid ``at``) and the
    charge of a call answered ``seconds``; 404 when no rate covers it (such calls are
    refused)."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    if at is None:
        when = datetime.now(UTC)
    else:  # a time without an offset is UTC
        when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    records = {r.id: r for r in await ctx.rates.list_rates(row_id)}
    rule = RateIndex(RateRule.of(r) for r in records.values()).lookup(number, when)
    if rule is None or rule.id is None:
        raise HTTPException(404, f"no rate of table {row_id} covers {number}")
    cost = charge(seconds, rule)
    longest = max_seconds(balance, rule) if balance is not None else None
    return QuoteOut(
        number=number,
        rate=records[rule.id],
        seconds=seconds,
        billed_seconds=cost.billed_seconds,
        fee=cost.fee,
        duration_cost=cost.duration_cost,
        total=cost.total,
        currency=table.currency,
        max_seconds=longest,
    )


router = APIRouter()
router.include_router(rates_router)
router.include_router(crud_router(RATE_TABLES))
