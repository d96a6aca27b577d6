"""Tenant isolation: a tenant admin cannot read or change another tenant's objects, by any
path, whatever ids it guesses; and cannot point its own objects at them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from minipbx.store.cdrs import SqlCdrRepo
from minipbx.store.webrepos import CdrFilter
from minipbx.web import CallView, StaticLiveState, WebContext
from tests.web.conftest import API, Tenants, cdr


@dataclass
class Made:
    """An object of tenant A: its collection path, id, and a valid change."""

    path: str
    id: int
    change: dict[str, Any]


async def _user(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/users", json={"extension": "200", "password": "pw-200"})
    assert r.status_code == 201, r.text
    return Made("/users", r.json()["id"], {"display_name": "Ann"})


async def _trunk(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/trunks", json={"name": "carrier", "host": "sip.example.com"})
    assert r.status_code == 201, r.text
    return Made("/trunks", r.json()["id"], {"port": 5070})


async def _plan(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/dial-plans", json={"name": "main"})
    assert r.status_code == 201, r.text
    return Made("/dial-plans", r.json()["id"], {"description": "x"})


async def _rates(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/rate-tables", json={"name": "retail", "currency": "EUR"})
    assert r.status_code == 201, r.text
    return Made("/rate-tables", r.json()["id"], {"currency": "USD"})


async def _card(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/cards", json={"number": "5550001", "pin": "1234", "balance": "5"})
    assert r.status_code == 201, r.text
    return Made("/cards", r.json()["id"], {"status": "locked"})


async def _voicemail(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    r = await alice.post(f"{API}/users", json={"extension": "299", "password": "pw-299"})
    user = Made("/users", r.json()["id"], {})
    at = datetime(2026, 1, 1, tzinfo=UTC)
    message = await ctx.voicemail.add(user.id, "voicemail/a.wav", at)
    return Made("/voicemail", message.id, {"folder": "saved"})


async def _tenant(ctx: WebContext, t: Tenants, alice: httpx.AsyncClient) -> Made:
    return Made("/tenants", t.a.id, {"name": "Renamed"})


MAKERS: dict[str, Callable[[WebContext, Tenants, httpx.AsyncClient], Awaitable[Made]]] = {
    "user": _user,
    "trunk": _trunk,
    "dial plan": _plan,
    "rate table": _rates,
    "card": _card,
    "voicemail": _voicemail,
    "tenant": _tenant,
}


@pytest.mark.parametrize("kind", MAKERS)
async def test_other_tenant_is_404_everywhere(
    kind: str,
    ctx: WebContext,
    tenants: Tenants,
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    root: httpx.AsyncClient,
) -> None:
    made = await MAKERS[kind](ctx, tenants, alice)
    url = f"{API}{made.path}/{made.id}"
    # the owner and a system admin reach it
    assert (await alice.get(url)).status_code == 200
    assert (await root.get(url)).status_code == 200
    # another tenant's admin gets the answer of an id that does not exist
    missing = (await bob.get(f"{API}{made.path}/999999")).json()
    for method, kwargs in (("get", {}), ("patch", {"json": made.change}), ("delete", {})):
        r = await getattr(bob, method)(url, **kwargs)
        if kind == "tenant" and method == "delete":
            assert r.status_code == 403  # only system admins delete tenants, any tenant
            continue
        assert r.status_code == 404, (method, r.text)
        assert r.json()["detail"] == missing["detail"].replace("999999", str(made.id))
    # listings: bob sees none of tenant A's, and cannot ask for them
    if kind != "voicemail":
        listed = (await bob.get(f"{API}{made.path}")).json()
        assert all(item.get("tenant_id", item.get("id")) == tenants.b.id for item in listed)
    else:
        listed = (await bob.get(f"{API}/voicemail")).json()["items"]
        assert listed == []
    r = await bob.get(f"{API}{made.path}", params={"tenant_id": tenants.a.id})
    assert r.status_code == 404
    # still there, unchanged by bob
    assert (await alice.get(url)).status_code == 200


async def test_sub_resources_of_another_tenant_are_404(
    ctx: WebContext, tenants: Tenants, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    user = await _user(ctx, tenants, alice)
    plan = await _plan(ctx, tenants, alice)
    table = await _rates(ctx, tenants, alice)
    card = await _card(ctx, tenants, alice)
    trunk = await _trunk(ctx, tenants, alice)
    voicemail = await _voicemail(ctx, tenants, alice)
    rate = await alice.post(
        f"{API}/rate-tables/{table.id}/rates", json={"prefix": "33", "price_per_minute": "0.1"}
    )
    assert rate.status_code == 201
    topup = {"kind": "topup", "amount": "1"}
    csv_body = {"content": b"prefix,price_per_minute\n44,0.2\n"}
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("get", f"/users/{user.id}/ledger", {}),
        ("post", f"/users/{user.id}/ledger", {"json": topup}),
        ("get", f"/cards/{card.id}/ledger", {}),
        ("post", f"/cards/{card.id}/ledger", {"json": topup}),
        ("get", f"/dial-plans/{plan.id}/rules", {}),
        ("put", f"/dial-plans/{plan.id}/rules", {"json": {"rules": []}}),
        ("get", f"/rate-tables/{table.id}/rates", {}),
        (
            "post",
            f"/rate-tables/{table.id}/rates",
            {"json": {"prefix": "1", "price_per_minute": 1}},
        ),
        ("delete", f"/rate-tables/{table.id}/rates/{rate.json()['id']}", {}),
        ("get", f"/rate-tables/{table.id}/rates.csv", {}),
        ("post", f"/rate-tables/{table.id}/rates.csv", csv_body),
        ("get", f"/trunks/{trunk.id}/registration", {}),
        ("get", f"/voicemail/{voicemail.id}/audio", {}),
        ("get", f"/tenants/{tenants.a.id}/settings", {}),
        ("patch", f"/tenants/{tenants.a.id}/settings", {"json": {"smtp_port": 25}}),
        ("get", "/voicemail", {"params": {"user_id": user.id}}),
    ]
    for method, path, kwargs in attempts:
        r = await getattr(bob, method)(API + path, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
    # nothing changed
    assert (await alice.get(f"{API}/rate-tables/{table.id}/rates")).json()[0]["prefix"] == "33"
    assert (await alice.get(f"{API}/users/{user.id}")).json()["balance"] == "0.000000"


async def test_cannot_point_at_or_create_in_another_tenant(
    ctx: WebContext, tenants: Tenants, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    plan = await _plan(ctx, tenants, alice)
    table = await _rates(ctx, tenants, alice)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/users", {"extension": "300", "password": "pw", "dial_plan_id": plan.id}, "dial_plan_id"),
        (
            "/users",
            {"extension": "301", "password": "pw", "rate_table_id": table.id},
            "rate_table_id",
        ),
        ("/cards", {"number": "77770", "pin": "1234", "rate_table_id": table.id}, "rate_table_id"),
        ("/cards", {"number": "77771", "pin": "1234", "dial_plan_id": plan.id}, "dial_plan_id"),
        ("/trunks", {"name": "x", "host": "h", "tenant_id": tenants.a.id}, "tenant_id"),
        ("/dial-plans", {"name": "x", "tenant_id": tenants.a.id}, "tenant_id"),
    ]
    for path, body, field in cases:
        r = await bob.post(API + path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"][-1] == field, r.text
    r = await bob.patch(f"{API}/tenants/{tenants.b.id}", json={"dial_plan_id": plan.id})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dial_plan_id"]
    r = await bob.post(f"{API}/cards/batch", json={"count": 2, "tenant_id": tenants.a.id})
    assert r.status_code == 422
    # nothing was created in either tenant by those attempts
    users = (await bob.get(f"{API}/users")).json()
    assert users == []
    assert (await alice.get(f"{API}/users")).json() == []


async def _cdr(ctx: WebContext, n: int, tenant_id: int, caller: str) -> int:
    await SqlCdrRepo(ctx.db).add_many([cdr(n, tenant_id, caller)])
    return (await ctx.web.search_cdrs(CdrFilter(), limit=1))[0].id or 0


async def test_live_state_and_cdrs_are_per_tenant(
    ctx: WebContext,
    live: StaticLiveState,
    tenants: Tenants,
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
) -> None:
    a_cdr = await _cdr(ctx, 1, tenants.a.id, "201")
    await _cdr(ctx, 2, tenants.b.id, "301")
    live.active.append(
        CallView(
            "call-a",
            tenants.a.id,
            "a.example",
            "201",
            "202",
            "answered",
            1.0,
            2.0,
            "local",
            None,
            None,
            "127.0.0.1:5062",
            "ua",
        )
    )
    assert (await bob.get(f"{API}/cdrs/{a_cdr}")).status_code == 404
    assert [c["caller_number"] for c in (await bob.get(f"{API}/cdrs")).json()["items"]] == ["301"]
    export = await bob.get(f"{API}/cdrs/export")
    assert "201" not in export.text and "301" in export.text
    assert (await bob.get(f"{API}/calls")).json() == []
    assert (await bob.get(f"{API}/calls/call-a")).status_code == 404
    assert (await bob.delete(f"{API}/calls/call-a")).status_code == 404
    assert live.active and not live.hung_up
    status = (await bob.get(f"{API}/status")).json()
    assert status["calls"] == 0 and status["tenants"] == 1 and status["cdr_shipping"] is None
    assert (await alice.get(f"{API}/calls/call-a")).status_code == 200
