"""One list/get/create/update/delete router for every object type, tenant checks included.

A :class:`Resource` says how to list, read, add, change and remove one kind of object
and what models its requests and answers use; :func:`crud_router` makes the five
endpoints. Every endpoint that takes an id loads the object first and answers 404 (the
same answer as for an id that does not exist) when it belongs to a tenant other than a
tenant admin's own: ids can be guessed, objects of other tenants cannot be reached.
Sub-resources (rules, rates, ledgers...) use :func:`owned` for the same check.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
at run time, and the body models are set per resource (:func:`annotate_body`).
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from minipbx.store import NotFoundError
from minipbx.web.api.schemas import Limit, Offset, RowId, TenantQuery, given, list_of
from minipbx.web.auth import Admin, Ctx, Principal, system_admin
from minipbx.web.context import WebContext
from minipbx.web.errors import FieldError

R = TypeVar("R")

Lister = Callable[[WebContext, int | None], Awaitable[Sequence[Any]]]
Getter = Callable[[WebContext, int], Awaitable[Any]]
Adder = Callable[[WebContext, Principal, Any, dict[str, Any]], Awaitable[Any]]
Changer = Callable[[WebContext, Principal, Any, dict[str, Any]], Awaitable[Any]]
Remover = Callable[[WebContext, Any], Awaitable[None]]
Presenter = Callable[[WebContext, Any], Awaitable[Any]]


def _tenant_id(row: Any) -> int | None:
    value = getattr(row, "tenant_id", None)
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class Resource(Generic[R]):
    """How the API handles one kind of object.

    ``what`` names it in messages (``no trunk with id 7``); ``list_rows(ctx, tenant_id)``
    lists one tenant's objects (every tenant's for None); ``add_row(ctx, principal,
    tenant_id, fields)`` and ``change_row(ctx, principal, row, fields)`` get only the
    fields the client gave; ``present(ctx, row)`` builds the answer (default: the record).
    ``tenant_of(row)`` is the tenant an object belongs to (None: a system object, which
    only system admins reach). ``system_writes``: only system admins create and delete.
    ``listing``: False when the resource has a listing of its own (filters, paging).
    ``assign_tenant``: False when ``tenant_id`` of a new object is an ordinary field
    (admins: null is a system admin), so ``add_row`` gets None and the field as given.
    """

    what: str
    path: str
    tag: str
    out: type[BaseModel]
    list_rows: Lister
    get_row: Getter
    create: type[BaseModel] | None = None
    update: type[BaseModel] | None = None
    add_row: Adder | None = None
    change_row: Changer | None = None
    remove_row: Remover | None = None
    present: Presenter | None = None
    tenant_of: Callable[[Any], int | None] = _tenant_id
    system_writes: bool = False
    listing: bool = True
    assign_tenant: bool = True


def not_found(what: str, row_id: int | str) -> NotFoundError:
    """The error for a missing object, and for one of another tenant (the same answer)."""
    return NotFoundError(f"no {what} with id {row_id}")


def check_tenant(principal: Principal, tenant_id: int | None, what: str, row_id: int | str) -> None:
    """404 unless ``principal`` may reach an object of ``tenant_id``."""
    if principal.tenant_id is not None and tenant_id != principal.tenant_id:
        raise not_found(what, row_id)


def tenant_scope(principal: Principal, requested: int | None) -> int | None:
    """The tenant a listing is limited to: a tenant admin's own (asking for another
    tenant finds nothing there: 404), else the one asked for (None: all)."""
    if principal.tenant_id is None:
        return requested
    if requested is not None and requested != principal.tenant_id:
        raise not_found("tenant", requested)
    return principal.tenant_id


async def target_tenant(ctx: WebContext, principal: Principal, requested: int | None) -> int:
    """The tenant a new object goes to: a tenant admin's own; for a system admin the one
    named (422 if unknown) or the default tenant."""
    if principal.tenant_id is not None:
        if requested is not None and requested != principal.tenant_id:
            raise FieldError(("body", "tenant_id"), f"no tenant with id {requested}")
        return principal.tenant_id
    if requested is None:
        default = await ctx.tenants.ensure_default()
        return default.id
    try:
        await ctx.web.get_tenant(requested)
    except NotFoundError:
        raise FieldError(("body", "tenant_id"), f"no tenant with id {requested}") from None
    return requested


async def owned(ctx: WebContext, principal: Principal, res: "Resource[Any]", row_id: int) -> Any:
    """The object ``row_id`` of ``res`` if ``principal`` may reach it, else 404."""
    try:
        row = await res.get_row(ctx, row_id)
    except NotFoundError:
        raise not_found(res.what, row_id) from None
    check_tenant(principal, res.tenant_of(row), res.what, row_id)
    return row


async def _present(ctx: WebContext, res: "Resource[Any]", row: Any) -> Any:
    return row if res.present is None else await res.present(ctx, row)


def annotate_body(endpoint: Callable[..., Any], body: type[BaseModel]) -> None:
    """Give ``endpoint``'s ``body`` parameter its model (read by FastAPI at run time)."""
    endpoint.__annotations__["body"] = body


def crud_router(res: "Resource[Any]") -> APIRouter:
    """The list, get, create, update and delete endpoints of ``res``."""
    router = APIRouter(prefix=res.path, tags=[res.tag])
    many = list_of(res.out)
    # Only system admins create and delete (checked before the body is read).
    writes = [Depends(system_admin)] if res.system_writes else []

    if res.listing:

        @router.get("", response_model=many, summary=f"List {res.what}s")
        async def list_all(
            ctx: Ctx,
            principal: Admin,
            tenant_id: TenantQuery = None,
            offset: Offset = 0,
            limit: Limit = None,
        ) -> Any:
            rows = await res.list_rows(ctx, tenant_scope(principal, tenant_id))
            page = rows[offset : None if limit is None else offset + limit]
            return [await _present(ctx, res, row) for row in page]

    @router.get("/{row_id}", response_model=res.out, summary=f"Get a {res.what}")
    async def get_one(ctx: Ctx, principal: Admin, row_id: RowId) -> Any:
        return await _present(ctx, res, await owned(ctx, principal, res, row_id))

    if res.create is not None and res.add_row is not None:
        add_row = res.add_row

        @router.post(
            "",
            response_model=res.out,
            status_code=201,
            summary=f"Create a {res.what}",
            dependencies=writes,
        )
        async def create(ctx: Ctx, principal: Admin, body: Any) -> Any:
            fields = given(body)
            tenant = None
            if res.assign_tenant:
                tenant = await target_tenant(ctx, principal, fields.pop("tenant_id", None))
            return await _present(ctx, res, await add_row(ctx, principal, tenant, fields))

        annotate_body(create, res.create)

    if res.update is not None and res.change_row is not None:
        change_row = res.change_row

        @router.patch("/{row_id}", response_model=res.out, summary=f"Change a {res.what}")
        async def update(ctx: Ctx, principal: Admin, row_id: RowId, body: Any) -> Any:
            row = await owned(ctx, principal, res, row_id)
            return await _present(ctx, res, await change_row(ctx, principal, row, given(body)))

        annotate_body(update, res.update)

    if res.remove_row is not None:
        remove_row = res.remove_row

        @router.delete(
            "/{row_id}", status_code=204, summary=f"Delete a {res.what}", dependencies=writes
        )
        async def delete(ctx: Ctx, principal: Admin, row_id: RowId) -> Response:
            await remove_row(ctx, await owned(ctx, principal, res, row_id))
            return Response(status_code=204)

    return router


def named_resource(
    repo: Callable[[WebContext], Any],
    *,
    what: str,
    path: str,
    tag: str,
    models: tuple[type[BaseModel], type[BaseModel], type[BaseModel]],
    present: Presenter | None = None,
) -> "Resource[Any]":
    """A :class:`Resource` over a ``TenantNamedRepo`` (trunks, dial plans, rate tables,
    cards): ``repo(ctx)`` gives the repository, ``models`` the answer, create and update
    models (:func:`~minipbx.web.api.schemas.crud_models`)."""
    out, create, update = models

    async def list_rows(ctx: WebContext, tenant_id: int | None) -> Sequence[Any]:
        rows: Sequence[Any] = await repo(ctx).list_by_tenant(tenant_id)
        return rows

    async def get_row(ctx: WebContext, row_id: int) -> Any:
        return await repo(ctx).get(row_id)

    async def add_row(ctx: WebContext, _: Principal, tenant_id: int, fields: dict[str, Any]) -> Any:
        return await repo(ctx).add(tenant_id, **fields)

    async def change_row(ctx: WebContext, _: Principal, row: Any, fields: dict[str, Any]) -> Any:
        return await repo(ctx).update(row.id, **fields)

    async def remove_row(ctx: WebContext, row: Any) -> None:
        await repo(ctx).remove(row.id)

    return Resource(
        what=what,
        path=path,
        tag=tag,
        out=out,
        list_rows=list_rows,
        get_row=get_row,
        create=create,
        update=update,
        add_row=add_row,
        change_row=change_row,
        remove_row=remove_row,
        present=present,
    )
