"""The auto attendant engine against a scripted channel with a fake clock.

The fake channel plays each prompt for a fixed time (1 s unless told), takes keys from a
script of (time, key) pairs, collects with the real :class:`DtmfCollector`, answers
transfers from a table and records everything it did, with times.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from minipbx.media.dtmf import DtmfCollector
from minipbx.pbx.channel import ChannelClosedError, Collected, Recording, TransferKind
from minipbx.pbx.dialplan import TimeCondition
from minipbx.pbx.ivr import (
    IvrActionKind,
    IvrError,
    IvrMenu,
    IvrOption,
    check_menus,
    failure_prompt,
    menu_of_target,
    menu_problems,
    options_of,
    parse_action,
    parse_hours,
    run_ivr,
    validate_menus,
)
from tests.pbx.fake_channel import ChannelBase

A = IvrActionKind
PARIS = ZoneInfo("Europe/Paris")
MONDAY_10 = datetime(2030, 1, 7, 10, 0, tzinfo=PARIS).timestamp()  # a Monday
MONDAY_20 = datetime(2030, 1, 7, 20, 0, tzinfo=PARIS).timestamp()
CHRISTMAS_10 = datetime(2030, 12, 25, 10, 0, tzinfo=PARIS).timestamp()  # a Wednesday


class FakeChannel(ChannelBase):
    """A :class:`~minipbx.pbx.channel.Channel` driven by a script (see the module doc)."""

    def __init__(
        self,
        keys: Iterable[tuple[float, str]] = (),
        *,
        wall0: float = MONDAY_10,
        durations: Mapping[str, float] | None = None,
        statuses: Mapping[tuple[TransferKind, str], int] | None = None,
        hangup_at: float | None = None,
        auto_key: str | None = None,
    ) -> None:
        super().__init__(wall0=wall0)
        self.script = sorted(keys)
        self.queue: list[str] = []
        self.durations = dict(durations or {})
        self.statuses = dict(statuses or {})
        self.hangup_at = hangup_at
        self.auto_key = auto_key
        self.events: list[tuple[Any, ...]] = []
        self.closed = False

    # -- the protocol ---------------------------------------------------------------------

    def _check_open(self, until: float) -> None:
        if self.closed:
            raise ChannelClosedError("already closed")
        if self.hangup_at is not None and self.hangup_at <= until:
            self.t = max(self.t, self.hangup_at)
            self.closed = True
            self.events.append(("caller_hangup", self.t))
            raise ChannelClosedError("caller hung up")

    def _arrivals(self, until: float) -> list[tuple[float, str]]:
        """Scripted keys pressed before ``until`` (taken off the script)."""
        due = [item for item in self.script if item[0] < until]
        self.script = self.script[len(due) :]
        return due

    async def play(self, prompts: Sequence[str], *, barge_in: bool = True) -> str | None:
        for name in prompts:
            if barge_in and self.queue:
                self.events.append(("play", name, self.t, "skipped"))
                return self.queue[0]
            end = self.t + self.durations.get(name, 1.0)
            self._check_open(end)
            for at, key in self._arrivals(end):
                self.queue.append(key)
                if barge_in:
                    self.events.append(("play", name, self.t, "interrupted"))
                    self.t = at
                    return key
            self.events.append(("play", name, self.t, "done"))
            self.t = end
        return None

    async def play_audio(self, wav: bytes, *, barge_in: bool = True) -> str | None:
        raise AssertionError("the attendant plays prompts by name")

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
    ) -> Collected:
        collector = DtmfCollector(
            self.t,
            max_digits=max_digits,
            terminators=terminators,
            first_digit_timeout=first_digit_timeout,
            inter_digit_timeout=inter_digit_timeout,
        )
        result = None
        while self.queue and result is None:
            result = collector.digit(self.queue.pop(0), self.t)
        while result is None:
            if self.auto_key is not None and not self.script:
                self.script.append((self.t, self.auto_key))
            deadline = collector.next_deadline()
            assert deadline is not None, "the attendant always collects with a timeout"
            upcoming = self.script[0] if self.script else None
            if upcoming is not None and upcoming[0] < deadline:
                self._check_open(upcoming[0])
                self.script.pop(0)
                self.t = max(self.t, upcoming[0])
                result = collector.digit(upcoming[1], self.t)
            else:
                self._check_open(deadline)
                self.t = deadline
                result = collector.handle_timer(self.t)
        self.events.append(("collect", result.digits, result.reason.value, self.t))
        return result

    def flush_digits(self) -> None:
        self.events.append(("flush", tuple(self.queue)))
        self.queue.clear()

    async def record(
        self, *, max_seconds: float, silence_seconds: float = 5.0, terminators: str = "#"
    ) -> Recording:
        raise AssertionError("the attendant records nothing")

    async def transfer(self, kind: TransferKind, target: str) -> int:
        self._check_open(self.t)
        status = self.statuses.get((kind, target), 200)
        self.events.append(("transfer", kind, target, status))
        self.t += 0.5
        return status

    async def hangup(self, reason: str = "service") -> None:
        self._check_open(self.t)
        self.events.append(("hangup", reason))
        self.closed = True

    # -- what happened --------------------------------------------------------------------

    def played(self, *, whole: bool = False) -> list[str]:
        """The prompts started (``whole``: only those played to the end)."""
        return [e[1] for e in self.events if e[0] == "play" and (e[3] == "done" or not whole)]

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]

    def transfers(self) -> list[tuple[TransferKind, str]]:
        return [(e[0], e[1]) for e in self.kinds("transfer")]


def menu(name: str = "main", **kw: Any) -> IvrMenu:
    """A menu with greeting ``<name>_greeting`` and options given as key -> (action, target)."""
    options = kw.pop("options", {})
    built = {
        key: IvrOption(key, *(spec if isinstance(spec, tuple) else (spec,)))
        for key, spec in options.items()
    }
    return IvrMenu(name, kw.pop("greeting", (f"{name}_greeting",)), built, **kw)


def menus(*items: IvrMenu) -> dict[str, IvrMenu]:
    return {m.name: m for m in items}


SALES = menu(
    "main",
    options={
        "1": (A.USER, "101"),
        "2": (A.FOLLOWME, "102"),
        "3": (A.VOICEMAIL, "103"),
        "4": (A.NUMBER, "0033123456789"),
        "5": (A.MENU, "support"),
        "8": A.REPEAT,
        "9": A.HANGUP,
    },
    greeting=("welcome", "main_options"),
)
SUPPORT = menu("support", options={"0": (A.MENU, "main"), "1": (A.USER, "201")})
BOTH = menus(SALES, SUPPORT)


# --- actions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind", "target", "announce"),
    [
        ("1", TransferKind.USER, "101", True),
        ("2", TransferKind.FOLLOWME, "102", True),
        ("3", TransferKind.VOICEMAIL, "103", False),
        ("4", TransferKind.NUMBER, "0033123456789", True),
    ],
)
async def test_transfer_actions(key: str, kind: TransferKind, target: str, announce: bool) -> None:
    channel = FakeChannel([(2.5, key)])
    outcome = await run_ivr(channel, BOTH, "main")
    assert outcome == f"transferred {kind.value} {target}"
    assert channel.transfers() == [(kind, target)]
    expected = ["welcome", "main_options"] + (["call_transferring"] if announce else [])
    assert channel.played(whole=True) == expected
    assert channel.kinds("collect") == [(key, "max_digits", 2.5)]
    assert channel.kinds("hangup") == []  # the call left the attendant: no BYE from it


async def test_greeting_is_barged_in() -> None:
    channel = FakeChannel([(0.4, "1")])
    assert await run_ivr(channel, BOTH, "main") == "transferred user 101"
    assert channel.kinds("play")[0] == ("welcome", 0.0, "interrupted")
    assert "main_options" not in channel.played()  # the rest of the greeting is skipped
    assert channel.kinds("collect") == [("1", "max_digits", 0.4)]


async def test_keys_pressed_while_announcing_a_transfer_are_flushed() -> None:
    channel = FakeChannel([(2.1, "1"), (2.3, "5")], durations={"call_transferring": 1.0})
    assert await run_ivr(channel, BOTH, "main") == "transferred user 101"
    assert channel.kinds("flush") == [(("5",),)]


async def test_menu_repeat_and_hangup() -> None:
    # 5: support menu; 0: back to main; 8: main again; 9: goodbye
    channel = FakeChannel([(2.1, "5"), (3.2, "0"), (5.5, "8"), (8.0, "9")])
    assert await run_ivr(channel, BOTH, "main") == "hangup"
    assert channel.played() == [
        "welcome",
        "main_options",
        "support_greeting",
        "welcome",
        "main_options",
        "welcome",
        "main_options",
        "goodbye",
    ]
    assert channel.kinds("play")[-1] == ("goodbye", 8.0, "done")
    assert channel.kinds("hangup") == [("ivr",)]
    assert channel.transfers() == []


async def test_hash_and_star_are_keys_without_dial_by_extension() -> None:
    main = menu(options={"#": (A.USER, "100"), "*": (A.VOICEMAIL, "100")})
    assert await run_ivr(FakeChannel([(1.5, "#")]), menus(main), "main") == "transferred user 100"
    channel = FakeChannel([(1.5, "*")])
    assert await run_ivr(channel, menus(main), "main") == "transferred voicemail 100"


# --- invalid input, no input, retries -------------------------------------------------------


async def test_invalid_key_plays_invalid_prompt_then_menu_again() -> None:
    channel = FakeChannel([(2.0, "7"), (5.5, "1")])
    assert await run_ivr(channel, BOTH, "main") == "transferred user 101"
    assert channel.played() == [
        "welcome",
        "main_options",
        "invalid_option",
        "welcome",
        "main_options",
        "call_transferring",
    ]


async def test_custom_invalid_prompt() -> None:
    main = menu(options={"1": (A.USER, "101")}, invalid_prompt="sorry_custom")
    channel = FakeChannel([(1.0, "2"), (3.5, "1")])
    assert await run_ivr(channel, menus(main), "main") == "transferred user 101"
    assert channel.played()[:3] == ["main_greeting", "sorry_custom", "main_greeting"]


async def test_no_input_retries_then_hangs_up() -> None:
    main = menu(options={"1": (A.USER, "101")}, retries=2, timeout=4.0)
    channel = FakeChannel()
    assert await run_ivr(channel, menus(main), "main") == "hangup"
    assert channel.played() == ["main_greeting"] * 3 + ["goodbye"]
    # greeting 1 s, then 4 s for a key, three times
    assert [e[-1] for e in channel.kinds("collect")] == [5.0, 10.0, 15.0]
    assert channel.kinds("hangup") == [("ivr",)]


async def test_zero_retries() -> None:
    main = menu(options={"1": (A.USER, "101")}, retries=0)
    channel = FakeChannel([(1.2, "6")])
    assert await run_ivr(channel, menus(main), "main") == "hangup"
    assert channel.played() == ["main_greeting", "invalid_option", "goodbye"]


async def test_retries_count_invalid_and_missing_input_together() -> None:
    main = menu(options={"1": (A.USER, "101")}, retries=1)
    channel = FakeChannel([(1.5, "4")])  # invalid, then nothing: retries exhausted
    assert await run_ivr(channel, menus(main), "main") == "hangup"
    assert channel.played() == [
        "main_greeting",
        "invalid_option",
        "main_greeting",
        "goodbye",
    ]


async def test_timeout_action_transfers_to_operator() -> None:
    main = menu(
        options={"1": (A.USER, "101")},
        retries=1,
        timeout_action=A.USER,
        timeout_target="100",
    )
    channel = FakeChannel()
    assert await run_ivr(channel, menus(main), "main") == "transferred user 100"
    assert channel.transfers() == [(TransferKind.USER, "100")]


async def test_failed_timeout_transfer_says_goodbye() -> None:
    main = menu(retries=0, timeout_action=A.USER, timeout_target="100")
    channel = FakeChannel(statuses={(TransferKind.USER, "100"): 486})
    outcome = await run_ivr(channel, menus(main), "main")
    assert outcome == "hangup after failed transfer user 100"
    assert channel.played() == ["main_greeting", "call_transferring", "call_busy", "goodbye"]
    assert channel.kinds("hangup") == [("ivr",)]


async def test_timeout_action_menu_resets_the_retries() -> None:
    main = menu(retries=0, timeout_action=A.MENU, timeout_target="operator")
    operator = menu("operator", options={"0": (A.USER, "100")}, retries=1)
    channel = FakeChannel([(14.5, "0")])  # main: 1 + 5 s; operator: 1 + 5 s, again 1 s
    assert await run_ivr(channel, menus(main, operator), "main") == "transferred user 100"
    assert channel.played()[:3] == ["main_greeting", "operator_greeting", "operator_greeting"]


@pytest.mark.parametrize(
    ("status", "prompt"),
    [
        (486, "call_busy"),
        (600, "call_busy"),
        (480, "call_no_answer"),
        (404, "call_unavailable"),
        (503, "call_unavailable"),
    ],
)
async def test_failed_option_transfer_plays_why_and_menu_again(status: int, prompt: str) -> None:
    channel = FakeChannel([(2.0, "1"), (6.0, "9")], statuses={(TransferKind.USER, "101"): status})
    assert await run_ivr(channel, BOTH, "main") == "hangup"
    assert channel.played() == [
        "welcome",
        "main_options",
        "call_transferring",
        prompt,
        "welcome",
        "main_options",
        "goodbye",
    ]


async def test_failed_transfers_do_not_use_up_retries() -> None:
    main = menu(options={"1": (A.USER, "101")}, retries=0)
    keys = [(1.0 + 3.5 * i, "1") for i in range(3)]
    channel = FakeChannel(keys, statuses={(TransferKind.USER, "101"): 486})
    assert await run_ivr(channel, menus(main), "main") == "hangup"  # the 4th wait times out
    assert channel.transfers() == [(TransferKind.USER, "101")] * 3


def test_failure_prompts() -> None:
    assert failure_prompt(486, dialled=False) == "call_busy"
    assert failure_prompt(404, dialled=True) == "ivr_invalid_extension"
    assert failure_prompt(404, dialled=False) == "call_unavailable"
    assert failure_prompt(408, dialled=True) == "call_no_answer"
    assert failure_prompt(503, dialled=True) == "call_unavailable"


# --- dial by extension -----------------------------------------------------------------------

DIRECTORY = menu(
    "dir",
    options={"0": (A.USER, "100"), "1": (A.MENU, "sub"), "#": (A.VOICEMAIL, "100")},
    dial_by_extension=True,
    max_digits=4,
    timeout=5.0,
    digit_timeout=2.0,
)
SUB = menu("sub", options={"9": A.HANGUP})
DIR = menus(DIRECTORY, SUB)


async def test_extension_ended_by_hash() -> None:
    channel = FakeChannel([(0.5, "1"), (1.2, "0"), (1.9, "1"), (2.5, "#")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 101"
    assert channel.kinds("collect") == [("101", "terminator", 2.5)]


async def test_extension_ended_by_digit_timeout_and_by_max_digits() -> None:
    channel = FakeChannel([(1.5, "2"), (2.0, "0"), (2.5, "5")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 205"
    assert channel.kinds("collect") == [("205", "inter_digit_timeout", 4.5)]
    channel = FakeChannel([(1.5, "1"), (1.6, "2"), (1.7, "3"), (1.8, "4"), (1.9, "5")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 1234"


async def test_option_key_wins_when_it_is_the_whole_input() -> None:
    # "1" then silence: the option (menu sub), although extensions start with 1
    channel = FakeChannel([(1.5, "1"), (9.0, "9")])
    assert await run_ivr(channel, DIR, "dir") == "hangup"
    assert channel.kinds("collect")[0] == ("1", "inter_digit_timeout", 3.5)
    assert "sub_greeting" in channel.played()
    # "0#": the option at once
    channel = FakeChannel([(1.5, "0"), (1.7, "#")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 100"
    # "#" alone: the # option
    channel = FakeChannel([(1.5, "#")])
    assert await run_ivr(channel, DIR, "dir") == "transferred voicemail 100"


async def test_single_digit_without_option_is_an_extension() -> None:
    channel = FakeChannel([(1.5, "7"), (1.6, "#")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 7"


async def test_unknown_extension_counts_as_a_retry() -> None:
    d = menu("d", dial_by_extension=True, retries=1, options={"9": A.HANGUP})
    statuses = {(TransferKind.USER, "999"): 404, (TransferKind.USER, "998"): 484}
    keys = [(1.0, "9"), (1.1, "9"), (1.2, "9"), (1.3, "#")]
    keys += [(5.0, "9"), (5.1, "9"), (5.2, "8"), (5.3, "#")]
    channel = FakeChannel(keys, statuses=statuses)
    assert await run_ivr(channel, menus(d), "d") == "hangup"
    assert channel.played() == [
        "d_greeting",
        "call_transferring",
        "ivr_invalid_extension",
        "d_greeting",
        "call_transferring",
        "ivr_invalid_extension",
        "goodbye",
    ]
    assert channel.transfers() == [(TransferKind.USER, "999"), (TransferKind.USER, "998")]


async def test_busy_extension_plays_busy_and_menu_again() -> None:
    statuses = {(TransferKind.USER, "101"): 486}
    keys = [(1.0, "1"), (1.1, "0"), (1.2, "1"), (1.3, "#"), (5.0, "0"), (5.1, "#")]
    channel = FakeChannel(keys, statuses=statuses)
    assert await run_ivr(channel, DIR, "dir") == "transferred user 100"
    assert channel.played()[:4] == [
        "dir_greeting",
        "call_transferring",
        "call_busy",
        "dir_greeting",
    ]


async def test_star_inside_an_extension_is_invalid() -> None:
    channel = FakeChannel([(1.0, "1"), (1.1, "*"), (1.2, "#"), (4.0, "0"), (4.1, "#")])
    assert await run_ivr(channel, DIR, "dir") == "transferred user 100"
    assert channel.played()[:2] == ["dir_greeting", "invalid_option"]
    assert channel.transfers() == [(TransferKind.USER, "100")]


# --- business hours --------------------------------------------------------------------------

OPEN = menu(
    "day",
    options={"1": (A.USER, "101")},
    hours=TimeCondition.parse("mon-fri 08:00-18:00; not 12-25; tz Europe/Paris"),
    after_hours="night",
)
NIGHT = menu("night", options={"1": (A.VOICEMAIL, "101")})


@pytest.mark.parametrize(
    ("wall", "greeting", "outcome"),
    [
        (MONDAY_10, "day_greeting", "transferred user 101"),
        (MONDAY_20, "night_greeting", "transferred voicemail 101"),
        (CHRISTMAS_10, "night_greeting", "transferred voicemail 101"),
    ],
)
async def test_business_hours_choose_the_menu(wall: float, greeting: str, outcome: str) -> None:
    channel = FakeChannel([(1.5, "1")], wall0=wall)
    assert await run_ivr(channel, menus(OPEN, NIGHT), "day") == outcome
    assert channel.played()[0] == greeting


async def test_after_hours_menu_with_hours_of_its_own() -> None:
    weekend = menu(
        "night",
        hours=TimeCondition.parse("sat-sun; tz Europe/Paris"),
        after_hours="closed",
    )
    closed = menu("closed", options={"1": A.HANGUP})
    channel = FakeChannel([(1.5, "1")], wall0=MONDAY_20)
    assert await run_ivr(channel, menus(OPEN, weekend, closed), "day") == "hangup"
    assert channel.played()[0] == "closed_greeting"


async def test_hours_are_checked_when_a_menu_is_entered() -> None:
    lobby = menu("lobby", options={"2": (A.MENU, "day")})
    # 17:59:58 in the lobby; "2" pressed after 6:00 pm: day is closed by then
    start = datetime(2030, 1, 7, 17, 59, 58, tzinfo=PARIS).timestamp()
    channel = FakeChannel([(3.0, "2"), (5.0, "1")], wall0=start)
    assert await run_ivr(channel, menus(lobby, OPEN, NIGHT), "lobby") == (
        "transferred voicemail 101"
    )
    assert channel.played()[:2] == ["lobby_greeting", "night_greeting"]


# --- hang-up, guards, errors -----------------------------------------------------------------


async def test_caller_hangs_up_during_the_greeting(caplog: pytest.LogCaptureFixture) -> None:
    channel = FakeChannel(hangup_at=1.5)
    with caplog.at_level(logging.INFO, logger="minipbx.ivr"):
        assert await run_ivr(channel, BOTH, "main") == "caller_hung_up"
    assert channel.kinds("hangup") == [] and channel.transfers() == []
    assert "event=ivr_end call_id=call-1 outcome='caller_hung_up'" in caplog.text


async def test_caller_hangs_up_while_keys_are_awaited() -> None:
    channel = FakeChannel([(0.5, "1")], hangup_at=3.0)
    assert await run_ivr(channel, DIR, "dir") == "caller_hung_up"
    assert channel.kinds("caller_hangup") == [(3.0,)]
    assert channel.transfers() == []


async def test_caller_hangs_up_during_goodbye() -> None:
    channel = FakeChannel([(2.2, "9")], hangup_at=2.8)  # goodbye: 2.2 to 3.2
    assert await run_ivr(channel, BOTH, "main") == "caller_hung_up"
    assert channel.kinds("hangup") == []


async def test_max_steps_ends_a_caller_who_keeps_repeating() -> None:
    channel = FakeChannel(auto_key="8")
    assert await run_ivr(channel, BOTH, "main", max_steps=7) == "max_steps"
    assert channel.played().count("welcome") == 7
    assert channel.played()[-1] == "goodbye"
    assert channel.kinds("hangup") == [("ivr",)]


async def test_max_steps_ends_user_driven_menu_loops() -> None:
    ping = menu("ping", options={"1": (A.MENU, "pong")})
    pong = menu("pong", options={"1": (A.MENU, "ping")})
    channel = FakeChannel(auto_key="1")
    assert await run_ivr(channel, menus(ping, pong), "ping", max_steps=10) == "max_steps"
    assert channel.played()[:4] == ["ping_greeting", "pong_greeting"] * 2
    with pytest.raises(IvrError, match="max_steps"):
        await run_ivr(channel, BOTH, "main", max_steps=0)


async def test_unknown_menu_hangs_up_with_an_error() -> None:
    channel = FakeChannel()
    assert await run_ivr(channel, BOTH, "nope") == "error: no menu nope"
    assert channel.kinds("hangup") == [("ivr error",)]
    broken = menus(menu("main", options={"1": (A.MENU, "gone")}))  # not validated
    channel = FakeChannel([(1.5, "1")])
    assert await run_ivr(channel, broken, "main") == "error: no menu gone"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: IvrOption("a", A.HANGUP), "key: 'a' is not one of 0-9 * #"),
        (lambda: IvrOption("11", A.HANGUP), "key: '11'"),
        (lambda: IvrOption("1", A.USER), "target: a user action needs a target"),
        (lambda: IvrOption("1", A.HANGUP, "100"), "target: a hangup action takes no target"),
        (lambda: IvrOption("1", A.NUMBER, "call me"), "target: 'call me' is not digits"),
        (lambda: IvrOption("1", A.MENU, "-x"), "target: '-x' is not a menu name"),
        (lambda: menu(greeting=()), "greeting: a menu needs at least one prompt"),
        (lambda: menu(greeting=("Hello!",)), "greeting: 'Hello!' is not a prompt name"),
        (lambda: menu(greeting=("1st",)), "greeting: '1st' is not a prompt name (a-z first"),
        (lambda: menu(invalid_prompt="x y"), "invalid_prompt: 'x y' is not a prompt name"),
        (lambda: menu(retries=11), "retries: 11 is not between 0 and 10"),
        (lambda: menu(retries=-1), "retries: -1 is not between 0 and 10"),
        (lambda: menu(timeout=0.5), "timeout: 0.5 is not between 1 and 60"),
        (lambda: menu(timeout=61), "timeout: 61 is not between 1 and 60"),
        (lambda: menu(digit_timeout=31), "digit_timeout: 31 is not between 0.5 and 30"),
        (lambda: menu(max_digits=0), "max_digits: 0 is not between 1 and 20"),
        (lambda: menu(name="bad name"), "name: 'bad name' is not a menu name"),
        (lambda: menu(timeout_action=A.REPEAT), "timeout_action: repeat would never end"),
        (lambda: menu(timeout_action=A.USER), "timeout_target: a user action needs a target"),
        (lambda: menu(after_hours="night"), "after_hours: business hours and an after-hours"),
        (
            lambda: menu(hours=TimeCondition.parse("mon-fri"), after_hours="main"),
            "after_hours: a menu cannot be its own",
        ),
        (lambda: parse_hours("mon-fry 08:00-12:00"), "hours: time condition clause 'mon-fry"),
        (lambda: parse_action("jump"), "action: 'jump' is not one of user, followme"),
        (
            lambda: options_of([IvrOption("1", A.HANGUP), IvrOption("1", A.REPEAT)]),
            "options: key '1' is given twice",
        ),
        (
            lambda: IvrMenu("m", ("g",), {"2": IvrOption("1", A.HANGUP)}),
            "options: entry '2' holds the option of key '1'",
        ),
    ],
)
def test_bad_menus_are_refused_naming_the_field(build: Any, message: str) -> None:
    with pytest.raises(IvrError) as info:
        build()
    assert str(info.value).startswith(message), str(info.value)


def test_good_values_are_accepted() -> None:
    built = menu(
        retries=10,
        timeout=60,
        digit_timeout=0.5,
        max_digits=20,
        options={"*": (A.MENU, "x.y@z"), "#": (A.NUMBER, "+33*12#")},
    )
    assert set(built.options) == {"*", "#"}
    assert parse_hours("  ") is None
    assert parse_action(" Hangup ") is A.HANGUP
    assert menu_of_target("ivr:main") == "main"
    assert menu_of_target("ivr:") is None and menu_of_target("voicemail") is None


def test_unknown_menus_are_reported_with_their_field() -> None:
    main = menu(
        options={"5": (A.MENU, "sales"), "6": (A.MENU, "support")},
        timeout_action=A.MENU,
        timeout_target="operator",
        hours=TimeCondition.parse("mon-fri"),
        after_hours="night",
    )
    problems = menu_problems(menus(main, SUPPORT))
    assert [(p.menu, p.field, p.key, p.message) for p in problems] == [
        ("main", "options", "5", "no menu 'sales'"),
        ("main", "timeout_target", None, "no menu 'operator'"),
        ("main", "after_hours", None, "no menu 'night'"),
    ]
    assert validate_menus(menus(main, SUPPORT))[0] == "menu 'main' option 5: no menu 'sales'"
    with pytest.raises(IvrError, match="menu 'main' timeout_target: no menu 'operator'"):
        check_menus(menus(main, SUPPORT))


def test_user_driven_loops_are_allowed() -> None:
    assert validate_menus(BOTH) == []  # main -> support -> main through keys
    check_menus(BOTH)


def test_after_hours_chains_must_not_cycle() -> None:
    always = TimeCondition.parse("mon-fri")
    a = menu("a", hours=always, after_hours="b")
    b = menu("b", hours=always, after_hours="c")
    c = menu("c", hours=always, after_hours="a")
    problems = menu_problems(menus(a, b, c))
    assert [(p.menu, p.field) for p in problems] == [
        ("a", "after_hours"),
        ("b", "after_hours"),
        ("c", "after_hours"),
    ]
    assert "a -> b -> c -> a goes round for ever" in problems[0].message
    # a chain that ends is fine
    assert validate_menus(menus(a, b, menu("c"))) == []


def test_timeout_chains_must_not_cycle() -> None:
    a = menu("a", timeout_action=A.MENU, timeout_target="b")
    b = menu("b", timeout_action=A.MENU, timeout_target="a")
    assert validate_menus(menus(a, b)) == [
        "menu 'a' timeout_target: a -> b -> a goes round for ever for a caller who presses nothing",
        "menu 'b' timeout_target: b -> a -> b goes round for ever for a caller who presses nothing",
    ]
    mixed_b = menu(
        "b", hours=TimeCondition.parse("sat"), after_hours="a"
    )  # a times out to b, b is closed and sends the caller back
    assert [p.field for p in menu_problems(menus(a, mixed_b))] == [
        "timeout_target",
        "after_hours",
    ]


def test_menu_keyed_under_another_name_is_reported() -> None:
    assert validate_menus({"other": menu("lone")}) == ["menu 'other' name: is stored as 'lone'"]


async def test_unvalidated_after_hours_cycle_ends_the_call() -> None:
    never = TimeCondition.parse("not 01-01; mon 00:00-00:01; tz Europe/Paris")
    a = menu("a", hours=never, after_hours="b")
    b = menu("b", hours=never, after_hours="a")
    channel = FakeChannel()
    assert await run_ivr(channel, menus(a, b), "a") == "error: the after-hours menus of a go round"
    assert channel.kinds("hangup") == [("ivr error",)] and channel.played() == []
