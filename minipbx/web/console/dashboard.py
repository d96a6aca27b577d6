"""The dashboard: registrations, calls in progress (with hang-up), calls per hour and
answer ratio over the last day, trunk registrations, CDR shipping.

Live views come from the API's own endpoint functions (same tenant scoping).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.store import NotFoundError
from minipbx.store.webrepos import CdrFilter
from minipbx.web.api import live, trunks
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
HOURS = 24
PAGE = 1000
MAX_PAGES = 100  # the chart reads at most this many pages of records (100 000 calls)
CHART_W, CHART_H, BAR_GAP = 720, 180, 3


@dataclass(frozen=True, slots=True)
class Hour:
    """One bar of the chart: calls that ended in the hour starting at ``start``."""

    start: datetime
    calls: int
    answered: int

    @property
    def ratio(self) -> float | None:
        """Answered calls / calls (None without calls)."""
        return self.answered / self.calls if self.calls else None


@dataclass(frozen=True, slots=True)
class Bar:
    """Geometry of one bar (SVG user units)."""

    x: float
    width: float
    total_y: float
    total_h: float
    answered_y: float
    answered_h: float
    label: str
    title: str


async def hourly(ctx: WebContext, tenant_id: int | None, now: datetime) -> list[Hour]:
    """Calls and answered calls per hour over the last :data:`HOURS` hours (oldest first)."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=HOURS)
    calls = [0] * HOURS
    answered = [0] * HOURS
    where = CdrFilter(tenant_id=tenant_id, since=start)
    after = 0
    for _ in range(MAX_PAGES):
        records = await ctx.web.search_cdrs(where, after_id=after, limit=PAGE)
        for record in records:
            ended = record.end_time
            ended = ended if ended.tzinfo else ended.replace(tzinfo=UTC)
            slot = int((ended - start).total_seconds() // 3600)
            if 0 <= slot < HOURS:
                calls[slot] += 1
                answered[slot] += record.disposition == "ANSWERED"
        if len(records) < PAGE:
            break
        after = records[-1].id or after
    return [Hour(start + timedelta(hours=i), calls[i], answered[i]) for i in range(HOURS)]


def bars(hours: list[Hour]) -> tuple[list[Bar], int]:
    """The chart's bars (calls, and the answered part) and its scale's top value."""
    top = max([h.calls for h in hours] + [1])
    width = CHART_W / len(hours)
    made = []
    for i, hour in enumerate(hours):
        total_h = CHART_H * hour.calls / top
        answered_h = CHART_H * hour.answered / top
        ratio = "" if hour.ratio is None else f", {hour.ratio:.0%} answered"
        made.append(
            Bar(
                x=round(i * width + BAR_GAP / 2, 2),
                width=round(width - BAR_GAP, 2),
                total_y=round(CHART_H - total_h, 2),
                total_h=round(total_h, 2),
                answered_y=round(CHART_H - answered_h, 2),
                answered_h=round(answered_h, 2),
                label=hour.start.strftime("%H") if i % 3 == 0 else "",
                title=f"{hour.start:%H:00} UTC: {hour.calls} calls{ratio}",
            )
        )
    return made, top


async def _chart(ctx: WebContext, principal: Principal) -> dict[str, object]:
    hours = await hourly(ctx, principal.tenant_id, datetime.now(UTC))
    made, top = bars(hours)
    total = sum(h.calls for h in hours)
    answered = sum(h.answered for h in hours)
    return {
        "hours": hours,
        "bars": made,
        "top": top,
        "total": total,
        "answered": answered,
        "ratio": None if not total else answered / total,
        "chart_w": CHART_W,
        "chart_h": CHART_H,
    }


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """The dashboard."""
    return await page(
        request,
        principal,
        "dashboard.html",
        status=await live.status(ctx, principal),
        registrations=await live.registrations(ctx, principal, None, None),
        calls=await live.calls(ctx, principal, None),
        trunks=await trunks.list_registrations(ctx, principal, None),
        chart=await _chart(ctx, principal),
        now=time.time(),
    )


CallId = Annotated[str, Form(max_length=128)]


@router.get("/calls/{call_id}/hangup", response_class=HTMLResponse)
async def hangup_confirm(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, call_id: str
) -> Response:
    """Confirm hanging up a call."""
    try:
        call = await live.get_call(ctx, principal, call_id[:128])
    except NotFoundError:
        return redirect("/", "gone")
    return await page(
        request,
        principal,
        "confirm.html",
        title="Hang up call",
        question=f"Hang up the call from {call['caller']} to {call['callee']}?",
        action=f"/calls/{call_id}/hangup",
        button="Hang up",
        back="/",
    )


@router.post("/calls/{call_id}/hangup")
async def hangup(ctx: Ctx, principal: ConsoleAdmin, call_id: str) -> Response:
    """Hang up a call (BYE or CANCEL to both sides)."""
    try:
        await live.hang_up(ctx, principal, call_id[:128])
    except NotFoundError:
        return redirect("/", "gone")
    return redirect("/", "hungup")
