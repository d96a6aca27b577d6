"""Calling cards: single cards, random batches, CSV export, and their balances.

PINs are write-only in the JSON answers, except right after a batch generated them; the
CSV export includes them on request (``include_pins=true``: to print the cards).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from minipbx.store.billing import MAX_BATCH
from minipbx.store.pbxrecords import CARD_CHECKS, CARD_STATUSES, CardRecord
from minipbx.web.api.crud import crud_router, named_resource, target_tenant, tenant_scope
from minipbx.web.api.csvio import CSV_ANSWER, csv_text, download, once
from minipbx.web.api.ledger import ledger_router
from minipbx.web.api.schemas import (
    ApiModel,
    RefId,
    TenantQuery,
    Text,
    crud_models,
    list_of,
    record_model,
)
from minipbx.web.auth import Admin, Ctx

CardWithPin = record_model("CardWithPin", CardRecord, doc="A new card, with its PIN.")
EXPORT_COLUMNS = (
    "id",
    "tenant_id",
    "number",
    "pin",
    "balance",
    "currency",
    "status",
    "expires_at",
    "rate_table_id",
    "dial_plan_id",
    "created_at",
    "last_used_at",
)


class CardBatch(ApiModel):
    """Cards to generate: random numbers unused in the tenant, random PINs."""

    count: Annotated[int, Field(ge=1, le=MAX_BATCH)]
    number_len: Annotated[int, Field(ge=4, le=32)] = 12
    pin_len: Annotated[int, Field(ge=4, le=16)] = 6
    balance: Decimal = Decimal(0)
    currency: Text = ""
    rate_table_id: RefId | None = None
    dial_plan_id: RefId | None = None
    status: Text = "active"
    tenant_id: RefId | None = None


CARDS = named_resource(
    lambda ctx: ctx.cards,
    what="card",
    path="/cards",
    tag="cards",
    models=crud_models(
        "Card",
        CardRecord,
        CARD_CHECKS,
        required=("number", "pin"),
        hidden=("pin",),
        fixed=("balance",),  # changes through the ledger; the opening balance is a topup
        doc="A calling card (the PIN is write-only).",
    ),
)
extra_router = APIRouter(prefix="/cards", tags=["cards"])


@extra_router.post("/batch", response_model=list_of(CardWithPin), status_code=201)
async def generate(ctx: Ctx, principal: Admin, body: CardBatch) -> Any:
    """Generate ``count`` cards; the answer is the only place their PINs appear in JSON."""
    fields = body.model_dump(exclude={"tenant_id", "count", "number_len", "pin_len"})
    tenant = await target_tenant(ctx, principal, body.tenant_id)
    return await ctx.cards.generate_batch(
        tenant, body.count, body.number_len, body.pin_len, **fields
    )


@extra_router.get(".csv", response_class=Response, responses=CSV_ANSWER)
async def export_cards(
    ctx: Ctx,
    principal: Admin,
    tenant_id: TenantQuery = None,
    status: Annotated[str | None, Query(description=f"One of {', '.join(CARD_STATUSES)}")] = None,
    include_pins: bool = False,
) -> Any:
    """The cards as CSV (PINs only with ``include_pins=true``)."""
    cards = await ctx.cards.list_by_tenant(tenant_scope(principal, tenant_id))
    columns = [c for c in EXPORT_COLUMNS if include_pins or c != "pin"]
    rows = (
        [getattr(card, column) for column in columns]
        for card in cards
        if status is None or card.status == status
    )
    return download(once(csv_text(columns, rows)), "cards.csv")


router = APIRouter()
router.include_router(extra_router)
router.include_router(crud_router(CARDS))
router.include_router(ledger_router(CARDS, "card_id"))
