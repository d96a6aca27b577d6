"""CDR storage: the local repository, the shipping cursor, exports, and the MySQL mirror."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from minipbx.store import Database, StoreError
from minipbx.store.cdr_mirror import CdrMirror, mirror_url
from minipbx.store.cdrs import CDR_FIELDS, CdrRecord, SqlCdrRepo
from minipbx.store.cdrs_export import write_cdrs
from minipbx.store.errors import ConflictError

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
