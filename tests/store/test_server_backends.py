"""The same migrations and repositories on PostgreSQL (asyncpg) and MariaDB (asyncmy).

Skipped when the driver is not installed or the server is not reachable; URLs come from
MINIPBX_TEST_POSTGRES_URL / MINIPBX_TEST_MYSQL_URL (defaults: local servers, user postgres /
root without a password). Each test works in a database of its own, dropped afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from minipbx.sip.digest import Algorithm, compute_ha1
from minipbx.store import (
    Database,
    SqlRegistrationRepo,
    SqlTenantRepo,
    SqlUserRepo,
    UserDirectory,
    head_revision,
)
from minipbx.store.models import Base
from minipbx.store.records import RegistrationRecord


def _schema(conn: Connection) -> tuple[set[str], list[Any]]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return set(inspect(conn).get_table_names()), list(compare_metadata(context, Base.metadata))


async def test_migrations_on_server(server_db: Database) -> None:
    assert await server_db.current_revision() is None
    await server_db.upgrade()
    await server_db.upgrade()  # idempotent
    assert await server_db.current_revision() == head_revision()
    async with server_db.engine.connect() as conn:
        tables, diff = await conn.run_sync(_schema)
    assert tables == {"alembic_version", *Base.metadata.tables}
    assert diff == []


async def test_repositories_on_server(server_db: Database) -> None:
    await server_db.upgrade()
    users, tenants = SqlUserRepo(server_db), SqlTenantRepo(server_db)
    directory = UserDirectory.for_database(server_db)
    await directory.load()
    user = await users.add("100", "pw", name="Zoë")
    assert user.ha1_sha256 == compute_ha1("100", "minipbx", "pw", Algorithm.SHA_256)
    await tenants.create("b.example")
    result = await users.import_csv("extension,password,domain\n101,pw,\n100,pw,b.example\n")
    assert result.created == 2
    assert await directory.refresh_if_changed()
    found = directory.lookup("b.example", "100")
    assert found is not None and found.realm == "b.example"
    assert directory.lookup("10.0.0.1", "100") == await users.get("100")

    registrations = SqlRegistrationRepo(server_db)
    now = datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    binding = RegistrationRecord(
        user.id,
        "sip:100@default",
        "sip:100@10.0.0.5",
        now + timedelta(seconds=60),
        "udp",
        "10.0.0.5",
        5060,
        q=0.5,
        updated_at=now,
    )
    await registrations.replace("sip:100@default", [binding])
    assert await registrations.load_active(now) == [binding]  # microseconds kept
    await users.remove("100")  # cascades
    assert await registrations.load_active(now) == []
