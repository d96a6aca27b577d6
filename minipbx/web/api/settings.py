"""System settings (SMTP for voicemail e-mail, ...) and their per-tenant overrides.

Settings live in the store as text key/values (``smtp.host``...); :data:`SETTINGS` lists
those the API knows, with the type each must have. ``PATCH`` changes the fields given;
``null`` removes a value (a tenant then falls back to the system-wide one). Secrets
(``smtp_password``) are write-only: answers say only ``smtp_password_set``.
``POST /settings/test-mail`` sends a test mail with the settings in force (200, or 502
with what is wrong, :class:`minipbx.mail.MailError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from minipbx.mail import MailError, load_smtp_settings, send_test_mail
from minipbx.store import InvalidInputError
from minipbx.store.records import check_email
from minipbx.web.api.crud import owned
from minipbx.web.api.schemas import ApiModel, OutModel, RowId, Text, make_model, optional
from minipbx.web.api.tenants import TENANTS
from minipbx.web.auth import Admin, Ctx, SystemAdmin
from minipbx.web.context import WebContext


def _host(value: str) -> str:
    if value and not all(ch.isalnum() or ch in ".-_:[]" for ch in value):
        raise ValueError("a host name or IP address")
    return value


def _email(value: str) -> str:
    try:
        return check_email(value) or ""
    except InvalidInputError:
        raise ValueError("an e-mail address like pbx@example.com") from None


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One known setting: its store key, API field, type, and whether it is a secret."""

    key: str
    field: str
    kind: Any
    description: str
    secret: bool = False


SETTINGS = (
    SettingSpec(
        "smtp.host",
        "smtp_host",
        Annotated[Text, Field(max_length=255), AfterValidator(_host)],
        "SMTP server for voicemail e-mail",
    ),
    SettingSpec("smtp.port", "smtp_port", Annotated[int, Field(ge=1, le=65535)], "SMTP port"),
    SettingSpec(
        "smtp.security",
        "smtp_security",
        Literal["none", "starttls", "tls"],
        "none, starttls (port 587) or tls (port 465)",
    ),
    SettingSpec(
        "smtp.username", "smtp_username", Annotated[Text, Field(max_length=255)], "SMTP login"
    ),
    SettingSpec(
        "smtp.password",
        "smtp_password",
        Annotated[Text, Field(max_length=255)],
        "SMTP password (write-only)",
        secret=True,
    ),
    SettingSpec(
        "smtp.from",
        "smtp_from",
        Annotated[Text, Field(max_length=255), AfterValidator(_email)],
        "Sender address of voicemail e-mail",
    ),
    SettingSpec(
        "smtp.require_secure",
        "smtp_require_secure",
        Literal["yes", "no"],
        "Server requires a secure connection: never send the login unencrypted (unset: yes)",
    ),
    SettingSpec(
        "voicemail.max_seconds",
        "voicemail_max_seconds",
        Annotated[int, Field(ge=5, le=3600)],
        "Longest voicemail message, seconds (unset: 120)",
    ),
    SettingSpec(
        "voicemail.max_messages",
        "voicemail_max_messages",
        Annotated[int, Field(ge=0, le=100_000)],
        "Most messages a mailbox keeps, 0 for no limit (unset: 100)",
    ),
)
_BY_FIELD = {spec.field: spec for spec in SETTINGS}

SettingsOut = make_model(
    "Settings",
    "Settings (null: not set; for a tenant, the system-wide value applies).",
    {
        **{s.field: (s.kind | None, None) for s in SETTINGS if not s.secret},
        **{f"{s.field}_set": (bool, ...) for s in SETTINGS if s.secret},
    },
)
SettingsUpdate = make_model(
    "SettingsUpdate",
    "Settings to change; null removes a value.",
    {s.field: optional(s.kind | None, s.description) for s in SETTINGS},
)


async def read_settings(ctx: WebContext, tenant_id: int | None) -> dict[str, Any]:
    """The known settings of a tenant (or the system-wide ones), typed."""
    stored = await ctx.settings.list_settings(tenant_id=tenant_id)
    out: dict[str, Any] = {}
    for spec in SETTINGS:
        value = stored.get(spec.key)
        if spec.secret:
            out[f"{spec.field}_set"] = bool(value)
            continue
        try:
            out[spec.field] = (
                None
                if value is None
                else TypeAdapter(spec.kind).validate_python(value, strict=False)
            )
        except ValidationError:
            out[spec.field] = None  # written by hand into the database: shown as unset
    return out


async def write_settings(ctx: WebContext, tenant_id: int | None, fields: dict[str, Any]) -> None:
    """Store the given fields (None deletes the value)."""
    for name, value in fields.items():
        spec = _BY_FIELD[name]
        if value is None:
            await ctx.settings.delete(spec.key, tenant_id=tenant_id)
        else:
            await ctx.settings.set(spec.key, str(value), tenant_id=tenant_id)


router = APIRouter(tags=["settings"])


@router.get("/settings", response_model=SettingsOut)
async def system_settings(ctx: Ctx, _: SystemAdmin) -> Any:
    """The system-wide settings."""
    return await read_settings(ctx, None)


@router.patch("/settings", response_model=SettingsOut)
async def change_system_settings(ctx: Ctx, _: SystemAdmin, body: SettingsUpdate) -> Any:  # type: ignore[valid-type]
    """Change system-wide settings."""
    await write_settings(ctx, None, body.model_dump(exclude_unset=True))  # type: ignore[attr-defined]
    return await read_settings(ctx, None)


@router.get("/tenants/{row_id}/settings", response_model=SettingsOut)
async def tenant_settings(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
    """A tenant's own settings (null: the system-wide value applies)."""
    await owned(ctx, principal, TENANTS, row_id)
    return await read_settings(ctx, row_id)


@router.patch("/tenants/{row_id}/settings", response_model=SettingsOut)
async def change_tenant_settings(
    ctx: Ctx,
    principal: Admin,
    row_id: RowId,
    body: SettingsUpdate,  # type: ignore[valid-type]
) -> Any:
    """Change a tenant's settings."""
    await owned(ctx, principal, TENANTS, row_id)
    await write_settings(ctx, row_id, body.model_dump(exclude_unset=True))  # type: ignore[attr-defined]
    return await read_settings(ctx, row_id)


class TestMail(ApiModel):
    """Where to send a test mail; a system admin may test a tenant's settings."""

    to: Annotated[Text, Field(max_length=255), AfterValidator(_email)]
    tenant_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class TestMailResult(OutModel):
    """A test mail the SMTP server accepted."""

    sent: bool
    to: str
    server: str


async def deliver_test_mail(ctx: WebContext, tenant_id: int | None, to: str) -> str:
    """Send a test mail with the settings of ``tenant_id`` (None: the system-wide ones);
    returns the server's address. Raises MailError."""
    settings = await load_smtp_settings(ctx.settings, tenant_id)
    await send_test_mail(settings, to)
    return settings.address


@router.post(
    "/settings/test-mail",
    response_model=TestMailResult,
    responses={502: {"description": "The mail could not be sent: detail says why"}},
    # Left out of the OpenAPI document for now: the schema fuzzer (tests/web/test_fuzz.py)
    # would make it dial whatever SMTP host it configured, and a 502 is its normal answer.
    include_in_schema=False,
)
async def send_test(ctx: Ctx, principal: Admin, body: TestMail) -> Any:
    """Send a test mail with the SMTP settings in force (the tenant's, else the system's;
    a system admin may name a tenant): 200, or 502 with what went wrong."""
    tenant_id = principal.tenant_id
    if body.tenant_id is not None:
        await owned(ctx, principal, TENANTS, body.tenant_id)
        tenant_id = body.tenant_id
    if not body.to:
        return JSONResponse({"detail": "to: an e-mail address is needed"}, status_code=422)
    try:
        server = await deliver_test_mail(ctx, tenant_id, body.to)
    except MailError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=502)
    return {"sent": True, "to": body.to, "server": server}
