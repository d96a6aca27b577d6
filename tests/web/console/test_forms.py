"""Console forms: creating, changing and deleting objects, inline errors, confirmations."""

from __future__ import annotations

import re

from minipbx.store.cdrs import SqlCdrRepo
from minipbx.web import WebContext
from tests.web.conftest import Tenants, cdr
from tests.web.console.conftest import Console


def field_has_error(html: str, name: str) -> bool:
    """True when the form field ``name`` is marked as wrong and has its message."""
    for block in html.split('<div class="field')[1:]:
        if f'name="{name}"' in block.split("</div>")[0]:
            head = block.split(">")[0]
            return "has-error" in head and "field-error" in block.split("</div>")[0]
    return False


def general_errors(html: str) -> list[str]:
    """The messages above a form."""
    return re.findall(r'<div class="error-box".*?</div>', html, re.S)


USER = {
    "extension": "700",
    "password": "secret-700",
    "display_name": "Seven Hundred",
    "email": "",
    "enabled": "on",
    "call_level": "2",
    "max_call_seconds": "",
    "max_concurrent_calls": "3",
    "media_relay": "always",
    "forward_busy": "701",
    "no_answer_seconds": "25",
    "voicemail_enabled": "on",
    "voicemail_pin": "4321",
    "voicemail_max_seconds": "45",
    "prepaid": "on",
    "credit_limit": "5.5",
    "currency": "EUR",
}


async def test_user_create_edit_delete(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    form = await tenant_a.get("/users/new")
    for name in (
        "call_level",
        "dial_plan_id",
        "forward_unconditional",
        "voicemail_pin",
        "voicemail_max_seconds",
    ):
        assert f'name="{name}"' in form.text, name
    assert "Max voicemail message length (s)" in form.text
    assert 'name="tenant_id"' not in form.text  # a tenant admin's users go to its tenant
    r = await tenant_a.post("/users/new", USER)
    assert r.status_code == 303 and r.headers["location"] == "/users?done=created"
    user = await ctx.users.get("700", domain=tenants.a.domain)
    assert user is not None and user.display_name == "Seven Hundred"
    settings = await ctx.user_settings.get_settings(user.id)
    assert settings.call_level == 2 and settings.max_concurrent_calls == 3
    assert settings.forward_busy == "701" and settings.voicemail_pin == "4321"
    assert settings.voicemail_max_seconds == 45
    assert (
        settings.media_relay == "always" and settings.prepaid and settings.max_call_seconds is None
    )
    listing = await tenant_a.get("/users?done=created")
    assert "Created." in listing.text and "Seven Hundred" in listing.text

    edit = await tenant_a.get(f"/users/{user.id}")
    assert 'value="701"' in edit.text and "4321" not in edit.text  # the PIN is write-only
    assert 'value="secret-700"' not in edit.text
    assert "Balance" in edit.text and 'name="balance"' not in edit.text  # read-only
    assert 'name="voicemail_max_seconds"' in edit.text and 'value="45"' in edit.text
    changed = {**USER, "call_level": "5", "voicemail_pin": "", "password": "", "prepaid": ""}
    changed["voicemail_max_seconds"] = ""  # empty: back to the tenant's setting
    del changed["prepaid"]
    r = await tenant_a.post(f"/users/{user.id}", changed)
    assert r.status_code == 303, r.text
    settings = await ctx.user_settings.get_settings(user.id)
    assert settings.call_level == 5 and settings.voicemail_pin == "4321"  # empty: unchanged
    assert settings.voicemail_max_seconds is None
    assert not settings.prepaid

    # bad input: errors next to the fields, values kept
    bad = await tenant_a.post(
        f"/users/{user.id}",
        {**USER, "call_level": "200", "forward_busy": "not a number!", "email": "nope"},
    )
    assert bad.status_code == 422
    errors = re.findall(r'<div class="field[^"]*has-error">.*?name="([a-z_]+)"', bad.text, re.S)
    assert errors and errors[0] in ("call_level", "email", "forward_busy"), errors
    assert 'value="not a number!"' in bad.text
    bad = await tenant_a.post(f"/users/{user.id}", {**USER, "voicemail_max_seconds": "4"})
    assert bad.status_code == 422
    errors = re.findall(r'<div class="field[^"]*has-error">.*?name="([a-z_]+)"', bad.text, re.S)
    assert errors == ["voicemail_max_seconds"] and 'value="4"' in bad.text

    # delete: a confirmation page, then the second POST
    page = await tenant_a.get(f"/users/{user.id}/delete")
    assert "Delete user 700@a.example?" in page.text and 'name="confirm" value="yes"' in page.text
    r = await tenant_a.post(f"/users/{user.id}/delete")
    assert r.status_code == 303 and r.headers["location"].endswith("/delete")
    assert await ctx.users.get("700", domain=tenants.a.domain) is not None
    r = await tenant_a.post(f"/users/{user.id}/delete", {"confirm": "yes"})
    assert r.status_code == 303 and await ctx.users.get("700", domain=tenants.a.domain) is None


async def test_create_errors_are_inline(sysadmin: Console, tenants: Tenants) -> None:
    for data, field in (
        ({**USER, "extension": ""}, "extension"),
        ({**USER, "password": ""}, "password"),
        ({**USER, "call_level": "abc"}, "call_level"),
        ({**USER, "voicemail_pin": "12"}, "voicemail_pin"),
        ({**USER, "tenant_id": "9999"}, "tenant_id"),
    ):
        r = await sysadmin.post("/users/new", data)
        assert r.status_code == 422, (field, r.text[:300])
        assert field_has_error(r.text, field), (field, general_errors(r.text))
    r = await sysadmin.post("/users/new", {**USER, "tenant_id": str(tenants.b.id)})
    assert r.status_code == 303
    again = await sysadmin.post("/users/new", {**USER, "tenant_id": str(tenants.b.id)})
    assert again.status_code == 422 and "error-box" in again.text  # exists already


async def test_trunk_password_is_write_only(tenant_a: Console, ctx: WebContext) -> None:
    data = {
        "name": "carrier",
        "host": "sip.carrier.example",
        "transport": "udp",
        "username": "acct",
        "password": "trunk-secret",
        "register": "on",
        "register_expires": "600",
        "allowed_ips": "",
        "options": '{"x": 1}',
        "enabled": "on",
    }
    assert (await tenant_a.post("/trunks/new", data)).status_code == 303
    trunk = (await ctx.trunks.list_by_tenant(None))[0]
    assert trunk.password == "trunk-secret" and trunk.register
    page = await tenant_a.get(f"/trunks/{trunk.id}")
    assert "trunk-secret" not in page.text and "Password set" in page.text
    assert f'value="{trunk.codecs}"' in page.text
    data["codecs"] = trunk.codecs  # as the browser sends the form back
    assert (await tenant_a.post(f"/trunks/{trunk.id}", {**data, "password": ""})).status_code == 303
    assert (await ctx.trunks.get(trunk.id)).password == "trunk-secret"
    bad = await tenant_a.post(f"/trunks/{trunk.id}", {**data, "host": "bad host!", "options": "["})
    assert bad.status_code == 422 and "field-error" in bad.text


async def test_dial_plan_rules_editor_and_route_test(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    await ctx.users.add("200", "pw-123456", domain=tenants.a.domain)
    plan = await ctx.dial_plans.add(tenants.a.id, "office")
    await ctx.dial_plans.set_tenant_plan(tenants.a.id, plan.id)
    editor = await tenant_a.get(f"/dial-plans/{plan.id}/rules")
    assert editor.text.count('name="r0.pattern"') == 1 and 'name="r2.pattern"' in editor.text
    rows = {
        "rows": "3",
        "r0.position": "2",
        "r0.new": "1",
        "r0.enabled": "on",
        "r0.pattern": "2XX",
        "r0.action": "local",
        "r0.min_level": "1",
        "r1.position": "1",
        "r1.new": "1",
        "r1.enabled": "on",
        "r1.pattern": "9.",
        "r1.action": "reject",
        "r1.reject_status": "403",
        "r1.min_level": "1",
        "r2.position": "3",
        "r2.new": "1",
        "r2.pattern": "",
        "r2.action": "local",
    }
    r = await tenant_a.post(f"/dial-plans/{plan.id}/rules", rows)
    assert r.status_code == 303, r.text[:2000]
    rules = await ctx.dial_plans.list_rules(plan.id)
    assert [(x.pattern, x.action) for x in rules] == [("9.", "reject"), ("2XX", "local")]

    # a bad rule: the error is shown in its row and field; nothing is saved
    bad = {**rows, "r0.pattern": "2[X", "r1.action": "trunk", "r1.reject_status": ""}
    r = await tenant_a.post(f"/dial-plans/{plan.id}/rules", bad)
    assert r.status_code == 422
    row0 = re.search(r'<tr id="rule-0" class="has-error.*?</tr>', r.text, re.S)
    assert row0 and "field-error" in row0.group(0) and 'value="2[X"' in row0.group(0)
    assert len(await ctx.dial_plans.list_rules(plan.id)) == 2

    # removing needs the confirmation box
    editor = await tenant_a.get(f"/dial-plans/{plan.id}/rules")
    remove = {
        "rows": "2",
        "r0.position": "1",
        "r0.enabled": "on",
        "r0.pattern": "9.",
        "r0.action": "reject",
        "r0.reject_status": "403",
        "r0.min_level": "1",
        "r0.remove": "on",
        "r1.position": "2",
        "r1.enabled": "on",
        "r1.pattern": "2XX",
        "r1.action": "local",
        "r1.min_level": "1",
    }
    r = await tenant_a.post(f"/dial-plans/{plan.id}/rules", remove)
    assert r.status_code == 422 and "confirm removal" in r.text
    r = await tenant_a.post(f"/dial-plans/{plan.id}/rules", {**remove, "confirm_remove": "on"})
    assert r.status_code == 303
    assert [x.pattern for x in await ctx.dial_plans.list_rules(plan.id)] == ["2XX"]

    test = await tenant_a.get("/route-test", params={"caller": "200", "number": "250"})
    assert test.status_code == 200 and "dial plan &#39;office&#39;" in test.text
    assert "result: local" in test.text and "compiled from the database" in test.text
    unknown = await tenant_a.get("/route-test", params={"caller": "999", "number": "250"})
    assert unknown.status_code == 422 and "no user &#39;999&#39;" in unknown.text


async def test_rates_csv_and_card_batch(
    tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    table = await ctx.rates.add(tenants.a.id, "retail", currency="EUR")
    base = f"/rate-tables/{table.id}/rates"
    r = await tenant_a.post(base, {"prefix": "33", "price_per_minute": "0.05", "description": "FR"})
    assert r.status_code == 303
    bad = await tenant_a.post(base, {"prefix": "3x", "price_per_minute": "-1"})
    assert bad.status_code == 422 and "field-error" in bad.text
    page = await tenant_a.get(base)
    assert "FR" in page.text and f"/api/v1/rate-tables/{table.id}/rates.csv" in page.text
    download = await tenant_a.get(f"/api/v1/rate-tables/{table.id}/rates.csv")
    assert download.status_code == 200 and "33" in download.text
    csv_text = "prefix,price_per_minute,description\n44,0.07,UK\n"
    upload = await tenant_a.client.post(
        f"{base}/upload",
        data={"csrf_token": tenant_a.csrf},
        files={"file": ("rates.csv", csv_text.encode(), "text/csv")},
    )
    assert upload.status_code == 303, upload.text[:1000]
    assert {r.prefix for r in await ctx.rates.list_rates(table.id)} == {"33", "44"}
    # replacing needs the confirm box; bad files are reported inline
    refused = await tenant_a.client.post(
        f"{base}/upload",
        data={"csrf_token": tenant_a.csrf, "replace": "on"},
        files={"file": ("rates.csv", csv_text.encode(), "text/csv")},
    )
    assert refused.status_code == 422 and "confirm replacing" in refused.text
    broken = await tenant_a.client.post(
        f"{base}/upload",
        data={"csrf_token": tenant_a.csrf},
        files={"file": ("rates.csv", b"prefix,price_per_minute\nabc,zz\n", "text/csv")},
    )
    assert broken.status_code == 422 and "nothing imported" in broken.text
    rate = (await ctx.rates.list_rates(table.id))[0]
    assert (await tenant_a.post(f"{base}/{rate.id}/delete", {"confirm": "yes"})).status_code == 303
    assert len(await ctx.rates.list_rates(table.id)) == 1

    made = await tenant_a.post(
        "/cards/batch",
        {"count": "3", "number_len": "10", "pin_len": "6", "balance": "5", "status": "active"},
    )
    assert made.status_code == 201, made.text[:1000]
    pins = re.findall(r"<td><code>(\d{6})</code></td>", made.text)
    assert len(pins) == 3
    cards = await ctx.cards.list_by_tenant(tenants.a.id)
    assert len(cards) == 3 and all(c.tenant_id == tenants.a.id for c in cards)
    listing = await tenant_a.get("/cards")
    assert not any(pin in listing.text for pin in pins)
    bad = await tenant_a.post("/cards/batch", {"count": "0"})
    assert bad.status_code == 422 and "field-error" in bad.text
    csv_all = await tenant_a.get("/api/v1/cards.csv?include_pins=true")
    assert all(pin in csv_all.text for pin in pins)


async def test_cdr_search_paging_and_csv(
    sysadmin: Console, ctx: WebContext, tenants: Tenants
) -> None:
    await SqlCdrRepo(ctx.db).add_many(
        [
            cdr(n, tenants.a.id, f"caller-{n}", "500", "ANSWERED" if n % 2 else "BUSY")
            for n in range(1, 61)
        ]
    )
    first = await sysadmin.get("/cdrs", params={"limit": "25"})
    assert first.status_code == 200 and "60 found" in first.text
    assert first.text.count("<tr>") == 26  # header + 25
    assert "caller-60" in first.text and "caller-35" not in first.text
    older = re.search(r'href="(/cdrs\?[^"]*before_id=\d+[^"]*)"', first.text)
    assert older
    second = await sysadmin.get(older.group(1).replace("&amp;", "&"))
    assert "caller-35" in second.text and "caller-60" not in second.text
    busy = await sysadmin.get("/cdrs", params={"disposition": "BUSY", "caller": "caller-1"})
    assert "caller-10" in busy.text and "caller-11<" not in busy.text
    window = await sysadmin.get(
        "/cdrs", params={"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"}
    )
    assert "0 found" in window.text
    bad = await sysadmin.get("/cdrs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "field-error" in bad.text
    link = re.search(r'href="(/api/v1/cdrs/export[^"]*)" id="cdr-csv"', busy.text)
    assert link
    csv_file = await sysadmin.get(link.group(1).replace("&amp;", "&"))
    assert csv_file.status_code == 200 and csv_file.text.startswith("uuid,")
    assert "caller-10" in csv_file.text and "caller-11," not in csv_file.text


async def test_settings_smtp(sysadmin: Console, tenant_a: Console, ctx: WebContext) -> None:
    data = {
        "smtp_host": "mail.example.com",
        "smtp_port": "587",
        "smtp_security": "starttls",
        "smtp_username": "pbx",
        "smtp_password": "mail-secret",
        "smtp_from": "pbx@example.com",
    }
    assert (await sysadmin.post("/settings", data)).status_code == 303
    page = await sysadmin.get("/settings")
    assert 'value="mail.example.com"' in page.text and "mail-secret" not in page.text
    assert "set (leave empty to keep it)" in page.text
    assert (await ctx.settings.list_settings(tenant_id=None))["smtp.password"] == "mail-secret"
    assert (await sysadmin.post("/settings", {**data, "smtp_password": ""})).status_code == 303
    assert (await ctx.settings.list_settings(tenant_id=None))["smtp.password"] == "mail-secret"
    bad = await sysadmin.post("/settings", {**data, "smtp_port": "99999", "smtp_from": "x"})
    assert bad.status_code == 422 and bad.text.count("field-error") == 2
    # a tenant admin edits its tenant's overrides, not the system's
    assert (
        await tenant_a.post("/settings", {"smtp_host": "tenant.mail", "smtp_security": "tls"})
    ).status_code == 303
    assert (await ctx.settings.list_settings(tenant_id=None))["smtp.host"] == "mail.example.com"


async def test_tokens_tenants_and_admins(
    sysadmin: Console, tenant_a: Console, ctx: WebContext, tenants: Tenants
) -> None:
    made = await sysadmin.post("/tokens", {"name": "ci", "username": "sys"})
    assert made.status_code == 201
    token = re.search(r'<pre class="token" id="new-token">([^<]+)</pre>', made.text)
    assert token
    again = await sysadmin.get("/tokens")
    assert token.group(1) not in again.text and "ci" in again.text
    api = await sysadmin.client.get(
        "/api/v1/users", headers={"Authorization": f"Bearer {token.group(1)}"}
    )
    assert api.status_code == 200
    token_id = (await ctx.admins.list_tokens("sys"))[0].id
    assert "ci" not in (await tenant_a.get("/tokens")).text  # not its token
    assert (
        await sysadmin.post(f"/tokens/{token_id}/delete", {"confirm": "yes"})
    ).status_code == 303
    assert await ctx.admins.list_tokens("sys") == []

    r = await sysadmin.post(
        "/tenants/new",
        {"domain": "c.example", "name": "C", "max_users": "10", "free_account": "on"},
    )
    assert r.status_code == 303
    created = next(t for t in await ctx.tenants.list_tenants() if t.domain == "c.example")
    assert created.max_users == 10 and created.free_account
    assert (await tenant_a.post("/tenants/new", {"domain": "d.example"})).status_code == 403
    assert (await tenant_a.post(f"/tenants/{tenants.a.id}", {"name": "Renamed"})).status_code == 303
    assert (await ctx.web.get_tenant(tenants.a.id)).name == "Renamed"
    bad = await sysadmin.post("/tenants/new", {"domain": "bad domain"})
    assert bad.status_code == 422 and "field-error" in bad.text

    r = await sysadmin.post(
        "/admins/new",
        {
            "username": "cadmin",
            "password": "long-password-1",
            "tenant_id": str(created.id),
            "enabled": "on",
        },
    )
    assert r.status_code == 303
    admin = await ctx.admins.get_by_username("cadmin")
    assert admin is not None and admin.tenant_id == created.id
    weak = await sysadmin.post(
        "/admins/new", {"username": "weak", "password": "x", "enabled": "on"}
    )
    assert weak.status_code == 422 and "field-error" in weak.text
    sys_admin = await ctx.admins.get_by_username("sys")
    assert sys_admin is not None
    last = await sysadmin.post(f"/admins/{sys_admin.id}/delete", {"confirm": "yes"})
    assert last.status_code == 409 and "last enabled system admin" in last.text
