"""Auto attendant (IVR) menus: each menu and its keys are one document.

``POST /ivr-menus`` creates a menu with its ``options`` (one per key); ``PATCH`` changes
the fields given (``options`` given replace the whole list); ``PUT`` makes the menu exactly
the document sent (fields left out take their defaults, options left out are removed).
Every check is the store's (:mod:`minipbx.store.ivr`), which builds the menu as the PBX
will run it: a bad value is a 422 naming its place (``["body", "options", 2, "target"]``),
a menu named by another menu or by a dial plan rule ``ivr:<name>`` cannot be deleted or
renamed (409 naming the referrers), and a name used twice in a tenant is a 409.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from minipbx.store.ivr import ACTIONS, TIMEOUT_ACTIONS, IvrInputError, SqlIvrRepo
from minipbx.web.api.crud import Resource, crud_router, owned
from minipbx.web.api.schemas import ApiModel, OutModel, RefId, RowId, Text, given
from minipbx.web.auth import Admin, Ctx, Principal
from minipbx.web.context import WebContext
from minipbx.web.errors import FieldError

_ACTIONS = ", ".join(ACTIONS)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _opt(description: str) -> Any:
    """A field that may be left out (its default is not shown: it means "unchanged")."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


class IvrOptionIn(ApiModel):
    """What one key does."""

    key: Text = Field(description="0-9, * or #")
    action: Text = Field(description=f"One of {_ACTIONS}")
    target: Text = Field(
        default="",
        description="Extension (user, followme, voicemail), menu name (menu), number "
        "routed through the caller's dial plan (number); empty for hangup and repeat",
    )


class IvrOptionOut(OutModel):
    """What one key does."""

    key: str
    action: str
    target: str


class _MenuFields(ApiModel):
    """The fields of a menu a client may set (left out: default or unchanged; only
    ``after_hours_menu`` may be null)."""

    greeting: list[Text] | Text = _opt(
        "Prompt names played in turn (a list, or text separated by commas)"
    )
    dial_by_extension: bool = _opt(
        "Callers may dial an extension; a single key that is an option still runs it"
    )
    max_digits: int = _opt("Longest extension dialled (1-20; default 4)")
    timeout_seconds: float = _opt("Wait for the first key after the greeting (1-60 s)")
    digit_timeout_seconds: float = _opt("Wait between keys of an extension (0.5-30 s)")
    retries: int = _opt("Invalid or missing input this many times more (0-10)")
    invalid_prompt: Text = _opt("Prompt played after an invalid key")
    timeout_action: Text = _opt(
        f"When the retries are used up: one of {', '.join(TIMEOUT_ACTIONS)}"
    )
    timeout_target: Text = _opt("The timeout action's target")
    hours: Text = _opt(
        "Business hours as dial plan time conditions (mon-fri 08:00-18:00; not 12-25; "
        "tz Europe/Paris); empty: always"
    )
    after_hours_menu: Text | None = _opt("The menu that runs outside the business hours")
    options: list[IvrOptionIn] = _opt("The keys of the menu")


class IvrMenuCreate(_MenuFields):
    """A new menu and its keys."""

    tenant_id: RefId | None = _opt("The tenant (system admins; default: the default tenant)")
    name: Text = Field(description="Unique in the tenant; dial plans route to ivr:<name>")
    greeting: list[Text] | Text = Field(description="Prompt names played in turn")


class IvrMenuUpdate(_MenuFields):
    """Changes to a menu (``options`` given replace them all)."""

    name: Text = _opt("A new name (refused while another menu or a rule names it)")


class IvrMenuDocument(_MenuFields):
    """The whole menu: what is left out takes its default (no options: none)."""

    name: Text = _opt("A new name (left out: unchanged)")
    greeting: list[Text] | Text = Field(description="Prompt names played in turn")


class IvrMenuOut(OutModel):
    """An auto attendant menu and its keys (keypad order)."""

    id: int
    tenant_id: int
    name: str
    greeting: list[str]
    dial_by_extension: bool
    max_digits: int
    timeout_seconds: float
    digit_timeout_seconds: float
    retries: int
    invalid_prompt: str
    timeout_action: str
    timeout_target: str
    hours: str
    after_hours_menu: str | None
    options: list[IvrOptionOut]
    created_at: datetime
    updated_at: datetime


def ivr_repo(ctx: WebContext) -> SqlIvrRepo:
    """The menus' repository over the context's database."""
    return SqlIvrRepo(ctx.db)


@contextmanager
def located() -> Iterator[None]:
    """A store error naming a field of the menu becomes a 422 at ``body.<field>``."""
    try:
        yield
    except IvrInputError as exc:
        raise FieldError(("body", *exc.loc), str(exc)) from None


async def _list(ctx: WebContext, tenant_id: int | None) -> Sequence[Any]:
    return await ivr_repo(ctx).list_by_tenant(tenant_id)


async def _get(ctx: WebContext, row_id: int) -> Any:
    return await ivr_repo(ctx).get(row_id)


async def add_menu(ctx: WebContext, _: Principal, tenant_id: int, fields: dict[str, Any]) -> Any:
    """Create a menu in ``tenant_id`` from the fields of an :class:`IvrMenuCreate`."""
    name = fields.pop("name")
    with located():
        return await ivr_repo(ctx).add(tenant_id, name, **fields)


async def change_menu(ctx: WebContext, _: Principal, row: Any, fields: dict[str, Any]) -> Any:
    """Change the fields given of a menu (an :class:`IvrMenuUpdate`)."""
    with located():
        return await ivr_repo(ctx).update(row.id, **fields)


async def replace_menu_of(ctx: WebContext, row: Any, fields: dict[str, Any]) -> Any:
    """Make a menu the document given (an :class:`IvrMenuDocument`)."""
    with located():
        return await ivr_repo(ctx).replace(row.id, **fields)


async def _remove(ctx: WebContext, row: Any) -> None:
    await ivr_repo(ctx).remove(row.id)


IVR_MENUS: Resource[Any] = Resource(
    what="IVR menu",
    path="/ivr-menus",
    tag="auto attendant",
    out=IvrMenuOut,
    list_rows=_list,
    get_row=_get,
    create=IvrMenuCreate,
    update=IvrMenuUpdate,
    add_row=add_menu,
    change_row=change_menu,
    remove_row=_remove,
)
put_router = APIRouter(prefix="/ivr-menus", tags=["auto attendant"])


@put_router.put("/{row_id}", response_model=IvrMenuOut, summary="Replace an IVR menu")
async def replace_menu(ctx: Ctx, principal: Admin, row_id: RowId, body: IvrMenuDocument) -> Any:
    """Make the menu exactly ``body``: fields left out take their defaults, and the
    options are the ones given (none when left out)."""
    row = await owned(ctx, principal, IVR_MENUS, row_id)
    return await replace_menu_of(ctx, row, given(body))


router = APIRouter()
router.include_router(put_router)
router.include_router(crud_router(IVR_MENUS))
