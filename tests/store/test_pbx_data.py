"""PBX data repositories (migration 0003): user settings, admins and tokens, trunks, dial
plans, rates, cards and the ledger, voicemail, settings; cascades and the 0002 -> 0003
upgrade, on SQLite and (where reachable) PostgreSQL and MariaDB.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from minipbx.store import (
    ConflictError,
    Database,
    DialPlanRule,
    InvalidInputError,
    NotFoundError,
    SqlAdminRepo,
    SqlCardRepo,
    SqlDialPlanRepo,
    SqlLedgerRepo,
    SqlRateRepo,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlTrunkRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
    default_url,
    hash_token,
    head_revision,
    new_token,
)
from minipbx.store.models import (
    Admin,
    ApiToken,
    Card,
    DialPlan,
    LedgerEntry,
    Meta,
    Rate,
    RateTable,
    Setting,
    Tenant,
    Trunk,
    User,
    VoicemailMessage,
)
from minipbx.store.models import (
    DialPlanRule as RuleRow,
)
from tests.store.conftest import insert_old_user

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def _version(db: Database, name: str) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(Meta.version).where(Meta.name == name)) or 0)


async def _tenant_id(db: Database, domain: str | None = None) -> int:
    tenants = SqlTenantRepo(db)
    tenant = await (tenants.ensure_default() if domain is None else tenants.create(domain))
    return tenant.id


# --- user settings ---------------------------------------------------------------------------


async def test_user_settings_defaults_and_update(db: Database, users: SqlUserRepo) -> None:
    user = await users.add("100", "pw")
    repo = SqlUserSettingsRepo(db)
    settings = await repo.get_settings(user.id)
    assert settings.user_id == user.id
    assert (settings.call_level, settings.no_answer_seconds, settings.media_relay) == (
        1,
        20,
        "auto",
    )
    assert settings.voicemail_enabled and settings.voicemail_email_attach
    assert not (settings.prepaid or settings.free_account or settings.voicemail_delete_after_mail)
    assert settings.balance == settings.credit_limit == Decimal(0)
    assert settings.dial_plan_id is None and settings.rate_table_id is None
    assert settings.voicemail_pin is None
    assert settings.voicemail_max_seconds is None  # the tenant's setting applies

    before = await users.users_version()
    plan = await SqlDialPlanRepo(db).add(user.tenant_id, "default")
    rates = await SqlRateRepo(db).add(user.tenant_id, "retail", currency="eur")
    changed = await repo.update_settings(
        user.id,
        call_level="3",
        voicemail_pin="1234",
        forward_busy="+4930123",
        forward_no_answer="",
        credit_limit="12.5",
        currency="eur",
        prepaid=True,
        media_relay="ALWAYS",
        dial_plan_id=plan.id,
        rate_table_id=rates.id,
    )
    assert (changed.call_level, changed.voicemail_pin, changed.forward_busy) == (
        3,
        "1234",
        "+4930123",
    )
    assert changed.forward_no_answer is None
    assert (changed.credit_limit, changed.currency, changed.media_relay) == (
        Decimal("12.5"),
        "EUR",
        "always",
    )
    assert (changed.dial_plan_id, changed.rate_table_id) == (plan.id, rates.id)
    assert "1234" not in repr(changed)
    assert await repo.get_settings(user.id) == changed
    assert await users.users_version() > before
    assert await users.get("100") is not None  # UserRecord and the directory are untouched


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"call_level": 100}, "call_level"),
        ({"call_level": True}, "call_level"),
        ({"voicemail_pin": "12a4"}, "voicemail_pin"),
        ({"forward_busy": "1 2"}, "forward_busy"),
        ({"media_relay": "sometimes"}, "media_relay"),
        ({"credit_limit": "-1"}, "credit_limit"),
        ({"credit_limit": "0.0000001"}, "credit_limit"),
        ({"currency": "EURO"}, "currency"),
        ({"no_answer_seconds": 0}, "no_answer_seconds"),
        ({"prepaid": "maybe"}, "prepaid"),
        ({"balance": 10}, "balance"),
        ({"colour": "red"}, "colour"),
        ({"dial_plan_id": 999}, "dial_plan_id"),
        ({"followme": "102:2"}, "followme"),  # ring time below 5 s
        ({"followme": "10 2"}, "followme"),
        ({"followme_mode": "round-robin"}, "followme_mode"),
        ({"voicemail_max_seconds": 4}, "voicemail_max_seconds"),
        ({"voicemail_max_seconds": 3601}, "voicemail_max_seconds"),
        ({"voicemail_max_seconds": "2 min"}, "voicemail_max_seconds"),
        ({"voicemail_max_seconds": 60.5}, "voicemail_max_seconds"),
        ({"voicemail_max_seconds": True}, "voicemail_max_seconds"),
    ],
)
async def test_user_settings_bad_input_names_field(
    db: Database, users: SqlUserRepo, fields: dict[str, Any], named: str
) -> None:
    user = await users.add("100", "pw")
    with pytest.raises(InvalidInputError, match=named):
        await SqlUserSettingsRepo(db).update_settings(user.id, **fields)


async def test_voicemail_max_seconds_per_user(db: Database, users: SqlUserRepo) -> None:
    user = await users.add("100", "pw")
    repo = SqlUserSettingsRepo(db)
    before = await users.users_version()
    for given, stored in (("5", 5), (3600, 3600), (" 90 ", 90)):
        changed = await repo.update_settings(user.id, voicemail_max_seconds=given)
        assert changed.voicemail_max_seconds == stored
        assert (await repo.get_settings(user.id)).voicemail_max_seconds == stored
    assert await users.users_version() > before  # the voicemail store reloads on it
    for empty in (None, ""):  # back to the tenant's setting
        await repo.update_settings(user.id, voicemail_max_seconds=90)
        changed = await repo.update_settings(user.id, voicemail_max_seconds=empty)
        assert changed.voicemail_max_seconds is None
    with pytest.raises(InvalidInputError, match=r"voicemail_max_seconds.*between 5 and 3600"):
        await repo.update_settings(user.id, voicemail_max_seconds=0)
    assert (await repo.get_settings(user.id)).voicemail_max_seconds is None  # unchanged


async def test_followme_settings_are_stored_in_canonical_form(
    db: Database, users: SqlUserRepo
) -> None:
    user = await users.add("100", "pw")
    repo = SqlUserSettingsRepo(db)
    assert (await repo.get_settings(user.id)).followme_mode == "off"
    changed = await repo.update_settings(
        user.id, followme=" 102 ; +4930123:45 ", followme_mode="Sequential", followme_own_first="no"
    )
    assert changed.followme == "102:20, +4930123:45"
    assert (changed.followme_mode, changed.followme_own_first) == ("sequential", False)


async def test_user_settings_refuse_other_tenants_plan(db: Database, users: SqlUserRepo) -> None:
    user = await users.add("100", "pw")
    other = await _tenant_id(db, "b.example")
    plan = await SqlDialPlanRepo(db).add(other, "theirs")
    repo = SqlUserSettingsRepo(db)
    with pytest.raises(InvalidInputError, match="dial_plan_id: no dial plan"):
        await repo.update_settings(user.id, dial_plan_id=plan.id)
    with pytest.raises(NotFoundError):
        await repo.get_settings(user.id + 100)


# --- admins and tokens -----------------------------------------------------------------------


async def test_admins_and_tokens(db: Database) -> None:
    admins = SqlAdminRepo(db)
    tenant_id = await _tenant_id(db)
    root = await admins.add("root", HASH)
    local = await admins.add("alice@example.com", HASH, tenant_id=tenant_id)
    assert (root.tenant_id, local.tenant_id, root.enabled, root.last_login_at) == (
        None,
        tenant_id,
        True,
        None,
    )
    assert HASH not in repr(root)
    assert await admins.get_by_username("root") == root
    assert await admins.get(local.id) == local
    assert await admins.get_by_username("nobody") is None
    assert [a.username for a in await admins.list_admins()] == ["alice@example.com", "root"]
    with pytest.raises(ConflictError, match="admin 'root' already exists"):
        await admins.add("root", HASH)
    with pytest.raises(InvalidInputError, match="password_hash"):
        await admins.add("bob", "plain password")
    with pytest.raises(InvalidInputError, match="username"):
        await admins.add("bad name", HASH)
    with pytest.raises(NotFoundError, match="tenant"):
        await admins.add("bob", HASH, tenant_id=999)

    newer = HASH.replace("c2Fsd", "b3RoZ")
    assert (await admins.set_password("root", newer)).password_hash == newer
    assert not (await admins.set_enabled("root", False)).enabled
    assert (await admins.touch_login("root", T0)).last_login_at == T0

    token = new_token()
    stored = await admins.add_token("root", "ci", hash_token(token))
    assert stored.token_hash == hash_token(token) != token
    assert await admins.find_token_by_hash(hash_token(token)) == stored
    assert await admins.find_token_by_hash(hash_token("other")) is None
    with pytest.raises(ConflictError):
        await admins.add_token("alice@example.com", "copy", hash_token(token))
    with pytest.raises(InvalidInputError, match="token_hash"):
        await admins.add_token("root", "plain", token)
    await admins.touch_token(stored.id, T0)
    assert [t.last_used_at for t in await admins.list_tokens("root")] == [T0]
    await admins.remove_token(stored.id)
    assert await admins.list_tokens("root") == []
    with pytest.raises(NotFoundError):
        await admins.remove_token(stored.id)

    await admins.add_token("root", "second", hash_token(new_token()))
    await admins.remove("root")
    assert await admins.get_by_username("root") is None
    async with db.read() as session:
        assert await session.scalar(select(func.count(ApiToken.id))) == 0
    with pytest.raises(NotFoundError, match="no admin 'root'"):
        await admins.remove("root")


# --- trunks ----------------------------------------------------------------------------------


async def test_trunk_crud(db: Database) -> None:
    trunks = SqlTrunkRepo(db)
    tenant_id = await _tenant_id(db)
    other_id = await _tenant_id(db, "b.example")
    before = await _version(db, "trunks_version")
    trunk = await trunks.add(
        tenant_id,
        "carrier",
        host="sip.carrier.example",
        port=5061,
        transport="TLS",
        username="acct",
        password=" secret ",
        register=True,
        allowed_ips="192.0.2.7, 198.51.100.0/24, 203.0.113.5:5070, [2001:db8::1]:5080",
        options='{"b": 1, "a": 2}',
    )
    assert (trunk.transport, trunk.port, trunk.register, trunk.register_expires) == (
        "tls",
        5061,
        True,
        3600,
    )
    assert trunk.password == " secret "  # passwords are kept as given
    assert "secret" not in repr(trunk)
    assert trunk.allowed_ips == ("192.0.2.7/32,198.51.100.0/24,203.0.113.5:5070,[2001:db8::1]:5080")
    assert (trunk.options, trunk.codecs, trunk.enabled) == ('{"a":2,"b":1}', "PCMU,PCMA", True)
    assert await _version(db, "trunks_version") > before

    ip_only = await trunks.add(tenant_id, "pbx-b", allowed_ips="2001:db8::/32")
    assert ip_only.host == ""
    await trunks.add(other_id, "carrier", host="10.0.0.1")  # same name, other tenant
    assert await trunks.get(trunk.id) == trunk
    assert await trunks.find(tenant_id, "carrier") == trunk
    assert await trunks.find(tenant_id, "nope") is None
    assert [t.name for t in await trunks.list_by_tenant(tenant_id)] == ["carrier", "pbx-b"]
    assert len(await trunks.list_by_tenant()) == 3

    updated = await trunks.update(trunk.id, max_calls_out=10, codecs="PCMA, G722", enabled=False)
    assert (updated.max_calls_out, updated.codecs, updated.enabled) == (10, "PCMA,G722", False)
    assert updated.updated_at >= trunk.updated_at
    with pytest.raises(ConflictError, match="trunk 'carrier' already exists"):
        await trunks.add(tenant_id, "carrier", host="h")
    with pytest.raises(ConflictError, match="trunk 'carrier' already exists"):
        await trunks.update(ip_only.id, name="carrier")
    await trunks.remove(trunk.id)
    with pytest.raises(NotFoundError, match="no trunk with id"):
        await trunks.get(trunk.id)
    with pytest.raises(NotFoundError, match="no tenant with id 999"):
        await trunks.add(999, "x", host="h")
    with pytest.raises(InvalidInputError, match="invalid name: cannot be empty"):
        await trunks.add(tenant_id, " ", host="h")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"host": "h", "port": 70000}, "port"),
        ({"host": "h", "transport": "sctp"}, "transport"),
        ({"host": "h", "allowed_ips": "10.0.0.0/8,not-an-ip"}, "allowed_ips"),
        ({"host": "h", "allowed_ips": "192.0.2.1:99999"}, "allowed_ips"),
        ({"host": "h", "options": "[1]"}, "options"),
        ({"host": "h", "options": "{bad"}, "options"),
        ({"host": "h", "codecs": ""}, "codecs"),
        ({"host": "h", "register_expires": 10}, "register_expires"),
        ({"host": "h", "max_calls_in": -1}, "max_calls_in"),
        ({"host": "bad host"}, "host"),
        ({}, "host"),
        ({"host": "h", "enabled": "perhaps"}, "enabled"),
    ],
)
async def test_trunk_bad_input_names_field(
    db: Database, fields: dict[str, Any], named: str
) -> None:
    tenant_id = await _tenant_id(db)
    with pytest.raises(InvalidInputError, match=named):
        await SqlTrunkRepo(db).add(tenant_id, "t1", **fields)


CSV_OK = (
    "prefix,description,connection_fee,price_per_minute,first_increment,next_increment,"
    "min_duration,free_seconds\n"
    "49,Germany,0,0.0125,60,60,0,0\n"
    "\n"
    "4915,Germany mobile,0.05,0.19,30,6,0,0\n"
    '1,"USA, Canada",0,0.01,1,1,0,0\n'
)


# --- dial plans ------------------------------------------------------------------------------

RULES = [
    DialPlanRule(pattern="_1XX", action="local"),
    DialPlanRule(pattern="_0.", action="trunk", target="carrier", strip=1, prepend="+49"),
    DialPlanRule(pattern="_900.", action="reject", reject_status=403, min_level=0),
]


async def test_dial_plans_and_rules(db: Database) -> None:
    plans = SqlDialPlanRepo(db)
    tenant_id = await _tenant_id(db)
    before = await _version(db, "dial_plans_version")
    plan = await plans.add(tenant_id, "default", description="office\nhours")
    assert plan.description == "office\nhours"
    with pytest.raises(ConflictError, match="dial plan 'default' already exists"):
        await plans.add(tenant_id, "default")
    stored = await plans.replace_rules(plan.id, RULES)
    assert [(r.position, r.pattern, r.dial_plan_id) for r in stored] == [
        (1, "_1XX", plan.id),
        (2, "_0.", plan.id),
        (3, "_900.", plan.id),
    ]
    assert all(r.id is not None for r in stored)
    assert await plans.list_rules(plan.id) == stored
    assert await _version(db, "dial_plans_version") > before

    bad = [*RULES, DialPlanRule(pattern="_8.", action="trunk")]
    with pytest.raises(InvalidInputError, match="rule 4: invalid target"):
        await plans.replace_rules(plan.id, bad)
    with pytest.raises(InvalidInputError, match="rule 1: invalid action"):
        await plans.replace_rules(plan.id, [DialPlanRule(pattern="x", action="jump")])
    with pytest.raises(InvalidInputError, match="reject_status"):
        await plans.replace_rules(plan.id, [DialPlanRule("x", "reject", reject_status=200)])
    assert await plans.list_rules(plan.id) == stored  # nothing changed
    reordered = await plans.replace_rules(plan.id, [RULES[2], RULES[0]])
    assert [r.pattern for r in await plans.list_rules(plan.id)] == ["_900.", "_1XX"]
    assert [r.position for r in reordered] == [1, 2]
    with pytest.raises(NotFoundError):
        await plans.list_rules(plan.id + 1)

    assert await plans.tenant_plan(tenant_id) is None
    await plans.set_tenant_plan(tenant_id, plan.id)
    assert await plans.tenant_plan(tenant_id) == plan.id
    other = await _tenant_id(db, "b.example")
    with pytest.raises(InvalidInputError, match="no dial plan"):
        await plans.set_tenant_plan(other, plan.id)

    renamed = await plans.update(plan.id, name="main")
    assert renamed.name == "main" and (await plans.find(tenant_id, "main")) == renamed


async def test_removing_plan_or_rates_clears_references(db: Database, users: SqlUserRepo) -> None:
    user = await users.add("100", "pw")
    plans, rates = SqlDialPlanRepo(db), SqlRateRepo(db)
    settings = SqlUserSettingsRepo(db)
    plan = await plans.add(user.tenant_id, "p")
    table = await rates.add(user.tenant_id, "r")
    await plans.replace_rules(plan.id, RULES)
    await plans.set_tenant_plan(user.tenant_id, plan.id)
    await settings.update_settings(user.id, dial_plan_id=plan.id, rate_table_id=table.id)
    card = await SqlCardRepo(db).add(user.tenant_id, "12345678", "1234", dial_plan_id=plan.id)
    users_before = await users.users_version()
    await plans.remove(plan.id)
    await rates.remove(table.id)
    after = await settings.get_settings(user.id)
    assert (after.dial_plan_id, after.rate_table_id) == (None, None)
    assert await plans.tenant_plan(user.tenant_id) is None
    assert (await SqlCardRepo(db).get(card.id)).dial_plan_id is None
    assert await users.users_version() > users_before
    async with db.read() as session:
        assert await session.scalar(select(func.count(RuleRow.id))) == 0


# --- voicemail -------------------------------------------------------------------------------


async def test_voicemail(db: Database, users: SqlUserRepo) -> None:
    voicemail = SqlVoicemailRepo(db)
    user = await users.add("100", "pw", email="a@example.com")
    silent = await users.add("101", "pw")
    first = await voicemail.add(
        user.id,
        "voicemail/1/100/a.wav",
        T0,
        duration_ms=4200,
        caller_number="+4930",
        caller_name="Bob",
    )
    second = await voicemail.add(user.id, "voicemail/1/100/b.wav", T0 + timedelta(minutes=1))
    await voicemail.add(silent.id, "voicemail/1/101/c.wav", T0)
    assert (first.folder, first.tenant_id, first.email_attempts) == ("new", user.tenant_id, 0)
    assert [m.id for m in await voicemail.list_messages(user.id)] == [first.id, second.id]
    moved = await voicemail.move(first.id, "saved")
    assert moved.folder == "saved"
    assert [m.id for m in await voicemail.list_messages(user.id, "new")] == [second.id]
    assert await voicemail.counts(user.id) == {"new": 1, "old": 0, "saved": 1}

    assert [m.id for m in await voicemail.pending_email()] == [first.id, second.id]
    failed = await voicemail.record_email_failure(first.id, "smtp: 451\ntry later")
    assert (failed.email_attempts, failed.email_error) == (1, "smtp: 451 try later")
    assert [m.id for m in await voicemail.pending_email(max_attempts=1)] == [second.id]
    mailed = await voicemail.mark_emailed(second.id, T0)
    assert mailed.emailed_at == T0
    assert [m.id for m in await voicemail.pending_email()] == [first.id]

    removed = await voicemail.remove(first.id)
    assert removed.path == "voicemail/1/100/a.wav"
    with pytest.raises(NotFoundError):
        await voicemail.get(first.id)
    for bad_path in ("/etc/passwd", "../x.wav", "a//b.wav", ""):
        with pytest.raises(InvalidInputError, match="path"):
            await voicemail.add(user.id, bad_path, T0)
    with pytest.raises(InvalidInputError, match="received_at"):
        await voicemail.add(user.id, "x.wav", datetime(2030, 1, 1))  # naive
    with pytest.raises(InvalidInputError, match="folder"):
        await voicemail.move(second.id, "trash")
    await users.remove("100")  # its messages go with it
    assert await voicemail.list_messages(user.id) == []


# --- settings --------------------------------------------------------------------------------


async def test_settings(db: Database) -> None:
    settings = SqlSettingsRepo(db)
    tenant_id = await _tenant_id(db)
    before = await _version(db, "settings_version")
    await settings.set("smtp.host", "mail.example.com")
    await settings.set("smtp.host", "tenant-mail.example.com", tenant_id=tenant_id)
    await settings.set("smtp.password", " p w ")
    assert await settings.get("smtp.host") == "mail.example.com"
    assert await settings.get("smtp.host", tenant_id=tenant_id) == "tenant-mail.example.com"
    assert await settings.get("smtp.password") == " p w "
    assert await settings.resolve("smtp.password", tenant_id) == " p w "
    assert await settings.resolve("smtp.host", tenant_id) == "tenant-mail.example.com"
    await settings.set("smtp.host", "other.example.com")  # overwrite, no duplicate
    assert await settings.list_settings() == {
        "smtp.host": "other.example.com",
        "smtp.password": " p w ",
    }
    assert await settings.list_settings(tenant_id=tenant_id) == {
        "smtp.host": "tenant-mail.example.com"
    }
    assert await settings.delete("smtp.host", tenant_id=tenant_id)
    assert not await settings.delete("smtp.host", tenant_id=tenant_id)
    assert await settings.resolve("smtp.host", tenant_id) == "other.example.com"
    assert await settings.get("missing") is None
    assert await _version(db, "settings_version") > before
    with pytest.raises(InvalidInputError, match="key"):
        await settings.set("SMTP Host", "x")
    with pytest.raises(NotFoundError, match="tenant"):
        await settings.set("a", "b", tenant_id=999)


# --- cascades and migrations, on every back end ----------------------------------------------

PER_TENANT = (DialPlan, RuleRow, Trunk, RateTable, Rate, Card, LedgerEntry, VoicemailMessage)


async def _fill_tenant(db: Database, domain: str) -> int:
    """A tenant with a row in every per-tenant table; returns its id."""
    tenant_id = await _tenant_id(db, domain)
    user = await SqlUserRepo(db).add("100", "pw", domain=domain)
    plans, rates = SqlDialPlanRepo(db), SqlRateRepo(db)
    plan = await plans.add(tenant_id, "p")
    await plans.replace_rules(plan.id, RULES)
    await plans.set_tenant_plan(tenant_id, plan.id)
    table = await rates.add(tenant_id, "r", currency="EUR")
    await rates.import_csv(table.id, CSV_OK)
    await SqlUserSettingsRepo(db).update_settings(
        user.id, dial_plan_id=plan.id, rate_table_id=table.id
    )
    await SqlTrunkRepo(db).add(tenant_id, "t", host="sip.example")
    await SqlCardRepo(db).add(tenant_id, "5550001", "1234", balance=3, rate_table_id=table.id)
    await SqlLedgerRepo(db).add("topup", 2, user_id=user.id)
    await SqlVoicemailRepo(db).add(user.id, "vm/a.wav", T0)
    await SqlAdminRepo(db).add(f"admin@{domain}", HASH, tenant_id=tenant_id)
    await SqlSettingsRepo(db).set("smtp.host", "mail", tenant_id=tenant_id)
    return tenant_id


async def _counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            model.__tablename__: int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in (*PER_TENANT, User, Admin, Setting)
        }


async def _check_cascade(db: Database) -> None:
    doomed = await _fill_tenant(db, "a.example")
    await _fill_tenant(db, "b.example")
    full = await _counts(db)
    assert all(count > 0 for count in full.values()), full
    async with db.write() as session:
        await session.execute(delete(Tenant).where(Tenant.id == doomed))
    left = await _counts(db)
    assert left == {name: count // 2 for name, count in full.items()}, (full, left)


async def test_tenant_delete_cascades(db: Database) -> None:
    await _check_cascade(db)


async def test_tenant_delete_cascades_on_server(server_db: Database) -> None:
    await server_db.upgrade()
    await _check_cascade(server_db)


async def _check_upgrade_from_0002(db: Database) -> None:
    await db.upgrade("0002")
    assert await db.current_revision() == "0002"
    now = datetime(2029, 5, 1, tzinfo=UTC)
    async with db.write() as session:  # the 0002 schema: only the columns it had
        await insert_old_user(session, now, "Alice")
    await db.upgrade()
    assert await db.current_revision() == head_revision()
    user = await SqlUserRepo(db).get("100")
    assert user is not None and (user.id, user.display_name, user.ha1_md5) == (7, "Alice", "a" * 32)
    settings = await SqlUserSettingsRepo(db).get_settings(7)
    assert (settings.call_level, settings.no_answer_seconds, settings.media_relay) == (
        1,
        20,
        "auto",
    )
    assert settings.voicemail_enabled and settings.voicemail_email_attach
    assert not (settings.prepaid or settings.free_account or settings.voicemail_delete_after_mail)
    assert (settings.balance, settings.credit_limit, settings.currency) == (
        Decimal(0),
        Decimal(0),
        "",
    )
    assert settings.dial_plan_id is None and settings.rate_table_id is None
    assert await SqlDialPlanRepo(db).tenant_plan(1) is None
    for counter in ("trunks_version", "dial_plans_version", "rates_version", "settings_version"):
        assert await _version(db, counter) == 0
    # and the upgraded database works
    assert (await SqlUserSettingsRepo(db).update_settings(7, call_level=2)).call_level == 2


async def test_upgrade_from_0002_keeps_users(tmp_path: Path) -> None:
    database = Database(default_url(tmp_path))
    try:
        await _check_upgrade_from_0002(database)
    finally:
        await database.close()


async def test_upgrade_from_0002_on_server(server_db: Database) -> None:
    await _check_upgrade_from_0002(server_db)
