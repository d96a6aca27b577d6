"""Rendering console pages: the Jinja2 environment, the navigation, flash messages.

Every page gets the admin (``me``), the session's CSRF token (``csrf``, put in every form
as ``csrf_token``), the navigation for the admin's role and the tenants' domains by id.
Pages never embed scripts or styles: the Content-Security-Policy allows only files served
from ``/static``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from minipbx import __version__
from minipbx.web.auth import Principal, csrf_for, get_ctx

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

#: Messages a redirect may ask for with ``?done=<key>`` (fixed texts: no reflected input).
FLASH = {
    "created": "Created.",
    "saved": "Saved.",
    "deleted": "Deleted.",
    "hungup": "The call was hung up.",
    "imported": "Imported.",
    "revoked": "The token was revoked.",
    "gone": "That call has already ended.",
    "moved": "The message was moved.",
    "password": "Your password was changed: every session has ended. Please log in again.",
}


@dataclass(frozen=True, slots=True)
class NavItem:
    """A link of the navigation bar."""

    path: str
    label: str
    system_only: bool = False


NAV = (
    NavItem("/", "Dashboard"),
    NavItem("/users", "Users"),
    NavItem("/voicemail", "Voicemail"),
    NavItem("/prompts", "Prompts"),
    NavItem("/trunks", "Trunks"),
    NavItem("/dial-plans", "Dial plans"),
    NavItem("/ivr-menus", "Auto attendant"),
    NavItem("/services", "Services"),
    NavItem("/rate-tables", "Rates"),
    NavItem("/cards", "Cards"),
    NavItem("/cdrs", "Call records"),
    NavItem("/settings", "Settings"),
    NavItem("/tenants", "Tenants"),
    NavItem("/admins", "Admins", system_only=True),
    NavItem("/tokens", "API tokens"),
)


def nav_for(principal: Principal) -> list[NavItem]:
    """The links ``principal`` may follow."""
    return [item for item in NAV if principal.is_system or not item.system_only]


def show(value: Any) -> str:
    """A value as a table cell shows it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def when(timestamp: float | None) -> str:
    """A wall-clock timestamp as UTC text."""
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def query(**params: Any) -> str:
    """``?a=1&b=2`` of the non-empty ``params``."""
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(given) if given else ""


templates.env.filters["show"] = show
templates.env.filters["when"] = when
templates.env.globals["query"] = query
templates.env.globals["version"] = __version__


async def page(
    request: Request,
    principal: Principal | None,
    template: str,
    code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """The page ``template`` for ``principal`` (None: logged out) with ``values``."""
    ctx = get_ctx(request)
    common: dict[str, Any] = {
        "me": principal,
        "nav": nav_for(principal) if principal is not None else [],
        "csrf": csrf_for(ctx, principal) if principal is not None else "",
        "flash": FLASH.get(request.query_params.get("done", "")),
        "path": request.url.path,
        "tenant_names": {},
    }
    if principal is not None and principal.is_system:
        common["tenant_names"] = {t.id: t.domain for t in await ctx.tenants.list_tenants()}
    return templates.TemplateResponse(request, template, {**common, **values}, status_code=code)


def redirect(path: str, done: str | None = None) -> RedirectResponse:
    """303 to ``path`` (a console path), showing the :data:`FLASH` message ``done``."""
    if done is not None:
        path += ("&" if "?" in path else "?") + urlencode({"done": done})
    return RedirectResponse(path, 303)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site, else the dashboard."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
