"""Voicemail messages: the list (by tenant, user and folder, newest first, a page at a time).

The list calls the API's search; every message links to its page (the generic edit page
of :mod:`~minipbx.web.console.crud_pages`: play, download, move to another folder,
delete after a confirmation). Playing and downloading use the API's audio endpoint (the
session cookie authenticates GETs there; same origin, as the CSP wants).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.store.pbxrecords import VOICEMAIL_FOLDERS
from minipbx.web.api import voicemail
from minipbx.web.api.crud import tenant_scope
from minipbx.web.api.schemas import RowId
from minipbx.web.api.users import USERS
from minipbx.web.auth import ConsoleAdmin, Ctx
from minipbx.web.console.crud_pages import SECTIONS
from minipbx.web.console.render import page, query, redirect

router = APIRouter()
PER_PAGE = 50
SECTION = next(s for s in SECTIONS if s.res is voicemail.VOICEMAIL)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


@router.get("/voicemail", response_class=HTMLResponse)
async def messages(
    request: Request,
    ctx: Ctx,
    principal: ConsoleAdmin,
    user_id: str = "",
    folder: str = "",
    tenant_id: str = "",
    before_id: int | None = None,
) -> Response:
    """The messages matching the filters, newest first (an unknown user: 404)."""
    errors: dict[str, str] = {}
    if folder and folder not in VOICEMAIL_FOLDERS:
        errors["folder"] = "one of " + ", ".join(VOICEMAIL_FOLDERS)
    if user_id and _number(user_id) is None:
        errors["user_id"] = "choose a user from the list"
    filters = {
        "user_id": str(_number(user_id) or ""),
        "folder": folder if folder in VOICEMAIL_FOLDERS else "",
        "tenant_id": str(_number(tenant_id) or "") if principal.is_system else "",
    }
    scope = tenant_scope(principal, _number(filters["tenant_id"]))
    found: dict[str, Any] = {"items": [], "next_before_id": None}
    if not errors:
        found = await voicemail.search(
            ctx,
            principal,
            tenant_id=scope,
            user_id=_number(filters["user_id"]),
            folder=filters["folder"] or None,
            before_id=before_id if before_id and before_id > 0 else None,
            limit=PER_PAGE,
        )
    users = await USERS.list_rows(ctx, scope)
    next_before = found["next_before_id"]
    return await page(
        request,
        principal,
        "voicemail.html",
        422 if errors else 200,
        section=SECTION,
        items=found["items"],
        users=users,
        user_names={u.id: f"{u.extension}@{u.domain}" for u in users},
        folders=VOICEMAIL_FOLDERS,
        filters=filters,
        errors=errors,
        tenants=await ctx.tenants.list_tenants() if principal.is_system else [],
        first_page=before_id is None,
        first_query=query(**filters),
        next_query=query(**filters, before_id=next_before) if next_before else "",
    )


@router.get("/users/{row_id}/voicemail")
async def of_user(row_id: RowId, _: ConsoleAdmin) -> Response:
    """A user's messages (the list, filtered)."""
    return redirect(f"/voicemail{query(user_id=row_id)}")
