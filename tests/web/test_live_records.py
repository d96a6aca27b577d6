"""Live views (registrations, calls with hang-up, status), voicemail, call records."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from minipbx.pbx.cdr_writer import ShippingStatus
from minipbx.pbx.location import Binding
from minipbx.store.cdrs import SqlCdrRepo
from minipbx.transport.address import Address
from minipbx.web import CallView, StaticLiveState, WebContext
from tests.web.conftest import API, Tenants, cdr


def _binding(tenant_id: int, extension: str, expires_in: float) -> Binding:
    return Binding(
        aor=(tenant_id, extension),
        contact=f"sip:{extension}@192.0.2.7:5062",
        expires_at=time.time() + expires_in,
        received=Address("udp", "192.0.2.7", 5062),
        nat=True,
        user_agent="Phone/1.0",
    )


async def test_registrations(
    root: httpx.AsyncClient, alice: httpx.AsyncClient, live: StaticLiveState, tenants: Tenants
) -> None:
    live.registered += [
        _binding(tenants.a.id, "201", 300),
        _binding(tenants.a.id, "200", 300),
        _binding(tenants.a.id, "202", -5),  # expired, not yet swept
        _binding(tenants.b.id, "300", 300),
    ]
    mine = (await alice.get(f"{API}/registrations")).json()
    assert [r["extension"] for r in mine] == ["200", "201"]
    first = mine[0]
    assert first["source"] == "192.0.2.7:5062" and first["nat"] and 290 < first["expires_in"] <= 300
    assert first["user_agent"] == "Phone/1.0"
    assert len((await root.get(f"{API}/registrations")).json()) == 3
    one = await root.get(
        f"{API}/registrations", params={"tenant_id": tenants.a.id, "extension": "201"}
    )
    assert [r["extension"] for r in one.json()] == ["201"]


def _call(call_id: str, tenant_id: int, answered: bool) -> CallView:
    now = time.time()
    return CallView(
        id=call_id,
        tenant_id=tenant_id,
        domain="a.example",
        caller="200",
        callee="201",
        state="answered" if answered else "early",
        started_at=now - 30,
        answered_at=now - 20 if answered else None,
        route_kind="local",
        trunk=None,
        inbound_trunk=None,
        source="192.0.2.7:5062",
        user_agent="Phone/1.0",
    )


async def test_calls_and_hang_up(
    alice: httpx.AsyncClient, live: StaticLiveState, tenants: Tenants
) -> None:
    live.active += [_call("c1", tenants.a.id, True), _call("c2", tenants.a.id, False)]
    calls = (await alice.get(f"{API}/calls")).json()
    assert [c["id"] for c in calls] == ["c1", "c2"]
    assert 19 < calls[0]["duration"] < 25 and calls[1]["duration"] == 0
    assert (await alice.get(f"{API}/calls/c1")).json()["callee"] == "201"
    assert (await alice.delete(f"{API}/calls/c1")).status_code == 204
    assert live.hung_up == ["c1"]
    assert (await alice.delete(f"{API}/calls/c1")).status_code == 404
    assert (await alice.get(f"{API}/calls/nope")).status_code == 404


async def test_status(
    root: httpx.AsyncClient,
    alice: httpx.AsyncClient,
    live: StaticLiveState,
    tenants: Tenants,
) -> None:
    live.started_at = time.time() - 60
    live.active.append(_call("c1", tenants.a.id, True))
    live.registered.append(_binding(tenants.a.id, "200", 60))
    live.shipping = ShippingStatus("mysql://x", 3, 1.5, 10, "timeout", time.time() - 5)
    await alice.post(f"{API}/users", json={"extension": "200", "password": "p"})
    status = (await root.get(f"{API}/status")).json()
    assert status["version"] and 59 < status["uptime_seconds"] < 120
    assert (status["tenants"], status["users"], status["registrations"]) == (3, 1, 1)
    assert (status["calls"], status["answered_calls"]) == (1, 1)
    assert (
        status["cdr_shipping"]["queued"] == 3 and status["cdr_shipping"]["last_error"] == "timeout"
    )
    mine = (await alice.get(f"{API}/status")).json()
    assert mine["tenants"] == 1 and mine["cdr_shipping"] is None


async def test_voicemail(alice: httpx.AsyncClient, ctx: WebContext) -> None:
    uid = (await alice.post(f"{API}/users", json={"extension": "200", "password": "p"})).json()[
        "id"
    ]
    audio = ctx.data_dir / "voicemail" / "m1.wav"
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"RIFF....WAVE")
    at = datetime(2026, 5, 1, tzinfo=UTC)
    first = await ctx.voicemail.add(uid, "voicemail/m1.wav", at, caller_number="300")
    second = await ctx.voicemail.add(uid, "voicemail/m2.wav", at + timedelta(minutes=1))
    page = (await alice.get(f"{API}/voicemail", params={"limit": 1})).json()
    assert [m["id"] for m in page["items"]] == [second.id] and page["next_before_id"] == second.id
    rest = (await alice.get(f"{API}/voicemail", params={"before_id": second.id})).json()
    assert [m["id"] for m in rest["items"]] == [first.id] and rest["next_before_id"] is None
    r = await alice.patch(f"{API}/voicemail/{first.id}", json={"folder": "saved"})
    assert r.status_code == 200 and r.json()["folder"] == "saved"
    assert r.json()["caller_number"] == "300"
    saved = (await alice.get(f"{API}/voicemail", params={"folder": "saved", "user_id": uid})).json()
    assert [m["id"] for m in saved["items"]] == [first.id]
    assert (await alice.get(f"{API}/voicemail", params={"folder": "trash"})).status_code == 422
    assert (
        await alice.patch(f"{API}/voicemail/{first.id}", json={"folder": "x"})
    ).status_code == 422
    sound = await alice.get(f"{API}/voicemail/{first.id}/audio")
    assert sound.status_code == 200 and sound.content == b"RIFF....WAVE"
    assert sound.headers["content-type"] == "audio/wav"
    assert (await alice.get(f"{API}/voicemail/{second.id}/audio")).status_code == 404  # no file
    assert (await alice.delete(f"{API}/voicemail/{first.id}")).status_code == 204
    assert not audio.exists()
    assert (await alice.get(f"{API}/voicemail/{first.id}")).status_code == 404


def numbers(records: list[dict[str, str]]) -> list[int]:
    """The numbers ``n`` of records made by ``cdr(n, ...)`` (from their Call-IDs)."""
    return [int(r["call_id"].removeprefix("call-").partition("@")[0]) for r in records]


async def test_cdr_search_paging_and_export(
    alice: httpx.AsyncClient, ctx: WebContext, tenants: Tenants
) -> None:
    a = tenants.a.id
    records = [
        cdr(0, a, "200", "201", "ANSWERED"),
        cdr(1, a, "201", "200", "BUSY"),
        replace(
            cdr(2, a, "200", "0033123", "ANSWERED"),
            rate_prefix="33",
            connection_fee=Decimal("0.1000"),
            price_per_minute=Decimal("0.25"),
            billed_seconds=60,
            card_number="9876",
        ),
        cdr(3, a, "a_%b", "201", "FAILED"),
        cdr(4, tenants.b.id, "300", "301", "ANSWERED"),
    ]
    await SqlCdrRepo(ctx.db).add_many(records)
    everything = (await alice.get(f"{API}/cdrs", params={"count": "true"})).json()
    assert numbers(everything["items"]) == [3, 2, 1, 0]
    assert everything["total"] == 4 and everything["next_before_id"] is None

    async def found(**params: str) -> list[int]:
        r = await alice.get(f"{API}/cdrs", params=params)
        assert r.status_code == 200, r.text
        return numbers(r.json()["items"])

    assert await found(caller="200") == [2, 0]
    assert await found(called="0033") == [2]
    assert await found(caller="%") == [3]  # LIKE wildcards are literal
    assert await found(caller="_") == [3]
    assert await found(disposition="BUSY") == [1]
    assert await found(since="2030-05-01T12:01:00Z", until="2030-05-01T12:03:00") == [2, 1]
    page = (await alice.get(f"{API}/cdrs", params={"limit": 2})).json()
    assert numbers(page["items"]) == [3, 2]
    assert await found(before_id=str(page["next_before_id"]), limit="2") == [1, 0]
    assert (await alice.get(f"{API}/cdrs", params={"disposition": "LOST"})).status_code == 422
    assert (await alice.get(f"{API}/cdrs", params={"since": "yesterday"})).status_code == 422
    one = (await alice.get(f"{API}/cdrs/{page['items'][0]['id']}")).json()
    assert numbers([one]) == [3] and one["cost"] == "0.012345"
    assert (one["rate_prefix"], one["billed_seconds"], one["card_number"]) == (None, None, None)
    card_call = (await alice.get(f"{API}/cdrs", params={"caller": "200"})).json()["items"][0]
    assert numbers([card_call]) == [2]
    assert (card_call["rate_prefix"], card_call["billed_seconds"]) == ("33", 60)
    assert (card_call["connection_fee"], card_call["price_per_minute"]) == ("0.100000", "0.250000")
    assert card_call["card_number"] == "9876"
    export = await alice.get(f"{API}/cdrs/export", params={"caller": "200"})
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert numbers(rows) == [0, 2]  # oldest first
    assert [rows[1][name] for name in ("rate_prefix", "billed_seconds", "card_number")] == [
        "33",
        "60",
        "9876",
    ]
    assert rows[0]["rate_prefix"] == rows[0]["card_number"] == ""
    assert rows[0]["end_time"] == "2030-05-01T12:00:30.250Z" and rows[0]["duration"] == "30.250"
    as_json = await alice.get(f"{API}/cdrs/export", params={"format": "json"})
    assert numbers(json.loads(as_json.text)) == [0, 1, 2, 3]
    empty = await alice.get(f"{API}/cdrs/export", params={"format": "json", "caller": "999"})
    assert json.loads(empty.text) == []


def test_trunk_view_from_a_registration_status() -> None:
    from minipbx.pbx.trunk_registration import RegState, TrunkStatus
    from minipbx.web.context import trunk_view

    status = TrunkStatus("7/carrier", RegState.REGISTERED, 100.0, 200, "", 90.0, 0)
    view = trunk_view(status, 1_000.0)
    assert (view.tenant_id, view.name, view.state) == (7, "carrier", "registered")
    assert (view.registered_until, view.next_try) == (1_100.0, 1_090.0)
    odd = trunk_view(TrunkStatus("plain", RegState.FAILED, None, 0, "x", None, 2), 0.0)
    assert (odd.tenant_id, odd.name, odd.registered_until) == (0, "plain", None)
