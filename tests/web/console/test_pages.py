"""Every console page for a system admin and a tenant admin; logging in and out; CSRF."""

from __future__ import annotations

import re
import time

import httpx
from fastapi import FastAPI

from minipbx.pbx.location import Binding
from minipbx.store.cdrs import SqlCdrRepo
from minipbx.transport.address import Address
from minipbx.web import CallView, StaticLiveState, WebContext
from minipbx.web.context import TrunkView
from minipbx.web.middleware import CSP
from tests.web.conftest import PASSWORD, Tenants, cdr, client_for
from tests.web.console.conftest import Console, csrf_of


async def seed(ctx: WebContext, tenants: Tenants) -> dict[str, int]:
    """One of each object in tenants A and B; their ids by name."""
    ids: dict[str, int] = {}
    for key, tenant in (("a", tenants.a), ("b", tenants.b)):
        user = await ctx.users.add(f"{key}-ext-1", "pw-123456", domain=tenant.domain)
        ids[f"user_{key}"] = user.id
        ids[f"trunk_{key}"] = (await ctx.trunks.add(tenant.id, f"trunk-{key}", host="192.0.2.1")).id
        ids[f"plan_{key}"] = (await ctx.dial_plans.add(tenant.id, f"plan-{key}")).id
        ids[f"rates_{key}"] = (await ctx.rates.add(tenant.id, f"rates-{key}", currency="EUR")).id
        ids[f"card_{key}"] = (await ctx.cards.add(tenant.id, f"9999000{ord(key)}", "1234")).id
    await SqlCdrRepo(ctx.db).add_many(
        [
            cdr(1, tenants.a.id, "a-caller-1", "a-callee-1"),
            cdr(2, tenants.b.id, "b-caller-1", "b-callee-1", "BUSY"),
        ]
    )
    return ids


def pages(ids: dict[str, int], key: str) -> list[str]:
    """Every page of a tenant's objects (``key``: a or b)."""
    return [
        "/",
        "/users",
        "/users/new",
        f"/users/{ids[f'user_{key}']}",
        f"/users/{ids[f'user_{key}']}/delete",
        f"/users/{ids[f'user_{key}']}/ledger",
        "/voicemail",
        "/account",
        "/trunks",
        "/trunks/new",
        f"/trunks/{ids[f'trunk_{key}']}",
        "/dial-plans",
        "/dial-plans/new",
        f"/dial-plans/{ids[f'plan_{key}']}",
        f"/dial-plans/{ids[f'plan_{key}']}/rules",
        "/route-test",
        "/services",
        "/rate-tables",
        f"/rate-tables/{ids[f'rates_{key}']}",
        f"/rate-tables/{ids[f'rates_{key}']}/rates",
        "/cards",
        "/cards/batch",
        f"/cards/{ids[f'card_{key}']}",
        f"/cards/{ids[f'card_{key}']}/ledger",
        "/cdrs",
        "/settings",
        "/tenants",
        "/tokens",
    ]


SYSTEM_PAGES = ["/admins", "/admins/new", "/tenants/new"]


async def test_logged_out_pages_redirect_to_login(anon: httpx.AsyncClient) -> None:
    for path in ("/", "/users", "/cdrs?caller=1", "/settings"):
        r = await anon.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=/"), r.headers["location"]
    r = await anon.get("/cdrs?caller=1")
    assert r.headers["location"] == "/login?next=/cdrs%3Fcaller%3D1"
    post = await anon.post("/users/new", data={"extension": "1"})
    assert post.status_code == 303


async def test_login_page_and_errors(app: FastAPI, ctx: WebContext, tenants: Tenants) -> None:
    await ctx.admins.add("sys", ctx.passwords.hash_now(PASSWORD), tenant_id=None)
    async with client_for(app) as client:
        form = await client.get("/login?next=/cdrs")
        assert form.status_code == 200 and 'name="password"' in form.text
        assert form.headers["content-security-policy"] == CSP
        assert "<script>" not in form.text and "style=" not in form.text
        # no token: refused, the form is shown again (with a new token)
        r = await client.post("/login", data={"username": "sys", "password": PASSWORD})
        assert r.status_code == 403 and "form expired" in r.text
        bad = await client.post(
            "/login", data={"username": "sys", "password": "nope", "csrf_token": csrf_of(r.text)}
        )
        assert bad.status_code == 401 and "Wrong username or password." in bad.text
        assert 'value="sys"' in bad.text  # the username is kept
        good = await client.post(
            "/login",
            data={
                "username": "sys",
                "password": PASSWORD,
                "csrf_token": csrf_of(bad.text),
                "next": "/cdrs",
            },
        )
        assert good.status_code == 303 and good.headers["location"] == "/cdrs"
        cookie = good.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert (await client.get("/cdrs")).status_code == 200
        # a foreign "next" goes to the dashboard
        form = await client.get("/login")
        r = await client.post(
            "/login",
            data={
                "username": "sys",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": "//evil.example/",
            },
        )
        assert r.headers["location"] == "/"


async def test_login_rate_limit_message(app: FastAPI, ctx: WebContext, tenants: Tenants) -> None:
    await ctx.admins.add("sys", ctx.passwords.hash_now(PASSWORD), tenant_id=None)
    async with client_for(app) as client:
        page = await client.get("/login")
        for _ in range(5):
            page = await client.post(
                "/login",
                data={"username": "sys", "password": "bad", "csrf_token": csrf_of(page.text)},
            )
            assert page.status_code == 401
        r = await client.post(
            "/login",
            data={"username": "sys", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        )
        assert r.status_code == 429 and "Too many failed logins" in r.text
        assert int(r.headers["retry-after"]) > 0


async def test_logout_needs_csrf_and_ends_the_session(sysadmin: Console) -> None:
    refused = await sysadmin.client.post("/logout", data={})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert "<html" in refused.text  # an HTML error page on console paths
    r = await sysadmin.post("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert (await sysadmin.get("/")).status_code == 303


async def _every_page_renders(console: Console, paths: list[str]) -> None:
    for path in paths:
        r = await console.get(path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:500]}"
        assert r.headers["content-security-policy"] == CSP
        assert "<script>" not in r.text and " style=" not in r.text, path
        assert 'name="viewport"' in r.text
        for form in re.findall(r'<form method="post".*?</form>', r.text, re.S):
            assert 'name="csrf_token"' in form, f"{path}: a POST form without CSRF token"
    static = await console.get("/static/console.css")
    assert static.status_code == 200 and "text/css" in static.headers["content-type"]


async def test_every_page_renders_for_a_system_admin(
    sysadmin: Console, ctx: WebContext, tenants: Tenants
) -> None:
    ids = await seed(ctx, tenants)
    await _every_page_renders(sysadmin, pages(ids, "a") + pages(ids, "b") + SYSTEM_PAGES)


async def test_every_page_renders_for_a_tenant_admin(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    ids = await seed(ctx, tenants)
    await _every_page_renders(tenant_a, pages(ids, "a"))


async def test_tenant_admin_sees_only_its_tenant(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    ids = await seed(ctx, tenants)
    for path in (
        "/users",
        "/trunks",
        "/dial-plans",
        "/rate-tables",
        "/cards",
        "/cdrs",
        "/voicemail",
        "/",
    ):
        text = (await tenant_a.get(path)).text
        assert "b-ext-1" not in text and "trunk-b" not in text and "plan-b" not in text, path
        assert "rates-b" not in text and "b-caller-1" not in text and "b.example" not in text, path
    assert "a-ext-1" in (await tenant_a.get("/users")).text
    assert "a-caller-1" in (await tenant_a.get("/cdrs")).text
    for path in pages(ids, "b"):
        if re.search(r"/\d+", path):
            r = await tenant_a.get(path)
            assert r.status_code == 404, f"{path}: {r.status_code}"
    # and no changes either
    r = await tenant_a.post(f"/users/{ids['user_b']}", {"display_name": "x"})
    assert r.status_code == 404
    r = await tenant_a.post(f"/users/{ids['user_b']}/delete", {"confirm": "yes"})
    assert r.status_code == 404
    r = await tenant_a.post(f"/dial-plans/{ids['plan_b']}/rules", {"rows": "0"})
    assert r.status_code == 404
    # a reference to another tenant's object is refused, inline
    r = await tenant_a.post(
        f"/users/{ids['user_a']}", {"dial_plan_id": str(ids["plan_b"]), "call_level": "1"}
    )
    assert r.status_code == 422 and "field-error" in r.text
    # system pages
    for path in SYSTEM_PAGES:
        assert (await tenant_a.get(path)).status_code == 403, path
    tenant_page = await tenant_a.get("/tenants")
    assert "a.example" in tenant_page.text and "b.example" not in tenant_page.text
    own = await tenant_a.get(f"/tenants/{tenants.a.id}")
    assert 'name="name"' in own.text and 'name="max_users"' not in own.text
    assert (await tenant_a.get(f"/tenants/{tenants.b.id}")).status_code == 404
    # the CDR search cannot be widened to another tenant
    r = await tenant_a.get(f"/cdrs?tenant_id={tenants.b.id}")
    assert "b-caller-1" not in r.text


async def test_posts_need_the_csrf_token(
    sysadmin: Console, ctx: WebContext, tenants: Tenants
) -> None:
    ids = await seed(ctx, tenants)
    for path, data in (
        ("/users/new", {"extension": "555", "password": "pw-123456"}),
        (f"/users/{ids['user_a']}", {"display_name": "X"}),
        (f"/users/{ids['user_a']}/delete", {"confirm": "yes"}),
        (f"/dial-plans/{ids['plan_a']}/rules", {"rows": "0"}),
        ("/settings", {"smtp_host": "mail.example"}),
        ("/tokens", {"name": "t"}),
        ("/cards/batch", {"count": "1"}),
        (f"/rate-tables/{ids['rates_a']}/rates", {"prefix": "1", "price_per_minute": "1"}),
        ("/calls/x/hangup", {"confirm": "yes"}),
        ("/logout", {}),
    ):
        r = await sysadmin.client.post(path, data=data)
        assert r.status_code == 403, path
        r = await sysadmin.client.post(path, data={**data, "csrf_token": "forged"})
        assert r.status_code == 403, path
    assert await ctx.users.get("555", domain=tenants.default.domain) is None
    # a cross-site form post is refused even with the token
    r = await sysadmin.client.post(
        "/users/new",
        data={"csrf_token": sysadmin.csrf, "extension": "556", "password": "pw-123456"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403


async def test_dashboard_live_views_and_hang_up(
    sysadmin: Console, tenant_a: Console, live: StaticLiveState, tenants: Tenants, ctx: WebContext
) -> None:
    now = time.time()
    for tenant, ext in ((tenants.a, "201"), (tenants.b, "301")):
        live.registered.append(
            Binding(
                aor=(tenant.id, ext),
                contact=f"sip:{ext}@192.0.2.7:5062",
                expires_at=now + 300,
                received=Address("udp", "192.0.2.7", 5062),
                user_agent=f"Phone-{ext}",
            )
        )
        live.active.append(
            CallView(
                id=f"call-{ext}",
                tenant_id=tenant.id,
                domain=tenant.domain,
                caller=ext,
                callee=f"{ext}9",
                state="answered",
                started_at=now - 30,
                answered_at=now - 20,
                route_kind="local",
                trunk=None,
                inbound_trunk=None,
                source="192.0.2.7:5062",
                user_agent="x",
            )
        )
    live.trunk_views.append(
        TrunkView(tenants.a.id, "upstream", "registered", now + 600, 200, "", None, 0)
    )
    await SqlCdrRepo(ctx.db).add_many(
        [
            cdr(90, tenants.a.id, "201", "202"),
            cdr(91, tenants.a.id, "201", "203", "NO ANSWER"),
        ]
    )
    mine = (await tenant_a.get("/")).text
    assert "Phone-201" in mine and "Phone-301" not in mine
    assert "/calls/call-201/hangup" in mine and "call-301" not in mine
    assert "upstream" in mine and "<svg" in mine and "Calls per hour" in mine
    everyone = (await sysadmin.get("/")).text
    assert "Phone-201" in everyone and "Phone-301" in everyone
    assert "No MySQL mirror is configured" in everyone
    # the tenant admin cannot hang up another tenant's call
    assert (await tenant_a.post("/calls/call-301/hangup", {"confirm": "yes"})).status_code == 303
    assert live.hung_up == []
    confirm = await tenant_a.get("/calls/call-201/hangup")
    assert confirm.status_code == 200 and "Hang up the call from 201" in confirm.text
    r = await tenant_a.post("/calls/call-201/hangup", {"confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/?done=hungup"
    assert live.hung_up == ["call-201"]
    gone = await tenant_a.client.get("/?done=hungup")
    assert "The call was hung up." in gone.text
