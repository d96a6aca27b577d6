"""System settings (SMTP; process settings read-only), services, API tokens.

A system admin edits the system-wide settings, a tenant admin its tenant's overrides
(empty: the system-wide value applies), both through the API's settings functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.mail import MailError
from minipbx.store import InvalidInputError
from minipbx.store.records import check_email
from minipbx.web.api import admins
from minipbx.web.api.admins import TokenCreate
from minipbx.web.api.schemas import RowId
from minipbx.web.api.settings import (
    SettingsUpdate,
    deliver_test_mail,
    read_settings,
    write_settings,
)
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.forms import (
    EXPECTED,
    check,
    display,
    errors_of,
    fields_of,
    parse,
    shown,
)
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
SETTING_FIELDS = fields_of(SettingsUpdate)
#: Process settings shown read-only (they come from minipbx.toml / the command line).
PROCESS = (
    ("public_address", "Public address (NAT)"),
    ("bind", "Bind address"),
    ("sip_port", "SIP port"),
    ("tls_port", "SIP TLS port"),
    ("http_port", "Web port"),
    ("stun_port", "STUN port"),
    ("trusted_networks", "Trusted networks"),
    ("digest_algorithms", "Digest algorithms"),
    ("min_expires", "Min registration expiry (s)"),
    ("max_expires", "Max registration expiry (s)"),
    ("ring_timeout", "Ring timeout (s)"),
    ("cdr_retry_max", "CDR shipping retry max (s)"),
)


def process_settings(ctx: WebContext) -> list[tuple[str, Any]]:
    """The running PBX's process settings worth showing ([] without a running PBX)."""
    settings = getattr(getattr(ctx.live, "app", None), "settings", None)
    if settings is None:
        return []
    shown_values: list[tuple[str, Any]] = []
    for name, label in PROCESS:
        value = getattr(settings, name, None)
        if isinstance(value, tuple):
            value = ", ".join(str(v) for v in value)
        shown_values.append((label, value))
    shown_values.append(("CDR MySQL mirror", getattr(settings, "cdr_mysql_url", None) is not None))
    return shown_values


async def _settings_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    *,
    mail_result: dict[str, Any] | None = None,
    test_to: str = "",
    code: int | None = None,
) -> Response:
    current = await read_settings(ctx, principal.tenant_id)
    if values is None:
        values = {f.name: display(current.get(f.name)) for f in SETTING_FIELDS}
    return await page(
        request,
        principal,
        "settings.html",
        code or (422 if errors else 200),
        fields=SETTING_FIELDS,
        mail_result=mail_result,
        test_to=test_to,
        values=values,
        errors=errors or {},
        password_set=current.get("smtp_password_set", False),
        process=process_settings(ctx),
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """SMTP settings (the tenant's own for a tenant admin) and process settings."""
    return await _settings_page(request, ctx, principal)


@router.post("/settings", response_class=HTMLResponse)
async def save_settings(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Save the SMTP settings (an empty field removes the value; an empty password keeps
    the stored one unless "clear" is ticked)."""
    form = await request.form()
    data = parse(form, SETTING_FIELDS)
    if form.get("clear_smtp_password") is not None:
        data["smtp_password"] = None
    try:
        body = check(SettingsUpdate, data)
        await write_settings(ctx, principal.tenant_id, body.model_dump(exclude_unset=True))
    except EXPECTED as exc:
        return await _settings_page(request, ctx, principal, shown(data), errors_of(exc))
    return redirect("/settings", "saved")


@router.post("/settings/test-mail", response_class=HTMLResponse)
async def send_test_mail(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Send a test mail with the SMTP settings in force; the page says how it went
    (502 with the server's complaint when it failed)."""
    form = await request.form()
    raw = form.get("to")
    to = raw.strip() if isinstance(raw, str) else ""
    try:
        address = check_email(to)
        if address is None:
            raise InvalidInputError("enter the address to send the test mail to")
        server = await deliver_test_mail(ctx, principal.tenant_id, address)
    except InvalidInputError as exc:
        result, code = {"ok": False, "text": f"No test mail sent: {exc}"}, 422
    except MailError as exc:
        result, code = {"ok": False, "text": f"The test mail was not sent: {exc}"}, 502
    else:
        result, code = {"ok": True, "text": f"Test mail sent to {address} through {server}."}, 200
    return await _settings_page(request, ctx, principal, mail_result=result, test_to=to, code=code)


# --- services ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """A PBX service and whether it works yet."""

    name: str
    available: bool
    where: str
    note: str


SERVICES = (
    Service("Registration and extension calls", True, "/users", "Users register and call."),
    Service(
        "Dial plans, trunks and follow-me",
        True,
        "/dial-plans",
        "Rules route calls to extensions, trunks or another user's phones.",
    ),
    Service(
        "Call forwarding",
        True,
        "/users",
        "Always, busy, no answer and unreachable forwards per user (Forwarding fields).",
    ),
    Service(
        "Call levels and limits",
        True,
        "/users",
        "Call level, max call length, concurrent calls, free accounts; tenant quotas.",
    ),
    Service("Call records", True, "/cdrs", "Search, CSV download, MySQL mirror shipping."),
    Service(
        "Voicemail",
        False,
        "/users",
        "Settings and PINs are stored, but no voicemail answers yet: "
        "service calls get 501 until the media services arrive.",
    ),
    Service(
        "Auto attendant (IVR)",
        False,
        "",
        "Not available yet; dial plan 'service' rules answer 501.",
    ),
    Service(
        "Calling card service",
        False,
        "/cards",
        "Cards, PINs and balances are managed here; the calling card service "
        "(PIN prompt by phone) is not available yet.",
    ),
    Service(
        "Prepaid billing",
        False,
        "/rate-tables",
        "Rate tables, balances and the ledger are stored; charging calls against them "
        "is not available yet.",
    ),
    Service(
        "Feature codes (*90..*93 forwarding by phone)",
        False,
        "",
        "Not available yet; they come with the media services.",
    ),
)


@router.get("/services", response_class=HTMLResponse)
async def services(request: Request, principal: ConsoleAdmin) -> Response:
    """Which PBX services exist, and which do not yet."""
    return await page(request, principal, "services.html", services=SERVICES)


# --- API tokens ----------------------------------------------------------------------------


async def _tokens(ctx: WebContext, principal: Principal) -> list[dict[str, Any]]:
    owners = await ctx.admins.list_admins()
    if not principal.is_system:
        owners = [a for a in owners if a.id == principal.admin_id]
    found = []
    for admin in owners:
        for token in await ctx.admins.list_tokens(admin.username):
            found.append({"username": admin.username, "token": token})
    return found


async def _tokens_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    created: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    usernames = [a.username for a in await ctx.admins.list_admins()] if principal.is_system else []
    return await page(
        request,
        principal,
        "tokens.html",
        status,
        tokens=await _tokens(ctx, principal),
        created=created,
        errors=errors or {},
        usernames=usernames,
    )


@router.get("/tokens", response_class=HTMLResponse)
async def tokens_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """API tokens (a system admin's view: everyone's), and a form to create one."""
    return await _tokens_page(request, ctx, principal)


Text = Annotated[str, Form(max_length=255)]


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, name: Text = "", username: Text = ""
) -> Response:
    """Create a token and show it this once."""
    try:
        body = TokenCreate(name=name.strip(), username=username or None)
        made = await admins.new_token(ctx, principal, body)
    except EXPECTED as exc:
        return await _tokens_page(request, ctx, principal, errors=errors_of(exc), status=422)
    return await _tokens_page(request, ctx, principal, created=made, status=201)


@router.get("/tokens/{row_id}/delete", response_class=HTMLResponse)
async def revoke_page(request: Request, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """Confirm revoking a token."""
    return await page(
        request,
        principal,
        "confirm.html",
        title="Revoke API token",
        question=f"Revoke API token #{row_id}? Programs using it stop working.",
        action=f"/tokens/{row_id}/delete",
        button="Revoke",
        back="/tokens",
    )


@router.post("/tokens/{row_id}/delete")
async def revoke(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """Revoke a token (after the confirmation page)."""
    if (await request.form()).get("confirm") != "yes":
        return redirect(f"/tokens/{row_id}/delete")
    await admins.revoke(ctx, principal, row_id)
    return redirect("/tokens", "revoked")
