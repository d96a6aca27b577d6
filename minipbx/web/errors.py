"""Errors as HTTP answers, all in FastAPI's validation shape where a field is at fault.

Store errors carry the field in their message (``invalid host: ...``); they become
``422 {"detail": [{"loc": ["body", "host"], "msg": ..., "type": "value_error"}]}`` like
pydantic's own, so a client (and the console's forms) finds the field the same way for
every kind of bad input. NotFoundError is 404, ConflictError 409, a CSV import lists every
bad row, and any other store failure (database unreachable) is 503.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from minipbx.pbx.dialplan import DialPlanError
from minipbx.store import (
    ConflictError,
    CsvImportError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from minipbx.web.auth import TooManyAttemptsError

log = logging.getLogger("minipbx.web")

# "rule 3: invalid pattern: ..." / "invalid host: ..." / "unknown field 'x'" / "missing password"
_RULE = re.compile(r"rule (\d+): (.*)", re.S)
_FIELD = re.compile(r"(?:invalid|missing|unknown field|unknown quota) '?([A-Za-z_]+)'?")
_LEADING = re.compile(r"([a-z_]+)(?::| longer| contains)")


class FieldError(ValueError):
    """Bad input found by the web layer: 422 naming ``loc`` (e.g. ``("body", "rules", 2,
    "pattern")``)."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


def field_of(message: str) -> tuple[list[str | int], str]:
    """The location (under ``body``) a store error message names, and the message."""
    loc: list[str | int] = []
    rule = _RULE.fullmatch(message)
    text = message
    if rule is not None:
        loc = ["rules", int(rule.group(1)) - 1]
        text = rule.group(2)
    match = _FIELD.match(text) or _LEADING.match(text)
    if match is not None:
        loc.append(match.group(1))
    return loc, message


def unprocessable(loc: Sequence[str | int], message: str) -> JSONResponse:
    """A 422 answer in FastAPI's validation-error shape."""
    detail = [{"loc": list(loc), "msg": message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def _field_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldError)
    return unprocessable(exc.loc, str(exc))


def _invalid(_: Request, exc: Exception) -> JSONResponse:
    """InvalidInputError (store) and DialPlanError (rules): 422 naming the field."""
    loc, message = field_of(str(exc))
    return unprocessable(["body", *loc], message)


def _csv(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CsvImportError)
    detail = [
        {"loc": ["body", "line", p.line], "msg": p.message, "type": "value_error"}
        for p in exc.problems
    ]
    return JSONResponse({"detail": detail, "message": str(exc)}, status_code=422)


def _status(code: int) -> Callable[[Request, Exception], JSONResponse]:
    def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


def _store(request: Request, exc: Exception) -> JSONResponse:
    log.error("event=web_store_error path=%s error=%s", request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=503)


def _throttled(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyAttemptsError)
    return JSONResponse(
        {"detail": str(exc)},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after)},
    )


def install(app: FastAPI) -> None:
    """Register the handlers (most specific first: Starlette walks the MRO)."""
    app.add_exception_handler(FieldError, _field_error)
    app.add_exception_handler(CsvImportError, _csv)
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(DialPlanError, _invalid)
    app.add_exception_handler(NotFoundError, _status(404))
    app.add_exception_handler(ConflictError, _status(409))
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(TooManyAttemptsError, _throttled)
