"""Request and response models, made from the store's records and check tables.

The store already says which fields a caller may set (``*_CHECKS``) and what each record
holds, with types; :func:`record_model` and :func:`input_model` turn those into pydantic
models, so the API cannot drift from the store. Strings are :data:`Text` (valid Unicode,
no lone surrogates: SQLite could not store them). Range and pattern checks stay in the
store, whose errors name the field (422, see :mod:`minipbx.web.errors`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Union

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from minipbx.store.checks import INT_MAX


def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
"""A string that can be stored (no lone surrogates)."""
RowId = Annotated[int, Path(ge=1, le=INT_MAX, description="The object's id")]
TenantQuery = Annotated[
    int | None, Query(ge=1, le=INT_MAX, description="Only this tenant (system admins)")
]
RefId = Annotated[int, Field(ge=1, le=INT_MAX)]
"""The id of another object, in a request body."""
Offset = Annotated[int, Query(ge=0, le=INT_MAX, description="Skip this many")]
Limit = Annotated[int | None, Query(ge=1, le=100_000, description="At most this many")]


class ApiModel(BaseModel):
    """Base of request models: unknown fields are refused (a typo is a 422, not a no-op)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


class OutModel(BaseModel):
    """Base of response models: built from records, fields not declared are left out."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


def _text_type(kind: Any) -> Any:
    """``kind`` with ``str`` replaced by :data:`Text` (inside ``X | None`` too)."""
    if kind is str:
        return Text
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return Union[tuple(_text_type(arg) for arg in typing.get_args(kind))]  # noqa: UP007
    return kind


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(kind: Any, description: str | None = None) -> tuple[Any, Any]:
    """A field that may be left out (then the store's default or current value stands)."""
    return kind, Field(default=None, json_schema_extra=_no_default, description=description)


def tenant_field() -> dict[str, tuple[Any, Any]]:
    """The ``tenant_id`` field of a create request."""
    return {
        "tenant_id": optional(
            RefId | None, "The tenant (system admins; default: the default tenant)"
        )
    }


def hints(record: type) -> dict[str, Any]:
    """The resolved field types of a record dataclass."""
    return typing.get_type_hints(record)


def record_model(
    name: str,
    record: type,
    *,
    exclude: Iterable[str] = (),
    extra: Mapping[str, tuple[Any, Any]] | None = None,
    doc: str | None = None,
) -> type[BaseModel]:
    """A response model with the fields of ``record`` (less ``exclude``) and ``extra``."""
    kinds = hints(record)
    skip = set(exclude)
    fields: dict[str, Any] = {
        f.name: (kinds[f.name], ...) for f in dataclasses.fields(record) if f.name not in skip
    }
    fields.update(extra or {})
    return make_model(name, doc or record.__doc__, fields, base=OutModel)


def input_model(
    name: str,
    record: type | None,
    names: Iterable[str],
    *,
    required: Iterable[str] = (),
    kinds: Mapping[str, Any] | None = None,
    extra: Mapping[str, tuple[Any, Any]] | None = None,
    doc: str | None = None,
) -> type[BaseModel]:
    """A request model for ``names`` (types from ``record``, or ``kinds``); the fields in
    ``required`` must be given, the others may be left out."""
    known = {**(hints(record) if record is not None else {}), **(kinds or {})}
    needed = set(required)
    fields: dict[str, Any] = {}
    for field in names:
        kind = _text_type(known[field])
        fields[field] = (kind, ...) if field in needed else optional(kind)
    fields.update(extra or {})
    return make_model(name, doc, fields)


def crud_models(
    name: str,
    record: type,
    checks: Iterable[str],
    *,
    required: Iterable[str] = ("name",),
    hidden: Iterable[str] = (),
    extra_out: Mapping[str, tuple[Any, Any]] | None = None,
    kinds: Mapping[str, Any] | None = None,
    fixed: Iterable[str] = (),
    doc: str | None = None,
) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The answer, create and update models of a per-tenant object: the record less
    ``hidden`` (plus ``extra_out``) out; the ``checks`` fields in, ``required`` ones
    required to create (with ``tenant_id``), and all but ``fixed`` optional to update."""
    fields = tuple(checks)
    out = record_model(name, record, exclude=hidden, extra=extra_out, doc=doc)
    create = input_model(
        f"{name}Create", record, fields, required=required, kinds=kinds, extra=tenant_field()
    )
    changeable = [field for field in fields if field not in set(fixed)]
    update = input_model(f"{name}Update", record, changeable, kinds=kinds)
    return out, create, update


def make_model(
    name: str, doc: str | None, fields: dict[str, Any], *, base: type[BaseModel] = ApiModel
) -> type[BaseModel]:
    """A model ``name`` with ``fields`` (name -> (type, default or Field))."""
    with warnings.catch_warnings():
        # A trunk's "register" flag shadows ABCMeta.register on the class, harmlessly.
        warnings.filterwarnings("ignore", message='Field name "register"')
        return create_model(name, __base__=base, __doc__=doc, **fields)


def given(body: BaseModel, *, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The fields the client set in ``body`` (left-out ones are not changed)."""
    values = body.model_dump(exclude_unset=True)
    for name in drop:
        values.pop(name, None)
    return values


def list_of(model: Any) -> Any:
    """``list[model]`` for a model made at run time (a response_model)."""
    return list.__class_getitem__(model)


def utc(value: datetime | None) -> datetime | None:
    """An aware datetime in UTC; a naive one is taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def wall(timestamp: float | None) -> datetime | None:
    """A wall-clock timestamp as an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


class Created(OutModel):
    """What an import did."""

    created: int
    updated: int
