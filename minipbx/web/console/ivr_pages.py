"""Auto attendant (IVR) menus in the console: the list, and one form per menu.

The form has the menu's settings and a table of keys (inputs ``o<row>.key``,
``o<row>.action``, ``o<row>.target``; a row whose key is empty is left out, so clearing a
key removes its option, and a few blank rows add new ones). Saving sends the whole menu
through the API's own functions (:mod:`minipbx.web.api.ivr`): a new menu as ``POST``, an
existing one as ``PUT`` (the form is the whole document), so every check is the API's; an
error is shown next to the field, or in the row and column, it names.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from minipbx.store.ivr import ACTIONS, IVR_DEFAULTS, KEY_ORDER, TIMEOUT_ACTIONS
from minipbx.web.api.crud import owned, target_tenant
from minipbx.web.api.ivr import (
    IVR_MENUS,
    IvrMenuCreate,
    IvrMenuDocument,
    IvrOptionIn,
    add_menu,
    ivr_repo,
    replace_menu_of,
)
from minipbx.web.api.schemas import RowId, given
from minipbx.web.auth import ConsoleAdmin, Ctx, Principal
from minipbx.web.console.forms import (
    EXPECTED,
    GENERAL,
    Field,
    errors_of,
    fields_of,
    parse,
    shown,
    text_of,
)
from minipbx.web.console.render import page, redirect
from minipbx.web.context import WebContext

router = APIRouter()
BASE = "/ivr-menus"
BLANK_ROWS = 3
MAX_ROWS = len(KEY_ORDER)
GROUPS = (
    ("Menu", ("tenant_id", "name", "greeting", "invalid_prompt")),
    (
        "Input",
        ("dial_by_extension", "max_digits", "timeout_seconds", "digit_timeout_seconds"),
    ),
    ("When nothing valid is pressed", ("retries", "timeout_action", "timeout_target")),
    ("Business hours", ("hours", "after_hours_menu")),
)
OPTION_FIELDS: list[Field] = fields_of(
    IvrOptionIn,
    choices={
        "key": [("", "—"), *((k, k) for k in KEY_ORDER)],
        "action": [(a, a) for a in ACTIONS],
    },
)
HELP = {
    "greeting": "Prompt names, separated by commas: shipped ones (ivr_welcome, ivr_menu...) "
    "or your own uploads (custom_..., on the Prompts page)",
    "hours": "e.g. mon-fri 08:00-12:00,13:00-17:30; not 12-25; tz Europe/Paris",
    "after_hours_menu": "The menu that runs outside the business hours",
    "timeout_target": "Extension, menu or number for the action above",
}


async def _menu_fields(ctx: WebContext, principal: Principal, *, create: bool) -> list[Field]:
    """The settings inputs (a system admin picks the tenant of a new menu)."""
    choices: dict[str, list[tuple[str, str]]] = {
        "timeout_action": [(a, a) for a in TIMEOUT_ACTIONS],
    }
    if create and principal.is_system:
        tenants = await ctx.tenants.list_tenants()
        choices["tenant_id"] = [("", "default tenant"), *((str(t.id), t.domain) for t in tenants)]
    names = [n for _, group in GROUPS for n in group]
    if not (create and principal.is_system):
        names.remove("tenant_id")
    made = fields_of(IvrMenuCreate, names, choices=choices)
    return [
        Field(f.name, f.label, f.kind, f.required, f.nullable, f.choices, HELP.get(f.name, f.help))
        for f in made
    ]


def _grouped(fields: list[Field]) -> list[tuple[str, list[Field]]]:
    by_name = {f.name: f for f in fields}
    groups = [(legend, [by_name[n] for n in names if n in by_name]) for legend, names in GROUPS]
    return [(legend, group) for legend, group in groups if group]


def _values(record: Any) -> dict[str, Any]:
    """A stored menu as the inputs show it."""
    values: dict[str, Any] = {
        name: "" if getattr(record, name) is None else str(getattr(record, name))
        for name in ("name", *IVR_DEFAULTS)
    }
    values["greeting"] = ", ".join(record.greeting)
    values["dial_by_extension"] = record.dial_by_extension
    for name in ("timeout_seconds", "digit_timeout_seconds"):
        values[name] = f"{getattr(record, name):g}"
    return values


def _rows(options: list[dict[str, str]]) -> list[dict[str, str]]:
    blanks = max(0, min(BLANK_ROWS, MAX_ROWS - len(options)))
    return [*options, *({"key": "", "action": "user", "target": ""} for _ in range(blanks))]


async def _form_page(
    request: Request,
    principal: Principal,
    fields: list[Field],
    values: dict[str, Any],
    rows: list[dict[str, str]],
    errors: dict[str, str],
    row_errors: dict[int, dict[str, str]],
    *,
    menu: Any = None,
) -> Response:
    title = f"IVR menu {menu.name}" if menu is not None else "New IVR menu"
    return await page(
        request,
        principal,
        "ivr_menu.html",
        422 if errors or row_errors else 200,
        title=title,
        menu=menu,
        groups=_grouped(fields),
        values=values,
        option_fields=OPTION_FIELDS,
        rows=rows,
        errors=errors,
        row_errors=row_errors,
    )


def _posted(form: FormData, fields: list[Field]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The settings as the API's JSON would give them, and every row of the keys table."""
    data = parse(form, fields, new=True)
    try:
        count = min(int(text_of(form, "rows")), MAX_ROWS + BLANK_ROWS)
    except ValueError:
        count = 0
    rows = [
        {f.name: text_of(form, f"o{i}.{f.name}").strip() for f in OPTION_FIELDS}
        for i in range(count)
    ]
    return data, rows


def _split_errors(
    errors: dict[str, str], kept: list[int]
) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """Errors of the settings, and those of the keys table by row (``options.<n>.<field>``
    names the n-th option sent, which is row ``kept[n]``)."""
    general: dict[str, str] = {}
    by_row: dict[int, dict[str, str]] = {}
    for where, message in errors.items():
        parts = where.split(".")
        if parts[0] == "options" and len(parts) == 3 and parts[1].isdigit():
            index = int(parts[1])
            row = kept[index] if index < len(kept) else 0
            by_row.setdefault(row, {})[parts[2]] = message
        else:
            general[where] = message
    if by_row and GENERAL not in general:
        general[GENERAL] = "Some keys have errors (marked below); nothing was saved."
    return general, by_row


async def _save(
    request: Request, ctx: WebContext, principal: Principal, menu: Any = None
) -> Response:
    """Create (``menu`` None) or replace a menu from the posted form."""
    fields = await _menu_fields(ctx, principal, create=menu is None)
    data, rows = _posted(await request.form(), fields)
    values = shown(data)
    kept = [i for i, row in enumerate(rows) if row["key"]]
    data["options"] = [rows[i] for i in kept]
    model = IvrMenuCreate if menu is None else IvrMenuDocument
    try:
        body = given(model.model_validate(data))
        if menu is None:
            tenant = await target_tenant(ctx, principal, body.pop("tenant_id", None))
            await add_menu(ctx, principal, tenant, body)
        else:
            await replace_menu_of(ctx, menu, body)
    except EXPECTED as exc:
        general, by_row = _split_errors(errors_of(exc), kept)
        return await _form_page(
            request, principal, fields, values, rows, general, by_row, menu=menu
        )
    if menu is None:
        return redirect(BASE, "created")
    return redirect(f"{BASE}/{menu.id}", "saved")


@router.get(BASE, response_class=HTMLResponse)
async def menus_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """The menus the admin may see."""
    menus = await ivr_repo(ctx).list_by_tenant(principal.tenant_id)
    return await page(request, principal, "ivr_menus.html", menus=menus)


@router.get(BASE + "/new", response_class=HTMLResponse)
async def new_page(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """An empty menu form (the store's defaults filled in)."""
    fields = await _menu_fields(ctx, principal, create=True)
    values: dict[str, Any] = {
        k: "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
        for k, v in IVR_DEFAULTS.items()
    }
    values["dial_by_extension"] = False
    return await _form_page(request, principal, fields, values, _rows([]), {}, {})


@router.post(BASE + "/new", response_class=HTMLResponse)
async def create(request: Request, ctx: Ctx, principal: ConsoleAdmin) -> Response:
    """Create a menu from the form."""
    return await _save(request, ctx, principal)


@router.get(BASE + "/{row_id}", response_class=HTMLResponse)
async def edit_page(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """A menu's form."""
    menu = await owned(ctx, principal, IVR_MENUS, row_id)
    fields = await _menu_fields(ctx, principal, create=False)
    options = [{"key": o.key, "action": o.action, "target": o.target} for o in menu.options]
    return await _form_page(
        request, principal, fields, _values(menu), _rows(options), {}, {}, menu=menu
    )


@router.post(BASE + "/{row_id}", response_class=HTMLResponse)
async def update(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """Replace a menu with the form."""
    return await _save(request, ctx, principal, await owned(ctx, principal, IVR_MENUS, row_id))


@router.get(BASE + "/{row_id}/delete", response_class=HTMLResponse)
async def delete_page(
    request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId
) -> Response:
    """Ask before deleting a menu."""
    menu = await owned(ctx, principal, IVR_MENUS, row_id)
    return await page(
        request,
        principal,
        "confirm.html",
        title="Delete IVR menu",
        question=f"Delete IVR menu {menu.name}? This cannot be undone.",
        action=f"{BASE}/{row_id}/delete",
        button="Delete",
        back=f"{BASE}/{row_id}",
    )


@router.post(BASE + "/{row_id}/delete", response_class=HTMLResponse)
async def delete(request: Request, ctx: Ctx, principal: ConsoleAdmin, row_id: RowId) -> Response:
    """Delete a menu (409 page while another menu or a dial plan rule names it)."""
    menu = await owned(ctx, principal, IVR_MENUS, row_id)
    if (await request.form()).get("confirm") != "yes":
        return redirect(f"{BASE}/{row_id}/delete")
    try:
        await ivr_repo(ctx).remove(menu.id)
    except EXPECTED as exc:
        detail = errors_of(exc).popitem()[1]
        return await page(request, principal, "error.html", 409, status=409, detail=detail)
    return redirect(BASE, "deleted")
