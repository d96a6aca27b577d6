"""Authentication: bearer tokens, API login, cookie sessions with CSRF, rate limiting,
security headers, roles, API tokens."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Form
from starlette.requests import Request
from starlette.responses import Response

from minipbx.web import WebContext
from minipbx.web.auth import COOKIE, ConsoleAdmin, csrf_for, start_session
from tests.web.conftest import PASSWORD, Tenants, client_for, make_admin

API = "/api/v1"


async def test_no_credentials_is_401(anon: httpx.AsyncClient) -> None:
    for path in ("/users", "/tenants", "/status", "/cdrs", "/calls", "/settings", "/admins"):
        r = await anon.get(API + path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"


async def test_bad_tokens_are_401(app: FastAPI, tenants: Tenants) -> None:
    for header in ("Bearer nope", "Bearer s1.forged.mac", "Basic abc", "Bearer "):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pbx.test") as client:
            r = await client.get(f"{API}/users", headers={"Authorization": header})
            assert r.status_code == 401, header


async def test_openapi_is_public_and_complete(anon: httpx.AsyncClient) -> None:
    r = await anon.get(f"{API}/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/v1/tenants",
        "/api/v1/users/{row_id}",
        "/api/v1/trunks",
        "/api/v1/dial-plans/{row_id}/rules",
        "/api/v1/rate-tables/{row_id}/rates.csv",
        "/api/v1/cards/batch",
        "/api/v1/voicemail",
        "/api/v1/cdrs/export",
        "/api/v1/registrations",
        "/api/v1/calls/{call_id}",
        "/api/v1/status",
        "/api/v1/settings",
        "/api/v1/admins",
        "/api/v1/tokens",
    ):
        assert path in paths, path


async def test_security_headers_on_every_answer(anon: httpx.AsyncClient) -> None:
    for path in (f"{API}/openapi.json", f"{API}/users", "/no/such/page"):
        r = await anon.get(path)
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers.get("strict-transport-security") is None  # plain HTTP


async def test_login_gives_a_bearer_session(
    anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    await make_admin(ctx, "alice", tenants.a.id)
    r = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("s1.") and body["token_type"] == "bearer"
    assert body["admin"]["role"] == "tenant" and body["admin"]["tenant_id"] == tenants.a.id
    assert "set-cookie" not in r.headers
    me = await anon.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.json()["via"] == "bearer"
    admin = await ctx.admins.get_by_username("alice")
    assert admin is not None and admin.last_login_at is not None


async def test_wrong_password_and_unknown_user_look_alike(
    anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    await make_admin(ctx, "alice", tenants.a.id)
    wrong = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": "x" * 9})
    unknown = await anon.post(f"{API}/auth/login", json={"username": "zed", "password": "x" * 9})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_login_rate_limited_per_username_and_ip(
    anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    await make_admin(ctx, "alice", tenants.a.id)
    clock = [1000.0]
    ctx.limiter.clock = lambda: clock[0]
    for _ in range(5):
        r = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": "bad-pass"})
        assert r.status_code == 401
    r = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429  # even the right password, until the window passes
    assert 1 <= int(r.headers["retry-after"]) <= 301
    r = await anon.post(f"{API}/auth/login", json={"username": "other", "password": "whatever"})
    assert r.status_code == 429  # same IP
    clock[0] += 301
    r = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200


async def test_disabled_admin_cannot_log_in_or_use_tokens(
    app: FastAPI, anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    token = await make_admin(ctx, "alice", tenants.a.id)
    await ctx.admins.set_enabled("alice", False)
    r = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401
    async with client_for(app, token) as client:
        assert (await client.get(f"{API}/users")).status_code == 401


async def test_api_tokens_own_and_revoke(
    app: FastAPI, alice: httpx.AsyncClient, root: httpx.AsyncClient, ctx: WebContext
) -> None:
    r = await alice.post(f"{API}/tokens", json={"name": "script"})
    assert r.status_code == 201
    created = r.json()
    assert created["username"] == "alice" and len(created["token"]) > 30
    listed = (await alice.get(f"{API}/tokens")).json()
    assert {t["name"] for t in listed} == {"test", "script"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    async with client_for(app, created["token"]) as script:
        assert (await script.get(f"{API}/auth/me")).json()["via"] == "token"
        # a tenant admin cannot see or revoke the tokens of others
        root_tokens = (await root.get(f"{API}/tokens")).json()
        assert (await script.delete(f"{API}/tokens/{root_tokens[0]['id']}")).status_code == 404
        assert (await script.get(f"{API}/tokens", params={"username": "root"})).status_code == 404
        assert (await script.post(f"{API}/tokens", json={"username": "root"})).status_code == 404
        assert (await alice.delete(f"{API}/tokens/{created['id']}")).status_code == 204
        assert (await script.get(f"{API}/auth/me")).status_code == 401
    # a system admin manages everyone's
    r = await root.post(f"{API}/tokens", json={"name": "for alice", "username": "alice"})
    assert r.status_code == 201 and r.json()["username"] == "alice"
    assert (await root.delete(f"{API}/tokens/{r.json()['id']}")).status_code == 204
    assert (await root.delete(f"{API}/tokens/999999")).status_code == 404


async def test_password_change_ends_sessions(
    anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    await make_admin(ctx, "alice", tenants.a.id)
    login = await anon.post(f"{API}/auth/login", json={"username": "alice", "password": PASSWORD})
    auth = {"Authorization": f"Bearer {login.json()['token']}"}
    r = await anon.post(
        f"{API}/auth/password",
        json={"current_password": "wrong-one", "new_password": "new password 1"},
        headers=auth,
    )
    assert r.status_code == 401
    r = await anon.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=auth,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "password"
    r = await anon.post(
        f"{API}/auth/password",
        json={"current_password": PASSWORD, "new_password": "new password 1"},
        headers=auth,
    )
    assert r.status_code == 204
    assert (await anon.get(f"{API}/auth/me", headers=auth)).status_code == 401
    again = await anon.post(
        f"{API}/auth/login", json={"username": "alice", "password": "new password 1"}
    )
    assert again.status_code == 200


async def _cookie_client(
    app: FastAPI, ctx: WebContext, username: str
) -> tuple[httpx.AsyncClient, str]:
    """A client holding a console session cookie, and the session's CSRF token."""
    admin = await ctx.admins.get_by_username(username)
    assert admin is not None
    response = Response()
    scope = {"type": "http", "scheme": "http", "headers": [], "path": "/", "query_string": b""}
    csrf = start_session(ctx, Request(scope), response, admin)
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain HTTP
    value = cookie.split(";")[0].split("=", 1)[1]
    client = client_for(app)
    client.cookies.set(COOKIE, value)
    return client, csrf


async def test_cookie_session_needs_csrf_for_changes(
    app: FastAPI, ctx: WebContext, tenants: Tenants
) -> None:
    await make_admin(ctx, "alice", tenants.a.id)
    client, csrf = await _cookie_client(app, ctx, "alice")
    async with client:
        me = await client.get(f"{API}/auth/me")
        assert me.status_code == 200 and me.json()["csrf_token"] == csrf
        body = {"name": "p1"}
        assert (await client.post(f"{API}/dial-plans", json=body)).status_code == 403
        bad = {"X-CSRF-Token": "forged"}
        assert (await client.post(f"{API}/dial-plans", json=body, headers=bad)).status_code == 403
        good = {"X-CSRF-Token": csrf}
        r = await client.post(f"{API}/dial-plans", json=body, headers=good)
        assert r.status_code == 201
        evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        r = await client.post(f"{API}/dial-plans", json={"name": "p2"}, headers=evil)
        assert r.status_code == 403 and r.json()["detail"] == "cross-site request refused"
        same = {"X-CSRF-Token": csrf, "Origin": "http://pbx.test"}
        assert (
            await client.post(f"{API}/dial-plans", json={"name": "p3"}, headers=same)
        ).status_code == 201
        out = await client.post(f"{API}/auth/logout", headers=good)
        assert out.status_code == 204 and COOKIE in out.headers["set-cookie"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tenants"),
        ("delete", "/tenants/1"),
        ("get", "/admins"),
        ("post", "/admins"),
        ("get", "/settings"),
        ("patch", "/settings"),
    ],
)
async def test_tenant_admin_gets_403_on_system_endpoints(
    alice: httpx.AsyncClient, method: str, path: str
) -> None:
    kwargs = {"json": {}} if method in ("post", "patch") else {}
    r = await getattr(alice, method)(API + path, **kwargs)
    assert r.status_code == 403, r.text


async def test_console_foundation(app: FastAPI, ctx: WebContext, tenants: Tenants) -> None:
    """What the console builds on: login redirect, CSRF from a form field, HTTPS cookies."""

    @app.get("/demo")
    async def page(principal: ConsoleAdmin) -> dict[str, str]:
        return {"user": principal.username, "csrf": csrf_for(ctx, principal)}

    @app.post("/demo")
    async def submit(principal: ConsoleAdmin, name: str = Form()) -> dict[str, str]:
        return {"saved": name}

    async with client_for(app) as anonymous:
        r = await anonymous.get("/demo?x=1")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/demo%3Fx%3D1"
    await make_admin(ctx, "alice", tenants.a.id)
    client, csrf = await _cookie_client(app, ctx, "alice")
    async with client:
        assert (await client.get("/demo")).json() == {"user": "alice", "csrf": csrf}
        r = await client.post("/demo", data={"name": "x"})
        assert r.status_code == 403
        r = await client.post("/demo", data={"name": "x", "csrf_token": csrf})
        assert r.status_code == 200 and r.json() == {"saved": "x"}


async def test_https_cookie_and_hsts(app: FastAPI, ctx: WebContext, tenants: Tenants) -> None:
    admin_token = await make_admin(ctx, "alice", tenants.a.id)
    admin = await ctx.admins.get_by_username("alice")
    assert admin is not None
    response = Response()
    scope = {"type": "http", "scheme": "https", "headers": [], "path": "/", "query_string": b""}
    start_session(ctx, Request(scope), response, admin)
    assert "secure" in response.headers["set-cookie"].lower()
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(transport=transport, base_url="https://pbx.test") as client:
        r = await client.get(f"{API}/auth/me", headers=headers)
        assert r.headers["strict-transport-security"].startswith("max-age=")
