"""Fixtures: a migrated SQLite database in tmp_path, its repositories, server databases."""

from __future__ import annotations

import importlib.util
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from minipbx.store import Database, SqlRegistrationRepo, SqlTenantRepo, SqlUserRepo, default_url

POSTGRES_URL = os.environ.get(
    "MINIPBX_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("MINIPBX_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database in the test's own directory."""
    database = Database(default_url(tmp_path / "data"))
    await database.upgrade()
    yield database
    await database.close()


@pytest.fixture
def tenants(db: Database) -> SqlTenantRepo:
    return SqlTenantRepo(db)


@pytest.fixture
def users(db: Database) -> SqlUserRepo:
    return SqlUserRepo(db)


@pytest.fixture
def registrations(db: Database) -> SqlRegistrationRepo:
    return SqlRegistrationRepo(db)


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["postgresql", "mysql"])
async def server_db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """An empty, throw-away database on a real PostgreSQL or MariaDB server (else skip).

    A fresh database per test (created through the configured URL's server, dropped
    afterwards), so tests never touch tables other people's tests use.
    """
    backend = request.param
    url, module = (POSTGRES_URL, "asyncpg") if backend == "postgresql" else (MYSQL_URL, "asyncmy")
    async with scratch_database(url, module) as scratch:
        database = Database(scratch)
        try:
            yield database
        finally:
            await database.close()


@pytest.fixture
async def mysql_scratch_url() -> AsyncIterator[str]:
    """The URL of a fresh, empty database on the MariaDB server (else skip)."""
    async with scratch_database(MYSQL_URL, "asyncmy") as scratch:
        yield scratch


@asynccontextmanager
async def scratch_database(url: str, module: str) -> AsyncIterator[str]:
    """Create a uniquely named database on ``url``'s server; drop it afterwards."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if not _reachable(url):
        pytest.skip(f"no database server at {make_url(url).render_as_string()}")
    name = f"minipbx_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f"DROP DATABASE {name}")
    finally:
        await admin.dispose()


async def insert_old_user(session: AsyncSession, now: datetime, display_name: str = "") -> None:
    """Tenant 1 and its user 7 ("100") with only the columns every schema since 0001 has:
    rows a migration test writes before upgrading."""
    naive = now.replace(tzinfo=None)
    await session.execute(
        text(
            "INSERT INTO tenants (id, name, domain, realm, is_default, created_at) "
            "VALUES (1, 'Default', 'default', 'minipbx', :t, :now)"
        ),
        {"t": True, "now": naive},
    )
    await session.execute(
        text(
            "INSERT INTO users (id, tenant_id, extension, display_name, ha1_md5, ha1_sha256, "
            "enabled, created_at, updated_at) VALUES (7, 1, '100', :name, :md5, :sha, :t, "
            ":now, :now)"
        ),
        {"name": display_name, "md5": "a" * 32, "sha": "b" * 64, "t": True, "now": naive},
    )
