"""Prepaid billing in the server: loading, reloading, durable settlements (balance == ledger
sum), restarts, the spool, card logins and locks, and the services against a real SQLite
database and a scripted channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from minipbx.billing_runtime import SPOOL_NAME, BillingRuntime, BillingSettings
from minipbx.pbx.call import Call
from minipbx.pbx.cards import CardSession, LoginResult
from minipbx.pbx.channel import ChannelClosedError, TransferKind
from minipbx.pbx.prepaid import AccountKey, Authorization, Refusal, RefusalReason
from minipbx.store import (
    Database,
    SqlCardRepo,
    SqlLedgerRepo,
    SqlRateRepo,
    SqlTenantRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
    StoreError,
    default_url,
)
from minipbx.store.cdrs import CdrRecord
from tests.pbx.test_cards import ScriptedChannel

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
WALL = NOW.timestamp()


@dataclass
class World:
    db: Database
    tenant_id: int
    user_id: int  # extension 100: prepaid, 5.00 and a credit limit of 0.50
    table_id: int
    runtime: BillingRuntime
    tmp: Path

    def restart(self) -> BillingRuntime:
        return BillingRuntime(self.db, wall_clock=lambda: WALL, data_dir=self.tmp)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = Database(default_url(tmp_path / "data"))
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    user = await SqlUserRepo(db).add("100", "pw")
    await SqlUserRepo(db).add("101", "pw")  # not billed at all
    rates = SqlRateRepo(db)
    table = await rates.add(tenant.id, "retail", currency="USD")
    await rates.add_rate(table.id, "49", "0.60", connection_fee="0.10")  # 60/60
    await rates.add_rate(table.id, "1", "0.60", first_increment=1, next_increment=1)
    await SqlUserSettingsRepo(db).update_settings(
        user.id, prepaid=True, rate_table_id=table.id, credit_limit="0.50"
    )
    await SqlLedgerRepo(db).add("topup", "5.00", user_id=user.id)
    runtime = BillingRuntime(db, wall_clock=lambda: WALL, data_dir=tmp_path)
    await runtime.load()
    yield World(db, tenant.id, user.id, table.id, runtime, tmp_path)
    await db.close()


def uid(n: int | str) -> str:
    """A CDR uuid."""
    return f"00000000-0000-4000-8000-{int(n):012d}"


def granted(result: Authorization | Refusal) -> Authorization:
    assert isinstance(result, Authorization), result
    return result


@dataclass
class FakeCall:
    """What price_record reads of a Call."""

    id: str
    answered: float | None
    ended: float | None
    returned_at: float | None = None


def record(uuid: str, billable: int) -> CdrRecord:
    return CdrRecord(
        uuid=uuid,
        call_id="x",
        tenant_id=1,
        tenant="pbx.local",
        caller_number="100",
        caller_name="",
        called_number="4930123",
        routed_number="4930123",
        route_type="trunk",
        trunk="prov",
        start_time=NOW,
        answer_time=NOW,
        end_time=NOW,
        duration=Decimal(billable),
        billable_seconds=billable,
        disposition="ANSWERED",
        sip_status=200,
        reason_cause="",
        hangup_by="caller",
        cost=Decimal(0),
        currency="",
        source_ip="127.0.0.1",
        user_agent="",
    )


def billing_details(
    record: CdrRecord,
) -> tuple[str | None, Decimal | None, Decimal | None, int | None, str | None]:
    """The CDR's rate prefix, connection fee, price per minute, billed seconds and card."""
    return (
        record.rate_prefix,
        record.connection_fee,
        record.price_per_minute,
        record.billed_seconds,
        record.card_number,
    )


NOT_PRICED = (None, None, None, None, None)


def price(runtime: BillingRuntime, call: FakeCall, billable: int, uuid: str) -> CdrRecord:
    return runtime.gate.price_record(cast(Call, call), record(uuid, billable))


async def stored_balance(world: World, user_id: int | None = None) -> Decimal:
    settings = await SqlUserSettingsRepo(world.db).get_settings(user_id or world.user_id)
    return settings.balance


async def assert_balance_is_ledger_sum(world: World) -> None:
    total = await SqlLedgerRepo(world.db).total(user_id=world.user_id)
    assert await stored_balance(world) == total


def available(runtime: BillingRuntime, key: AccountKey) -> Decimal:
    account = runtime.book.account(key)
    assert account is not None
    return account.available


# --- authorize, settle, durable -------------------------------------------------------------


async def test_prepaid_call_is_limited_charged_and_written(world: World) -> None:
    gate = world.runtime.gate
    auth = granted(gate.authorize("c1", world.tenant_id, "100", "4930123", wall=WALL))
    # 5.00 + 0.50 credit: fee 0.10 and 9 minutes at 0.60
    assert (auth.max_seconds, auth.reserved, auth.warn_at, auth.currency) == (
        540,
        Decimal("5.5000"),
        480,
        "USD",
    )
    assert gate.holding("c1") == auth
    priced = price(world.runtime, FakeCall("c1", 10.0, 75.0), 65, uid(7))
    assert (priced.cost, priced.currency) == (Decimal("1.3000"), "USD")  # fee + 2 minutes
    assert billing_details(priced) == ("49", Decimal("0.1000"), Decimal("0.60"), 120, None)
    assert world.runtime.pending == 1
    assert await world.runtime.flush() == 1
    assert await stored_balance(world) == Decimal("3.70")
    await assert_balance_is_ledger_sum(world)
    entries = await SqlLedgerRepo(world.db).list_entries(user_id=world.user_id)
    charge = entries[0]
    assert (charge.kind, charge.amount, charge.cdr_uuid) == (
        "charge",
        Decimal("-1.3"),
        uid(7),
    )
    assert "call to 4930123, 65 s, rate 49" in charge.note
    assert available(world.runtime, AccountKey.user(world.user_id)) == Decimal("4.20")


async def test_the_record_names_the_rate_that_priced_it(world: World) -> None:
    rates = SqlRateRepo(world.db)
    await rates.add_rate(world.table_id, "4930", "0.000001", connection_fee="0.000050")
    await rates.add_rate(world.table_id, "12", "1.20", free_seconds=10, min_duration=30)
    await world.runtime.poll()
    gate = world.runtime.gate
    granted(gate.authorize("c1", world.tenant_id, "100", "13125550100", wall=WALL))
    per_second = price(world.runtime, FakeCall("c1", 0.0, 61.0), 61, uid(1))
    assert billing_details(per_second) == ("1", Decimal(0), Decimal("0.60"), 61, None)
    assert per_second.cost == Decimal("0.6100")
    granted(gate.authorize("c2", world.tenant_id, "100", "4930123", wall=WALL))
    longest = price(world.runtime, FakeCall("c2", 0.0, 61.0), 61, uid(2))
    # the longest prefix wins; the fee as charged (4 places), the price as the rate has it
    assert billing_details(longest) == ("4930", Decimal("0.0001"), Decimal("0.000001"), 120, None)
    granted(gate.authorize("c3", world.tenant_id, "100", "1201", wall=WALL))
    free = price(world.runtime, FakeCall("c3", 0.0, 8.0), 8, uid(3))
    assert billing_details(free) == ("12", Decimal(0), Decimal("1.20"), 0, None)  # free seconds
    assert free.cost == 0


async def test_unanswered_calls_cost_nothing_and_free_the_money(world: World) -> None:
    gate = world.runtime.gate
    granted(gate.authorize("c1", world.tenant_id, "100", "4930123"))
    assert available(world.runtime, AccountKey.user(world.user_id)) == 0
    priced = price(world.runtime, FakeCall("c1", None, 30.0), 0, uid(1))
    assert priced.cost == 0 and world.runtime.pending == 0
    assert billing_details(priced) == NOT_PRICED
    assert available(world.runtime, AccountKey.user(world.user_id)) == Decimal("5.50")


async def test_unrated_destinations_and_users_billing_ignores(world: World) -> None:
    gate = world.runtime.gate
    refused = gate.authorize("c1", world.tenant_id, "100", "3312345")
    assert isinstance(refused, Refusal) and refused.reason is RefusalReason.UNRATED
    assert (refused.status, refused.prompts) == (403, ("call_not_allowed",))
    free = granted(gate.authorize("c2", world.tenant_id, "101", "3312345"))
    assert (free.rate, free.max_seconds, free.reserved) == (None, None, Decimal(0))
    unbilled = price(world.runtime, FakeCall("c2", 0.0, 100.0), 100, uid(2))
    assert unbilled.cost == 0 and billing_details(unbilled) == NOT_PRICED


async def test_rated_postpaid_users_get_a_cost_but_no_limit(world: World) -> None:
    await SqlUserSettingsRepo(world.db).update_settings(world.user_id, prepaid=False)
    await world.runtime.poll()
    assert world.runtime.book.account(AccountKey.user(world.user_id)) is None
    auth = granted(world.runtime.gate.authorize("c1", world.tenant_id, "100", "4930"))
    assert (auth.account, auth.max_seconds, auth.reserved) == (None, None, Decimal(0))
    priced = price(world.runtime, FakeCall("c1", 0.0, 3600.0), 3600, uid(1))
    assert priced.cost == Decimal("36.1000")
    assert billing_details(priced) == ("49", Decimal("0.1000"), Decimal("0.60"), 3600, None)
    assert world.runtime.pending == 0  # postpaid: the CDR carries the cost, no ledger entry
    assert await stored_balance(world) == Decimal("5.00")


# --- reloading ------------------------------------------------------------------------------


async def test_top_ups_take_effect_after_a_poll(world: World) -> None:
    key = AccountKey.user(world.user_id)
    gate = world.runtime.gate
    granted(gate.authorize("c1", world.tenant_id, "100", "4930"))  # holds everything
    refused = gate.authorize("c2", world.tenant_id, "100", "4930")
    assert isinstance(refused, Refusal) and refused.status == 402
    await SqlLedgerRepo(world.db).add("topup", "2.00", user_id=world.user_id)  # the API
    await world.runtime.poll()
    assert available(world.runtime, key) == Decimal("2.00")
    assert granted(gate.authorize("c2", world.tenant_id, "100", "4930")).max_seconds == 180


async def test_rate_changes_take_effect_after_a_poll(world: World) -> None:
    await SqlRateRepo(world.db).add_rate(world.table_id, "33", "0.30", valid_from=NOW)
    gate = world.runtime.gate
    assert isinstance(gate.authorize("c1", world.tenant_id, "100", "3312"), Refusal)
    await world.runtime.poll()
    assert granted(gate.authorize("c1", world.tenant_id, "100", "3312")).max_seconds == 1080
    later = (NOW - timedelta(days=1)).timestamp()  # before the rate was valid
    assert isinstance(gate.authorize("c2", world.tenant_id, "100", "3312", wall=later), Refusal)


async def test_a_reload_never_shows_money_already_spent(world: World) -> None:
    gate = world.runtime.gate
    granted(gate.authorize("c1", world.tenant_id, "100", "4930"))
    price(world.runtime, FakeCall("c1", 0.0, 60.0), 60, uid(1))  # 0.70, not written yet
    await SqlLedgerRepo(world.db).add("topup", "1.00", user_id=world.user_id)
    await world.runtime.poll()  # stored 6.00, less the 0.70 not yet written
    account = world.runtime.book.account(AccountKey.user(world.user_id))
    assert account is not None and account.balance == Decimal("5.30")
    await world.runtime.flush()
    assert account.balance == Decimal("5.30")
    assert await stored_balance(world) == Decimal("5.30")
    await assert_balance_is_ledger_sum(world)


async def test_a_restart_forgets_reservations_and_keeps_charges(world: World) -> None:
    gate = world.runtime.gate
    key = AccountKey.user(world.user_id)
    granted(gate.authorize("c1", world.tenant_id, "100", "4930"))
    price(world.runtime, FakeCall("c1", 0.0, 1.0), 1, uid(1))  # 0.70
    await world.runtime.flush()
    held = granted(gate.authorize("c2", world.tenant_id, "100", "4930"))
    assert (held.max_seconds, held.reserved) == (420, Decimal("4.3000"))  # of the 4.80 left
    assert available(world.runtime, key) == Decimal("0.50")
    # a crash: c2's reservation was in memory only, and so was c2
    again = world.restart()
    await again.load()
    assert available(again, key) == Decimal("4.80")  # 4.30 + 0.50 credit, nothing held
    assert await stored_balance(world) == Decimal("4.30")
    await assert_balance_is_ledger_sum(world)


async def test_many_concurrent_calls_never_overdraw(world: World) -> None:
    runtime = world.runtime
    runtime.book.settings = BillingSettings(longest_call=90).book()
    gate = runtime.gate

    async def call(n: int) -> None:
        verdict = gate.authorize(f"c{n}", world.tenant_id, "100", "1212")
        await asyncio.sleep(0)  # let the other calls start meanwhile
        if isinstance(verdict, Authorization):
            price(runtime, FakeCall(f"c{n}", 0.0, 1e6), 10**6, uid(n))
            await runtime.flush()

    await asyncio.gather(*(call(n) for n in range(100)))
    await runtime.flush()
    balance = await stored_balance(world)
    assert balance >= Decimal("-0.50")
    assert balance == Decimal("-0.50")  # every cent of 5.00 + 0.50 spent, not one more
    await assert_balance_is_ledger_sum(world)


# --- failures: retry, spool, no double charge -----------------------------------------------


async def test_database_failures_spool_and_charge_exactly_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SqlLedgerRepo.add
    failing = True

    async def flaky(self: SqlLedgerRepo, *args: Any, **kwargs: Any) -> Any:
        if failing:
            raise StoreError("database is locked")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SqlLedgerRepo, "add", flaky)
    gate = world.runtime.gate
    granted(gate.authorize("c1", world.tenant_id, "100", "4930"))
    price(world.runtime, FakeCall("c1", 0.0, 30.0), 30, uid(1))
    assert await world.runtime.flush() == 0
    spool = world.tmp / SPOOL_NAME
    assert spool.exists() and uid(1) in spool.read_text()
    key = AccountKey.user(world.user_id)
    assert available(world.runtime, key) == Decimal("4.80")  # spent, even if not stored
    # a crash now; the restarted server finds the charge in the spool
    again = world.restart()
    await again.load()
    assert available(again, key) == Decimal("4.80")
    failing = False
    assert await again.flush() == 1
    assert not spool.exists()
    # the old process comes back too and retries: already in the ledger, not charged twice
    assert await world.runtime.flush() == 1
    assert await stored_balance(world) == Decimal("4.30")
    await assert_balance_is_ledger_sum(world)
    charges = [
        e
        for e in await SqlLedgerRepo(world.db).list_entries(user_id=world.user_id)
        if e.kind == "charge"
    ]
    assert len(charges) == 1


# --- cards ----------------------------------------------------------------------------------


async def add_card(world: World, **fields: Any) -> int:
    card = await SqlCardRepo(world.db).add(
        world.tenant_id,
        "123456789012",
        "4321",
        balance="3.25",
        currency="USD",
        rate_table_id=world.table_id,
        **fields,
    )
    return card.id


async def test_card_login_locks_after_three_wrong_pins_from_one_caller(world: World) -> None:
    card_id = await add_card(world)
    desk = world.runtime.desk
    number = "123456789012"
    for caller in ("200", "300"):  # two wrong PINs each: different callers, not locked
        for _ in range(2):
            assert (await desk.login(world.tenant_id, caller, number, "0000")).result is (
                LoginResult.INVALID
            )
    assert (await SqlCardRepo(world.db).get(card_id)).status == "active"
    third = await desk.login(world.tenant_id, "200", number, "9999")
    assert third.result is LoginResult.LOCKED
    card = await SqlCardRepo(world.db).get(card_id)
    assert (card.status, card.failed_pins, card.balance) == ("locked", 5, Decimal("3.25"))
    entries = await SqlLedgerRepo(world.db).list_entries(card_id=card_id)
    assert [e.kind for e in entries] == ["topup"]  # the ledger is untouched
    # locked: even the right PIN gets "locked", a wrong one learns nothing
    assert (await desk.login(world.tenant_id, "200", number, "4321")).result is LoginResult.LOCKED
    assert (await desk.login(world.tenant_id, "400", number, "1")).result is LoginResult.INVALID
    assert (await desk.login(world.tenant_id, "200", "999", "4321")).result is LoginResult.INVALID


async def test_card_expiry_and_use(world: World) -> None:
    card_id = await add_card(world, expires_at=NOW - timedelta(seconds=1))
    desk = world.runtime.desk
    login = await desk.login(world.tenant_id, "200", "123456789012", "4321")
    assert login.result is LoginResult.EXPIRED
    await SqlCardRepo(world.db).update(card_id, expires_at=NOW + timedelta(days=1))
    login = await desk.login(world.tenant_id, "200", "123456789012", "4321")
    assert login.result is LoginResult.OK
    assert login.card == CardSession(card_id, "123456789012", Decimal("3.25"), "USD")
    card = await SqlCardRepo(world.db).get(card_id)
    assert card.last_used_at == NOW


async def test_calling_card_call_end_to_end(world: World) -> None:
    card_id = await add_card(world)
    service = world.runtime.services()["card"]
    assert service.accepts(world.tenant_id, "main-did") and not service.accepts(1, "a b")
    channel = ScriptedChannel(["123456789012#", "4321#", "4930123#"], call_id="card-call")
    assert await service.run(channel, "main-did") == "connected"
    gate = world.runtime.gate
    card_call = gate.card_call("card-call")
    assert card_call is not None
    # 3.25: fee 0.10 + 5 minutes; the router routes through the card's plan with this limit
    assert (card_call.max_seconds, card_call.warn_at, card_call.dial_plan_id) == (300, 240, None)
    assert card_call.connected_at == channel.t  # when the transfer was answered
    assert channel.kinds("transfer")[0][1:] == ("4930123", 200)
    # the whole SIP call ends 61.4 s after the card call was answered: 2 minutes
    assert card_call.connected_at is not None
    ended = card_call.connected_at + 61.4
    fake = cast(Call, FakeCall("card-call", 1.0, ended))
    priced, done = world.runtime.gate.price(fake, record(uid(99), 90))
    assert priced.cost == Decimal("1.3000")
    # the card call's own 61 s (not the record's 90) in 60/60 blocks: 120 s billed
    assert billing_details(priced) == (
        "49",
        Decimal("0.1000"),
        Decimal("0.60"),
        120,
        "123456789012",
    )
    assert done is not None
    assert (done.card_number, done.destination, done.seconds, done.rate.prefix) == (
        "123456789012",
        "4930123",
        61,
        "49",
    )
    assert (done.charge.fee, done.charge.billed_seconds) == (Decimal("0.1000"), 120)
    await world.runtime.flush()
    card = await SqlCardRepo(world.db).get(card_id)
    assert card.balance == Decimal("1.95")
    assert await SqlLedgerRepo(world.db).total(card_id=card_id) == card.balance
    entries = await SqlLedgerRepo(world.db).list_entries(card_id=card_id)
    assert entries[0].note.startswith("card 123456789012 call to 4930123")


class ReturningChannel(ScriptedChannel):
    """A channel whose transfers come back: ``back`` holds, per answered transfer, the
    seconds its callee stayed (None: the whole call ends instead)."""

    def __init__(self, script: list[str | None], back: list[float | None], **kw: Any) -> None:
        super().__init__(script, **kw)
        self.back = back

    async def transfer(self, kind: TransferKind, target: str, *, come_back: bool = False) -> int:
        assert come_back, "the card dialer asks to come back"
        return await super().transfer(kind, target)

    async def returned(self) -> float:
        seconds = self.back.pop(0)
        if seconds is None:
            raise ChannelClosedError("the caller hung up")
        self.t += seconds
        return seconds


async def test_card_calls_come_back_and_are_charged_once_each(world: World) -> None:
    card_id = await add_card(world)
    service = world.runtime.services()["card"]
    channel = ReturningChannel(
        ["123456789012#", "4321#", "4930123#", "4930124#"], [61.4, None], call_id="back"
    )
    assert await service.run(channel, "") == "connected"
    # the first call came back after 61.4 s: settled at once (2 minutes: 1.30), and the
    # caller hears the new balance before "enter destination"
    played = channel.played()
    assert world.runtime.desk.balance(CardSession(card_id, "", Decimal(0))) <= Decimal("1.95")
    assert played.count("card_enter_destination") == 2 and played.count("your_balance_is") == 2
    gate = world.runtime.gate
    card_call = gate.card_call("back")  # the second one, still going
    assert card_call is not None and card_call.destination == "4930124"
    assert card_call.connected_at is not None
    # the whole call ends 30.2 s into the second card call: only that one is priced now
    fake = cast(Call, FakeCall("back", 1.0, card_call.connected_at + 30.2))
    priced = gate.price_record(fake, record(uid(7), 200))
    assert priced.cost == Decimal("0.7000")
    again = price(world.runtime, FakeCall("back", 1.0, 500.0), 200, uid(8))
    assert billing_details(again) == NOT_PRICED  # nothing left to charge
    await world.runtime.flush()
    card = await SqlCardRepo(world.db).get(card_id)
    assert card.balance == Decimal("1.25")  # 3.25 - 1.30 - 0.70
    entries = await SqlLedgerRepo(world.db).list_entries(card_id=card_id)
    assert sorted(e.amount for e in entries if e.kind == "charge") == [
        Decimal("-1.30"),
        Decimal("-0.70"),
    ]


async def test_a_card_call_ended_before_it_came_back_is_charged_to_the_callees_bye(
    world: World,
) -> None:
    await add_card(world)
    service = world.runtime.services()["card"]
    channel = ReturningChannel(["123456789012#", "4321#", "4930123#"], [None], call_id="cut")
    assert await service.run(channel, "") == "connected"
    card_call = world.runtime.gate.card_call("cut")
    assert card_call is not None and card_call.connected_at is not None
    # the callee hung up after 50 s, the caller never took the call back (timeout: 32 s)
    back = card_call.connected_at + 50.0
    fake = FakeCall("cut", 1.0, back + 32.0, returned_at=back)
    assert price(world.runtime, fake, 200, uid(9)).cost == Decimal("0.7000")  # 60 s, not 2 min


async def test_card_calls_are_rated_by_the_routed_number(world: World) -> None:
    await add_card(world)
    runtime = world.runtime
    seen: list[tuple[int, int | None, str]] = []

    def routed(tenant_id: int, plan_id: int | None, number: str) -> str:
        seen.append((tenant_id, plan_id, number))
        return number.removeprefix("00")  # the card's dial plan strips the "00"

    runtime.rating_number = routed
    login = await runtime.desk.login(world.tenant_id, "200", "123456789012", "4321")
    assert login.card is not None
    auth = runtime.desk.authorize(login.card, "004930123", "k1")
    assert isinstance(auth, Authorization) and auth.rate is not None
    assert auth.rate.prefix == "49" and seen == [(world.tenant_id, None, "004930123")]
    card_call = runtime.gate.card_call("k1")
    assert card_call is not None and card_call.destination == "004930123"


async def test_a_card_call_that_was_not_answered_costs_nothing(world: World) -> None:
    await add_card(world)
    service = world.runtime.services()["card"]
    channel = ScriptedChannel(
        ["123456789012#", "4321#", "4930#", "#"], statuses={"4930": 486}, call_id="cc"
    )
    assert await service.run(channel, "") == "done"
    assert world.runtime.gate.card_call("cc") is None
    unanswered = price(world.runtime, FakeCall("cc", 1.0, 50.0), 49, uid(5))
    assert unanswered.cost == 0 and billing_details(unanswered) == NOT_PRICED


# --- balance query and refusal announcements ------------------------------------------------


async def test_balance_query_says_the_prepaid_balance(world: World) -> None:
    service = world.runtime.services()["balance"]
    assert service.accepts(world.tenant_id, "") and not service.accepts(world.tenant_id, "x")
    channel = ScriptedChannel(caller="100")
    assert await service.run(channel, "") == "balance_said"
    assert channel.played() == ["your_balance_is", "num_5", "dollars", "goodbye"]
    nobody = ScriptedChannel(caller="101")
    assert await service.run(nobody, "") == "no_account"


async def test_refusal_announcement(world: World) -> None:
    service = world.runtime.services()["prepaid"]
    assert service.accepts(1, "insufficient_balance") and not service.accepts(1, "nope")
    channel = ScriptedChannel()
    assert await service.run(channel, "insufficient_balance") == "refused insufficient_balance"
    assert channel.played() == ["insufficient_balance", "goodbye"]
    assert channel.kinds("hangup") == [("prepaid_insufficient_balance",)]


# --- the task ---------------------------------------------------------------------------------


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.005)


async def test_the_task_writes_at_once_and_polls(world: World) -> None:
    runtime = BillingRuntime(
        world.db, BillingSettings(poll_interval=0.05), wall_clock=lambda: WALL, data_dir=world.tmp
    )
    await runtime.load()
    task = asyncio.create_task(runtime.run())
    try:
        granted(runtime.gate.authorize("c1", world.tenant_id, "100", "4930"))
        price(runtime, FakeCall("c1", 0.0, 10.0), 10, uid(1))
        await asyncio.wait_for(_until(lambda: runtime.pending == 0), 5)
        assert await stored_balance(world) == Decimal("4.30")
        await SqlLedgerRepo(world.db).add("topup", "10", user_id=world.user_id)
        key = AccountKey.user(world.user_id)
        await asyncio.wait_for(_until(lambda: available(runtime, key) == Decimal("14.80")), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
