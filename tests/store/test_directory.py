"""UserDirectory: memory lookups, default-tenant fallback, cheap change detection."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from minipbx.store import (
    Database,
    SqlTenantRepo,
    SqlUserRepo,
    StaticDirectorySource,
    TenantRecord,
    UserDirectory,
    UserRecord,
)


async def test_lookup_and_default_fallback(
    db: Database, users: SqlUserRepo, tenants: SqlTenantRepo
) -> None:
    await users.add("100", "pw")
    await tenants.create("b.example", realm="realm-b")
    await users.add("200", "pw", domain="b.example")
    directory = UserDirectory.for_database(db)
    await directory.load()
    assert len(directory) == 2
    for host in ("default", "192.0.2.1", "pbx.unknown.example", "[2001:db8::1]", "DEFAULT."):
        found = directory.lookup(host, "100")
        assert found is not None and found.domain == "default", host
    assert directory.lookup("b.example", "100") is None  # known domain: only its own users
    found = directory.lookup("B.Example", "200")
    assert found is not None and found.realm == "realm-b"
    assert directory.lookup("default", "200") is None
    tenant = directory.tenant_for("b.example")
    assert tenant is not None and tenant.realm == "realm-b"
    default = directory.tenant_for("10.1.1.1")
    assert default is not None and default.is_default
    assert directory.get_by_id(found.id) == found
    assert [u.extension for u in directory.users()] == ["100", "200"]


async def test_lookup_never_touches_database(
    db: Database, users: SqlUserRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    await users.add("100", "pw")
    directory = UserDirectory.for_database(db)
    await directory.load()
    await db.engine.dispose()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("lookup hit the database")

    monkeypatch.setattr(db.engine.sync_engine.pool, "connect", forbidden)
    assert directory.lookup("default", "100") is not None
    assert directory.lookup("default", "999") is None


async def test_sees_change_from_second_process(db: Database, users: SqlUserRepo) -> None:
    await users.add("100", "pw")
    directory = UserDirectory.for_database(db)
    await directory.load()
    assert not await directory.refresh_if_changed()
    cli = Database(db.url)  # what `minipbx user add` in another process opens
    try:
        await SqlUserRepo(cli).add("101", "pw")
        assert directory.lookup("default", "101") is None  # not until the poll
        assert await directory.refresh_if_changed()
        assert directory.lookup("default", "101") is not None
        assert not await directory.refresh_if_changed()
        await SqlUserRepo(cli).set_password("100", "new")
        old = directory.lookup("default", "100")
        assert await directory.refresh_if_changed()
        new = directory.lookup("default", "100")
        assert old is not None and new is not None and old.ha1_md5 != new.ha1_md5
        await SqlUserRepo(cli).remove("101")
        assert await directory.refresh_if_changed()
        assert directory.lookup("default", "101") is None
    finally:
        await cli.close()


async def test_refresh_is_one_cheap_query(db: Database, users: SqlUserRepo) -> None:
    from sqlalchemy import event

    await users.add("100", "pw")
    directory = UserDirectory.for_database(db)
    await directory.load()
    statements: list[str] = []
    event.listen(
        db.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: statements.append(statement),
    )
    assert not await directory.refresh_if_changed()
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 1 and "meta" in queries[0]


async def test_listeners_called_on_reload(db: Database, users: SqlUserRepo) -> None:
    directory = UserDirectory.for_database(db)
    seen: list[int | None] = []

    def listener(d: UserDirectory) -> None:
        seen.append(d.version)

    directory.add_listener(listener)
    await directory.load()
    await users.add("100", "pw")
    await directory.refresh_if_changed()
    directory.remove_listener(listener)
    await users.add("101", "pw")
    await directory.refresh_if_changed()
    assert len(seen) == 2 and seen[0] is not None and seen[1] is not None and seen[0] < seen[1]


async def test_watch_reloads_in_background(db: Database, users: SqlUserRepo) -> None:
    directory = UserDirectory.for_database(db)
    await directory.load()
    reloaded = asyncio.Event()
    directory.add_listener(lambda d: reloaded.set())
    task = asyncio.create_task(directory.watch(interval=0.01))
    try:
        await users.add("100", "pw")
        await asyncio.wait_for(reloaded.wait(), timeout=10)
        assert directory.lookup("default", "100") is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_use_before_load_is_a_bug(db: Database) -> None:
    directory = UserDirectory.for_database(db)
    with pytest.raises(RuntimeError, match="before load"):
        directory.lookup("default", "100")


async def test_static_source_for_tests_without_database() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    tenant = TenantRecord(1, "Default", "default", "minipbx", True, when)
    user = UserRecord(
        7, 1, "default", "minipbx", "100", "", None, "a" * 32, "b" * 64, True, when, when
    )
    source = StaticDirectorySource([tenant], [user])
    directory = UserDirectory(source)
    await directory.load()
    assert directory.lookup("anything", "100") == user
    source.replace([tenant], [])
    assert await directory.refresh_if_changed()
    assert directory.lookup("anything", "100") is None


async def test_no_default_tenant_means_unknown_domains_find_nobody(
    db: Database, tenants: SqlTenantRepo, users: SqlUserRepo
) -> None:
    await tenants.create("b.example")
    await users.add("200", "pw", domain="b.example")
    directory = UserDirectory.for_database(db)
    await directory.load()
    assert directory.tenant_for("192.0.2.1") is None
    assert directory.lookup("192.0.2.1", "200") is None
    assert directory.lookup("b.example", "200") is not None
