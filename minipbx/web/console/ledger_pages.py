"""Balances of users and calling cards: the ledger entries and a form to add one.

The pages use the API's request model (:class:`~minipbx.web.api.ledger.LedgerIn`), its
tenant check (:func:`~minipbx.web.api.crud.owned`) and the store's ledger, as the API's
``/users/{id}/ledger`` and ``/cards/{id}/ledger`` do. From the console an admin tops up,
refunds or charges; reservations belong to calls.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.store.pbxrecords import LEDGER_CHECKS
from minipbx.web.api.cards import CARDS
from minipbx.web.api.crud import owned
from minipbx.web.api.ledger import LedgerIn
from minipbx.web.api.schemas import RowId
from minipbx.web.api.users import USERS
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.crud_pages import SECTIONS, Section, present
from minipbx.web.console.forms import EXPECTED, errors_of, fields_of, parse, shown, validated
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
SHOWN_ENTRIES = 200
KINDS = (("topup", "top-up (adds)"), ("refund", "refund (adds)"), ("charge", "charge (takes)"))
FIELDS = [
    replace(f, help="top-up and refund: zero or more; charge: zero or less (e.g. -5)")
    if f.name == "amount"
    else f
    for f in fields_of(LedgerIn, choices={"kind": KINDS})
]


async def _ledger_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    section: Section,
    owner: str,
    record: Any,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    row = await present(ctx, section.res, record)
    entries = await ctx.ledger.list_entries(limit=SHOWN_ENTRIES, **{owner: record.id})
    return await page(
        request,
        principal,
        "ledger.html",
        422 if errors else 200,
        section=section,
        row=row,
        title=f"Balance of {section.what} {section.name_of(row)}",
        entries=entries,
        fields=FIELDS,
        values=values or {"kind": "topup"},
        errors=errors or {},
    )


def add_ledger_routes(section: Section, owner: str) -> None:
    """``/<slug>/{id}/ledger`` of ``section``'s objects; ``owner``: the ledger's column
    naming them (``user_id`` or ``card_id``)."""
    res = section.res
    path = f"/{section.slug}/{{row_id}}/ledger"

    @router.get(path, response_class=HTMLResponse, name=f"{section.slug}-ledger")
    async def entries(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
    ) -> Response:
        record = await owned(ctx, principal, res, row_id)
        return await _ledger_page(request, ctx, principal, section, owner, record)

    @router.post(path, response_class=HTMLResponse)
    async def add(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
        record = await owned(ctx, principal, res, row_id)
        data = parse(await request.form(), FIELDS, new=True)
        body, errors = validated(LedgerIn, LEDGER_CHECKS, data)
        if isinstance(body, LedgerIn):
            if body.kind not in dict(KINDS):
                errors = {"kind": "one of " + ", ".join(dict(KINDS))}
            else:
                try:
                    await ctx.ledger.add(
                        body.kind, body.amount, note=body.note, **{owner: record.id}
                    )
                except EXPECTED as exc:
                    errors = errors_of(exc)
        if errors:
            return await _ledger_page(
                request, ctx, principal, section, owner, record, values=shown(data), errors=errors
            )
        return redirect(f"/{section.slug}/{row_id}/ledger", "created")


for _res, _owner in ((USERS, "user_id"), (CARDS, "card_id")):
    add_ledger_routes(next(s for s in SECTIONS if s.res is _res), _owner)
