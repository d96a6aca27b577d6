"""List, create, edit and delete pages for every object type the API has a resource for.

A :class:`Section` wraps one of the API's :class:`~minipbx.web.api.crud.Resource`
objects (users, trunks, dial plans, rate tables, cards, tenants, admins): the pages use
its request models for their forms and its functions to read and change objects, with
the API's tenant checks (:func:`~minipbx.web.api.crud.owned`,
:func:`~minipbx.web.api.crud.target_tenant`). Deleting asks for confirmation first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from minipbx.store.checks import Check
from minipbx.store.pbxrecords import (
    CARD_CHECKS,
    DIAL_PLAN_CHECKS,
    RATE_TABLE_CHECKS,
    TRUNK_CHECKS,
    USER_SETTINGS_CHECKS,
    VOICEMAIL_CHECKS,
)
from minipbx.store.records import check_password
from minipbx.web.api.admins import ADMINS
from minipbx.web.api.cards import CARDS
from minipbx.web.api.crud import Resource, owned, target_tenant
from minipbx.web.api.dialplans import DIAL_PLANS
from minipbx.web.api.rates import RATE_TABLES
from minipbx.web.api.schemas import RowId, given
from minipbx.web.api.tenants import TENANTS
from minipbx.web.api.trunks import TRUNKS
from minipbx.web.api.users import USERS
from minipbx.web.api.voicemail import VOICEMAIL
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.forms import (
    EXPECTED,
    Field,
    errors_of,
    fields_of,
    label_of,
    parse,
    shown,
    validated,
    values_of,
)
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
PER_PAGE = 200
Row = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """The pages of one object type, under ``/<slug>``."""

    slug: str
    title: str
    res: Resource[Any]
    columns: tuple[tuple[str, str], ...]
    name_of: Callable[[Row], str]
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    readonly: tuple[str, ...] = ()
    system_only: bool = False
    row_links: tuple[tuple[str, str], ...] = ()  # (label, path after /<slug>/<id>)
    actions: tuple[tuple[str, str], ...] = ()  # (label, path) above the list
    tenant_admin_fields: tuple[str, ...] | None = None  # what a tenant admin may edit
    empty_tenant: str = "default tenant"  # the empty choice of tenant_id
    checks: Mapping[str, Check] = field(default_factory=dict)  # the store's field checks
    search: tuple[str, ...] = ()  # record attributes the list's search box matches
    audio: str = ""  # the recording's URL ({id}: the row's), played on the edit page

    @property
    def what(self) -> str:
        """The object's name in messages."""
        return self.res.what


def _name(attr: str) -> Callable[[Row], str]:
    return lambda row: str(row.get(attr, ""))


SECTIONS = (
    Section(
        "users",
        "Users",
        USERS,
        (
            ("extension", "Extension"),
            ("display_name", "Name"),
            ("domain", "Domain"),
            ("enabled", "Enabled"),
            ("call_level", "Level"),
            ("voicemail_enabled", "Voicemail"),
            ("forward_unconditional", "Forward"),
        ),
        lambda row: f"{row['extension']}@{row['domain']}",
        groups=(
            ("Account", ("tenant_id", "extension", "password", "display_name", "email", "enabled")),
            (
                "Calling",
                (
                    "call_level",
                    "dial_plan_id",
                    "max_call_seconds",
                    "max_concurrent_calls",
                    "free_account",
                    "media_relay",
                ),
            ),
            (
                "Forwarding",
                (
                    "forward_unconditional",
                    "forward_busy",
                    "forward_no_answer",
                    "forward_unreachable",
                    "no_answer_seconds",
                ),
            ),
            ("Follow-me", ("followme_mode", "followme", "followme_own_first")),
            (
                "Voicemail",
                (
                    "voicemail_enabled",
                    "voicemail_pin",
                    "voicemail_email_attach",
                    "voicemail_delete_after_mail",
                    "voicemail_max_seconds",
                ),
            ),
            ("Billing", ("prepaid", "credit_limit", "currency", "rate_table_id")),
        ),
        readonly=("domain", "balance", "voicemail_pin_set", "created_at", "updated_at"),
        row_links=(("Balance", "/ledger"), ("Voicemail", "/voicemail")),
        checks={**USER_SETTINGS_CHECKS, "password": lambda _, value: check_password(value)},
        search=("extension", "display_name"),
    ),
    Section(
        "trunks",
        "Trunks",
        TRUNKS,
        (
            ("name", "Name"),
            ("host", "Host"),
            ("transport", "Transport"),
            ("register", "Registers"),
            ("registration", "Registration"),
            ("allowed_ips", "Allowed IPs"),
            ("enabled", "Enabled"),
        ),
        _name("name"),
        readonly=("password_set", "created_at"),
        checks=TRUNK_CHECKS,
    ),
    Section(
        "dial-plans",
        "Dial plans",
        DIAL_PLANS,
        (("name", "Name"), ("description", "Description")),
        _name("name"),
        row_links=(("Rules", "/rules"),),
        actions=(("Test a route", "/route-test"),),
        checks=DIAL_PLAN_CHECKS,
    ),
    Section(
        "rate-tables",
        "Rate tables",
        RATE_TABLES,
        (("name", "Name"), ("currency", "Currency")),
        _name("name"),
        row_links=(("Rates", "/rates"),),
        checks=RATE_TABLE_CHECKS,
    ),
    Section(
        "cards",
        "Calling cards",
        CARDS,
        (
            ("number", "Number"),
            ("balance", "Balance"),
            ("currency", "Currency"),
            ("status", "Status"),
            ("expires_at", "Expires"),
            ("last_used_at", "Last used"),
        ),
        _name("number"),
        readonly=("balance", "created_at", "last_used_at"),
        row_links=(("Balance", "/ledger"),),
        actions=(
            ("Generate a batch", "/cards/batch"),
            ("Download CSV", "/api/v1/cards.csv"),
            ("Download CSV with PINs", "/api/v1/cards.csv?include_pins=true"),
        ),
        checks=CARD_CHECKS,
    ),
    Section(
        "tenants",
        "Tenants",
        TENANTS,
        (
            ("domain", "Domain"),
            ("name", "Name"),
            ("max_users", "Max users"),
            ("max_concurrent_calls", "Max calls"),
            ("max_call_seconds", "Max call s"),
            ("free_account", "Free"),
        ),
        _name("domain"),
        readonly=("realm", "is_default", "created_at"),
        tenant_admin_fields=("name", "dial_plan_id"),
    ),
    Section(
        "admins",
        "Admin accounts",
        ADMINS,
        (("username", "Username"), ("tenant_id", "Tenant"), ("enabled", "Enabled")),
        _name("username"),
        readonly=("tenant_id", "created_at", "last_login_at"),
        system_only=True,
        actions=(("API tokens", "/tokens"),),
        empty_tenant="(system admin: every tenant)",
    ),
    Section(
        "voicemail",
        "Voicemail messages",
        VOICEMAIL,
        (("received_at", "Received"), ("folder", "Folder"), ("caller_number", "Caller")),
        lambda row: f"#{row['id']} from {row['caller_number'] or 'an unknown caller'}",
        readonly=("user_id", "caller_number", "caller_name", "received_at", "duration_ms"),
        checks=VOICEMAIL_CHECKS,
        audio="/api/v1/voicemail/{id}/audio",
    ),
)


async def present(ctx: WebContext, res: Resource[Any], row: Any) -> Row:
    """A row as the API answers it, as a dict."""
    if res.present is not None:
        shown_row = await res.present(ctx, row)
        return dict(shown_row) if isinstance(shown_row, dict) else asdict(shown_row)
    return asdict(row) if is_dataclass(row) and not isinstance(row, type) else dict(row)


async def reference_choices(
    ctx: WebContext, principal: Principal, empty_tenant: str = "default tenant"
) -> dict[str, list[tuple[str, str]]]:
    """Choices of the reference fields (dial plans, rate tables, tenants) ``principal``
    may pick; for a system admin, names are prefixed with their tenant's domain."""
    scope = principal.tenant_id
    domains = {t.id: t.domain for t in await ctx.tenants.list_tenants()}

    def label(row: Any) -> str:
        return row.name if scope is not None else f"{domains.get(row.tenant_id)} / {row.name}"

    plans = await ctx.dial_plans.list_by_tenant(scope)
    tables = await ctx.rates.list_by_tenant(scope)
    return {
        "dial_plan_id": [("", "—"), *((str(p.id), label(p)) for p in plans)],
        "rate_table_id": [("", "—"), *((str(t.id), label(t)) for t in tables)],
        "tenant_id": [("", empty_tenant), *((str(i), d) for i, d in domains.items())],
    }


def _order(section: Section, names: Sequence[str]) -> list[str]:
    grouped = [n for _, group in section.groups for n in group]
    return [n for n in grouped if n in names] + [n for n in names if n not in grouped]


async def form_fields(
    ctx: WebContext, principal: Principal, section: Section, *, create: bool
) -> list[Field]:
    """The inputs of the create or edit form of ``section`` for ``principal``."""
    model = section.res.create if create else section.res.update
    assert model is not None
    names = list(model.model_fields)
    skip: set[str] = set()
    if not principal.is_system:
        skip.add("tenant_id")
        if section.tenant_admin_fields is not None:
            skip |= {n for n in names if n not in section.tenant_admin_fields}
    choices = await reference_choices(ctx, principal, section.empty_tenant)
    return fields_of(model, _order(section, names), choices=choices, skip=skip)


def grouped(section: Section, fields: list[Field]) -> list[tuple[str, list[Field]]]:
    """The fields in the section's fieldsets (the rest under "Settings")."""
    by_name = {f.name: f for f in fields}
    groups = [
        (legend, [by_name[n] for n in names if n in by_name]) for legend, names in section.groups
    ]
    placed = {n for _, names in section.groups for n in names}
    rest = [f for f in fields if f.name not in placed]
    return [(legend, group) for legend, group in [*groups, ("Settings", rest)] if group]


def matches(section: Section, record: Any, text: str) -> bool:
    """Whether ``text`` (case-insensitive) is part of one of the searched attributes."""
    needle = text.casefold()
    return any(needle in str(getattr(record, a, "") or "").casefold() for a in section.search)


def _allowed(section: Section, principal: Principal, *, write: bool = False) -> None:
    if principal.is_system:
        return
    if section.system_only or (write and section.res.system_writes):
        raise HTTPException(403, "only a system admin may do this")


async def _decorate(ctx: WebContext, section: Section, rows: list[Row]) -> None:
    """Extra list columns: the live registration state of trunks."""
    if section.res is TRUNKS:
        states = {(t.tenant_id, t.name): t.state for t in ctx.live.trunks()}
        for row in rows:
            row["registration"] = states.get((row["tenant_id"], row["name"]), "—")


async def _form_page(
    request: Request,
    principal: Principal,
    section: Section,
    fields: list[Field],
    values: dict[str, Any],
    errors: dict[str, str],
    *,
    row: Row | None = None,
) -> Response:
    readonly = [(label_of(n), row.get(n)) for n in section.readonly if row and n in row]
    if row is not None and "tenant_id" in row and principal.is_system:
        readonly.insert(0, ("Tenant", row["tenant_id"]))
    return await page(
        request,
        principal,
        "form.html",
        422 if errors else 200,
        section=section,
        groups=grouped(section, fields),
        values=values,
        errors=errors,
        row=row,
        readonly=readonly,
        title=f"{section.title}: " + (section.name_of(row) if row else f"new {section.what}"),
    )


def add_routes(section: Section) -> None:
    """The list, new, edit and delete pages of ``section``."""
    res = section.res
    base = f"/{section.slug}"

    async def list_page(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, offset: int = 0, q: str = ""
    ) -> Response:
        _allowed(section, principal)
        rows = list(await res.list_rows(ctx, principal.tenant_id))
        q = q.strip()[:100] if section.search else ""
        if q:
            rows = [r for r in rows if matches(section, r, q)]
        offset = max(0, offset)
        shown_rows = [await present(ctx, res, r) for r in rows[offset : offset + PER_PAGE]]
        await _decorate(ctx, section, shown_rows)
        return await page(
            request,
            principal,
            "list.html",
            section=section,
            rows=shown_rows,
            total=len(rows),
            offset=offset,
            per_page=PER_PAGE,
            q=q,
            can_create=res.create is not None and (principal.is_system or not res.system_writes),
        )

    if res.listing:  # else the section has a page of its own (filters, paging)
        router.get(base, response_class=HTMLResponse, name=f"{section.slug}-list")(list_page)
    if res.create is not None:
        add_create_routes(section)
    add_change_routes(section)


def add_create_routes(section: Section) -> None:
    """The new-object form of ``section`` and its POST."""
    res = section.res
    base = f"/{section.slug}"

    @router.get(base + "/new", response_class=HTMLResponse, name=f"{section.slug}-new")
    async def new_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
        _allowed(section, principal, write=True)
        fields = await form_fields(ctx, principal, section, create=True)
        defaults = {"enabled": True, "register_expires": "3600", "status": "active"}
        return await _form_page(request, principal, section, fields, defaults, {})

    @router.post(base + "/new", response_class=HTMLResponse)
    async def create(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
        _allowed(section, principal, write=True)
        fields = await form_fields(ctx, principal, section, create=True)
        data = parse(await request.form(), fields, new=True)
        body, errors = validated(res.create, section.checks, data)  # type: ignore[arg-type]
        if body is not None:
            assert res.add_row is not None
            values = given(body)
            try:
                tenant = None
                if res.assign_tenant:
                    tenant = await target_tenant(ctx, principal, values.pop("tenant_id", None))
                await res.add_row(ctx, principal, tenant, values)
            except EXPECTED as exc:
                errors = errors_of(exc)
        if errors:
            return await _form_page(request, principal, section, fields, shown(data), errors)
        return redirect(base, "created")


def add_change_routes(section: Section) -> None:
    """The edit and delete pages of ``section`` and their POSTs."""
    res = section.res
    base = f"/{section.slug}"

    @router.get(base + "/{row_id}", response_class=HTMLResponse, name=f"{section.slug}-edit")
    async def edit_page(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
    ) -> Response:
        _allowed(section, principal)
        row = await present(ctx, res, await owned(ctx, principal, res, row_id))
        fields = await form_fields(ctx, principal, section, create=False)
        return await _form_page(
            request, principal, section, fields, values_of(fields, row), {}, row=row
        )

    @router.post(base + "/{row_id}", response_class=HTMLResponse)
    async def update(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
    ) -> Response:
        _allowed(section, principal)
        record = await owned(ctx, principal, res, row_id)
        fields = await form_fields(ctx, principal, section, create=False)
        data = parse(await request.form(), fields)
        body, errors = validated(res.update, section.checks, data)  # type: ignore[arg-type]
        if body is not None:
            assert res.change_row is not None
            try:
                await res.change_row(ctx, principal, record, given(body))
            except EXPECTED as exc:
                errors = errors_of(exc)
        if errors:
            row = await present(ctx, res, record)
            return await _form_page(
                request, principal, section, fields, shown(data), errors, row=row
            )
        return redirect(f"{base}/{row_id}", "saved")

    @router.get(base + "/{row_id}/delete", response_class=HTMLResponse)
    async def delete_page(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
    ) -> Response:
        _allowed(section, principal, write=True)
        row = await present(ctx, res, await owned(ctx, principal, res, row_id))
        return await page(
            request,
            principal,
            "confirm.html",
            title=f"Delete {section.what}",
            question=f"Delete {section.what} {section.name_of(row)}? This cannot be undone.",
            action=f"{base}/{row_id}/delete",
            button="Delete",
            back=f"{base}/{row_id}",
        )

    @router.post(base + "/{row_id}/delete", response_class=HTMLResponse)
    async def delete(
        request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
    ) -> Response:
        _allowed(section, principal, write=True)
        record = await owned(ctx, principal, res, row_id)
        if (await request.form()).get("confirm") != "yes":
            return redirect(f"{base}/{row_id}/delete")
        assert res.remove_row is not None
        try:
            await res.remove_row(ctx, record)
        except EXPECTED as exc:
            return await page(
                request,
                principal,
                "error.html",
                409,
                status=409,
                detail=errors_of(exc).popitem()[1],
            )
        return redirect(base, "deleted")


for _section in SECTIONS:
    add_routes(_section)
