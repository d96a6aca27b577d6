"""Balances of users and calling cards: the ledger entries that change them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from minipbx.store.pbxrecords import LEDGER_KINDS, LedgerRecord
from minipbx.web.api.crud import Resource, owned
from minipbx.web.api.schemas import ApiModel, RowId, Text, list_of, record_model
from minipbx.web.auth import Admin, Ctx

LedgerOut = record_model("LedgerEntry", LedgerRecord)


class LedgerIn(ApiModel):
    """A balance change: ``topup``/``refund``/``release`` add (amount >= 0),
    ``charge``/``reserve`` take (amount <= 0)."""

    kind: Literal[LEDGER_KINDS]  # type: ignore[valid-type]
    amount: Decimal
    note: Text = ""


def _owner(owner: str, row_id: int) -> dict[str, int | None]:
    ids: dict[str, int | None] = {"user_id": None, "card_id": None}
    ids[owner] = row_id
    return ids


def ledger_router(res: Resource[Any], owner: str) -> APIRouter:
    """``GET`` and ``POST`` ``<path>/{id}/ledger`` for the objects of ``res``; ``owner`` is
    the ledger's column naming them (``user_id`` or ``card_id``)."""
    router = APIRouter(prefix=res.path, tags=[res.tag])

    @router.get("/{row_id}/ledger", response_model=list_of(LedgerOut), summary="Balance changes")
    async def entries(
        ctx: Ctx,
        principal: Admin,
        row_id: RowId,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> Any:
        """The newest balance changes, newest first."""
        await owned(ctx, principal, res, row_id)
        return await ctx.ledger.list_entries(limit=limit, **_owner(owner, row_id))

    @router.post(
        "/{row_id}/ledger", response_model=LedgerOut, status_code=201, summary="Change the balance"
    )
    async def add(ctx: Ctx, principal: Admin, row_id: RowId, body: LedgerIn) -> Any:
        """Add a ledger entry; the balance follows (one transaction)."""
        await owned(ctx, principal, res, row_id)
        ids = _owner(owner, row_id)
        return await ctx.ledger.add(
            body.kind, body.amount, note=body.note, user_id=ids["user_id"], card_id=ids["card_id"]
        )

    return router
