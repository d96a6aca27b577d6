"""Durable call records: commit locally first, then ship to MySQL; lose nothing.

:class:`CdrWriter` group-commits the records of ended calls to the local database: while one
batch is being committed the next one gathers, so a busy PBX writes many records per
transaction and an idle one writes each at once. When a batch is durable it calls
``on_durable(calls)``; the app then lets the B2BUA send the held 200 to the BYE, so a phone
never learns that a call is over before its record is safe (a SIGKILL right after loses
nothing). If the database refuses, the batch goes to a spool file (JSON lines, fsync'd) in
the data directory instead, and is imported once the database works again (known uuids
skipped, so a batch is never stored twice).

:class:`CdrShipper` copies committed records, in commit order, to a :class:`CdrSink` (the
MySQL mirror), a batch at a time, and advances the local shipping cursor after each batch
lands. A failed batch is retried with exponential back-off; a crash between landing and the
cursor advance re-sends the batch, which the sink ignores (unique uuid): exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from minipbx.pbx.call import Call
from minipbx.pbx.cdr import record_of
from minipbx.store.cdrs import CDR_FIELDS, CdrRecord, CdrRepo
from minipbx.store.errors import StoreError

log = logging.getLogger("minipbx.cdr")

_TIMES = ("start_time", "answer_time", "end_time")
_DECIMALS = ("duration", "cost", "connection_fee", "price_per_minute")
#: Fields a spool line written by an earlier version lacks (they have defaults: None).
_OPTIONAL = frozenset(
    f.name for f in fields(CdrRecord) if f.name in CDR_FIELDS and f.default is not MISSING
)


def record_to_json(record: CdrRecord) -> str:
    """One line of the spool file."""
    values: dict[str, Any] = record.values()
    for name in _TIMES:
        if values[name] is not None:
            values[name] = values[name].isoformat()
    for name in _DECIMALS:
        if values[name] is not None:
            values[name] = str(values[name])
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def record_from_json(line: str) -> CdrRecord:
    """A spool line back as a record (ValueError/KeyError when the line is damaged).

    Lines of an earlier version, without the billing details, read as records without them.
    """
    values = json.loads(line)
    if not isinstance(values, dict):
        raise ValueError(f"expected a JSON object, got {type(values).__name__}")
    for name in _OPTIONAL:
        values.setdefault(name, None)
    for name in _TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name]).astimezone(UTC)
    for name in _DECIMALS:
        if values[name] is not None:
            values[name] = Decimal(values[name])
    return CdrRecord(**{name: values[name] for name in CDR_FIELDS})


class CdrSpool:
    """CDRs that could not be committed, in a JSON-lines file until the database is back."""

    def __init__(self, path: Path) -> None:
        """Spool to ``path`` (``<path>.importing`` while an import runs)."""
        self.path = path
        self._importing = path.with_name(path.name + ".importing")

    def append(self, records: Sequence[CdrRecord]) -> None:
        """Write ``records`` and fsync (OSError when even that fails)."""
        text = "".join(record_to_json(r) + "\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def waiting(self) -> bool:
        """True when records wait in the spool."""
        return self.path.exists() or self._importing.exists()

    async def drain(self, repo: CdrRepo) -> int:
        """Import the spooled records into ``repo``; returns how many were new.

        The file is renamed first, so records spooled meanwhile go to a fresh file; it is
        deleted only after the import committed. A damaged line (a crash mid-append) is
        logged and skipped.
        """
        if not self._importing.exists():
            if not self.path.exists():
                return 0
            os.replace(self.path, self._importing)
        records = []
        for number, line in enumerate(self._importing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(record_from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("event=cdr_spool_bad_line line=%d error=%s", number, exc)
        added = await repo.add_many(records, skip_known=True)
        self._importing.unlink()
        log.info("event=cdr_spool_imported records=%d new=%d", len(records), added)
        return added


class CdrWriter:
    """Commits CDRs in groups; tells ``on_durable`` which calls' records are safe."""

    def __init__(
        self,
        repo: CdrRepo,
        spool: CdrSpool,
        on_durable: Callable[[list[Call]], None],
        on_committed: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_committed`` runs after each local commit (wakes the shipper)."""
        self._repo = repo
        self._spool = spool
        self._on_durable = on_durable
        self._on_committed = on_committed
        self._pending: list[tuple[CdrRecord, Call | None]] = []
        self._task: asyncio.Task[None] | None = None
        self.retry_delay = 1.0  # seconds between tries when neither database nor spool work
        self.written = 0
        self.spooled = 0

    @property
    def pending(self) -> int:
        """Records submitted and not yet committed or spooled."""
        return len(self._pending)

    def submit(self, record: CdrRecord, call: Call | None = None) -> None:
        """Queue ``record``; ``call`` is handed to ``on_durable`` once it is safe."""
        self._pending.append((record, call))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                saved = await self._write([r for r, _ in batch])
                calls = [c for _, c in batch if c is not None]
                if calls:
                    self._on_durable(calls)
                if not saved:
                    await asyncio.sleep(self.retry_delay)
        finally:
            self._task = None

    async def _write(self, records: list[CdrRecord]) -> bool:
        """Commit or spool ``records``; False when neither worked (they are pending again)."""
        try:
            await self._repo.add_many(records)
        except StoreError as exc:
            return self._spool_batch(records, exc)
        self.written += len(records)
        self._on_committed()
        if self._spool.waiting:
            with contextlib.suppress(StoreError):
                await self._spool.drain(self._repo)
        return True

    def _spool_batch(self, records: list[CdrRecord], exc: StoreError) -> bool:
        try:
            self._spool.append(records)
        except OSError as err:
            # Nowhere to put them: keep them in memory for the next try (and say so).
            log.critical(
                "event=cdr_not_saved count=%d error=%s spool_error=%s", len(records), exc, err
            )
            self._pending[:0] = [(r, None) for r in records]
            return False
        self.spooled += len(records)
        log.error(
            "event=cdr_spooled count=%d spool=%s error=%s", len(records), self._spool.path, exc
        )
        return True

    async def retry_spool(self) -> None:
        """Import spooled records if any (housekeeping calls this; StoreError if it fails)."""
        if self._spool.waiting:
            await self._spool.drain(self._repo)
            self._on_committed()

    async def close(self) -> None:
        """Commit (or spool) everything submitted."""
        while self._task is not None:
            await self._task


class CdrRecorder:
    """The B2BUA's call listener: one CDR per ended call, through a :class:`CdrWriter`."""

    def __init__(
        self,
        writer: CdrWriter,
        wall_offset: Callable[[], float],
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
        price: Callable[[Call, CdrRecord], CdrRecord] | None = None,
    ) -> None:
        """``wall_offset()``: wall clock minus the B2BUA's monotonic clock, now;
        ``price(call, record)``: billing settles the call and puts its cost in the record
        (called for every ended call: it also frees what unanswered calls had reserved)."""
        self._writer = writer
        self._wall_offset = wall_offset
        self._new_uuid = new_uuid
        self.price = price

    def call_ended(self, call: Call) -> bool:
        """Queue the call's record; the B2BUA holds the BYE's 200 until it is durable."""
        record = record_of(call, self._wall_offset(), self._new_uuid())
        if self.price is not None:
            record = self.price(call, record)
        self._writer.submit(record, call)
        return True


class CdrSink(Protocol):
    """Where CDRs are shipped (the MySQL mirror)."""

    target: str
    display_url: str

    async def insert(self, records: Sequence[CdrRecord]) -> None:
        """Store ``records`` (known uuids skipped); StoreError on failure."""
        ...


@dataclass(frozen=True, slots=True)
class ShippingStatus:
    """What the console and the logs show about CDR shipping."""

    target: str
    queued: int
    lag_seconds: float  # age of the oldest record not yet shipped (0 when none)
    shipped: int  # by this process
    last_error: str
    failing_since: float | None


class CdrShipper:
    """Copies committed CDRs to a sink, in order, with retries."""

    def __init__(
        self,
        repo: CdrRepo,
        sink: CdrSink,
        *,
        batch: int = 500,
        min_retry: float = 1.0,
        max_retry: float = 30.0,
        report_every: float = 30.0,
        linger: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``batch``: records per transaction; retries back off from ``min_retry`` to
        ``max_retry`` seconds; the backlog is logged every ``report_every`` seconds.
        ``linger``: after new records are announced, wait this long so that one batch
        carries many records (three transactions per batch, whatever its size)."""
        self._repo = repo
        self._sink = sink
        self._batch = batch
        self._min_retry = min_retry
        self._max_retry = max_retry
        self._report_every = report_every
        self._clock = clock
        self._linger = linger
        self._wake = asyncio.Event()
        self._cursor: int | None = None
        self.shipped = 0
        self.last_error = ""
        self.failing_since: float | None = None
        self._last_report = 0.0

    def wake(self) -> None:
        """New records were committed."""
        self._wake.set()

    async def ship_available(self) -> int:
        """Ship batches until none is left; returns how many records went (StoreError)."""
        total = 0
        while True:
            if self._cursor is None:
                self._cursor = await self._repo.shipped_upto(self._sink.target)
            records = await self._repo.after(self._cursor, self._batch)
            if not records:
                return total
            await self._sink.insert(records)
            last = records[-1].id
            assert last is not None
            await self._repo.mark_shipped(self._sink.target, last, len(records))
            self._cursor = last
            self.shipped += len(records)
            total += len(records)

    async def run(self) -> None:
        """Ship forever: on every wake-up, and on a back-off timer while failing."""
        delay = self._min_retry
        while True:
            self._wake.clear()
            try:
                await self.ship_available()
            except StoreError as exc:
                await self._failed(exc)
                await self._sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            if self.failing_since is not None:
                log.info(
                    "event=cdr_mirror_recovered target=%s down_for=%.1fs",
                    self._sink.display_url,
                    self._clock() - self.failing_since,
                )
                self.failing_since, self.last_error = None, ""
            delay = self._min_retry
            await self._sleep(self._report_every, wake=True)
            if self._linger:
                await asyncio.sleep(self._linger)

    async def _failed(self, exc: StoreError) -> None:
        now = self._clock()
        first = self.failing_since is None
        if first:
            self.failing_since = now
        if first or str(exc) != self.last_error or now - self._last_report >= self._report_every:
            self._last_report = now
            queued, lag = "?", "?"
            with contextlib.suppress(StoreError):
                status = await self.status()
                queued, lag = str(status.queued), f"{status.lag_seconds:.0f}s"
            log.error(
                "event=cdr_mirror_failed queued=%s lag=%s error=%s "
                "(CDRs stay queued in the local database and are retried)",
                queued,
                lag,
                exc,
            )
        self.last_error = str(exc)

    async def _sleep(self, seconds: float, *, wake: bool = False) -> None:
        if wake:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        else:
            await asyncio.sleep(seconds)

    async def status(self) -> ShippingStatus:
        """Queue length and lag, read from the local database."""
        backlog = await self._repo.backlog(self._sink.target)
        lag = 0.0
        if backlog.oldest_end is not None:
            lag = max(self._clock() - backlog.oldest_end.timestamp(), 0.0)
        return ShippingStatus(
            self._sink.target, backlog.count, lag, self.shipped, self.last_error, self.failing_since
        )
