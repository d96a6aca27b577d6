"""Trunks, dial plans and rules, rate tables (CSV in and out), calling cards."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from minipbx.web import StaticLiveState, TrunkView, WebContext
from tests.web.conftest import API, Tenants, loc


async def test_trunk_password_is_write_only(alice: httpx.AsyncClient, ctx: WebContext) -> None:
    r = await alice.post(
        f"{API}/trunks",
        json={
            "name": "carrier",
            "host": "sip.example.com",
            "username": "acct",
            "password": "top secret",
            "register": True,
            "options": {"keepalive": 30},
        },
    )
    assert r.status_code == 201, r.text
    trunk = r.json()
    assert "password" not in trunk and trunk["password_set"] is True
    assert trunk["options"] == {"keepalive": 30} and trunk["register"] is True
    for answer in (
        await alice.get(f"{API}/trunks"),
        await alice.get(f"{API}/trunks/{trunk['id']}"),
        await alice.patch(f"{API}/trunks/{trunk['id']}", json={"port": 5080}),
    ):
        assert "top secret" not in answer.text
    stored = await ctx.trunks.get(trunk["id"])
    assert stored.password == "top secret" and stored.port == 5080
    r = await alice.patch(f"{API}/trunks/{trunk['id']}", json={"password": ""})
    assert r.json()["password_set"] is False
    assert loc(await alice.post(f"{API}/trunks", json={"name": "x"}))[-1] == "host"
    assert (
        loc(await alice.post(f"{API}/trunks", json={"name": "x", "host": "h", "port": 0}))[-1]
        == "port"
    )
    assert (
        loc(await alice.post(f"{API}/trunks", json={"name": "y", "allowed_ips": "10.0.0.0/33"}))[-1]
        == "allowed_ips"
    )
    assert (
        loc(
            await alice.post(f"{API}/trunks", json={"name": "z", "host": "h", "transport": "sctp"})
        )[-1]
        == "transport"
    )
    assert (
        loc(await alice.post(f"{API}/trunks", json={"name": "z", "host": "h", "options": "[1]"}))[
            -1
        ]
        == "options"
    )
    assert (await alice.delete(f"{API}/trunks/{trunk['id']}")).status_code == 204
    assert (await alice.get(f"{API}/trunks")).json() == []


async def test_trunk_registration_state(
    alice: httpx.AsyncClient, live: StaticLiveState, tenants: Tenants
) -> None:
    trunk = (await alice.post(f"{API}/trunks", json={"name": "up", "host": "h.example"})).json()
    assert (await alice.get(f"{API}/trunks/{trunk['id']}/registration")).json() is None
    live.trunk_views += [
        TrunkView(tenants.a.id, "up", "registered", 1_800_000_600.0, 200, "", 1_800_000_480.0, 0),
        TrunkView(tenants.b.id, "up", "failed", None, 403, "forbidden", 1_800_000_100.0, 3),
    ]
    state = (await alice.get(f"{API}/trunks/{trunk['id']}/registration")).json()
    assert state["state"] == "registered" and state["registered_until"].startswith("2027-01-15")
    listed = (await alice.get(f"{API}/trunk-registrations")).json()
    assert [(t["tenant_id"], t["state"]) for t in listed] == [(tenants.a.id, "registered")]


async def test_dial_plan_rules_checked_like_the_router(alice: httpx.AsyncClient) -> None:
    plan = (await alice.post(f"{API}/dial-plans", json={"name": "main"})).json()
    url = f"{API}/dial-plans/{plan['id']}/rules"
    rules = [
        {"pattern": "1XX", "action": "local"},
        {
            "pattern": "_0ZX.",
            "action": "trunk",
            "target": "carrier",
            "failover_target": "backup",
            "strip": 1,
            "prepend": "+33",
            "min_level": 2,
            "time_condition": "mon-fri 08:00-18:00; tz Europe/Paris",
        },
        {"pattern": "900", "action": "reject", "reject_status": 403},
    ]
    r = await alice.put(url, json={"rules": rules})
    assert r.status_code == 200, r.text
    stored = r.json()["rules"]
    assert [(x["position"], x["failover_target"], x["min_level"]) for x in stored] == [
        (1, None, 1),
        (2, "backup", 2),
        (3, None, 1),
    ]
    assert (await alice.get(url)).json() == r.json()
    bad_cases = [
        ({"pattern": "9[a-b]", "action": "local"}, "pattern"),
        ({"pattern": "9", "caller_pattern": "1?", "action": "local"}, "caller_pattern"),
        ({"pattern": "9", "action": "local", "time_condition": "someday"}, "time_condition"),
        ({"pattern": "9", "action": "local", "time_condition": "tz Mars/Base"}, "time_condition"),
        ({"pattern": "9", "action": "trunk"}, "target"),
        ({"pattern": "9", "action": "reject"}, "reject_status"),
        ({"pattern": "9", "action": "dance"}, "action"),
        ({"pattern": "9", "action": "local", "min_level": 0}, "min_level"),
        ({"pattern": "9", "action": "local", "prepend": "x"}, "prepend"),
        ({"pattern": "9", "action": "local", "max_seconds": 0}, "max_seconds"),
        ({"pattern": "9 9", "action": "local"}, "pattern"),
    ]
    for bad, field in bad_cases:
        r = await alice.put(url, json={"rules": [rules[0], bad]})
        assert loc(r) == ["body", "rules", 1, field], (bad, r.text)
        assert r.json()["detail"][0]["msg"].startswith("rule 2: ")
    assert loc(await alice.put(url, json={"rules": [{"action": "local"}]}))[-1] == "pattern"
    assert len((await alice.get(url)).json()["rules"]) == 3  # unchanged
    r = await alice.patch(f"{API}/dial-plans/{plan['id']}", json={"description": "Main plan"})
    assert r.json()["description"] == "Main plan"
    assert (await alice.post(f"{API}/dial-plans", json={"name": "main"})).status_code == 409
    assert (await alice.delete(f"{API}/dial-plans/{plan['id']}")).status_code == 204
    assert (await alice.get(url)).status_code == 404


async def test_rates_and_csv(alice: httpx.AsyncClient) -> None:
    table = (
        await alice.post(f"{API}/rate-tables", json={"name": "retail", "currency": "EUR"})
    ).json()
    base = f"{API}/rate-tables/{table['id']}"
    r = await alice.post(f"{base}/rates", json={"prefix": "33", "price_per_minute": "0.02"})
    assert r.status_code == 201 and r.json()["price_per_minute"] == "0.020000"
    assert (
        await alice.post(f"{base}/rates", json={"prefix": "33", "price_per_minute": 1})
    ).status_code == 409
    assert (
        loc(await alice.post(f"{base}/rates", json={"prefix": "3a", "price_per_minute": 1}))[-1]
        == "prefix"
    )
    assert (
        loc(await alice.post(f"{base}/rates", json={"prefix": "1", "price_per_minute": "-1"}))[-1]
        == "price_per_minute"
    )
    upload = "prefix,price_per_minute,description\n44,0.05,UK\n1,0.01,NANP\n"
    r = await alice.post(f"{base}/rates.csv", content=upload, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"created": 2, "updated": 0}
    export = await alice.get(f"{base}/rates.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [(row["prefix"], row["price_per_minute"]) for row in rows] == [
        ("1", "0.01"),
        ("33", "0.02"),
        ("44", "0.05"),
    ]
    bad = "prefix,price_per_minute\n55,abc\n56,0.1\n57,\n"
    r = await alice.post(f"{base}/rates.csv", content=bad, headers={"Content-Type": "text/csv"})
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "line", 2], ["body", "line", 4]]
    r = await alice.post(
        f"{base}/rates.csv", content=b"\xff\xfe", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 422
    # replace: the file becomes the whole list
    r = await alice.post(
        f"{base}/rates.csv",
        params={"replace": "true"},
        content="prefix,price_per_minute\n44,0.06\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.json() == {"created": 0, "updated": 1}
    rates = (await alice.get(f"{base}/rates")).json()
    assert [(x["prefix"], x["price_per_minute"]) for x in rates] == [("44", "0.060000")]
    assert (await alice.delete(f"{base}/rates/{rates[0]['id']}")).status_code == 204
    assert (await alice.delete(f"{base}/rates/{rates[0]['id']}")).status_code == 404
    r = await alice.patch(f"{API}/rate-tables/{table['id']}", json={"currency": "usd"})
    assert r.json()["currency"] == "USD"


async def test_cards_batch_export_and_balance(alice: httpx.AsyncClient, tenants: Tenants) -> None:
    r = await alice.post(
        f"{API}/cards/batch",
        json={"count": 3, "number_len": 10, "pin_len": 4, "balance": "5", "currency": "EUR"},
    )
    assert r.status_code == 201, r.text
    cards = r.json()
    assert len(cards) == 3 and all(len(c["pin"]) == 4 and len(c["number"]) == 10 for c in cards)
    listed = (await alice.get(f"{API}/cards")).json()
    assert len(listed) == 3 and all("pin" not in c for c in listed)
    assert listed[0]["balance"] == "5.000000" and listed[0]["tenant_id"] == tenants.a.id
    plain = await alice.get(f"{API}/cards.csv")
    assert "pin" not in plain.text.splitlines()[0].split(",")
    with_pins = await alice.get(f"{API}/cards.csv", params={"include_pins": "true"})
    rows = list(csv.DictReader(io.StringIO(with_pins.text)))
    assert sorted(r["pin"] for r in rows) == sorted(c["pin"] for c in cards)
    cid = cards[0]["id"]
    r = await alice.patch(f"{API}/cards/{cid}", json={"status": "locked", "pin": "99999"})
    assert r.status_code == 200 and r.json()["status"] == "locked"
    locked = await alice.get(f"{API}/cards.csv", params={"status": "locked"})
    assert len(locked.text.strip().splitlines()) == 2
    assert loc(await alice.patch(f"{API}/cards/{cid}", json={"status": "lost"}))[-1] == "status"
    assert loc(await alice.patch(f"{API}/cards/{cid}", json={"balance": 9}))[-1] == "balance"
    assert loc(await alice.post(f"{API}/cards/batch", json={"count": 0}))[-1] == "count"
    r = await alice.post(f"{API}/cards/{cid}/ledger", json={"kind": "topup", "amount": "2.5"})
    assert r.json()["balance_after"] == "7.500000"
    entries = (await alice.get(f"{API}/cards/{cid}/ledger")).json()
    assert [e["note"] for e in entries] == ["", "opening balance"]
    r = await alice.post(f"{API}/cards", json={"number": "123", "pin": "1234"})
    assert loc(r)[-1] == "number"
    assert (await alice.delete(f"{API}/cards/{cid}")).status_code == 204


@pytest.mark.parametrize("path", ["/trunks", "/dial-plans", "/rate-tables", "/cards"])
async def test_system_admin_creates_in_default_or_named_tenant(
    root: httpx.AsyncClient, tenants: Tenants, path: str
) -> None:
    body = {
        "/trunks": {"name": "t", "host": "h"},
        "/dial-plans": {"name": "p"},
        "/rate-tables": {"name": "r"},
        "/cards": {"number": "12345", "pin": "1234"},
    }[path]
    default = await root.post(API + path, json=body)
    assert default.status_code == 201 and default.json()["tenant_id"] == tenants.default.id
    named = await root.post(API + path, json={**body, "tenant_id": tenants.b.id})
    assert named.status_code == 201 and named.json()["tenant_id"] == tenants.b.id
    assert loc(await root.post(API + path, json={**body, "tenant_id": 999}))[-1] == "tenant_id"
    only_b = await root.get(API + path, params={"tenant_id": tenants.b.id})
    assert [x["tenant_id"] for x in only_b.json()] == [tenants.b.id]
