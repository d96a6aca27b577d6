"""The auto attendant's REST API (menus with their keys as one document) and console pages."""

from __future__ import annotations

from typing import Any

import httpx

from minipbx.store.ivr import SqlIvrRepo
from minipbx.web import WebContext
from tests.web.conftest import API, Tenants, loc

MENUS = f"{API}/ivr-menus"


def key(k: str, action: str, target: str = "") -> dict[str, str]:
    return {"key": k, "action": action, "target": target}


async def _create(client: httpx.AsyncClient, **doc: Any) -> dict[str, Any]:
    r = await client.post(MENUS, json={"greeting": ["greeting_main"], **doc})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _detail(r: httpx.Response) -> tuple[list[object], str]:
    first = r.json()["detail"][0]
    return list(first["loc"]), str(first["msg"])


# --- CRUD ----------------------------------------------------------------------------------


async def test_menu_crud(alice: httpx.AsyncClient, tenants: Tenants, ctx: WebContext) -> None:
    support = await _create(alice, name="support", greeting="support_hello, call_transferring")
    assert support["greeting"] == ["support_hello", "call_transferring"]
    assert support["tenant_id"] == tenants.a.id and support["options"] == []
    assert (support["retries"], support["timeout_seconds"], support["timeout_action"]) == (
        2,
        5.0,
        "hangup",
    )
    main = await _create(
        alice,
        name="main",
        greeting=["greeting_main", "ivr_enter_extension"],
        dial_by_extension=True,
        retries=1,
        hours="mon-fri 08:00-18:00; tz Europe/Paris",
        after_hours_menu="support",
        timeout_action="user",
        timeout_target="100",
        options=[key("#", "hangup"), key("1", "user", "101"), key("2", "menu", "support")],
    )
    assert [o["key"] for o in main["options"]] == ["1", "2", "#"]
    assert main["options"][1] == key("2", "menu", "support")
    listed = (await alice.get(MENUS)).json()
    assert [m["name"] for m in listed] == ["main", "support"]
    assert (await alice.get(f"{MENUS}/{main['id']}")).json() == main

    # PATCH: the fields given; options given replace the list
    r = await alice.patch(f"{MENUS}/{main['id']}", json={"retries": 4})
    assert r.status_code == 200 and r.json()["retries"] == 4
    assert r.json()["options"] == main["options"]
    r = await alice.patch(f"{MENUS}/{main['id']}", json={"options": [key("0", "user", "100")]})
    assert r.json()["options"] == [key("0", "user", "100")]
    # PUT: the whole document
    r = await alice.put(f"{MENUS}/{main['id']}", json={"greeting": ["only_this"]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["name"], doc["greeting"], doc["options"], doc["retries"]) == (
        "main",
        ["only_this"],
        [],
        2,
    )
    assert doc["hours"] == "" and doc["after_hours_menu"] is None
    assert doc["dial_by_extension"] is False
    # the PBX sees the same menus
    menus = await SqlIvrRepo(ctx.db).load_menus(tenants.a.id)
    assert menus["main"].greeting == ("only_this",)

    assert (await alice.delete(f"{MENUS}/{main['id']}")).status_code == 204
    assert (await alice.get(f"{MENUS}/{main['id']}")).status_code == 404
    assert [m["name"] for m in (await alice.get(MENUS)).json()] == ["support"]


async def test_validation_names_the_field(alice: httpx.AsyncClient) -> None:
    await _create(alice, name="support")
    cases: list[tuple[dict[str, Any], list[object], str]] = [
        ({"name": "m"}, ["body", "greeting"], "Field required"),
        ({"greeting": ["g"]}, ["body", "name"], "Field required"),
        ({"name": "m", "greeting": []}, ["body", "greeting"], "at least one prompt"),
        ({"name": "m", "greeting": ["Hi!"]}, ["body", "greeting"], "'Hi!' is not a prompt"),
        ({"name": "bad name", "greeting": "g"}, ["body", "name"], "'bad name' is not allowed"),
        ({"name": "m", "greeting": "g", "retries": 11}, ["body", "retries"], "not between 0"),
        ({"name": "m", "greeting": "g", "retries": "x"}, ["body", "retries"], "valid integer"),
        (
            {"name": "m", "greeting": "g", "timeout_seconds": 0.2},
            ["body", "timeout_seconds"],
            "0.2 is not between 1 and 60 seconds",
        ),
        (
            {"name": "m", "greeting": "g", "timeout_action": "repeat"},
            ["body", "timeout_action"],
            "'repeat' is not one of",
        ),
        (
            {"name": "m", "greeting": "g", "hours": "weekdays"},
            ["body", "hours"],
            "unknown day 'weekdays'",
        ),
        (
            {"name": "m", "greeting": "g", "hours": "mon-fri"},
            ["body", "after_hours_menu"],
            "business hours and an after-hours menu go together",
        ),
        (
            {"name": "m", "greeting": "g", "options": [key("1", "hangup"), key("x", "hangup")]},
            ["body", "options", 1, "key"],
            "option 2: invalid key: 'x' is not allowed (0-9 * #)",
        ),
        (
            {"name": "m", "greeting": "g", "options": [key("1", "voicemail")]},
            ["body", "options", 0, "target"],
            "option 1: invalid target: a voicemail action needs a target",
        ),
        (
            {"name": "m", "greeting": "g", "options": [key("1", "menu", "sales")]},
            ["body", "options", 0, "target"],
            "option 1: invalid target: no menu 'sales'",
        ),
        (
            {"name": "m", "greeting": "g", "options": [{"key": "1"}]},
            ["body", "options", 0, "action"],
            "Field required",
        ),
        (
            {"name": "m", "greeting": "g", "timeout_action": "menu", "timeout_target": "x"},
            ["body", "timeout_target"],
            "no menu 'x'",
        ),
        ({"name": "m", "greeting": "g", "colour": "red"}, ["body", "colour"], "Extra inputs"),
    ]
    for body, where, message in cases:
        r = await alice.post(MENUS, json=body)
        assert r.status_code == 422, (body, r.text)
        got_loc, got_msg = await _detail(r)
        assert got_loc == where, (body, r.text)
        assert message in got_msg, (body, got_msg)
    assert [m["name"] for m in (await alice.get(MENUS)).json()] == ["support"]


async def test_after_hours_cycle_is_refused(alice: httpx.AsyncClient) -> None:
    day = await _create(alice, name="day")
    await _create(alice, name="night", hours="sat-sun", after_hours_menu="day")
    r = await alice.patch(
        f"{MENUS}/{day['id']}", json={"hours": "mon-fri", "after_hours_menu": "night"}
    )
    assert loc(r) == ["body", "after_hours_menu"]
    assert "day -> night -> day goes round for ever" in r.text


# --- conflicts -------------------------------------------------------------------------------


async def test_conflicts(alice: httpx.AsyncClient) -> None:
    support = await _create(alice, name="support")
    r = await alice.post(MENUS, json={"name": "support", "greeting": "g"})
    assert r.status_code == 409 and "IVR menu 'support' already exists" in r.json()["detail"]
    main = await _create(alice, name="main", options=[key("9", "menu", "support")])
    r = await alice.delete(f"{MENUS}/{support['id']}")
    assert r.status_code == 409
    assert r.json()["detail"] == (
        "cannot remove IVR menu 'support': it is used by menu 'main' (key 9)"
    )
    r = await alice.patch(f"{MENUS}/{support['id']}", json={"name": "help"})
    assert r.status_code == 409 and "cannot rename IVR menu 'support'" in r.text
    r = await alice.patch(f"{MENUS}/{main['id']}", json={"name": "support"})
    assert r.status_code == 409 and "already exists" in r.text

    plan = (await alice.post(f"{API}/dial-plans", json={"name": "inbound"})).json()
    rules = {"rules": [{"pattern": "0", "action": "service", "target": "ivr:main"}]}
    r = await alice.put(f"{API}/dial-plans/{plan['id']}/rules", json=rules)
    assert r.status_code == 200, r.text
    r = await alice.delete(f"{MENUS}/{main['id']}")
    assert r.status_code == 409
    assert "dial plan 'inbound' rule 1 (ivr:main)" in r.json()["detail"]
    await alice.put(f"{API}/dial-plans/{plan['id']}/rules", json={"rules": []})
    assert (await alice.delete(f"{MENUS}/{main['id']}")).status_code == 204
    assert (await alice.delete(f"{MENUS}/{support['id']}")).status_code == 204


# --- tenants -------------------------------------------------------------------------------


async def test_tenant_isolation(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, root: httpx.AsyncClient, tenants: Tenants
) -> None:
    mine = await _create(alice, name="support")
    url = f"{MENUS}/{mine['id']}"
    for answer in (
        await bob.get(url),
        await bob.patch(url, json={"retries": 1}),
        await bob.put(url, json={"greeting": ["g"]}),
        await bob.delete(url),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == f"no IVR menu with id {mine['id']}"
    assert (await bob.get(MENUS)).json() == []
    assert (await bob.get(MENUS, params={"tenant_id": tenants.a.id})).status_code == 404
    # a menu of another tenant cannot be named
    r = await bob.post(
        MENUS, json={"name": "m", "greeting": "g", "options": [key("1", "menu", "support")]}
    )
    assert loc(r) == ["body", "options", 0, "target"]
    r = await bob.post(MENUS, json={"name": "m", "greeting": "g", "tenant_id": tenants.a.id})
    assert loc(r) == ["body", "tenant_id"]
    # the same name in another tenant is fine; a system admin sees both
    theirs = await _create(bob, name="support")
    assert theirs["tenant_id"] == tenants.b.id
    assert len((await root.get(MENUS)).json()) == 2
    only_b = (await root.get(MENUS, params={"tenant_id": tenants.b.id})).json()
    assert [m["id"] for m in only_b] == [theirs["id"]]
    made = await _create(root, name="x", tenant_id=tenants.b.id)
    assert made["tenant_id"] == tenants.b.id
    assert (await root.put(url, json={"greeting": "other"})).json()["greeting"] == ["other"]


async def test_openapi_lists_the_menus(alice: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    paths = (await alice.get(f"{API}/openapi.json")).json()["paths"]
    assert set(paths[f"{API}/ivr-menus/{{row_id}}"]) == {"get", "put", "patch", "delete"}
    assert (await anon.get(MENUS)).status_code == 401
