"""CDR storage: the local repository, the shipping cursor, exports, and the MySQL mirror."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from minipbx.store import (
    Database,
    SqlUserSettingsRepo,
    StoreError,
    default_url,
    head_revision,
)
from minipbx.store.cdr_mirror import CdrMirror, mirror_url
from minipbx.store.cdrs import CDR_FIELDS, CdrRecord, SqlCdrRepo
from minipbx.store.cdrs_export import write_cdrs
from minipbx.store.db import alembic_config
from minipbx.store.errors import ConflictError
from minipbx.store.models import Base
from tests.store.conftest import insert_old_user

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_cdr(n: int, *, answered: bool = True, end: datetime | None = None) -> CdrRecord:
    """A plausible CDR number ``n`` that ends ``n`` minutes after T0 (or at ``end``)."""
    end = end or T0 + timedelta(minutes=n, seconds=30, milliseconds=250)
    start = end - timedelta(seconds=30, milliseconds=250)
    answer = start + timedelta(seconds=5) if answered else None
    return CdrRecord(
        uuid=f"00000000-0000-4000-8000-{n:012d}",
        call_id=f"call-{n}@127.0.0.1",
        tenant_id=1,
        tenant="default",
        caller_number="100",
        caller_name="Zoë Ällen",
        called_number="101",
        routed_number="101",
        route_type="local",
        trunk=None,
        start_time=start,
        answer_time=answer,
        end_time=end,
        duration=Decimal("30.250"),
        billable_seconds=26 if answered else 0,
        disposition="ANSWERED" if answered else "NO ANSWER",
        sip_status=200 if answered else 480,
        reason_cause="",
        hangup_by="caller",
        cost=Decimal("0.012345"),
        currency="EUR",
        source_ip="127.0.0.1",
        user_agent="SIPp",
    )


def priced(record: CdrRecord, *, card: str | None = "123456789012") -> CdrRecord:
    """``record`` as billing prices it: rate 49 (0.10 fee, 0.60/min), 60 s billed."""
    return replace(
        record,
        cost=Decimal("0.7000"),
        rate_prefix="49",
        connection_fee=Decimal("0.1000"),
        price_per_minute=Decimal("0.600001"),
        billed_seconds=60,
        card_number=card,
    )


BILLING = ("rate_prefix", "connection_fee", "price_per_minute", "billed_seconds", "card_number")


@pytest.fixture(params=[False, True], ids=["engine", "thread"])
def repo(db: Database, request: pytest.FixtureRequest) -> Iterator[SqlCdrRepo]:
    """The repository, writing through the async engine or the SQLite writer thread."""
    cdrs = SqlCdrRepo(db, threaded_sqlite=request.param)
    yield cdrs
    cdrs.close()


async def test_add_and_read_back_in_commit_order(repo: SqlCdrRepo) -> None:
    records = [make_cdr(n) for n in (3, 1, 2)]
    assert await repo.add_many(records) == 3
    back = await repo.after(0, 10)
    assert [r.uuid for r in back] == [r.uuid for r in records]
    assert [replace(r, id=None) for r in back] == records  # every field survives, to the µs
    assert [r.id for r in await repo.after(back[0].id or 0, 1)] == [back[1].id]
    assert await repo.count() == 3


async def test_billing_details_round_trip(repo: SqlCdrRepo) -> None:
    records = [
        priced(make_cdr(1)),
        make_cdr(2),  # not priced: the details stay NULL
        priced(make_cdr(3), card=None),
        replace(priced(make_cdr(4)), rate_prefix="", connection_fee=Decimal(0)),  # catch-all
    ]
    assert await repo.add_many(records) == 4
    back = [replace(r, id=None) for r in await repo.after(0, 10)]
    assert back == records
    first, second, third, fourth = back
    assert (first.rate_prefix, first.billed_seconds, first.card_number) == (
        "49",
        60,
        "123456789012",
    )
    assert first.price_per_minute == Decimal("0.600001")  # 6 decimals kept
    assert isinstance(first.connection_fee, Decimal) and first.connection_fee == Decimal("0.1")
    assert all(getattr(second, name) is None for name in BILLING)
    assert third.card_number is None and third.rate_prefix == "49"
    assert fourth.rate_prefix == "" and fourth.connection_fee == 0  # empty is not NULL
    assert [replace(r, id=None) for r in await repo.between()] == records


async def test_known_uuid_is_a_conflict_unless_skipped(repo: SqlCdrRepo) -> None:
    await repo.add_many([make_cdr(1)])
    with pytest.raises(ConflictError):
        await repo.add_many([make_cdr(2), make_cdr(1)])
    assert await repo.count() == 1  # the batch is one transaction
    assert await repo.add_many([make_cdr(2), make_cdr(1)], skip_known=True) == 1
    assert await repo.count() == 2


async def test_between_filters_on_end_time(repo: SqlCdrRepo) -> None:
    await repo.add_many([make_cdr(n) for n in range(5)])
    window = await repo.between(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
    assert [r.call_id for r in window] == ["call-1@127.0.0.1", "call-2@127.0.0.1"]
    assert len(await repo.between(tenant_id=2)) == 0
    page = await repo.between(limit=2)
    assert len(await repo.between(after_id=page[-1].id or 0)) == 3


async def test_shipping_cursor_and_backlog(repo: SqlCdrRepo) -> None:
    await repo.add_many([make_cdr(n) for n in range(4)])
    assert await repo.shipped_upto("t") == 0
    backlog = await repo.backlog("t")
    assert backlog.count == 4 and backlog.oldest_end == make_cdr(0).end_time
    ids = [r.id or 0 for r in await repo.after(0, 10)]
    await repo.mark_shipped("t", ids[1], 2)
    await repo.mark_shipped("t", ids[0], 1)  # never backwards
    assert await repo.shipped_upto("t") == ids[1]
    backlog = await repo.backlog("t")
    assert backlog.count == 2 and backlog.oldest_end == make_cdr(2).end_time
    assert (await repo.backlog("other")).count == 4  # each target has its own cursor
    await repo.mark_shipped("t", ids[3], 2)
    assert (await repo.backlog("t")).count == 0


async def test_export_csv_and_json(repo: SqlCdrRepo) -> None:
    await repo.add_many([make_cdr(n, answered=n % 2 == 0) for n in range(3)])
    out = io.StringIO()
    assert await write_cdrs(repo, out, "csv") == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CDR_FIELDS)
    assert rows[0]["end_time"] == "2030-05-01T12:00:30.250Z"
    assert rows[1]["answer_time"] == "" and rows[1]["disposition"] == "NO ANSWER"
    assert rows[0]["cost"] == "0.012345" and rows[0]["caller_name"] == "Zoë Ällen"
    out = io.StringIO()
    since = T0 + timedelta(minutes=1)
    assert await write_cdrs(repo, out, "json", since=since) == 2
    data = json.loads(out.getvalue())
    assert [d["call_id"] for d in data] == ["call-1@127.0.0.1", "call-2@127.0.0.1"]
    assert data[0]["answer_time"] is None and data[0]["duration"] == "30.250"
    out = io.StringIO()
    assert await write_cdrs(repo, out, "json", since=T0 + timedelta(days=1)) == 0
    assert json.loads(out.getvalue()) == []


async def test_export_has_the_billing_columns_last(repo: SqlCdrRepo) -> None:
    await repo.add_many([priced(make_cdr(0)), make_cdr(1)])
    out = io.StringIO()
    assert await write_cdrs(repo, out, "csv") == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0])[-len(BILLING) :] == list(BILLING)
    assert [rows[0][name] for name in BILLING] == [
        "49",
        "0.100000",
        "0.600001",
        "60",
        "123456789012",
    ]
    assert [rows[1][name] for name in BILLING] == [""] * len(BILLING)
    out = io.StringIO()
    assert await write_cdrs(repo, out, "json") == 2
    billed, unbilled = json.loads(out.getvalue())
    assert (billed["rate_prefix"], billed["connection_fee"], billed["billed_seconds"]) == (
        "49",
        "0.100000",
        60,
    )
    assert billed["price_per_minute"] == "0.600001" and billed["card_number"] == "123456789012"
    assert all(unbilled[name] is None for name in BILLING)


def test_mirror_url_must_be_mysql() -> None:
    assert mirror_url("mysql://u:p@127.0.0.1/db").drivername == "mysql+asyncmy"
    for bad in ("postgresql://x/y", "sqlite:///x.db", "not a url", "mysql://127.0.0.1"):
        with pytest.raises(StoreError, match=r"URL|cdr\.mysql_url"):
            mirror_url(bad)


async def test_mirror_creates_table_and_inserts_exactly_once(mysql_scratch_url: str) -> None:
    mirror = CdrMirror(mysql_scratch_url)
    try:
        await mirror.insert([])  # creates table cdr
        records = [make_cdr(n) for n in range(3)]
        await mirror.insert(records[:2])
        await mirror.insert(records)  # a re-sent batch adds only what is new
    finally:
        await mirror.close()
    engine = create_async_engine(mysql_scratch_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT cdr_uuid, start_time, end_time, duration, cost FROM cdr ORDER BY id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [r[0] for r in rows] == [r.uuid for r in records]
    assert rows[0][2] == records[0].end_time.replace(tzinfo=None)  # UTC, milliseconds kept
    assert rows[0][3] == Decimal("30.250") and rows[0][4] == Decimal("0.012345")


async def _mirror_rows(url: str, sql: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())
    finally:
        await engine.dispose()


_BILLING_SQL = f"SELECT cdr_uuid, {', '.join(BILLING)} FROM cdr ORDER BY id"


async def test_mirror_stores_the_billing_details(mysql_scratch_url: str) -> None:
    mirror = CdrMirror(mysql_scratch_url)
    records = [priced(make_cdr(1)), make_cdr(2)]
    try:
        await mirror.insert(records)
    finally:
        await mirror.close()
    rows = await _mirror_rows(mysql_scratch_url, _BILLING_SQL)
    assert [tuple(r) for r in rows] == [
        (records[0].uuid, "49", Decimal("0.1"), Decimal("0.600001"), 60, "123456789012"),
        (records[1].uuid, None, None, None, None, None),
    ]


# ``cdr`` as the versions before the billing details created it.
_OLD_MIRROR_TABLE = """
CREATE TABLE cdr (
    id BIGINT NOT NULL AUTO_INCREMENT,
    cdr_uuid VARCHAR(36) NOT NULL,
    call_id VARCHAR(255) NOT NULL,
    tenant_id INTEGER,
    tenant VARCHAR(255) NOT NULL,
    caller_number VARCHAR(64) NOT NULL,
    caller_name VARCHAR(255) NOT NULL,
    called_number VARCHAR(64) NOT NULL,
    routed_number VARCHAR(64) NOT NULL,
    route_type VARCHAR(16) NOT NULL,
    trunk VARCHAR(255),
    start_time DATETIME(3) NOT NULL,
    answer_time DATETIME(3),
    end_time DATETIME(3) NOT NULL,
    duration NUMERIC(12, 3) NOT NULL,
    billable_seconds INTEGER NOT NULL,
    disposition VARCHAR(16) NOT NULL,
    sip_status INTEGER NOT NULL,
    reason_cause VARCHAR(255) NOT NULL,
    hangup_by VARCHAR(16) NOT NULL,
    cost NUMERIC(16, 6) NOT NULL,
    currency VARCHAR(3) NOT NULL,
    source_ip VARCHAR(64) NOT NULL,
    user_agent VARCHAR(255) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (cdr_uuid)
) ENGINE=InnoDB CHARSET=utf8mb4
"""


async def test_mirror_adds_missing_columns_to_an_older_table(
    mysql_scratch_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(mysql_scratch_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(_OLD_MIRROR_TABLE)
            await conn.exec_driver_sql(
                "INSERT INTO cdr (cdr_uuid, call_id, tenant, caller_number, caller_name, "
                "called_number, routed_number, route_type, start_time, end_time, duration, "
                "billable_seconds, disposition, sip_status, reason_cause, hangup_by, cost, "
                "currency, source_ip, user_agent) VALUES ('old', 'c', 't', '1', '', '2', '2', "
                "'local', '2030-01-01', '2030-01-01', 0, 0, 'FAILED', 500, '', 'system', 0, '', "
                "'', '')"
            )
    finally:
        await engine.dispose()
    records = [priced(make_cdr(1)), make_cdr(2)]
    caplog.set_level("INFO", logger="minipbx.cdr")
    mirror = CdrMirror(mysql_scratch_url)
    try:
        await mirror.insert(records[:1])
        await mirror.insert(records)  # columns checked once per connection life: no new ALTER
    finally:
        await mirror.close()
    added = [r.getMessage() for r in caplog.records if "cdr_mirror_columns_added" in r.getMessage()]
    assert added == [
        "event=cdr_mirror_columns_added table=cdr "
        "columns=rate_prefix,connection_fee,price_per_minute,billed_seconds,card_number"
    ]
    rows = await _mirror_rows(mysql_scratch_url, _BILLING_SQL)
    assert [tuple(r) for r in rows] == [
        ("old", None, None, None, None, None),  # existing rows: NULL
        (records[0].uuid, "49", Decimal("0.1"), Decimal("0.600001"), 60, "123456789012"),
        (records[1].uuid, None, None, None, None, None),
    ]
    columns = await _mirror_rows(
        mysql_scratch_url,
        "SELECT column_name, column_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = 'cdr' ORDER BY ordinal_position",
    )
    shown = [(name, kind.removesuffix("(11)"), null) for name, kind, null in columns]
    assert shown[-len(BILLING) :] == [  # at the end; "int(11)" on MariaDB, "int" on MySQL 8
        ("rate_prefix", "varchar(32)", "YES"),
        ("connection_fee", "decimal(16,6)", "YES"),
        ("price_per_minute", "decimal(16,6)", "YES"),
        ("billed_seconds", "int", "YES"),
        ("card_number", "varchar(32)", "YES"),
    ]
    mirror = CdrMirror(mysql_scratch_url)  # a restart: nothing left to add
    caplog.clear()
    try:
        await mirror.insert([priced(make_cdr(3))])
    finally:
        await mirror.close()
    assert not [r for r in caplog.records if "cdr_mirror_columns_added" in r.getMessage()]


async def test_mirror_unreachable_and_refused_are_store_errors(mysql_scratch_url: str) -> None:
    for url in (
        "mysql+asyncmy://root@127.0.0.1:1/x",
        mysql_scratch_url.replace("root@", "root:wrong@").replace("root:@", "root:wrong@"),
    ):
        mirror = CdrMirror(url, connect_timeout=2)
        try:
            with pytest.raises(StoreError) as info:
                await mirror.insert([make_cdr(1)])
            assert "wrong" not in str(info.value)  # the password is never shown
            assert "CDR copy to mysql" in str(info.value)
        finally:
            await mirror.close()


# --- migration 0007 ----------------------------------------------------------------------------


def _downgrade(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, revision)


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


async def _check_migration_0007(db: Database) -> None:
    await db.upgrade("0006")
    old = make_cdr(1)
    row = {name: getattr(old, name) for name in CDR_FIELDS if name not in BILLING}
    async with db.write() as session:  # the 0006 schema: only the columns it had
        await insert_old_user(session, T0)
        cdrs = Base.metadata.tables["cdrs"]
        await session.execute(insert(cdrs), [row])  # names only the 0006 columns
    await db.upgrade()
    repo = SqlCdrRepo(db)
    (back,) = await repo.after(0, 10)
    assert replace(back, id=None) == old  # existing records: the details NULL
    assert (await SqlUserSettingsRepo(db).get_settings(7)).voicemail_max_seconds is None
    await repo.add_many([priced(make_cdr(2))])
    assert replace((await repo.after(back.id or 0, 1))[0], id=None) == priced(make_cdr(2))
    await SqlUserSettingsRepo(db).update_settings(7, voicemail_max_seconds=60)
    async with db.engine.begin() as conn:
        await conn.run_sync(_downgrade, "0006")
    async with db.engine.connect() as conn:
        assert not await conn.run_sync(_columns, "cdrs") & set(BILLING)
        assert "voicemail_max_seconds" not in await conn.run_sync(_columns, "users")
    async with db.read() as session:
        assert await session.scalar(text("SELECT count(*) FROM cdrs")) == 2  # rows kept
    await db.upgrade()
    assert await db.current_revision() == head_revision()


async def test_migration_0007_on_sqlite(tmp_path: Path) -> None:
    database = Database(default_url(tmp_path))
    try:
        await _check_migration_0007(database)
    finally:
        await database.close()


async def test_migration_0007_on_server(server_db: Database) -> None:
    await _check_migration_0007(server_db)
