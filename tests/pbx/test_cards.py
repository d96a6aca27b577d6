"""The calling-card and balance-query flows against a scripted channel and a fake desk.

:class:`ScriptedChannel` answers each ``collect`` with the next entry of a script: the keys
the caller types for that prompt (``"1234#"``; None: silence), fed one by one to the real
:class:`~minipbx.media.dtmf.DtmfCollector` on a fake clock. Prompts take 1 s each, a
transfer takes 2 s and answers from a table. Everything done is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from minipbx.media.dtmf import DtmfCollector
from minipbx.pbx.cards import (
    CardFlowSettings,
    CardSession,
    DialOutcome,
    Login,
    LoginResult,
    run_balance,
    run_card,
    time_prompts,
)
from minipbx.pbx.channel import ChannelClosedError, Collected, Recording, TransferKind
from minipbx.pbx.charging import RateRule
from minipbx.pbx.prepaid import (
    AccountKey,
    Authorization,
    PrepaidBook,
    Refusal,
    RefusalReason,
)
from tests.pbx.fake_channel import ChannelBase


class ScriptedChannel(ChannelBase):
    """A Channel whose caller types ``script[i]`` at the i-th collect (module docstring)."""

    def __init__(
        self,
        script: Iterable[str | None] = (),
        *,
        statuses: Mapping[str, int] | None = None,
        caller: str = "0612345678",
        call_id: str = "call-1",
        tenant_id: int = 1,
        hangup_after_collects: int | None = None,
    ) -> None:
        super().__init__(call_id=call_id, caller=caller, callee="300", tenant_id=tenant_id)
        self.script = list(script)
        self.statuses = dict(statuses or {})
        self.hangup_after = hangup_after_collects
        self.events: list[tuple[Any, ...]] = []
        self.closed = False

    def _open(self) -> None:
        if self.closed:
            raise ChannelClosedError("closed")

    async def play(self, prompts: Sequence[str], *, barge_in: bool = True) -> str | None:
        self._open()
        for name in prompts:
            self.events.append(("play", name))
            self.t += 1.0
        return None

    async def play_audio(self, wav: bytes, *, barge_in: bool = True) -> str | None:
        raise AssertionError("card flows play prompts by name")

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
    ) -> Collected:
        self._open()
        if self.hangup_after is not None and len(self.kinds("collect")) >= self.hangup_after:
            self.closed = True
            raise ChannelClosedError("caller hung up")
        assert self.script, "the flow asked for more input than scripted"
        keys = self.script.pop(0)
        collector = DtmfCollector(
            self.t,
            max_digits=max_digits,
            terminators=terminators,
            first_digit_timeout=first_digit_timeout,
            inter_digit_timeout=inter_digit_timeout,
        )
        result = None
        for key in keys or "":
            self.t += 0.2
            result = collector.digit(key, self.t)
            if result is not None:
                break
        if result is None:
            deadline = collector.next_deadline()
            assert deadline is not None, "card flows always collect with a timeout"
            self.t = deadline
            result = collector.handle_timer(self.t)
        assert result is not None
        self.events.append(("collect", result.digits, result.reason.value))
        return result

    def flush_digits(self) -> None:
        self.events.append(("flush",))

    async def record(
        self, *, max_seconds: float, silence_seconds: float = 5.0, terminators: str = "#"
    ) -> Recording:
        raise AssertionError("card flows record nothing")

    async def transfer(self, kind: TransferKind, target: str) -> int:
        self._open()
        self.t += 2.0
        status = self.statuses.get(target, 200)
        self.events.append(("transfer", kind, target, status))
        return status

    async def hangup(self, reason: str = "service") -> None:
        self._open()
        self.events.append(("hangup", reason))
        self.closed = True

    def played(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "play"]

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]


# --- fakes of the desk and the dialer --------------------------------------------------------

CARD = CardSession(7, "123456789012", Decimal("3.25"), "USD")
PER_MINUTE = RateRule("49", Decimal("0.50"), first_increment=60, next_increment=60)


@dataclass
class FakeDesk:
    """Cards by (number, pin); a PrepaidBook for the money; lock after ``lock_after``."""

    pins: dict[str, str] = field(default_factory=lambda: {CARD.number: "4321"})
    states: dict[str, LoginResult] = field(default_factory=dict)
    lock_after: int = 3
    rates: dict[str, RateRule] = field(default_factory=lambda: {"49": PER_MINUTE})
    book: PrepaidBook = field(default_factory=PrepaidBook)
    logins: list[tuple[str, str]] = field(default_factory=list)
    wrong: int = 0
    settled: list[tuple[str, int]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book.set_account(AccountKey.card(CARD.card_id), CARD.balance, currency="USD")

    async def login(self, tenant_id: int, caller: str, number: str, pin: str) -> Login:
        self.logins.append((number, pin))
        if number not in self.pins:
            return Login(LoginResult.INVALID)
        if self.pins[number] != pin:
            self.wrong += 1
            if self.wrong >= self.lock_after:
                self.states[number] = LoginResult.LOCKED
                return Login(LoginResult.LOCKED)
            return Login(LoginResult.INVALID)
        state = self.states.get(number, LoginResult.OK)
        return Login(state, CARD if state is LoginResult.OK else None)

    def balance(self, card: CardSession) -> Decimal:
        account = self.book.account(AccountKey.card(card.card_id))
        assert account is not None
        return account.balance

    def authorize(
        self, card: CardSession, destination: str, call_key: str
    ) -> Authorization | Refusal:
        rate = next((r for p, r in self.rates.items() if destination.startswith(p)), None)
        if rate is None:
            return Refusal(RefusalReason.UNRATED)
        return self.book.authorize(call_key, AccountKey.card(card.card_id), rate)

    def settle(self, call_key: str, seconds: int) -> None:
        self.settled.append((call_key, seconds))
        self.book.settle(call_key, seconds)

    def release(self, call_key: str) -> None:
        self.released.append(call_key)
        self.book.release(call_key)


@dataclass
class FakeDialer:
    """Answers from a table of outcomes by destination (default: answered, left the service)."""

    outcomes: dict[str, DialOutcome] = field(default_factory=dict)
    dialled: list[tuple[str, int | None]] = field(default_factory=list)

    async def dial(
        self, channel: Any, destination: str, authorization: Authorization
    ) -> DialOutcome:
        self.dialled.append((destination, authorization.max_seconds))
        status = await channel.transfer(TransferKind.NUMBER, destination)
        return self.outcomes.get(destination, DialOutcome(status))


LOGIN = [CARD.number + "#", "4321#"]
BALANCE = ["your_balance_is", "num_3", "dollars", "and", "num_20", "num_5", "cents"]


async def test_login_balance_minutes_and_connect() -> None:
    channel = ScriptedChannel([*LOGIN, "4930123456#"])
    desk, dialer = FakeDesk(), FakeDialer()
    assert await run_card(channel, desk, dialer) == "connected"
    assert channel.played() == [
        "card_enter_number",
        "card_enter_pin",
        *BALANCE,
        "card_enter_destination",
        "you_have",
        "num_6",
        "minutes",
        "for_this_call",
    ]
    assert desk.logins == [(CARD.number, "4321")]
    assert dialer.dialled == [("4930123456", 360)]  # 3.25 at 0.50 a minute: 6 minutes
    assert channel.kinds("transfer") == [(TransferKind.NUMBER, "4930123456", 200)]
    assert channel.kinds("hangup") == []  # the call left the service: no BYE from it
    held = desk.book.holding("call-1")  # settled when the whole call ends
    assert held is not None and held.reserved == Decimal("3.0000")


async def test_wrong_pin_then_right_one() -> None:
    channel = ScriptedChannel([CARD.number + "#", "1111#", *LOGIN, "#"])
    assert await run_card(channel, FakeDesk(), FakeDialer()) == "done"
    assert channel.played()[:5] == [
        "card_enter_number",
        "card_enter_pin",
        "card_invalid",
        "card_enter_number",
        "card_enter_pin",
    ]
    assert channel.played()[-2:] == ["card_enter_destination", "goodbye"]
    assert channel.kinds("hangup") == [("card_done",)]


async def test_third_wrong_pin_locks_the_card() -> None:
    wrong = [CARD.number + "#", "0000#"]
    channel = ScriptedChannel(wrong * 3)
    desk = FakeDesk()
    outcome = await run_card(channel, desk, FakeDialer(), CardFlowSettings(login_attempts=5))
    assert outcome == "locked"
    assert channel.played()[-2:] == ["card_locked", "goodbye"]
    assert channel.played().count("card_invalid") == 2
    assert channel.kinds("hangup") == [("card_locked",)]


async def test_login_attempts_run_out() -> None:
    channel = ScriptedChannel(["999#", "1#", None, "888#", "2#"])
    assert await run_card(channel, FakeDesk(), FakeDialer()) == "login_failed"
    # a silent attempt asks again without "invalid"
    assert channel.played() == [
        "card_enter_number",
        "card_enter_pin",
        "card_invalid",
        "card_enter_number",
        "card_enter_number",
        "card_enter_pin",
        "card_invalid",
        "goodbye",
    ]


@pytest.mark.parametrize(
    ("state", "prompt"),
    [(LoginResult.EXPIRED, "card_expired"), (LoginResult.USED, "insufficient_balance")],
)
async def test_unusable_cards(state: LoginResult, prompt: str) -> None:
    channel = ScriptedChannel(LOGIN)
    desk = FakeDesk(states={CARD.number: state})
    assert await run_card(channel, desk, FakeDialer()) == state.value
    assert channel.played()[-2:] == [prompt, "goodbye"]


async def test_unrated_and_unaffordable_destinations_ask_again() -> None:
    expensive = RateRule("44", Decimal("9.00"), Decimal("5.00"))
    desk = FakeDesk(rates={"49": PER_MINUTE, "44": expensive})
    channel = ScriptedChannel([*LOGIN, "3312345#", "4420123#", "#"])
    assert await run_card(channel, desk, FakeDialer()) == "done"
    after_balance = channel.played()[len(BALANCE) + 2 :]
    assert after_balance == [
        "card_enter_destination",
        "call_not_allowed",
        "card_enter_destination",
        "insufficient_balance",
        "card_enter_destination",
        "goodbye",
    ]
    assert channel.kinds("transfer") == []
    account = desk.book.account(AccountKey.card(CARD.card_id))
    assert account is not None and account.reserved == 0


async def test_failed_call_releases_and_asks_for_the_next_number() -> None:
    channel = ScriptedChannel([*LOGIN, "491701#", "4930#"], statuses={"491701": 486})
    desk = FakeDesk()
    assert await run_card(channel, desk, FakeDialer()) == "connected"
    assert desk.released == ["call-1"]
    played = channel.played()
    assert played[played.index("for_this_call") + 1 : played.index("for_this_call") + 3] == [
        "call_busy",
        "card_enter_destination",
    ]
    assert [t[1] for t in channel.kinds("transfer")] == ["491701", "4930"]


async def test_returned_calls_are_settled_and_the_caller_can_call_again() -> None:
    dialer = FakeDialer(
        outcomes={
            "4911": DialOutcome(200, returned=True, answered_seconds=61),
            "4922": DialOutcome(200, returned=True, answered_seconds=240),
        }
    )
    desk = FakeDesk()
    channel = ScriptedChannel([*LOGIN, "4911#", "4922#", "#"])
    assert await run_card(channel, desk, dialer) == "done"
    assert desk.settled == [("call-1", 61), ("call-1", 240)]
    # 3.25: 6 minutes; 2 minutes billed (1.00) -> 2.25: 4 minutes, used up: cut
    assert dialer.dialled == [("4911", 360), ("4922", 240)]
    played = channel.played()
    assert played.count("card_enter_destination") == 3
    assert played[2 + len(BALANCE) :] == [
        "card_enter_destination",
        *("you_have", "num_6", "minutes", "for_this_call"),
        *("your_balance_is", "num_2", "dollars", "and", "num_20", "num_5", "cents"),
        "card_enter_destination",
        *("you_have", "num_4", "minutes", "for_this_call"),
        "call_time_up",  # the second call talked to its limit
        *("your_balance_is", "num_20", "num_5", "cents"),
        "card_enter_destination",
        "goodbye",
    ]
    assert played.count("call_time_up") == 1
    assert desk.balance(CARD) == Decimal("0.25")


async def test_silence_at_the_destination_prompt_ends_the_session() -> None:
    channel = ScriptedChannel([*LOGIN, None, None])
    assert await run_card(channel, FakeDesk(), FakeDialer()) == "no_destination"
    assert channel.played()[-3:] == ["card_enter_destination", "card_enter_destination", "goodbye"]


async def test_hanging_up_while_ringing_releases_the_reservation() -> None:
    class HangupDialer(FakeDialer):
        async def dial(
            self, channel: Any, destination: str, authorization: Authorization
        ) -> DialOutcome:
            channel.closed = True
            raise ChannelClosedError("caller hung up while ringing")

    desk = FakeDesk()
    with pytest.raises(ChannelClosedError):
        await run_card(ScriptedChannel([*LOGIN, "4930#"]), desk, HangupDialer())
    assert desk.released == ["call-1"]
    assert desk.book.holding("call-1") is None


async def test_the_session_is_bounded() -> None:
    channel = ScriptedChannel([*LOGIN, *["4930#"] * 3], statuses={"4930": 480})
    outcome = await run_card(channel, FakeDesk(), FakeDialer(), CardFlowSettings(max_calls=3))
    assert outcome == "too_many_calls"
    assert len(channel.kinds("transfer")) == 3


def test_time_prompts() -> None:
    def auth(seconds: int | None) -> Authorization:
        return Authorization("c", max_seconds=seconds)

    assert time_prompts(auth(None)) == []
    assert time_prompts(auth(45)) == ["you_have", "num_40", "num_5", "seconds", "for_this_call"]
    assert time_prompts(auth(60)) == ["you_have", "num_1", "minute", "for_this_call"]
    assert time_prompts(auth(179)) == ["you_have", "num_2", "minutes", "for_this_call"]


async def test_balance_query() -> None:
    channel = ScriptedChannel()
    assert await run_balance(channel, Decimal("12.5"), "EUR") == "balance_said"
    assert channel.played() == [
        "your_balance_is",
        "num_12",
        "euros",
        "and",
        "num_50",
        "cents",
        "goodbye",
    ]
    assert channel.kinds("hangup") == [("card_balance_said",)]
    nobody = ScriptedChannel()
    assert await run_balance(nobody, None) == "no_account"
    assert nobody.played() == ["call_not_allowed", "goodbye"]
