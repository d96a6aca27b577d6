"""Tenants, users (with every service setting), admins, settings: CRUD and bad input."""

from __future__ import annotations

import httpx

from minipbx.store import Credentials
from minipbx.web import WebContext
from tests.web.conftest import API, PASSWORD, Tenants, loc


async def test_tenants_crud_and_quotas(root: httpx.AsyncClient, tenants: Tenants) -> None:
    r = await root.post(f"{API}/tenants", json={"domain": "C.Example", "name": "C", "max_users": 2})
    assert r.status_code == 201, r.text
    tenant = r.json()
    assert tenant["domain"] == "c.example" and tenant["realm"] == "c.example"
    assert tenant["max_users"] == 2 and tenant["dial_plan_id"] is None
    tid = tenant["id"]
    assert (await root.post(f"{API}/tenants", json={"domain": "c.example"})).status_code == 409
    assert loc(await root.post(f"{API}/tenants", json={"domain": "bad domain!"})) == [
        "body",
        "domain",
    ]
    assert (
        loc(await root.post(f"{API}/tenants", json={"domain": "d.example", "max_users": 0}))[-1]
        == "max_users"
    )
    plan = (await root.post(f"{API}/dial-plans", json={"name": "p", "tenant_id": tid})).json()
    r = await root.patch(
        f"{API}/tenants/{tid}",
        json={"domain": "c2.example", "name": "C2", "max_users": None, "dial_plan_id": plan["id"]},
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["domain"], changed["realm"], changed["name"]) == (
        "c2.example",
        "c.example",
        "C2",
    )
    assert changed["max_users"] is None and changed["dial_plan_id"] == plan["id"]
    # quotas are enforced by the store: two users, then 409
    r = await root.patch(f"{API}/tenants/{tid}", json={"max_users": 1})
    assert r.json()["max_users"] == 1
    ok = await root.post(f"{API}/users", json={"extension": "1", "password": "p", "tenant_id": tid})
    assert ok.status_code == 201
    full = await root.post(
        f"{API}/users", json={"extension": "2", "password": "p", "tenant_id": tid}
    )
    assert full.status_code == 409
    domains = [t["domain"] for t in (await root.get(f"{API}/tenants")).json()]
    assert domains == ["a.example", "b.example", "c2.example", "default"]
    assert (await root.delete(f"{API}/tenants/{tid}")).status_code == 204
    assert (await root.get(f"{API}/tenants/{tid}")).status_code == 404
    assert (await root.delete(f"{API}/tenants/{tenants.default.id}")).status_code == 409


async def test_tenant_admin_changes_only_name_and_plan(
    alice: httpx.AsyncClient, tenants: Tenants
) -> None:
    assert [t["id"] for t in (await alice.get(f"{API}/tenants")).json()] == [tenants.a.id]
    r = await alice.patch(f"{API}/tenants/{tenants.a.id}", json={"name": "Mine"})
    assert r.status_code == 200 and r.json()["name"] == "Mine"
    r = await alice.patch(f"{API}/tenants/{tenants.a.id}", json={"max_users": 1000})
    assert r.status_code == 403
    r = await alice.patch(f"{API}/tenants/{tenants.a.id}", json={"domain": "x.example"})
    assert r.status_code == 403


async def test_users_with_settings(
    alice: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    plan = (await alice.post(f"{API}/dial-plans", json={"name": "p"})).json()
    r = await alice.post(
        f"{API}/users",
        json={
            "extension": "200",
            "password": "sip-secret",
            "display_name": "Ann",
            "email": "ann@example.com",
            "call_level": 3,
            "voicemail_pin": "4321",
            "forward_busy": "201",
            "dial_plan_id": plan["id"],
            "prepaid": True,
            "credit_limit": "2.5",
            "currency": "eur",
            "media_relay": "always",
            "voicemail_max_seconds": 300,
        },
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["voicemail_max_seconds"] == 300
    assert user["tenant_id"] == tenants.a.id and user["domain"] == "a.example"
    assert (user["call_level"], user["forward_busy"], user["currency"]) == (3, "201", "EUR")
    assert user["voicemail_pin_set"] is True and "voicemail_pin" not in user
    assert "ha1_md5" not in user and "password" not in user and user["balance"] == "0.000000"
    stored = await ctx.users.get("200", domain="a.example")
    assert stored is not None
    assert stored.ha1_md5 == Credentials.from_password("200", "a.example", "sip-secret").ha1_md5
    uid = user["id"]
    r = await alice.patch(
        f"{API}/users/{uid}",
        json={"password": "new-secret", "enabled": False, "voicemail_pin": None, "email": None},
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["voicemail_pin_set"] is False
    assert r.json()["voicemail_max_seconds"] == 300  # not named: unchanged
    r = await alice.patch(f"{API}/users/{uid}", json={"voicemail_max_seconds": None})
    assert r.status_code == 200 and r.json()["voicemail_max_seconds"] is None
    stored = await ctx.users.get("200", domain="a.example")
    assert stored is not None
    assert stored.ha1_md5 == Credentials.from_password("200", "a.example", "new-secret").ha1_md5
    # bad input names the field, and changes nothing
    assert (
        loc(await alice.patch(f"{API}/users/{uid}", json={"call_level": 100}))[-1] == "call_level"
    )
    assert (
        loc(await alice.patch(f"{API}/users/{uid}", json={"media_relay": "x"}))[-1] == "media_relay"
    )
    assert loc(await alice.patch(f"{API}/users/{uid}", json={"voicemail_pin": "12"}))[-1] == (
        "voicemail_pin"
    )
    assert loc(await alice.patch(f"{API}/users/{uid}", json={"email": "nope"}))[-1] == "email"
    for bad in (4, 3601, "long"):
        r = await alice.patch(f"{API}/users/{uid}", json={"voicemail_max_seconds": bad})
        assert loc(r)[-1] == "voicemail_max_seconds", bad
    assert loc(await alice.patch(f"{API}/users/{uid}", json={"balance": "100"}))[-1] == "balance"
    assert loc(await alice.patch(f"{API}/users/{uid}", json={"extension": "9"}))[-1] == "extension"
    assert (
        loc(await alice.post(f"{API}/users", json={"extension": "a b", "password": "x"}))[-1]
        == "extension"
    )
    assert loc(await alice.post(f"{API}/users", json={"extension": "201"}))[-1] == "password"
    assert (
        loc(
            await alice.post(
                f"{API}/users", json={"extension": "202", "password": "x", "no_answer_seconds": 0}
            )
        )[-1]
        == "no_answer_seconds"
    )
    assert (await alice.get(f"{API}/users")).json()[0]["call_level"] == 3  # unchanged
    assert [u["extension"] for u in (await alice.get(f"{API}/users")).json()] == [
        "200"
    ]  # no half-created 202
    dup = await alice.post(f"{API}/users", json={"extension": "200", "password": "x"})
    assert dup.status_code == 409
    assert (await alice.delete(f"{API}/users/{uid}")).status_code == 204
    assert await ctx.users.get("200", domain="a.example") is None


async def test_user_ledger(alice: httpx.AsyncClient) -> None:
    uid = (await alice.post(f"{API}/users", json={"extension": "9", "password": "p"})).json()["id"]
    r = await alice.post(f"{API}/users/{uid}/ledger", json={"kind": "topup", "amount": "10.5"})
    assert r.status_code == 201 and r.json()["balance_after"] == "10.500000"
    r = await alice.post(f"{API}/users/{uid}/ledger", json={"kind": "charge", "amount": "2"})
    assert loc(r)[-1] == "amount"  # a charge is negative
    r = await alice.post(f"{API}/users/{uid}/ledger", json={"kind": "charge", "amount": "-2"})
    assert r.status_code == 201
    assert (
        loc(await alice.post(f"{API}/users/{uid}/ledger", json={"kind": "gift", "amount": 1}))[-1]
        == "kind"
    )
    entries = (await alice.get(f"{API}/users/{uid}/ledger")).json()
    assert [e["kind"] for e in entries] == ["charge", "topup"]
    assert (await alice.get(f"{API}/users/{uid}")).json()["balance"] == "8.500000"


async def test_paging_of_lists(alice: httpx.AsyncClient) -> None:
    for ext in ("1", "2", "3"):
        await alice.post(f"{API}/users", json={"extension": ext, "password": "p"})
    page = (await alice.get(f"{API}/users", params={"offset": 1, "limit": 1})).json()
    assert [u["extension"] for u in page] == ["2"]
    assert (await alice.get(f"{API}/users", params={"limit": 0})).status_code == 422


async def test_admins(root: httpx.AsyncClient, ctx: WebContext, tenants: Tenants) -> None:
    r = await root.post(
        f"{API}/admins",
        json={"username": "carol", "password": "long enough", "tenant_id": tenants.b.id},
    )
    assert r.status_code == 201, r.text
    carol = r.json()
    assert carol["tenant_id"] == tenants.b.id and "password_hash" not in carol
    stored = await ctx.admins.get_by_username("carol")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert (
        loc(await root.post(f"{API}/admins", json={"username": "d", "password": "short"}))[-1]
        == "password"
    )
    assert (
        loc(await root.post(f"{API}/admins", json={"username": "bad name", "password": "x" * 8}))[
            -1
        ]
        == "username"
    )
    assert (
        loc(
            await root.post(
                f"{API}/admins", json={"username": "e", "password": "x" * 8, "tenant_id": 999}
            )
        )[-1]
        == "tenant_id"
    )
    assert (
        await root.post(f"{API}/admins", json={"username": "carol", "password": "x" * 8})
    ).status_code == 409
    r = await root.patch(
        f"{API}/admins/{carol['id']}", json={"enabled": False, "password": "y" * 8}
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    names = [a["username"] for a in (await root.get(f"{API}/admins")).json()]
    assert names == ["carol", "root"]
    # the last enabled system admin stays
    me = (await root.get(f"{API}/auth/me")).json()
    assert (
        await root.patch(f"{API}/admins/{me['id']}", json={"enabled": False})
    ).status_code == 409
    assert (await root.delete(f"{API}/admins/{me['id']}")).status_code == 409
    assert (await root.delete(f"{API}/admins/{carol['id']}")).status_code == 204
    assert await ctx.admins.get_by_username("carol") is None


async def test_settings(
    root: httpx.AsyncClient, alice: httpx.AsyncClient, tenants: Tenants
) -> None:
    empty = (await root.get(f"{API}/settings")).json()
    assert empty["smtp_host"] is None and empty["smtp_password_set"] is False
    r = await root.patch(
        f"{API}/settings",
        json={
            "smtp_host": "mail.example.com",
            "smtp_port": 587,
            "smtp_security": "starttls",
            "smtp_username": "pbx",
            "smtp_password": "s3cret",
            "smtp_from": "pbx@example.com",
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["smtp_port"] == 587 and got["smtp_password_set"] is True
    assert "smtp_password" not in got and "s3cret" not in r.text
    assert loc(await root.patch(f"{API}/settings", json={"smtp_port": 70000}))[-1] == "smtp_port"
    assert loc(await root.patch(f"{API}/settings", json={"smtp_security": "ssl3"}))[-1] == (
        "smtp_security"
    )
    assert loc(await root.patch(f"{API}/settings", json={"smtp_from": "nobody"}))[-1] == "smtp_from"
    assert loc(await root.patch(f"{API}/settings", json={"smtp_host": "a b"}))[-1] == "smtp_host"
    assert loc(await root.patch(f"{API}/settings", json={"colour": "red"}))[-1] == "colour"
    r = await root.patch(f"{API}/settings", json={"smtp_password": None})
    assert r.json()["smtp_password_set"] is False and r.json()["smtp_port"] == 587
    # a tenant's own values
    url = f"{API}/tenants/{tenants.a.id}/settings"
    r = await alice.patch(url, json={"smtp_from": "a@a.example"})
    assert r.status_code == 200 and r.json()["smtp_from"] == "a@a.example"
    assert r.json()["smtp_host"] is None  # not set for the tenant: the system value applies
    assert (await root.get(url)).json()["smtp_from"] == "a@a.example"
    assert (await root.get(f"{API}/settings")).json()["smtp_from"] == "pbx@example.com"


async def test_login_then_use(anon: httpx.AsyncClient, ctx: WebContext, tenants: Tenants) -> None:
    from tests.web.conftest import make_admin

    await make_admin(ctx, "dora", None)
    r = await anon.post(f"{API}/auth/login", json={"username": "dora", "password": PASSWORD})
    token = r.json()["token"]
    r = await anon.get(f"{API}/tenants", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and len(r.json()) == 3
