"""Forms made from the API's request models, and errors mapped back to their fields.

A console form has the fields of an API model (``UserCreate``, ``TrunkUpdate``...): the
field kinds come from the model's types, so forms cannot drift from the API. A posted
form is turned into the dict the API would get as JSON (:func:`parse`), checked by the
same model (:func:`check`), and then handed to the same service functions the API calls;
every error, pydantic's or the store's, is shown next to the field it names
(:func:`errors_of`).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar, Union

from fastapi import HTTPException
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from minipbx.pbx.dialplan import DialPlanError
from minipbx.pbx.followme import FOLLOWME_MODES
from minipbx.store import ConflictError, CsvImportError, InvalidInputError, NotFoundError
from minipbx.store.checks import Check
from minipbx.store.pbxrecords import (
    CARD_STATUSES,
    MEDIA_RELAY_MODES,
    RULE_ACTIONS,
    TRANSPORTS,
    VOICEMAIL_FOLDERS,
)
from minipbx.web.errors import FieldError, field_of

T = TypeVar("T")
GENERAL = "_"
"""The error key of a problem that names no field (shown above the form)."""

#: Fields whose values are chosen from a fixed list (the store's check tables).
CHOICES: dict[str, tuple[str, ...]] = {
    "media_relay": MEDIA_RELAY_MODES,
    "followme_mode": FOLLOWME_MODES,
    "transport": TRANSPORTS,
    "action": RULE_ACTIONS,
    "status": CARD_STATUSES,
    "folder": VOICEMAIL_FOLDERS,
}
#: Write-only fields: a password input, left empty to keep the current value.
SECRETS = frozenset(
    {"password", "voicemail_pin", "pin", "smtp_password", "current_password", "new_password"}
)
LABELS = {
    "display_name": "Display name",
    "email": "E-mail",
    "dial_plan_id": "Dial plan",
    "rate_table_id": "Rate table",
    "tenant_id": "Tenant",
    "max_call_seconds": "Max call length (s)",
    "max_concurrent_calls": "Max concurrent calls",
    "no_answer_seconds": "No-answer timeout (s)",
    "voicemail_pin": "Voicemail PIN",
    "voicemail_email_attach": "Attach recording to e-mail",
    "voicemail_delete_after_mail": "Delete after e-mailing",
    "voicemail_max_seconds": "Max voicemail message length (s)",
    "forward_unconditional": "Forward always to",
    "forward_busy": "Forward when busy to",
    "forward_no_answer": "Forward on no answer to",
    "forward_unreachable": "Forward when unreachable to",
    "followme_mode": "Follow-me",
    "followme": "Follow-me list (number:seconds, ...)",
    "followme_own_first": "Own phones ring first",
    "min_level": "Min call level",
    "register_expires": "Registration expiry (s)",
    "allowed_ips": "Allowed IPs (comma separated)",
    "max_calls_in": "Max calls in",
    "max_calls_out": "Max calls out",
    "caller_id": "Caller ID",
    "options": "Options (JSON object)",
    "price_per_minute": "Price per minute",
    "smtp_security": "SMTP security",
    "smtp_from": "Sender address",
    "max_users": "Max users",
    "user_id": "User",
    "duration_ms": "Length (ms)",
    "current_password": "Current password",
    "new_password": "New password",
    "repeat_password": "Repeat the new password",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One input of a form."""

    name: str
    label: str
    kind: str  # text, number, decimal, checkbox, select, password, textarea, datetime
    required: bool = False
    nullable: bool = False
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""


@dataclass
class Form:
    """A form's fields, current values (as the inputs show them) and errors by field."""

    fields: list[Field]
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors


def _unwrap(kind: Any) -> tuple[Any, bool]:
    """(the base type of ``kind``, whether None is allowed); unions of several types
    (``dict | str``) are text."""
    nullable = False
    while True:
        origin = typing.get_origin(kind)
        if origin is Annotated:
            kind = typing.get_args(kind)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(kind))
            if len(args) != 1:
                return str, nullable
            kind = args[0]
            continue
        return kind, nullable


def _kind(name: str, base: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    if name in SECRETS:
        return "password", ()
    if typing.get_origin(base) is Literal:
        return "select", tuple((str(v), str(v)) for v in typing.get_args(base))
    if name in CHOICES:
        return "select", tuple((v, v) for v in CHOICES[name])
    if base is bool:
        return "checkbox", ()
    if base is int:
        return "number", ()
    if base in (Decimal, float):
        return "decimal", ()
    if base is datetime:
        return "datetime", ()
    if name in ("description", "options", "note"):
        return "textarea", ()
    return "text", ()


def label_of(name: str) -> str:
    """The label of a field."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def fields_of(
    model: type[BaseModel],
    names: Iterable[str] | None = None,
    *,
    choices: Mapping[str, Iterable[tuple[str, str]]] | None = None,
    skip: Iterable[str] = (),
) -> list[Field]:
    """The inputs of ``model``'s fields ``names`` (default: all, in order), less ``skip``.

    ``choices`` makes a field a select (e.g. dial plans by id); a nullable select gets an
    empty first option."""
    declared = model.model_fields
    wanted = [n for n in (names or declared) if n in declared and n not in set(skip)]
    made = []
    for name in wanted:
        info = declared[name]
        base, nullable = _unwrap(info.annotation)
        kind, options = _kind(name, base)
        if choices is not None and name in choices:
            kind, options = "select", tuple(choices[name])
        if kind == "select" and nullable and all(value for value, _ in options):
            options = (("", "—"), *options)
        made.append(
            Field(
                name=name,
                label=label_of(name),
                kind=kind,
                required=info.is_required(),
                nullable=nullable,
                choices=options,
                help=info.description or "",
            )
        )
    return made


def display(value: Any) -> Any:
    """A stored value as an input shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    return str(value)


def values_of(fields: Iterable[Field], record: Mapping[str, Any]) -> dict[str, Any]:
    """The input values of ``fields`` from a presented record (secrets stay empty)."""
    return {f.name: display(record.get(f.name)) for f in fields if f.kind != "password"}


def text_of(form: FormData, name: str) -> str:
    """A text field of a posted form ("" when missing or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def parse(
    form: FormData, fields: Iterable[Field], prefix: str = "", *, new: bool = False
) -> dict[str, Any]:
    """The fields of a posted form as the API's JSON body would give them.

    Checkboxes are true when present; an empty input is None for a nullable field, ""
    for text when changing an object (``new``: left out, the default applies), and left
    out otherwise (the default or the current value stays); an empty password keeps the
    current one."""
    data: dict[str, Any] = {}
    for f in fields:
        key = prefix + f.name
        if f.kind == "checkbox":
            data[f.name] = form.get(key) is not None
            continue
        raw = text_of(form, key)
        if f.kind != "password":
            raw = raw.strip()
        if raw:
            data[f.name] = raw
        elif f.kind == "password":
            if f.required:
                data[f.name] = ""
        elif f.nullable:
            data[f.name] = None
        elif f.kind in ("text", "textarea") and not new:
            data[f.name] = ""
    return data


def shown(data: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed values as the inputs show them again after an error."""
    return {k: display(v) for k, v in data.items()}


def _key(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or GENERAL


def errors_of(exc: Exception) -> dict[str, str]:
    """Errors by field key (``name`` or ``rules.2.pattern``; :data:`GENERAL` for the rest)
    of a failed check or store call."""
    if isinstance(exc, ValidationError):
        found: dict[str, str] = {}
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            found.setdefault(_key(error["loc"]), message)
        return found
    if isinstance(exc, FieldError):
        return {_key(exc.loc): str(exc)}
    if isinstance(exc, InvalidInputError | DialPlanError):
        loc, message = field_of(str(exc))
        return {_key(loc): message}
    if isinstance(exc, CsvImportError):
        return {GENERAL: str(exc) + "\n" + "\n".join(exc.details()[:20])}
    if isinstance(exc, HTTPException):
        return {GENERAL: str(exc.detail)}
    return {GENERAL: str(exc)}


#: What a form action may fail with (shown as errors, not as an error page).
EXPECTED = (
    ValidationError,
    FieldError,
    InvalidInputError,
    DialPlanError,
    ConflictError,
    NotFoundError,
    CsvImportError,
    HTTPException,
)


def check(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    """``data`` checked by ``model`` (ValidationError names the fields)."""
    return model.model_validate(dict(data))


def field_checks(checks: Mapping[str, Check], data: Mapping[str, Any]) -> dict[str, str]:
    """Every field of ``data`` run through the store's check of it, so that all bad
    fields are reported at once (the store stops at the first)."""
    errors: dict[str, str] = {}
    for name, value in data.items():
        field_check = checks.get(name)
        if field_check is None or value is None:
            continue
        try:
            field_check(name, value)
        except InvalidInputError as exc:
            errors[name] = str(exc)
    return errors


def validated(
    model: type[BaseModel], checks: Mapping[str, Check], data: Mapping[str, Any]
) -> tuple[BaseModel | None, dict[str, str]]:
    """(``data`` checked by ``model``, {}) or (None, every error found by the model and
    by the store's field ``checks``)."""
    errors = field_checks(checks, data)
    try:
        body = check(model, data)
    except ValidationError as exc:
        return None, {**errors, **errors_of(exc)}
    return (None, errors) if errors else (body, {})


async def attempt(action: Awaitable[T]) -> tuple[T | None, dict[str, str]]:
    """Await ``action``: (its result, {}) or (None, the errors by field)."""
    try:
        return await action, {}
    except EXPECTED as exc:
        return None, errors_of(exc)
