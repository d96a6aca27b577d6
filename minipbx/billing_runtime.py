"""Prepaid billing in the running server: rates and balances in memory, durable settlements,
the calling-card and balance services (asyncio glue, like ``routing_loader.py``).

- :class:`BillingRuntime` loads the prepaid (or rated) users and every rate table into a
  :class:`~minipbx.pbx.prepaid.PrepaidBook` and :class:`~minipbx.pbx.charging.RateIndex`
  objects, and every second (:meth:`BillingRuntime.run`) polls ``users_version``,
  ``rates_version`` and the newest ledger id: a top-up from the console, the API or the CLI
  is in the book within a second.
- ``runtime.gate``, a :class:`~minipbx.pbx.prepaid_gate.PrepaidGate` (re-exported here),
  is what the call path calls, synchronously: ``authorize`` from the router before a call
  is placed, ``price_record`` (or ``settle``) from the call listener when it ended.
- The services: ``card:<access>`` (:class:`CallingCardService`), ``balance:``
  (:class:`BalanceService`, feature code ``*900``) and ``prepaid:<reason>``
  (:class:`RefusalAnnouncement`): :meth:`BillingRuntime.services`.
- A settlement is made durable by one ledger transaction (:meth:`SqlLedgerRepo.add
  <minipbx.store.billing.SqlLedgerRepo.add>`: the balance row locked and updated and the
  ``charge`` entry with the CDR's uuid inserted together), so the balance always equals
  the sum of the ledger. Writes run in order in the runtime's task, right after the call
  ended; if the database refuses, the settlements wait in memory and in
  ``billing-spool.jsonl`` (fsync'd) and are retried; a charge already in the ledger (same
  uuid, same account) is never written twice.
- Between a settlement and its write the book already holds the lower balance; reloads
  compute ``stored balance + unwritten charges`` under one lock with the writes, so a
  reload never shows money that is already spent.

Crash safety: reservations exist only in memory and are never written, so a restart (or a
crash) cannot leave money held, and the stored balance only goes down by settled charges,
each no more than what its call had reserved out of ``balance + credit_limit``. A crash
between the end of a call and the write of its charge (a few milliseconds, or while the
database is down and the spool cannot be written either) loses that charge in the
customer's favour; it never overdraws.

Several nodes sharing one database each hold their own reservations: a balance is only
safe from concurrent calls through different nodes with a shared reservation store
(DESIGN: Redis), which is not built.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Protocol, runtime_checkable

from minipbx.pbx.cards import (
    CardFlowSettings,
    CardSession,
    Dialer,
    DialOutcome,
    Login,
    LoginResult,
    run_balance,
    run_card,
)
from minipbx.pbx.channel import Channel, ChannelClosedError, TransferKind
from minipbx.pbx.charging import RateIndex, RateRule
from minipbx.pbx.prepaid import (
    AccountKey,
    AccountKind,
    Authorization,
    BookSettings,
    PrepaidBook,
    Refusal,
    RefusalReason,
)
from minipbx.pbx.prepaid_gate import CardCall, CardUse, PendingCharge, PrepaidGate, wall_time
from minipbx.store import Database, StoreError
from minipbx.store.billing import SqlCardRepo, SqlLedgerRepo
from minipbx.store.billing_data import (
    BillingMarks,
    billing_marks,
    has_charge,
    ledger_touched,
    load_billing_users,
    load_rate_tables,
    read_balances,
)
from minipbx.store.errors import InvalidInputError, NotFoundError
from minipbx.store.pbxrecords import CardRecord

log = logging.getLogger("minipbx.billing")

__all__ = [
    "BalanceService",
    "BillingRuntime",
    "BillingSettings",
    "CallingCardService",
    "CardCall",
    "CardDesk",
    "CardUse",
    "PendingCharge",
    "PrepaidGate",
    "RefusalAnnouncement",
    "TransferDialer",
]

SPOOL_NAME = "billing-spool.jsonl"
_ACCESS = re.compile(r"[A-Za-z0-9._\-]{0,64}")
_MAX_PIN_COUNTERS = 10_000  # wrong-PIN counters kept per (card, caller)


@dataclass(frozen=True, slots=True)
class BillingSettings:
    """Prepaid settings (documented in docs/billing.md)."""

    warning_lead: int = 60  # seconds before the cut to warn the caller
    min_seconds: int = 0  # refuse calls the money cannot keep up this long
    longest_call: int | None = None  # cap each reservation (and call) at this many seconds
    pin_lock_after: int = 3  # wrong PINs from one caller that lock a card
    poll_interval: float = 1.0
    card_flow: CardFlowSettings = field(default_factory=CardFlowSettings)

    def book(self) -> BookSettings:
        """The book's part of the settings."""
        return BookSettings(self.warning_lead, self.min_seconds, self.longest_call)


class BillingRuntime:
    """Loads, refreshes and persists billing for the running server (module docstring)."""

    def __init__(
        self,
        db: Database,
        settings: BillingSettings | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        data_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.settings = settings or BillingSettings()
        self.book = PrepaidBook(self.settings.book())
        self.gate = PrepaidGate(self.book, wall_clock, self._queue)
        self.desk = CardDesk(self, wall_clock)
        self.spool = data_dir / SPOOL_NAME if data_dir is not None else None
        self._pending: deque[PendingCharge] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._marks = BillingMarks(-1, -1, 0)
        # The number a card call is rated by, from (tenant, card's dial plan id, dialled
        # number): the router's rewriting (strip/prepend), so cards are rated like users'
        # trunk calls. Default: the number as dialled.
        self.rating_number: Callable[[int, int | None, str], str] = lambda t, p, n: n

    # -- loading -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the spool and everything billing holds in memory (StoreError on failure)."""
        self._read_spool()
        marks = await billing_marks(self.db)  # first: what changes after it is seen later
        await self._load_rates()
        await self._load_users()
        self._marks = marks
        log.info(
            "event=billing_loaded users=%d rate_tables=%d pending=%d",
            len(self.gate.users),
            len(self.gate.tables),
            len(self._pending),
        )

    async def poll(self) -> None:
        """Reload what changed since the last look (StoreError on failure)."""
        marks = await billing_marks(self.db)
        old = self._marks
        if marks.rates_version != old.rates_version:
            await self._load_rates()
        if marks.users_version != old.users_version:
            await self._load_users()
        newest = marks.ledger_id
        if marks.ledger_id != old.ledger_id:
            newest, users, cards = await ledger_touched(self.db, old.ledger_id)
            await self._refresh(users, cards)
        self._marks = replace(marks, ledger_id=max(newest, marks.ledger_id))

    async def _load_rates(self) -> None:
        tables = {
            t.id: RateIndex((RateRule.of(r) for r in t.rates), t.currency)
            for t in await load_rate_tables(self.db)
        }
        self.gate.tables = tables

    async def _load_users(self) -> None:
        async with self._lock:
            users = await load_billing_users(self.db)
            self.gate.users = {(u.tenant_id, u.extension): u for u in users}
            prepaid = set()
            for user in users:
                if user.prepaid:
                    key = AccountKey.user(user.user_id)
                    prepaid.add(key)
                    currency = user.currency or self._table_currency(user.rate_table_id)
                    balance = user.balance + self.unwritten(key)
                    self.book.set_account(key, balance, user.credit_limit, currency)
            for key in self.book.account_keys():
                if key.kind is AccountKind.USER and key not in prepaid:
                    self.book.drop_account(key)

    def _table_currency(self, table_id: int | None) -> str:
        index = self.gate.tables.get(table_id) if table_id is not None else None
        return index.currency if index is not None else ""

    async def _refresh(self, user_ids: Iterable[int], card_ids: Iterable[int]) -> None:
        """Re-read the stored balances of accounts in the book that the ledger touched."""
        users = [i for i in user_ids if self.book.account(AccountKey.user(i)) is not None]
        cards = [i for i in card_ids if self.book.account(AccountKey.card(i)) is not None]
        if not users and not cards:
            return
        async with self._lock:
            user_balances, card_balances = await read_balances(self.db, users, cards)
            for kind, found in (
                (AccountKind.USER, user_balances),
                (AccountKind.CARD, card_balances),
            ):
                for owner, stored in found.items():
                    self._set_stored(AccountKey(kind, owner), stored.balance, stored.credit_limit)

    def _set_stored(self, key: AccountKey, balance: Decimal, credit: Decimal | None = None) -> None:
        """The book's balance from a stored one: less the charges not written yet."""
        account = self.book.account(key)
        if account is None:
            return
        limit = account.credit_limit if credit is None else credit
        self.book.set_account(key, balance + self.unwritten(key), limit, account.currency)

    def unwritten(self, key: AccountKey) -> Decimal:
        """Settled charges of an account not yet in the ledger (zero or negative)."""
        return sum((p.amount for p in self._pending if p.account == key), Decimal(0))

    # -- writing -------------------------------------------------------------------------------

    def _queue(self, charge_: PendingCharge) -> None:
        self._pending.append(charge_)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Settlements waiting for the ledger."""
        return len(self._pending)

    async def flush(self) -> int:
        """Write waiting settlements in order, one ledger transaction each; returns how
        many were written. Stops at the first database failure (spooling what waits)."""
        written = 0
        async with self._lock:
            while self._pending:
                item = self._pending[0]
                try:
                    balance = await self._write(item)
                except (NotFoundError, InvalidInputError) as exc:  # deleted meanwhile; a bug
                    log.critical(
                        "event=billing_charge_dropped account=%s amount=%s cdr=%s error=%s",
                        item.account,
                        item.amount,
                        item.cdr_uuid,
                        exc,
                    )
                    self._pending.popleft()
                    continue
                except StoreError as exc:
                    item.retry = True
                    log.error(
                        "event=billing_write_failed waiting=%d error=%s", len(self._pending), exc
                    )
                    self._write_spool()
                    break
                self._pending.popleft()
                written += 1
                if balance is not None:
                    self._set_stored(item.account, balance)
        if not self._pending and self.spool is not None:
            with contextlib.suppress(FileNotFoundError):
                self.spool.unlink()
        return written

    async def _write(self, item: PendingCharge) -> Decimal | None:
        """One ledger transaction; the stored balance after it (None: written before)."""
        user_id = item.account.id if item.account.kind is AccountKind.USER else None
        card_id = item.account.id if item.account.kind is AccountKind.CARD else None
        if item.retry and await has_charge(
            self.db, item.cdr_uuid, user_id=user_id, card_id=card_id
        ):
            return None
        entry = await SqlLedgerRepo(self.db).add(
            "charge",
            item.amount,
            user_id=user_id,
            card_id=card_id,
            cdr_uuid=item.cdr_uuid or None,
            note=item.note,
        )
        return entry.balance_after

    def _write_spool(self) -> None:
        """Append the waiting settlements not spooled yet (fsync'd)."""
        if self.spool is None:
            return
        fresh = [p for p in self._pending if not p.spooled]
        if not fresh:
            return
        text = "".join(p.to_json() + "\n" for p in fresh)
        try:
            fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.critical("event=billing_spool_failed count=%d error=%s", len(fresh), exc)
            return
        for item in fresh:
            item.spooled = True

    def _read_spool(self) -> None:
        if self.spool is None or not self.spool.exists():
            return
        for number, line in enumerate(self.spool.read_text().splitlines(), 1):
            try:
                self._pending.append(PendingCharge.from_json(line))
            except (ValueError, KeyError) as exc:  # a crash mid-append
                log.error("event=billing_spool_bad_line line=%d error=%s", number, exc)
        log.warning("event=billing_spool_read count=%d", len(self._pending))

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Write settlements as they come and poll for changes, until cancelled."""
        interval = self.settings.poll_interval
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(next_poll - loop.time(), 0.0))
            self._wake.clear()
            try:
                await self.flush()
                if loop.time() >= next_poll:
                    next_poll = loop.time() + interval
                    await self.poll()
            except StoreError as exc:
                log.error("event=billing_poll_failed error=%s", exc)
            except Exception:  # a bug must not stop the writes: logged, retried next round
                log.exception("event=billing_task_error")

    async def close(self) -> None:
        """Write what waits (or spool it)."""
        await self.flush()
        self._write_spool()

    # -- services ------------------------------------------------------------------------------

    def services(self) -> dict[str, CallingCardService | BalanceService | RefusalAnnouncement]:
        """The services by dial plan kind: ``card:<access>``, ``balance:``, ``prepaid:<why>``."""
        return {
            "card": CallingCardService(self),
            "balance": BalanceService(self),
            "prepaid": RefusalAnnouncement(),
        }

    async def balance_of(self, tenant_id: int, extension: str) -> tuple[Decimal, str] | None:
        """A user's balance now (prepaid: as the book has it) and currency; None: not billed."""
        user = self.gate.users.get((tenant_id, extension))
        if user is None:
            return None
        account = self.book.account(AccountKey.user(user.user_id))
        if account is not None:
            return account.balance, account.currency
        found, _ = await read_balances(self.db, [user.user_id], [])
        stored = found.get(user.user_id)
        currency = user.currency or self._table_currency(user.rate_table_id)
        return (stored.balance, currency) if stored is not None else None

    async def load_card(self, card: CardRecord) -> CardUse:
        """Put a card into the book (its stored balance, read under the write lock)."""
        key = AccountKey.card(card.id)
        use = CardUse(
            card.id,
            card.tenant_id,
            card.number,
            card.rate_table_id,
            card.dial_plan_id,
            card.currency or self._table_currency(card.rate_table_id),
        )
        async with self._lock:
            _, found = await read_balances(self.db, [], [card.id])
            stored = found.get(card.id)
            balance = stored.balance if stored is not None else card.balance
            self.book.set_account(key, balance + self.unwritten(key), Decimal(0), use.currency)
            self.gate.cards[card.id] = use
        return use


class CardDesk:
    """The calling-card flow's desk (:class:`minipbx.pbx.cards.CardDesk`) over the runtime."""

    def __init__(self, runtime: BillingRuntime, wall_clock: Callable[[], float]) -> None:
        self._runtime = runtime
        self._wall = wall_clock
        self._failures: dict[tuple[int, str], int] = {}

    async def login(self, tenant_id: int, caller: str, number: str, pin: str) -> Login:
        """Check the card; count wrong PINs per card and caller, lock at the N-th."""
        cards = SqlCardRepo(self._runtime.db)
        card = await cards.find(tenant_id, number) if number.isdigit() else None
        if card is None:
            log.warning("event=card_unknown tenant=%d caller=%s", tenant_id, caller)
            return Login(LoginResult.INVALID)
        if not hmac.compare_digest(card.pin.encode(), pin.encode()):
            return await self._wrong_pin(cards, card, caller)
        if card.status == "locked":
            return Login(LoginResult.LOCKED)
        expires = card.expires_at
        if card.status == "expired" or (expires is not None and expires <= wall_time(self._wall())):
            return Login(LoginResult.EXPIRED)
        if card.status == "used":
            return Login(LoginResult.USED)
        if card.status != "active":
            return Login(LoginResult.INVALID)
        self._failures.pop((card.id, caller), None)
        await cards.record_use(card.id, wall_time(self._wall()))
        use = await self._runtime.load_card(card)
        account = self._runtime.book.account(AccountKey.card(card.id))
        balance = account.balance if account is not None else card.balance
        log.info("event=card_login card=%s caller=%s", card.id, caller)
        return Login(LoginResult.OK, CardSession(card.id, card.number, balance, use.currency))

    async def _wrong_pin(self, cards: SqlCardRepo, card: CardRecord, caller: str) -> Login:
        if card.status == "locked":
            return Login(LoginResult.INVALID)  # a guesser learns nothing more
        if len(self._failures) >= _MAX_PIN_COUNTERS:
            self._failures.clear()
        counter = (card.id, caller)
        failures = self._failures[counter] = self._failures.get(counter, 0) + 1
        await cards.record_failed_pin(card.id)
        log.warning("event=card_wrong_pin card=%s caller=%s failures=%d", card.id, caller, failures)
        if failures < self._runtime.settings.pin_lock_after:
            return Login(LoginResult.INVALID)
        del self._failures[counter]
        await cards.set_status(card.id, "locked")
        log.warning("event=card_locked card=%s caller=%s failures=%d", card.id, caller, failures)
        return Login(LoginResult.LOCKED)

    def balance(self, card: CardSession) -> Decimal:
        """The card's balance in the book (what it had at login if it left the book)."""
        account = self._runtime.book.account(AccountKey.card(card.card_id))
        return account.balance if account is not None else card.balance

    def authorize(
        self, card: CardSession, destination: str, call_key: str
    ) -> Authorization | Refusal:
        """Price and reserve a card call (keyed by the PBX call id)."""
        runtime = self._runtime
        use = runtime.gate.cards.get(card.card_id)
        if use is None:
            return Refusal(RefusalReason.NO_ACCOUNT, detail=f"card {card.card_id}")
        number = runtime.rating_number(use.tenant_id, use.dial_plan_id, destination)
        verdict = runtime.gate.authorize(call_key, use.tenant_id, "", number, card_id=use.card_id)
        card_call = runtime.gate.card_call(call_key)
        if card_call is not None:
            card_call.destination = destination  # what the transfer dials
        return verdict

    def settle(self, call_key: str, seconds: int) -> None:
        """Charge a card call that came back to the service (its own ledger uuid)."""
        self._runtime.gate.settle(call_key, str(uuid.uuid4()), seconds)

    def release(self, call_key: str) -> None:
        """Free the reservation of a card call nobody answered."""
        self._runtime.gate.release(call_key)


@runtime_checkable
class ReturningChannel(Channel, Protocol):
    """A channel whose transfers can come back to the service
    (:class:`minipbx.services.CallChannel`)."""

    async def transfer(self, kind: TransferKind, target: str, *, come_back: bool = False) -> int:
        """:meth:`Channel.transfer`; ``come_back``: the caller returns when the callee
        hangs up (await :meth:`returned`)."""
        ...

    async def returned(self) -> float:
        """After an answered ``come_back`` transfer: the seconds its callee was connected,
        once the caller is back (ChannelClosedError: the whole call ended instead)."""
        ...


def whole_seconds(seconds: float) -> int:
    """Answered seconds as charged: to the nearest second, half up (as the CDR's
    ``billable_seconds`` and :meth:`PrepaidGate.price`)."""
    return math.floor(round(max(seconds, 0.0), 3) + 0.5)


class TransferDialer:
    """Places card calls with :meth:`Channel.transfer` (``TransferKind.NUMBER``).

    The limit goes to the B2BUA as data: the router finds it, with the card's dial plan,
    through :meth:`PrepaidGate.card_call` by the call id when it routes the transfer. An
    answered transfer is reported with :meth:`PrepaidGate.connected`, so the call is
    charged from then. On a :class:`ReturningChannel` the transfer asks to come back: when
    the callee hangs up the caller is back with the card flow (:attr:`DialOutcome.returned`,
    the flow settles the answered seconds before asking for the next number). When the
    whole call ends first (the caller hangs up, or the card's limit cuts the call: the
    B2BUA ends the whole call then) the outcome is not ``returned``: the call listener
    prices the card call from its answer to the end (:meth:`PrepaidGate.price`).
    """

    def __init__(self, gate: PrepaidGate) -> None:
        self._gate = gate

    async def dial(
        self,
        channel: Channel,
        destination: str,
        authorization: Authorization,
        max_seconds: int | None = None,
    ) -> DialOutcome:
        """Transfer to ``destination``, cut ``authorization.max_seconds`` after its answer
        (``max_seconds``: a shorter limit still)."""
        self._gate.arm_transfer(channel.call_id, max_seconds)
        if not isinstance(channel, ReturningChannel):
            status = await channel.transfer(TransferKind.NUMBER, destination)
            if status == 200:
                self._gate.connected(channel.call_id, channel.now())
            return DialOutcome(status)
        status = await channel.transfer(TransferKind.NUMBER, destination, come_back=True)
        if status != 200:
            return DialOutcome(status)
        self._gate.connected(channel.call_id, channel.now())
        try:
            seconds = await channel.returned()
        except ChannelClosedError:  # the whole call ended: priced at its end
            return DialOutcome(200)
        return DialOutcome(200, returned=True, answered_seconds=whole_seconds(seconds))


class CallingCardService:
    """``card:<access>``: the calling-card flow (:func:`minipbx.pbx.cards.run_card`)."""

    def __init__(self, runtime: BillingRuntime, dialer: Dialer | None = None) -> None:
        self._runtime = runtime
        self._dialer = dialer or TransferDialer(runtime.gate)

    def accepts(self, tenant_id: int, arg: str) -> bool:
        """Any access name (letters, digits, ``._-``): it only names the access in logs."""
        return _ACCESS.fullmatch(arg) is not None

    async def run(self, channel: Channel, arg: str) -> str:
        """Serve the card call."""
        log.info(
            "event=card_access call=%s access=%s caller=%s", channel.call_id, arg, channel.caller
        )
        settings = self._runtime.settings.card_flow
        return await run_card(channel, self._runtime.desk, self._dialer, settings)


class BalanceService:
    """``balance:`` (feature code ``*900``): says the caller's balance."""

    def __init__(self, runtime: BillingRuntime) -> None:
        self._runtime = runtime

    def accepts(self, tenant_id: int, arg: str) -> bool:
        """No argument."""
        return arg == ""

    async def run(self, channel: Channel, arg: str) -> str:
        """Say the balance of the calling user."""
        found = await self._runtime.balance_of(channel.tenant_id, channel.caller)
        if found is None:
            return await run_balance(channel, None)
        return await run_balance(channel, found[0], found[1])


class RefusalAnnouncement:
    """``prepaid:<reason>``: tells a refused caller why (the prompts of a
    :class:`~minipbx.pbx.prepaid.Refusal`), then hangs up."""

    def accepts(self, tenant_id: int, arg: str) -> bool:
        """``arg``: a :class:`~minipbx.pbx.prepaid.RefusalReason` value."""
        return arg in {r.value for r in RefusalReason}

    async def run(self, channel: Channel, arg: str) -> str:
        """Play the prompts and hang up."""
        refusal = Refusal(RefusalReason(arg))
        await channel.play([*refusal.prompts, "goodbye"], barge_in=False)
        await channel.hangup("prepaid_" + arg)
        return "refused " + arg
