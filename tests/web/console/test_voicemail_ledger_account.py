"""Voicemail messages, balance ledgers, "my account" and the users search of the console."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi import FastAPI

from minipbx.web import WebContext
from minipbx.web.console import crud_pages
from minipbx.web.middleware import CSP
from tests.web.conftest import PASSWORD, Tenants, client_for
from tests.web.console.conftest import Console, csrf_of, log_in

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28


@dataclass
class Seeded:
    user_a: int
    user_b: int
    card_a: int
    card_b: int
    msg_a: int
    msg_a_old: int
    msg_b: int


async def _message(ctx: WebContext, user_id: int, name: str, folder: str = "new") -> int:
    path = f"voicemail/{name}.wav"
    (ctx.data_dir / "voicemail").mkdir(parents=True, exist_ok=True)
    (ctx.data_dir / path).write_bytes(WAV)
    when = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    message = await ctx.voicemail.add(
        user_id, path, when, duration_ms=4200, caller_number=f"caller-{name}", folder=folder
    )
    return message.id


@pytest.fixture
async def seeded(ctx: WebContext, tenants: Tenants) -> Seeded:
    a = await ctx.users.add("201", "pw-123456", name="Alice Anders", domain=tenants.a.domain)
    b = await ctx.users.add("301", "pw-123456", name="Bert Bauer", domain=tenants.b.domain)
    card_a = await ctx.cards.add(tenants.a.id, "99990001", "1234")
    card_b = await ctx.cards.add(tenants.b.id, "99990002", "1234")
    return Seeded(
        user_a=a.id,
        user_b=b.id,
        card_a=card_a.id,
        card_b=card_b.id,
        msg_a=await _message(ctx, a.id, "a1"),
        msg_a_old=await _message(ctx, a.id, "a2", "old"),
        msg_b=await _message(ctx, b.id, "b1"),
    )


# --- voicemail -----------------------------------------------------------------------------


async def test_voicemail_list_filters_and_audio(sysadmin: Console, seeded: Seeded) -> None:
    r = await sysadmin.get("/voicemail")
    assert r.status_code == 200, r.text
    assert r.headers["content-security-policy"] == CSP
    assert "caller-a1" in r.text and "caller-a2" in r.text and "caller-b1" in r.text
    assert f'<audio controls preload="none" src="/api/v1/voicemail/{seeded.msg_a}/audio"' in r.text
    assert "<script>" not in r.text and "style=" not in r.text
    forms = re.findall(r'<form method="post".*?</form>', r.text, re.S)
    assert len(forms) >= 4 and all('name="csrf_token"' in form for form in forms)
    only_a = await sysadmin.get(f"/voicemail?user_id={seeded.user_a}")
    assert "caller-a1" in only_a.text and "caller-b1" not in only_a.text
    old = await sysadmin.get(f"/voicemail?user_id={seeded.user_a}&folder=old")
    assert "caller-a2" in old.text and "caller-a1" not in old.text
    audio = await sysadmin.get(f"/api/v1/voicemail/{seeded.msg_b}/audio")
    assert audio.status_code == 200 and audio.content == WAV
    assert audio.headers["content-type"] == "audio/wav"
    page = await sysadmin.get(f"/voicemail/{seeded.msg_a}")
    assert page.status_code == 200 and f"/api/v1/voicemail/{seeded.msg_a}/audio" in page.text
    shortcut = await sysadmin.get(f"/users/{seeded.user_a}/voicemail")
    assert shortcut.status_code == 303
    assert shortcut.headers["location"] == f"/voicemail?user_id={seeded.user_a}"


async def test_voicemail_bad_filters(sysadmin: Console, seeded: Seeded) -> None:
    r = await sysadmin.get("/voicemail?folder=trash&user_id=x")
    assert r.status_code == 422
    assert "one of new, old, saved" in r.text and "choose a user from the list" in r.text
    assert "caller-a1" not in r.text
    assert (await sysadmin.get("/voicemail?user_id=99999")).status_code == 404


async def test_voicemail_move_and_delete(
    sysadmin: Console, ctx: WebContext, seeded: Seeded
) -> None:
    r = await sysadmin.post(f"/voicemail/{seeded.msg_a}", {"folder": "saved"})
    assert r.status_code == 303, r.text
    assert (await ctx.voicemail.get(seeded.msg_a)).folder == "saved"
    bad = await sysadmin.post(f"/voicemail/{seeded.msg_a}", {"folder": "trash"})
    assert bad.status_code == 422 and 'class="field-error"' in bad.text
    assert (await ctx.voicemail.get(seeded.msg_a)).folder == "saved"
    confirm = await sysadmin.get(f"/voicemail/{seeded.msg_a}/delete")
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in confirm.text
    unconfirmed = await sysadmin.post(f"/voicemail/{seeded.msg_a}/delete")
    assert unconfirmed.status_code == 303
    assert unconfirmed.headers["location"] == f"/voicemail/{seeded.msg_a}/delete"
    assert (ctx.data_dir / "voicemail/a1.wav").exists()
    done = await sysadmin.post(f"/voicemail/{seeded.msg_a}/delete", {"confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"].startswith("/voicemail?")
    assert not (ctx.data_dir / "voicemail/a1.wav").exists()
    assert "caller-a1" not in (await sysadmin.get("/voicemail")).text


async def test_voicemail_tenant_isolation(
    tenant_a: Console, ctx: WebContext, seeded: Seeded, tenants: Tenants
) -> None:
    r = await tenant_a.get("/voicemail")
    assert r.status_code == 200
    assert "caller-a1" in r.text and "caller-b1" not in r.text and "301@" not in r.text
    # asking for tenant B's messages (by tenant or by user) shows nothing of B
    other = await tenant_a.get(f"/voicemail?tenant_id={tenants.b.id}")
    assert other.status_code == 200 and "caller-b1" not in other.text
    assert (await tenant_a.get(f"/voicemail?user_id={seeded.user_b}")).status_code == 404
    for path in (f"/voicemail/{seeded.msg_b}", f"/voicemail/{seeded.msg_b}/delete"):
        assert (await tenant_a.get(path)).status_code == 404, path
    assert (await tenant_a.get(f"/api/v1/voicemail/{seeded.msg_b}/audio")).status_code == 404
    move = await tenant_a.post(f"/voicemail/{seeded.msg_b}", {"folder": "saved"})
    delete = await tenant_a.post(f"/voicemail/{seeded.msg_b}/delete", {"confirm": "yes"})
    assert move.status_code == 404 and delete.status_code == 404
    assert (await ctx.voicemail.get(seeded.msg_b)).folder == "new"
    assert (ctx.data_dir / "voicemail/b1.wav").exists()


async def test_voicemail_posts_need_csrf(
    sysadmin: Console, ctx: WebContext, seeded: Seeded
) -> None:
    client = sysadmin.client
    move = await client.post(f"/voicemail/{seeded.msg_a}", data={"folder": "saved"})
    delete = await client.post(f"/voicemail/{seeded.msg_a}/delete", data={"confirm": "yes"})
    assert move.status_code == 403 and delete.status_code == 403
    message = await ctx.voicemail.get(seeded.msg_a)
    assert message.folder == "new"


# --- ledgers -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["users", "cards"])
async def test_ledger_add_and_list(
    sysadmin: Console, ctx: WebContext, seeded: Seeded, kind: str
) -> None:
    row_id = seeded.user_a if kind == "users" else seeded.card_a
    path = f"/{kind}/{row_id}/ledger"
    r = await sysadmin.get(path)
    assert r.status_code == 200 and "No entries yet." in r.text
    assert 'value="reserve"' not in r.text  # calls reserve, admins do not
    top = await sysadmin.post(path, {"kind": "topup", "amount": "10.50", "note": "cash"})
    assert top.status_code == 303 and top.headers["location"] == path + "?done=created"
    charge = await sysadmin.post(path, {"kind": "charge", "amount": "-3", "note": "fee"})
    assert charge.status_code == 303
    shown = await sysadmin.get(path)
    assert "<strong>7.5" in shown.text  # the resulting balance
    assert "cash" in shown.text and "fee" in shown.text and "10.5" in shown.text
    owner = {"user_id": row_id} if kind == "users" else {"card_id": row_id}
    entries = await ctx.ledger.list_entries(**owner)
    assert [e.balance_after for e in entries] == [Decimal("7.5"), Decimal("10.5")]
    listing = await sysadmin.get(f"/{kind}")
    assert f'href="/{kind}/{row_id}/ledger"' in listing.text


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"kind": "charge", "amount": "5"}, "amount", "negative or zero"),
        ({"kind": "topup", "amount": "-5"}, "amount", "positive or zero"),
        ({"kind": "topup", "amount": "lots"}, "amount", ""),
        ({"kind": "topup", "amount": ""}, "amount", ""),
        ({"kind": "reserve", "amount": "-1"}, "kind", "one of topup, refund, charge"),
        ({"kind": "gift", "amount": "1"}, "kind", ""),
        ({"kind": "topup", "amount": "1", "note": "x" * 1001}, "note", ""),
    ],
)
async def test_ledger_bad_input_inline(
    sysadmin: Console,
    ctx: WebContext,
    seeded: Seeded,
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    r = await sysadmin.post(f"/users/{seeded.user_a}/ledger", data)
    assert r.status_code == 422, r.text
    assert f'id="f-{field}"' in r.text
    assert 'aria-invalid="true"' in r.text.split(f'id="f-{field}"', 1)[1].split(">", 1)[0]
    assert message in r.text
    assert await ctx.ledger.list_entries(user_id=seeded.user_a) == []


async def test_ledger_tenant_isolation_and_csrf(
    tenant_a: Console, ctx: WebContext, seeded: Seeded
) -> None:
    assert (await tenant_a.get(f"/users/{seeded.user_a}/ledger")).status_code == 200
    for path in (f"/users/{seeded.user_b}/ledger", f"/cards/{seeded.card_b}/ledger"):
        assert (await tenant_a.get(path)).status_code == 404, path
        r = await tenant_a.post(path, {"kind": "topup", "amount": "100"})
        assert r.status_code == 404, path
    assert await ctx.ledger.list_entries(user_id=seeded.user_b) == []
    assert await ctx.ledger.list_entries(card_id=seeded.card_b) == []
    no_token = await tenant_a.client.post(
        f"/cards/{seeded.card_a}/ledger", data={"kind": "topup", "amount": "1"}
    )
    assert no_token.status_code == 403
    assert await ctx.ledger.list_entries(card_id=seeded.card_a) == []


# --- my account ----------------------------------------------------------------------------


NEW_PASSWORD = "a much better passphrase"


async def test_account_page(tenant_a: Console, sysadmin: Console) -> None:
    mine = await tenant_a.get("/account")
    assert mine.status_code == 200 and "tenant admin of a.example" in mine.text
    assert 'autocomplete="current-password"' in mine.text
    assert 'href="/account"' in (await sysadmin.get("/")).text


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"current_password": "wrong", "repeat_password": NEW_PASSWORD}, "current_password", ""),
        ({"current_password": PASSWORD, "repeat_password": "other"}, "repeat_password", "match"),
        (
            {"current_password": PASSWORD, "new_password": "short", "repeat_password": "short"},
            "new_password",
            "",
        ),
        ({"current_password": "", "repeat_password": NEW_PASSWORD}, "current_password", ""),
    ],
)
async def test_password_change_errors(
    sysadmin: Console, data: dict[str, str], field: str, message: str
) -> None:
    form = {"new_password": NEW_PASSWORD, **data}
    r = await sysadmin.post("/account/password", form)
    assert r.status_code == 422, r.text
    after = r.text.split(f'id="f-{field}"', 1)[1]
    assert 'aria-invalid="true"' in after.split(">", 1)[0]
    assert 'class="field-error"' in after and message in after
    assert NEW_PASSWORD not in r.text and PASSWORD not in r.text  # never echoed
    assert (await sysadmin.get("/")).status_code == 200  # still logged in


async def test_password_change_ends_sessions(
    app: FastAPI, ctx: WebContext, tenant_a: Console
) -> None:
    async with client_for(app) as other:
        await log_in(other, "ann")  # a second session of the same admin
        no_token = await tenant_a.client.post(
            "/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "repeat_password": NEW_PASSWORD,
            },
        )
        assert no_token.status_code == 403
        r = await tenant_a.post(
            "/account/password",
            {
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "repeat_password": NEW_PASSWORD,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/login?done=password"
        login = await tenant_a.get(r.headers["location"])
        assert "Your password was changed" in login.text
        for client in (tenant_a.client, other):
            assert (await client.get("/")).status_code == 303  # both sessions ended
        admin = await ctx.admins.get_by_username("ann")
        assert admin.password_hash.startswith("$argon2")
        await log_in(tenant_a.client, "ann", NEW_PASSWORD)
        form = await other.get("/login")
        old = await other.post(
            "/login",
            data={"username": "ann", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        )
        assert old.status_code == 401


# --- users search --------------------------------------------------------------------------


async def test_users_search(sysadmin: Console, tenant_a: Console, seeded: Seeded) -> None:
    by_ext = await sysadmin.get("/users?q=20")
    assert by_ext.status_code == 200
    assert ">201</a>" in by_ext.text and ">301</a>" not in by_ext.text
    by_name = await sysadmin.get("/users?q=bauer")
    assert ">301</a>" in by_name.text and ">201</a>" not in by_name.text
    assert 'value="bauer"' in by_name.text
    none = await sysadmin.get("/users?q=%3Cb%3E")
    assert "Nothing matches “&lt;b&gt;”" in none.text  # escaped
    isolated = await tenant_a.get("/users?q=bauer")
    assert ">301</a>" not in isolated.text and "Nothing matches" in isolated.text


async def test_users_search_keeps_paging(
    sysadmin: Console, ctx: WebContext, tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crud_pages, "PER_PAGE", 2)
    for n in range(5):
        await ctx.users.add(f"70{n}", "pw-123456", domain=tenants.a.domain)
    await ctx.users.add("800", "pw-123456", domain=tenants.a.domain)
    first = await sysadmin.get("/users?q=70")
    assert "1–2 of 5" in first.text
    assert 'href="?q=70&amp;offset=2"' in first.text
    second = await sysadmin.get("/users?q=70&offset=2")
    assert "3–4 of 5" in second.text and 'href="?q=70&amp;offset=0"' in second.text
    assert ">800</a>" not in second.text
