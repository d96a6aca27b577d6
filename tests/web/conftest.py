"""Fixtures: a migrated SQLite database, a web app over it with a fake live state, and
authenticated clients (a system admin, and tenant admins of two tenants)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from minipbx.store import Database, TenantRecord, default_url, hash_token, new_token
from minipbx.store.cdrs import CdrRecord
from minipbx.web import StaticLiveState, WebContext, create_app
from minipbx.web.passwords import Passwords
from tests.store.test_cdrs import make_cdr

PASSWORD = "correct horse battery"
API = "/api/v1"


def loc(r: httpx.Response) -> list[object]:
    """The location of the first validation error of a 422 answer."""
    assert r.status_code == 422, r.text
    return list(r.json()["detail"][0]["loc"])


def cdr(
    n: int, tenant_id: int, caller: str, called: str = "100", disposition: str = "ANSWERED"
) -> CdrRecord:
    """Call record ``n`` (ending ``n`` minutes after a fixed time) of a tenant."""
    answered = disposition == "ANSWERED"
    return replace(
        make_cdr(n, answered=answered),
        tenant_id=tenant_id,
        caller_number=caller,
        called_number=called,
        disposition=disposition,
    )


@dataclass
class Tenants:
    """The default tenant and two more, ``a`` and ``b``."""

    default: TenantRecord
    a: TenantRecord
    b: TenantRecord


@pytest.fixture
def live() -> StaticLiveState:
    return StaticLiveState(started_at=1_800_000_000.0)


@pytest.fixture
async def ctx(live: StaticLiveState, tmp_path: Path) -> AsyncIterator[WebContext]:
    """The web context over a migrated SQLite database in the test's directory."""
    data = tmp_path / "data"
    context = WebContext(
        db=Database(default_url(data)),
        live=live,
        secret=b"k" * 32,
        data_dir=data,
        passwords=Passwords(fast=True),
    )
    await context.db.upgrade()
    yield context
    await context.db.close()


@pytest.fixture
def app(ctx: WebContext) -> FastAPI:
    return create_app(ctx)


@pytest.fixture
async def tenants(ctx: WebContext) -> Tenants:
    default = await ctx.tenants.ensure_default()
    a = await ctx.tenants.create("a.example", name="Tenant A")
    b = await ctx.tenants.create("b.example", name="Tenant B")
    return Tenants(default, a, b)


async def make_admin(ctx: WebContext, username: str, tenant_id: int | None) -> str:
    """Create an admin (password :data:`PASSWORD`) and return a new API token of it."""
    await ctx.admins.add(username, ctx.passwords.hash_now(PASSWORD), tenant_id=tenant_id)
    token = new_token()
    await ctx.admins.add_token(username, "test", hash_token(token))
    return token


def client_for(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    """A client of ``app`` (in memory), sending ``token`` as a bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://pbx.test", headers=headers)


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def root(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[httpx.AsyncClient]:
    """A system admin's client."""
    async with client_for(app, await make_admin(ctx, "root", None)) as client:
        yield client


@pytest.fixture
async def alice(
    app: FastAPI, ctx: WebContext, tenants: Tenants
) -> AsyncIterator[httpx.AsyncClient]:
    """Tenant A's admin."""
    async with client_for(app, await make_admin(ctx, "alice", tenants.a.id)) as client:
        yield client


@pytest.fixture
async def bob(app: FastAPI, ctx: WebContext, tenants: Tenants) -> AsyncIterator[httpx.AsyncClient]:
    """Tenant B's admin."""
    async with client_for(app, await make_admin(ctx, "bob", tenants.b.id)) as client:
        yield client
