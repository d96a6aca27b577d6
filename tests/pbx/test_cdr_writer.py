"""The durable CDR writer (group commit, spool) and the shipper (order, retries, once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from minipbx.pbx.cdr_writer import CdrShipper, CdrSpool, CdrWriter, record_from_json
from minipbx.store import Database, StoreError, default_url
from minipbx.store.cdrs import CdrRecord, SqlCdrRepo
from tests.store.test_cdrs import BILLING, make_cdr, priced


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqlCdrRepo]:
    db = Database(default_url(tmp_path / "data"))
    await db.upgrade()
    yield SqlCdrRepo(db)
    await db.close()


class FlakyRepo:
    """A repo whose add_many fails while ``down`` is set; counts transactions."""

    def __init__(self, inner: SqlCdrRepo) -> None:
        self.inner = inner
        self.down = False
        self.transactions = 0

    async def add_many(self, records: Sequence[CdrRecord], *, skip_known: bool = False) -> int:
        if self.down:
            raise StoreError("database is down")
        self.transactions += 1
        return await self.inner.add_many(records, skip_known=skip_known)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Sink:
    """A MySQL stand-in: unique uuids, can fail before or after storing a batch."""

    target = "mysql://sink/db"
    display_url = "mysql://sink/db"

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.fail_before = 0  # fail this many next inserts without storing
        self.fail_after = 0  # store, then fail (a lost acknowledgement)

    async def insert(self, records: Sequence[CdrRecord]) -> None:
        if self.fail_before:
            self.fail_before -= 1
            raise StoreError("connection refused")
        self.rows += [r.uuid for r in records if r.uuid not in self.rows]
        if self.fail_after:
            self.fail_after -= 1
            raise StoreError("lost connection")


def _writer(repo: Any, tmp_path: Path, durable: list[list[Any]]) -> CdrWriter:
    return CdrWriter(repo, CdrSpool(tmp_path / "spool.jsonl"), durable.append)


async def test_records_of_one_tick_share_a_transaction(repo: SqlCdrRepo, tmp_path: Path) -> None:
    flaky = FlakyRepo(repo)
    durable: list[list[Any]] = []
    writer = _writer(flaky, tmp_path, durable)
    for n in range(5):
        writer.submit(make_cdr(n), call=n)  # type: ignore[arg-type]
    assert writer.pending == 5
    await writer.close()
    assert flaky.transactions == 1 and durable == [[0, 1, 2, 3, 4]]
    assert await repo.count() == 5 and writer.written == 5


async def test_refused_batch_is_spooled_then_imported_once(
    repo: SqlCdrRepo, tmp_path: Path
) -> None:
    flaky = FlakyRepo(repo)
    durable: list[list[Any]] = []
    writer = _writer(flaky, tmp_path, durable)
    flaky.down = True
    writer.submit(make_cdr(1), call="a")  # type: ignore[arg-type]
    await writer.close()
    assert durable == [["a"]]  # safe on disk: the held answer may go
    spool = tmp_path / "spool.jsonl"
    assert record_from_json(spool.read_text().splitlines()[0]) == make_cdr(1)
    with pytest.raises(StoreError):
        await writer.retry_spool()  # still down: the spool stays
    assert spool.exists() or spool.with_name("spool.jsonl.importing").exists()
    flaky.down = False
    writer.submit(make_cdr(2))
    await writer.close()  # a working commit also drains the spool
    assert sorted(r.uuid for r in await repo.after(0, 10)) == [make_cdr(1).uuid, make_cdr(2).uuid]
    assert not spool.exists()
    spool.write_text(
        "\n".join([_line(make_cdr(1)), "{damaged", _line(make_cdr(3))]) + "\n"
    )  # a crash mid-import left the spool: known records are skipped
    await writer.retry_spool()
    assert await repo.count() == 3


def _line(record: CdrRecord) -> str:
    from minipbx.pbx.cdr_writer import record_to_json

    return record_to_json(record)


def test_spool_lines_keep_the_billing_details() -> None:
    for record in (priced(make_cdr(1)), priced(make_cdr(2), card=None), make_cdr(3)):
        assert record_from_json(_line(record)) == record
    values = json.loads(_line(priced(make_cdr(4))))
    assert [values[name] for name in BILLING] == ["49", "0.1000", "0.600001", 60, "123456789012"]
    assert [json.loads(_line(make_cdr(5)))[name] for name in BILLING] == [None] * len(BILLING)
    back = record_from_json(_line(priced(make_cdr(4))))
    assert isinstance(back.connection_fee, Decimal) and str(back.connection_fee) == "0.1000"
    assert str(back.price_per_minute) == "0.600001"  # money stays exact (no float)


# A spool line of a version before the billing details (as its record_to_json wrote it).
OLD_LINE = (
    '{"uuid":"00000000-0000-4000-8000-000000000009","call_id":"call-9@127.0.0.1",'
    '"tenant_id":1,"tenant":"default","caller_number":"100","caller_name":"Zoë",'
    '"called_number":"101","routed_number":"101","route_type":"local","trunk":null,'
    '"start_time":"2030-05-01T12:09:00+00:00","answer_time":"2030-05-01T12:09:05+00:00",'
    '"end_time":"2030-05-01T12:09:30.250000+00:00","duration":"30.250",'
    '"billable_seconds":26,"disposition":"ANSWERED","sip_status":200,"reason_cause":"",'
    '"hangup_by":"caller","cost":"0.012345","currency":"EUR","source_ip":"127.0.0.1",'
    '"user_agent":"SIPp"}'
)


async def test_old_spool_lines_are_still_imported(repo: SqlCdrRepo, tmp_path: Path) -> None:
    old = record_from_json(OLD_LINE)
    assert (old.uuid, old.cost, old.caller_name) == (
        make_cdr(9).uuid,
        Decimal("0.012345"),
        "Zoë",
    )
    assert all(getattr(old, name) is None for name in BILLING)
    with pytest.raises(KeyError):  # a line missing an original field is still damaged
        record_from_json(OLD_LINE.replace('"cost":"0.012345",', ""))
    with pytest.raises(ValueError):
        record_from_json("[1, 2]")
    spool = CdrSpool(tmp_path / "spool.jsonl")
    spool.path.write_text(OLD_LINE + "\n[1]\n" + _line(priced(make_cdr(1))) + "\n")
    assert await spool.drain(repo) == 2  # the damaged line is skipped, the others imported
    old_back, new_back = await repo.after(0, 10)
    assert old_back.uuid == old.uuid and old_back.rate_prefix is None
    assert (new_back.rate_prefix, new_back.billed_seconds, new_back.card_number) == (
        "49",
        60,
        "123456789012",
    )


async def test_records_stay_pending_when_nothing_can_store_them(
    repo: SqlCdrRepo, tmp_path: Path
) -> None:
    flaky = FlakyRepo(repo)
    durable: list[list[Any]] = []
    writer = CdrWriter(flaky, CdrSpool(tmp_path / "missing-dir" / "spool"), durable.append)
    writer.retry_delay = 0.01
    flaky.down = True
    writer.submit(make_cdr(1), call="a")  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert writer.pending == 1 and durable == [["a"]]  # calls are not held forever
    flaky.down = False
    await writer.close()
    assert await repo.count() == 1


async def test_shipper_delivers_in_order_exactly_once_through_failures(
    repo: SqlCdrRepo,
) -> None:
    await repo.add_many([make_cdr(n) for n in range(7)])
    sink = Sink()
    shipper = CdrShipper(repo, sink, batch=3, min_retry=0.001, max_retry=0.002, linger=0)
    sink.fail_before = 2
    sink.fail_after = 1
    task = asyncio.create_task(shipper.run())
    try:
        for _ in range(200):
            if (await repo.backlog(sink.target)).count == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert sink.rows == [make_cdr(n).uuid for n in range(7)]  # in order, no duplicate
    status = await shipper.status()
    assert status.queued == 0 and status.lag_seconds == 0 and status.last_error == ""
    # A new shipper (after a restart) resumes from the stored cursor.
    await repo.add_many([make_cdr(7)])
    again = CdrShipper(repo, sink)
    assert await again.ship_available() == 1
    assert sink.rows[-1] == make_cdr(7).uuid and len(sink.rows) == 8


async def test_shipper_status_while_failing(repo: SqlCdrRepo) -> None:
    await repo.add_many([make_cdr(n) for n in range(2)])
    sink = Sink()
    sink.fail_before = 10**6
    clock = [make_cdr(0).end_time.timestamp() + 90.0]
    shipper = CdrShipper(repo, sink, min_retry=0.001, max_retry=0.001, clock=lambda: clock[0])
    task = asyncio.create_task(shipper.run())
    for _ in range(500):  # until the first failure was seen (bounded: 5 s)
        if shipper.last_error:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    status = await shipper.status()
    assert status.queued == 2 and status.lag_seconds == pytest.approx(90.0)
    assert status.last_error.endswith("connection refused") and status.failing_since
