"""Console test fixtures: logging in through the form, CSRF tokens from pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from minipbx.web import WebContext
from tests.web.conftest import PASSWORD, Tenants, client_for

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


async def log_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    """Log ``client`` in through the login form; returns the session's CSRF token."""
    form = await client.get("/login")
    assert form.status_code == 200
    done = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
    )
    assert done.status_code == 303, done.text
    home = await client.get("/")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


class Console:
    """A logged-in console client and its CSRF token."""

    def __init__(self, client: httpx.AsyncClient, csrf: str) -> None:
        self.client = client
        self.csrf = csrf

    async def get(self, path: str, **kw: object) -> httpx.Response:
        return await self.client.get(path, **kw)  # type: ignore[arg-type]

    async def post(
        self, path: str, data: dict[str, str] | None = None, **kw: object
    ) -> httpx.Response:
        """POST a form with the CSRF token."""
        return await self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)  # type: ignore[arg-type]


async def console_for(
    app: FastAPI, ctx: WebContext, username: str, tenant_id: int | None
) -> AsyncIterator[Console]:
    await ctx.admins.add(username, ctx.passwords.hash_now(PASSWORD), tenant_id=tenant_id)
    async with client_for(app) as client:
        yield Console(client, await log_in(client, username))


@pytest.fixture
async def sysadmin(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[Console]:
    """A system admin logged in to the console."""
    async for console in console_for(app, ctx, "sys", None):
        yield console


@pytest.fixture
async def tenant_a(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[Console]:
    """Tenant A's admin logged in to the console."""
    async for console in console_for(app, ctx, "ann", tenants.a.id):
        yield console
