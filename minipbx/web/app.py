"""The web application: REST API under ``/api/v1`` (+ the console, when installed)."""

from __future__ import annotations

import importlib
import importlib.util
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from minipbx import __version__
from minipbx.web import errors
from minipbx.web.api import api_router
from minipbx.web.auth import CsrfMiddleware, LoginRequiredError
from minipbx.web.context import WebContext
from minipbx.web.middleware import SecurityHeadersMiddleware

API_PREFIX = "/api/v1"
CONSOLE = "minipbx.web.console"
LOGIN_PATH = "/login"


def _login_redirect(_: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, LoginRequiredError)
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(exc.next_url, safe='/')}", 303)


def create_app(ctx: WebContext) -> FastAPI:
    """The FastAPI application serving ``ctx``.

    The OpenAPI document is at ``/api/v1/openapi.json`` (no interactive docs page: its
    scripts would come from a CDN, which the Content-Security-Policy forbids). When the
    package :data:`CONSOLE` exists, its ``install(app)`` adds the console pages.
    """
    app = FastAPI(
        title="minipbx",
        version=__version__,
        summary="REST API of the minipbx IP-PBX",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.add_exception_handler(LoginRequiredError, _login_redirect)
    app.include_router(api_router(), prefix=API_PREFIX)
    if importlib.util.find_spec(CONSOLE) is not None:
        importlib.import_module(CONSOLE).install(app)
    app.add_middleware(CsrfMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: errors get the headers too
    return app
