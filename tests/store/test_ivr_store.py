"""Auto attendant menus in the store (migration 0005): CRUD with options as one document,
checks naming the field, references between menus and from dial plan rules, the change
counter, loading the engine's menus; on SQLite and (where reachable) PostgreSQL/MariaDB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.engine import Connection

from minipbx.pbx.ivr import IvrActionKind, IvrMenu
from minipbx.store import (
    ConflictError,
    Database,
    DialPlanRule,
    InvalidInputError,
    NotFoundError,
    SqlDialPlanRepo,
    SqlTenantRepo,
    default_url,
    head_revision,
)
from minipbx.store.db import alembic_config
from minipbx.store.ivr import IvrInputError, IvrOptionRecord, SqlIvrRepo
from minipbx.store.models import Base, Meta, Tenant
from minipbx.store.models import IvrMenu as MenuRow
from minipbx.store.models import IvrOption as OptionRow

IVR_TABLES = {"ivr_menus", "ivr_options"}
MONDAY_10_UTC = 1894010400.0  # 2030-01-07 10:00 UTC, a Monday
MONDAY_22_UTC = 1894053600.0


async def _version(db: Database) -> int:
    async with db.read() as session:
        stmt = select(Meta.version).where(Meta.name == "dial_plans_version")
        return int(await session.scalar(stmt) or 0)


async def _tenant(db: Database, domain: str | None = None) -> int:
    tenants = SqlTenantRepo(db)
    return (await (tenants.ensure_default() if domain is None else tenants.create(domain))).id


def opt(key: str, action: str, target: str = "") -> dict[str, str]:
    return {"key": key, "action": action, "target": target}


async def _main_menus(repo: SqlIvrRepo, tenant_id: int) -> None:
    """A support menu, and a main menu with every kind of key."""
    await repo.add(tenant_id, "support", greeting="support_hello", options=[opt("0", "hangup")])
    await repo.add(
        tenant_id,
        "main",
        greeting=["greeting_main", "ivr_enter_extension"],
        dial_by_extension=True,
        timeout_seconds="7.5",
        retries=3,
        options=[
            opt("#", "hangup"),
            opt("2", "menu", "support"),
            opt("1", "user", "101"),
            opt("3", "followme", "102"),
            opt("4", "voicemail", "103"),
            opt("5", "number", "+33123456789"),
            opt("*", "repeat"),
        ],
    )


# --- CRUD ----------------------------------------------------------------------------------


async def test_menu_crud_and_options_as_one_document(db: Database) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    before = await _version(db)
    await _main_menus(repo, tenant_id)
    assert await _version(db) == before + 2
    main = await repo.find(tenant_id, "main")
    assert main is not None
    assert main.greeting == ("greeting_main", "ivr_enter_extension")
    assert (main.timeout_seconds, main.retries, main.max_digits) == (7.5, 3, 4)
    assert (main.timeout_action, main.invalid_prompt, main.hours) == (
        "hangup",
        "invalid_option",
        "",
    )
    assert [o.key for o in main.options] == ["1", "2", "3", "4", "5", "*", "#"]  # keypad order
    assert main.options[1] == IvrOptionRecord("2", "menu", "support")
    assert await repo.get(main.id) == main
    assert [m.name for m in await repo.list_by_tenant(tenant_id)] == ["main", "support"]

    # an update keeps the options unless they are given, then replaces them all
    changed = await repo.update(main.id, retries=0, greeting="a_b, c")
    assert changed.retries == 0 and changed.greeting == ("a_b", "c")
    assert changed.options == main.options
    changed = await repo.update(main.id, options=[opt("9", "user", "100")])
    assert changed.options == (IvrOptionRecord("9", "user", "100"),)
    assert await _version(db) == before + 4
    # replace: the document as given, defaults for the rest
    replaced = await repo.replace(main.id, greeting=["x"], options=[opt("0", "hangup")])
    assert (replaced.name, replaced.retries, replaced.timeout_seconds) == ("main", 2, 5.0)
    assert replaced.dial_by_extension is False and replaced.greeting == ("x",)
    assert replaced.options == (IvrOptionRecord("0", "hangup"),)

    await repo.remove(main.id)
    assert await repo.find(tenant_id, "main") is None
    with pytest.raises(NotFoundError, match="no IVR menu with id"):
        await repo.get(main.id)
    with pytest.raises(NotFoundError):
        await repo.remove(main.id)
    async with db.read() as session:  # the options went with their menu
        assert await session.scalar(select(func.count()).select_from(OptionRow)) == 1


async def test_names_are_unique_per_tenant(db: Database) -> None:
    a, b = await _tenant(db, "a.example"), await _tenant(db, "b.example")
    repo = SqlIvrRepo(db)
    first = await repo.add(a, "main", greeting="g")
    await repo.add(b, "main", greeting="g")  # another tenant: fine
    with pytest.raises(ConflictError, match=f"IVR menu 'main' already exists in tenant {a}"):
        await repo.add(a, "main", greeting="g")
    other = await repo.add(a, "other", greeting="g")
    with pytest.raises(ConflictError, match="already exists"):
        await repo.update(other.id, name="main")
    assert [m.tenant_id for m in await repo.list_by_tenant()] == [a, a, b]
    assert [m.id for m in await repo.list_by_tenant(b)] != [first.id]
    with pytest.raises(NotFoundError, match="no tenant"):
        await repo.add(999, "x", greeting="g")


# --- checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        ({}, ("greeting",), "a menu needs at least one prompt"),
        ({"greeting": ""}, ("greeting",), "a menu needs at least one prompt"),
        ({"greeting": "Hello there!"}, ("greeting",), "'Hello' is not a prompt name"),
        ({"greeting": 5}, ("greeting",), "expected a list of prompt names"),
        ({"greeting": "g", "retries": 11}, ("retries",), "11 is not between 0 and 10"),
        ({"greeting": "g", "max_digits": 0}, ("max_digits",), "0 is not between 1 and 20"),
        ({"greeting": "g", "timeout_seconds": 0}, ("timeout_seconds",), "between 1 and 60"),
        (
            {"greeting": "g", "digit_timeout_seconds": "soon"},
            ("digit_timeout_seconds",),
            "expected a number of seconds",
        ),
        ({"greeting": "g", "invalid_prompt": "Oops"}, ("invalid_prompt",), "'Oops' is not"),
        ({"greeting": "g", "timeout_action": "repeat"}, ("timeout_action",), "is not one of"),
        (
            {"greeting": "g", "timeout_action": "user"},
            ("timeout_target",),
            "a user action needs a target",
        ),
        (
            {"greeting": "g", "hours": "mon-fri 9-5", "after_hours_menu": "x"},
            ("hours",),
            "time condition clause 'mon-fri 9-5'",
        ),
        (
            {"greeting": "g", "hours": "mon-fri 09:00-17:00"},
            ("after_hours_menu",),
            "business hours and an after-hours menu go together",
        ),
        ({"greeting": "g", "name": "bad name"}, ("name",), "'bad name' is not allowed"),
        ({"greeting": "g", "colour": "red"}, ("colour",), "unknown field 'colour'"),
        (
            {"greeting": "g", "options": [opt("A", "hangup")]},
            ("options", 0, "key"),
            "option 1: invalid key: 'A' is not allowed",
        ),
        (
            {"greeting": "g", "options": [opt("1", "hangup"), opt("2", "dance")]},
            ("options", 1, "action"),
            "option 2: invalid action: 'dance' is not one of user, followme",
        ),
        (
            {"greeting": "g", "options": [opt("1", "user")]},
            ("options", 0, "target"),
            "option 1: invalid target: a user action needs a target",
        ),
        (
            {"greeting": "g", "options": [opt("1", "number", "call home")]},
            ("options", 0, "target"),
            "'call home' is not digits",
        ),
        (
            {"greeting": "g", "options": [opt("1", "hangup"), opt("1", "repeat")]},
            ("options", 1, "key"),
            "option 2: invalid key: '1' is given twice",
        ),
        (
            {"greeting": "g", "options": [{"key": "1"}]},
            ("options", 0, "action"),
            "is not one of",
        ),
        (
            {"greeting": "g", "options": [opt("1", "menu", "nowhere")]},
            ("options", 0, "target"),
            "option 1: invalid target: no menu 'nowhere'",
        ),
        (
            {"greeting": "g", "options": [opt("9", "hangup"), opt("1", "menu", "nowhere")]},
            ("options", 1, "target"),
            "option 2: invalid target: no menu 'nowhere'",
        ),
        (
            {"greeting": "g", "timeout_action": "menu", "timeout_target": "gone"},
            ("timeout_target",),
            "invalid timeout_target: no menu 'gone'",
        ),
        (
            {"greeting": "g", "hours": "mon-fri", "after_hours_menu": "night"},
            ("after_hours_menu",),
            "invalid after_hours_menu: no menu 'night'",
        ),
    ],
)
async def test_bad_menus_name_the_field(
    db: Database, fields: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    with pytest.raises(IvrInputError) as info:
        await repo.add(tenant_id, fields.pop("name", "main"), **fields)
    assert info.value.loc == loc
    assert message in str(info.value), str(info.value)
    assert isinstance(info.value, InvalidInputError)
    assert await repo.list_by_tenant() == []


async def test_bad_update_changes_nothing(db: Database) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    menu = await repo.add(tenant_id, "main", greeting="g", options=[opt("1", "hangup")])
    with pytest.raises(IvrInputError) as info:
        await repo.update(menu.id, retries=3, options=[opt("1", "hangup"), opt("2", "user")])
    assert info.value.loc == ("options", 1, "target")
    assert await repo.get(menu.id) == menu


async def test_after_hours_chains_must_not_cycle_but_key_loops_may(db: Database) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    day = await repo.add(tenant_id, "day", greeting="g")
    night = await repo.add(
        tenant_id, "night", greeting="g", hours="sat-sun", after_hours_menu="day"
    )
    with pytest.raises(IvrInputError) as info:
        await repo.update(day.id, hours="mon-fri 08:00-18:00", after_hours_menu="night")
    assert info.value.loc == ("after_hours_menu",)
    assert "day -> night -> day goes round for ever" in str(info.value)
    with pytest.raises(IvrInputError, match=r"timeout_target: .*goes round"):
        await repo.update(day.id, timeout_action="menu", timeout_target="night")
    # loops through keys are the caller's choice
    await repo.update(day.id, options=[opt("1", "menu", "night")])
    await repo.update(night.id, options=[opt("1", "menu", "day")])
    await repo.update(day.id, options=[opt("1", "menu", "night"), opt("2", "menu", "day")])


# --- references ----------------------------------------------------------------------------


async def test_menus_in_use_cannot_be_removed_or_renamed(db: Database) -> None:
    tenant_id = await _tenant(db)
    other_tenant = await _tenant(db, "other.example")
    repo = SqlIvrRepo(db)
    await _main_menus(repo, tenant_id)
    support = await repo.find(tenant_id, "support")
    main = await repo.find(tenant_id, "main")
    assert support is not None and main is not None
    await repo.update(
        support.id, timeout_action="menu", timeout_target="main", options=[opt("0", "hangup")]
    )
    plans = SqlDialPlanRepo(db)
    plan = await plans.add(tenant_id, "inbound")
    await plans.replace_rules(
        plan.id,
        [
            DialPlanRule(pattern="_X.", action="local"),
            DialPlanRule(pattern="0", action="service", target="ivr:main"),
        ],
    )
    foreign = await plans.add(other_tenant, "inbound")  # another tenant's rule does not count
    await plans.replace_rules(
        foreign.id, [DialPlanRule(pattern="0", action="service", target="ivr:support")]
    )
    with pytest.raises(ConflictError) as info:
        await repo.remove(main.id)
    assert str(info.value) == (
        "cannot remove IVR menu 'main': it is used by menu 'support' (timeout action), "
        "dial plan 'inbound' rule 2 (ivr:main)"
    )
    with pytest.raises(ConflictError, match=r"cannot rename IVR menu 'support': .*key 2"):
        await repo.update(support.id, name="helpdesk")
    with pytest.raises(ConflictError, match="used by menu 'main' \\(key 2\\)"):
        await repo.remove(support.id)
    assert await repo.referrers(tenant_id, "support") == ["menu 'main' (key 2)"]
    # once nothing names it, it goes
    await plans.replace_rules(plan.id, [DialPlanRule(pattern="_X.", action="local")])
    await repo.update(support.id, timeout_action="hangup", timeout_target="")
    await repo.remove(main.id)
    await repo.update(support.id, name="helpdesk")
    assert [m.name for m in await repo.list_by_tenant(tenant_id)] == ["helpdesk"]


async def test_after_hours_reference_blocks_removal(db: Database) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    night = await repo.add(tenant_id, "night", greeting="g")
    await repo.add(tenant_id, "day", greeting="g", hours="mon-fri", after_hours_menu="night")
    with pytest.raises(ConflictError, match="menu 'day' \\(after-hours menu\\)"):
        await repo.remove(night.id)


async def test_service_targets_of_dial_plan_rules(db: Database) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    await repo.add(tenant_id, "main", greeting="g")
    await repo.check_service_target(tenant_id, "ivr:main")
    await repo.check_service_target(tenant_id, "voicemail")
    with pytest.raises(InvalidInputError, match="invalid target: no IVR menu 'sales'"):
        await repo.check_service_target(tenant_id, "ivr:sales")
    with pytest.raises(InvalidInputError, match="invalid target: ivr: needs a menu name"):
        await repo.check_service_target(tenant_id, "ivr:")
    with pytest.raises(InvalidInputError, match="no IVR menu 'main'"):
        await repo.check_service_target(await _tenant(db, "b.example"), "ivr:main")


# --- loading for the PBX ---------------------------------------------------------------------


async def test_load_menus_builds_the_engine_menus(db: Database) -> None:
    a, b = await _tenant(db, "a.example"), await _tenant(db, "b.example")
    repo = SqlIvrRepo(db)
    await _main_menus(repo, a)
    await repo.add(
        a,
        "day",
        greeting="open",
        hours="mon-fri 08:00-18:00; tz UTC",
        after_hours_menu="support",
        timeout_action="user",
        timeout_target="100",
        digit_timeout_seconds=2,
    )
    await repo.add(b, "solo", greeting="hi")
    menus = await repo.load_menus(a)
    assert set(menus) == {"main", "support", "day"}
    main = menus["main"]
    assert isinstance(main, IvrMenu)
    assert main.greeting == ("greeting_main", "ivr_enter_extension")
    assert (main.timeout, main.digit_timeout, main.retries, main.dial_by_extension) == (
        7.5,
        3.0,
        3,
        True,
    )
    assert main.options["2"].action is IvrActionKind.MENU and main.options["2"].target == "support"
    assert main.options["5"].target == "+33123456789" and main.hours is None
    day = menus["day"]
    assert day.after_hours == "support" and day.digit_timeout == 2.0
    assert day.timeout_action is IvrActionKind.USER and day.timeout_target == "100"
    assert day.hours is not None
    assert day.is_open(MONDAY_10_UTC) and not day.is_open(MONDAY_22_UTC)
    everything = await repo.load_all_menus()
    assert set(everything) == {a, b} and set(everything[b]) == {"solo"}
    assert everything[a] == menus
    assert await repo.load_menus(999) == {}


async def test_a_stored_menu_that_no_longer_builds_is_left_out(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id = await _tenant(db)
    repo = SqlIvrRepo(db)
    await repo.add(tenant_id, "ok", greeting="g")
    broken = await repo.add(tenant_id, "broken", greeting="g")
    async with db.write() as session:  # as if the time zone had vanished
        row = await session.get(MenuRow, broken.id)
        assert row is not None
        row.hours, row.after_hours_menu = "tz Nowhere/Atlantis", "ok"
    assert set(await repo.load_menus(tenant_id)) == {"ok"}
    assert "event=ivr_menu_unusable" in caplog.text and "menu=broken" in caplog.text


# --- migration and cascades ------------------------------------------------------------------


def _ivr_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    diff = compare_metadata(context, Base.metadata)
    return [d for d in diff if any(t in repr(d) for t in IVR_TABLES)]


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _downgrade(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, revision)


async def _check_migration(db: Database) -> None:
    await db.upgrade("0004")
    async with db.engine.connect() as conn:
        assert not await conn.run_sync(_tables) & IVR_TABLES
    tenant_id = await _tenant(db)
    await db.upgrade()
    assert await db.current_revision() == head_revision()
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_tables) >= IVR_TABLES
        assert await conn.run_sync(_ivr_diff) == []
    repo = SqlIvrRepo(db)
    await _main_menus(repo, tenant_id)
    assert set(await repo.load_menus(tenant_id)) == {"main", "support"}
    # the tenant's menus and their options go with it
    async with db.write() as session:
        await session.execute(delete(Tenant).where(Tenant.id == tenant_id))
    async with db.read() as session:
        for model in (MenuRow, OptionRow):
            assert await session.scalar(select(func.count()).select_from(model)) == 0
    async with db.engine.begin() as conn:
        await conn.run_sync(_downgrade, "0004")
    async with db.engine.connect() as conn:
        assert not await conn.run_sync(_tables) & IVR_TABLES
    await db.upgrade()
    assert await db.current_revision() == head_revision()


async def test_migration_on_sqlite(tmp_path: Path) -> None:
    database = Database(default_url(tmp_path))
    try:
        await _check_migration(database)
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_key_check"))).first() is None
    finally:
        await database.close()


async def test_migration_and_repository_on_server(server_db: Database) -> None:
    await _check_migration(server_db)
    tenant_id = await _tenant(server_db, "server.example")
    repo = SqlIvrRepo(server_db)
    await _main_menus(repo, tenant_id)
    main = await repo.find(tenant_id, "main")
    assert main is not None and main.timeout_seconds == 7.5
    with pytest.raises(ConflictError, match="already exists"):
        await repo.add(tenant_id, "main", greeting="g")
    with pytest.raises(ConflictError, match="used by menu 'main'"):
        support = await repo.find(tenant_id, "support")
        assert support is not None
        await repo.remove(support.id)
    replaced = await repo.update(main.id, options=[opt("#", "hangup"), opt("1", "repeat")])
    assert [o.key for o in replaced.options] == ["1", "#"]
    await repo.remove(main.id)
    assert [m.name for m in await repo.list_by_tenant(tenant_id)] == ["support"]
