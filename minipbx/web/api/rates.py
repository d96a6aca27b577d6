"""Rate tables and their rates (by prefix), with CSV import and export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from minipbx.store.pbxrecords import RATE_CHECKS, RATE_TABLE_CHECKS, RateRecord, RateTableRecord
from minipbx.web.api.crud import crud_router, named_resource, not_found, owned
from minipbx.web.api.csvio import CSV_ANSWER, CSV_BODY, download, once, read_csv_body
from minipbx.web.api.schemas import (
    Created,
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


router = APIRouter()
router.include_router(rates_router)
router.include_router(crud_router(RATE_TABLES))
