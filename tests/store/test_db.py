"""Database: URL checks, clear errors, SQLite settings, migrations, WAL concurrency."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from minipbx.store import (
    Database,
    SqlUserRepo,
    StoreError,
    default_url,
    head_revision,
    parse_url,
)
from minipbx.store.models import Base, User

TABLES = {"alembic_version", *Base.metadata.tables}


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


# --- URLs ----------------------------------------------------------------------------------


def test_default_url_is_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    url = parse_url(default_url(tmp_path / "d"))
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(tmp_path / "d" / "minipbx.db")


def test_default_url_relative_dir_made_absolute(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_url(default_url("minipbx-data")).database == str(
        tmp_path / "minipbx-data" / "minipbx.db"
    )


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite"),
        ("postgres://u:pw@db.example/pbx", "postgresql+asyncpg"),
        ("postgresql://u@db.example/pbx", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db.example/pbx", "postgresql+asyncpg"),
        ("mysql://root@127.0.0.1/pbx", "mysql+asyncmy"),
        ("mariadb+asyncmy://root@127.0.0.1/pbx", "mariadb+asyncmy"),
    ],
)
def test_parse_url_fills_async_driver(given: str, driver: str, monkeypatch: Any) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    url = parse_url(given)
    assert url.drivername == driver
    if driver.startswith(("mysql", "mariadb")):
        assert url.query["charset"] == "utf8mb4"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("not a url", "bad database URL: cannot parse it"),
        ("oracle://scott:tiger@h/db", "unsupported database 'oracle'"),
        ("postgresql+psycopg2://u@h/db", "driver 'psycopg2' is not supported for postgresql"),
        ("mysql+mysqldb://u@h/db", "driver 'mysqldb' is not supported for mysql"),
        ("sqlite+aiosqlite://", "SQLite needs a file path"),
        ("sqlite:///:memory:", "SQLite needs a file path"),
        ("postgresql://u:secret@h", "no database name"),
    ],
)
def test_bad_urls_give_one_line_errors(given: str, expected: str) -> None:
    with pytest.raises(StoreError) as info:
        Database(given)
    message = _one_line(info.value)
    assert expected in message
    assert "secret" not in message


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [
        ("postgresql://u@h/db", "asyncpg", "postgres"),
        ("mysql://u@h/db", "asyncmy", "mysql"),
        ("mysql+aiomysql://u@h/db", "aiomysql", None),
    ],
)
def test_missing_driver_named(url: str, package: str, extra: str | None, monkeypatch: Any) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name: None if name == package else real(name)
    )
    with pytest.raises(StoreError) as info:
        Database(url)
    message = _one_line(info.value)
    assert f"Python package {package!r}" in message
    assert f"pip install {package}" in message
    if extra:
        assert f"minipbx[{extra}]" in message


def test_password_hidden(monkeypatch: Any) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    database = Database("postgresql://u:secret@h/db")
    assert "secret" not in database.display_url
    assert "secret" not in repr(database)


# --- opening ---------------------------------------------------------------------------------


async def test_unreachable_server_is_a_clear_error() -> None:
    if importlib.util.find_spec("asyncpg") is None:
        pytest.skip("asyncpg is not installed")
    database = Database("postgresql://postgres:secret@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(StoreError) as info:
        await database.open()
    message = _one_line(info.value)
    assert message.startswith("cannot open database postgresql+asyncpg://postgres:***@127.0.0.1:1")
    assert "secret" not in message
    await database.close()


async def test_unreachable_mysql_is_a_clear_error() -> None:
    if importlib.util.find_spec("asyncmy") is None:
        pytest.skip("asyncmy is not installed")
    database = Database("mysql://root@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(StoreError) as info:
        await database.upgrade()
    assert _one_line(info.value).startswith("cannot open database mysql+asyncmy://root@127.0.0.1:1")
    await database.close()


async def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    database = Database(default_url(blocker / "data"))
    with pytest.raises(StoreError) as info:
        await database.upgrade()
    assert _one_line(info.value).startswith(f"cannot create data directory {blocker / 'data'}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
async def test_read_only_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o555)
    try:
        database = Database(default_url(data))
        with pytest.raises(StoreError) as info:
            await database.open()
        assert _one_line(info.value).startswith(f"data directory {data} is not writable")
    finally:
        data.chmod(0o755)


async def test_read_only_data_dir_seen_by_access_check(tmp_path: Path, monkeypatch: Any) -> None:
    # Root ignores permission bits, so the check is exercised by faking os.access here.
    monkeypatch.setattr("os.access", lambda path, mode: False)
    database = Database(default_url(tmp_path))
    with pytest.raises(StoreError) as info:
        await database.open()
    assert _one_line(info.value).startswith(f"data directory {tmp_path} is not writable")


async def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "minipbx.db").write_bytes(b"this is not sqlite" * 100)
    database = Database(default_url(tmp_path))
    with pytest.raises(StoreError) as info:
        await database.upgrade()
    message = _one_line(info.value)
    assert message.startswith("cannot open database sqlite+aiosqlite:///")
    assert "not a database" in message
    await database.close()


async def test_sqlite_settings(db: Database) -> None:
    async with db.read() as session:
        assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await session.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == 5000


# --- migrations ------------------------------------------------------------------------------


def _schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrations_create_schema_and_are_idempotent(tmp_path: Path) -> None:
    database = Database(default_url(tmp_path))
    assert await database.current_revision() is None
    await database.upgrade()
    assert await database.current_revision() == head_revision()
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_tables) == TABLES
        assert await conn.run_sync(_schema_diff) == []
    await SqlUserRepo(database).add("100", "pw")
    await database.upgrade()  # a second run changes nothing and keeps the data
    assert await database.current_revision() == head_revision()
    assert await SqlUserRepo(database).count() == 1
    await database.close()


async def test_concurrent_upgrades_are_serialised(tmp_path: Path) -> None:
    first, second = Database(default_url(tmp_path)), Database(default_url(tmp_path))
    await asyncio.gather(first.upgrade(), second.upgrade())
    assert await first.current_revision() == await second.current_revision() == head_revision()
    await first.close()
    await second.close()


async def test_async_with_opens_and_closes(tmp_path: Path) -> None:
    async with Database(default_url(tmp_path)) as database:
        await database.upgrade()
        assert await database.current_revision() == head_revision()


# --- concurrency (the CLI writes while the server runs) --------------------------------------


async def test_write_from_second_engine_while_first_reads(db: Database, tmp_path: Path) -> None:
    await SqlUserRepo(db).add("100", "pw")
    other = Database(db.url)  # a second engine, as the CLI process would have
    try:
        async with db.read() as session:
            before = list(await session.scalars(select(User.extension)))
            await SqlUserRepo(other).add("101", "pw")  # WAL: the reader does not block it
            # ...and the open read transaction keeps its snapshot.
            assert list(await session.scalars(select(User.extension))) == before == ["100"]
        assert [u.extension for u in await SqlUserRepo(db).list_users()] == ["100", "101"]
    finally:
        await other.close()


async def test_writer_waits_then_gives_a_clear_error(db: Database) -> None:
    other = Database(db.url, busy_timeout=0.2)
    try:
        async with db.write() as session:
            await session.execute(text("UPDATE meta SET version = version + 0"))
            with pytest.raises(StoreError) as info:
                await SqlUserRepo(other).add("100", "pw")
        assert "database is locked" in _one_line(info.value)
        await SqlUserRepo(other).add("100", "pw")  # the lock is gone: it works now
    finally:
        await other.close()
