"""A rate table's rates (add, remove, CSV upload and download) and card batches.

Downloads link to the API's CSV endpoints (the session cookie authenticates GETs there);
changes go through the API's endpoint functions and request models.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from minipbx.web.api import cards, rates
from minipbx.web.api.cards import CardBatch
from minipbx.web.api.crud import owned
from minipbx.web.api.csvio import MAX_UPLOAD
from minipbx.web.api.rates import RATE_TABLES, RateCreate
from minipbx.web.api.schemas import RowId
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.crud_pages import reference_choices
from minipbx.web.console.forms import (
    EXPECTED,
    GENERAL,
    Field,
    attempt,
    check,
    errors_of,
    fields_of,
    parse,
    shown,
)
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
RATE_FIELDS = fields_of(RateCreate)


async def _rates_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    table: Any,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    upload_errors: dict[str, str] | None = None,
) -> Response:
    return await page(
        request,
        principal,
        "rates.html",
        422 if errors or upload_errors else 200,
        table=table,
        rates=await ctx.rates.list_rates(table.id),
        fields=RATE_FIELDS,
        values=values or {},
        errors=errors or {},
        upload_errors=upload_errors or {},
    )


@router.get("/rate-tables/{row_id}/rates", response_class=HTMLResponse)
async def rates_page(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
) -> Response:
    """The rates of a table, a form to add one, CSV upload and download."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    return await _rates_page(request, ctx, principal, table)


@router.post("/rate-tables/{row_id}/rates", response_class=HTMLResponse)
async def add_rate(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """Add a rate."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    data = parse(await request.form(), RATE_FIELDS, new=True)
    try:
        await rates.add_rate(ctx, principal, row_id, check(RateCreate, data))
    except EXPECTED as exc:
        return await _rates_page(
            request, ctx, principal, table, values=shown(data), errors=errors_of(exc)
        )
    return redirect(f"/rate-tables/{row_id}/rates", "created")


@router.get("/rate-tables/{row_id}/rates/{rate_id}/delete", response_class=HTMLResponse)
async def remove_rate_page(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId, rate_id: RowId
) -> Response:
    """Confirm removing a rate."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    found = [r for r in await ctx.rates.list_rates(row_id) if r.id == rate_id]
    prefix = found[0].prefix if found else "?"
    return await page(
        request,
        principal,
        "confirm.html",
        title="Delete rate",
        question=f"Delete the rate for prefix {prefix or '(any)'} of {table.name}?",
        action=f"/rate-tables/{row_id}/rates/{rate_id}/delete",
        button="Delete",
        back=f"/rate-tables/{row_id}/rates",
    )


@router.post("/rate-tables/{row_id}/rates/{rate_id}/delete")
async def remove_rate(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId, rate_id: RowId
) -> Response:
    """Remove a rate (after the confirmation page)."""
    if (await request.form()).get("confirm") != "yes":
        return redirect(f"/rate-tables/{row_id}/rates/{rate_id}/delete")
    await rates.remove_rate(ctx, principal, row_id, rate_id)
    return redirect(f"/rate-tables/{row_id}/rates", "deleted")


@router.post("/rate-tables/{row_id}/rates/upload", response_class=HTMLResponse)
async def upload_rates(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
) -> Response:
    """Import rates from an uploaded CSV file (replacing them needs the confirm box)."""
    table = await owned(ctx, principal, RATE_TABLES, row_id)
    form = await request.form()
    file = form.get("file")
    replace = form.get("replace") is not None
    problem = ""
    text = ""
    if not isinstance(file, UploadFile) or not file.filename:
        problem = "choose a CSV file"
    elif replace and form.get("confirm_replace") is None:
        problem = "tick \u201cconfirm replacing\u201d to replace every rate of the table"
    else:
        body = await file.read(MAX_UPLOAD + 1)
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        if len(body) > MAX_UPLOAD:
            problem = f"larger than {MAX_UPLOAD // (1024 * 1024)} MiB"
    if problem:
        return await _rates_page(request, ctx, principal, table, upload_errors={"file": problem})
    _, errors = await attempt(
        ctx.rates.import_csv(row_id, text, source=file.filename or "upload", replace=replace)  # type: ignore[union-attr]
    )
    if errors:
        return await _rates_page(
            request, ctx, principal, table, upload_errors={"file": errors.popitem()[1]}
        )
    return redirect(f"/rate-tables/{row_id}/rates", "imported")


# --- card batches --------------------------------------------------------------------------


async def _batch_fields(ctx: WebContext, principal: Principal) -> list[Field]:
    skip = () if principal.is_system else ("tenant_id",)
    choices = await reference_choices(ctx, principal)
    return fields_of(CardBatch, choices=choices, skip=skip)


@router.get("/cards/batch", response_class=HTMLResponse)
async def batch_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """The form to generate a batch of cards."""
    fields = await _batch_fields(ctx, principal)
    defaults = {"count": "10", "number_len": "12", "pin_len": "6", "status": "active"}
    return await page(
        request, principal, "batch.html", fields=fields, values=defaults, errors={}, made=[]
    )


@router.post("/cards/batch", response_class=HTMLResponse)
async def batch(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Generate the cards and show them with their PINs (this once)."""
    fields = await _batch_fields(ctx, principal)
    data = parse(await request.form(), fields, new=True)
    errors: dict[str, str] = {}
    made: list[Any] = []
    try:
        body = check(CardBatch, data)
        assert isinstance(body, CardBatch)
        made = await cards.generate(ctx, principal, body)
    except EXPECTED as exc:
        errors = errors_of(exc)
    if not errors and not made:
        errors = {GENERAL: "no cards were generated"}
    return await page(
        request,
        principal,
        "batch.html",
        422 if errors else 201,
        fields=fields,
        values=shown(data),
        errors=errors,
        made=made,
    )
