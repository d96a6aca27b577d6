"""The web console: server-rendered pages over the same services as the REST API.

:func:`install` (called by :func:`minipbx.web.create_app`) adds the pages, ``/static``
(one stylesheet, one small script; nothing inline, as the Content-Security-Policy
requires) and HTML error pages for console paths (the API keeps its JSON errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from minipbx.store import NotFoundError
from minipbx.web.console import (
    account_pages,
    auth_pages,
    billing,
    cdr_pages,
    crud_pages,
    dashboard,
    dialplan_pages,
    ivr_pages,
    ledger_pages,
    prompt_pages,
    system_pages,
    voicemail_pages,
)
from minipbx.web.console.render import HERE, templates

Handler = Callable[[Request, Any], Awaitable[Response] | Response]
PAGES = (
    auth_pages,
    account_pages,
    dashboard,
    dialplan_pages,
    ivr_pages,
    billing,
    cdr_pages,
    system_pages,
    voicemail_pages,
    prompt_pages,
    ledger_pages,
    crud_pages,
)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _html_errors(api: Handler) -> Handler:
    """An exception handler: ``api``'s answer for API paths, an HTML page for the console."""

    async def handler(request: Request, exc: Any) -> Response:
        if _is_api(request):
            answer = api(request, exc)
            return await answer if isinstance(answer, Awaitable) else answer
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "detail": detail, "me": None, "nav": [], "path": ""},
            status_code=status,
        )

    return handler


def install(app: FastAPI) -> None:
    """Add the console's pages, static files and HTML error pages to ``app``."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in PAGES:
        app.include_router(module.router, include_in_schema=False)
    not_found = app.exception_handlers.get(NotFoundError)
    assert not_found is not None, "errors.install must come first"
    app.add_exception_handler(NotFoundError, _html_errors(not_found))
    app.add_exception_handler(HTTPException, _html_errors(http_exception_handler))
