"""Voicemail flows (deposit, retrieval) against a scripted channel and an in-memory box.

The fake channel takes each ``collect`` answer from a script of inputs (a string of digits,
"" for no key), can make a prompt be interrupted by a key (``barge``: prompt name -> key),
returns scripted recordings, and logs what it did. Every prompt "lasts" one second of its
clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from minipbx.media.dtmf import CollectEnd
from minipbx.media.player import tone, wav_bytes
from minipbx.pbx.channel import ChannelClosedError, Collected, Recording, TransferKind
from minipbx.pbx.voicemail import (
    NEW,
    OLD,
    SAVED,
    Counts,
    Mailbox,
    Message,
    PinCheck,
    PinGuard,
    count,
    default_greeting,
    deposit,
    is_valid_pin,
    parse_target,
    retrieve,
    unusable,
)
from tests.pbx.fake_channel import ChannelBase

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2030, 1, 9, 15, 30, tzinfo=PARIS).timestamp()  # a Wednesday afternoon
SPEECH = wav_bytes(tone(440.0, 3.0, -20.0))
GREETING = wav_bytes(tone(660.0, 2.0, -20.0))


def rec(wav: bytes = SPEECH, seconds: float = 3.0, reason: str = "terminator") -> Recording:
    return Recording(wav, seconds, reason)


class FakeChannel(ChannelBase):
    """A scripted :class:`~minipbx.pbx.channel.Channel` (see the module doc)."""

    def __init__(
        self,
        inputs: Iterable[str] = (),
        *,
        recordings: Iterable[Recording] = (),
        barge: Mapping[str, str] | None = None,
        hangup_on: str | None = None,
        caller: str = "0612345678",
        wall0: float = NOW,
    ) -> None:
        self.inputs = list(inputs)
        self.recordings = list(recordings)
        self.barge = dict(barge or {})
        self.hangup_on = hangup_on
        super().__init__(caller=caller, wall0=wall0)
        self.queue: list[str] = []
        self.closed = False
        self.events: list[tuple[Any, ...]] = []

    def _open(self, name: str = "") -> None:
        if self.closed:
            raise ChannelClosedError("already closed")
        if name and name == self.hangup_on:
            self.closed = True
            self.events.append(("caller_hangup", name))
            raise ChannelClosedError("caller hung up")

    async def _play(self, name: str, barge_in: bool) -> str | None:
        self._open(name)
        if barge_in and self.queue:
            self.events.append(("play", name, "skipped"))
            return self.queue[0]
        key = self.barge.pop(name, None)
        self.t += 1.0
        if key is not None:
            self.queue.append(key)
            if barge_in:
                self.events.append(("play", name, "interrupted"))
                return key
        self.events.append(("play", name, "done"))
        return None

    async def play(self, prompts: Sequence[str], *, barge_in: bool = True) -> str | None:
        for name in prompts:
            key = await self._play(name, barge_in)
            if key is not None:
                return key
        return None

    async def play_audio(self, wav: bytes, *, barge_in: bool = True) -> str | None:
        label = {SPEECH: "audio:speech", GREETING: "audio:greeting"}.get(wav, f"audio:{len(wav)}")
        return await self._play(label, barge_in)

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
    ) -> Collected:
        self._open()
        assert first_digit_timeout is not None, "voicemail always collects with a timeout"
        if self.queue:
            digits = self.queue.pop(0)
        elif self.inputs:
            digits = self.inputs.pop(0)
        else:
            digits = ""
        if max_digits is not None:
            digits = digits[:max_digits]
        if not digits:
            reason = CollectEnd.NO_INPUT
            self.t += first_digit_timeout
        elif max_digits is not None and len(digits) == max_digits:
            reason = CollectEnd.MAX_DIGITS
        else:
            reason = CollectEnd.TERMINATOR
        self.events.append(("collect", digits))
        return Collected(digits, reason)

    def flush_digits(self) -> None:
        self.events.append(("flush", tuple(self.queue)))
        self.queue.clear()

    async def record(
        self, *, max_seconds: float, silence_seconds: float = 5.0, terminators: str = "#"
    ) -> Recording:
        self._open()
        assert self.queue == [], "a key queued before recording would end it at once"
        self.events.append(("record", max_seconds, silence_seconds, terminators))
        got = self.recordings.pop(0)
        self.t += got.seconds
        if got.reason == "hangup":
            self.closed = True
        return got

    async def transfer(self, kind: TransferKind, target: str) -> int:
        raise AssertionError("voicemail transfers nowhere")

    async def hangup(self, reason: str = "service") -> None:
        self._open()
        self.events.append(("hangup", reason))
        self.closed = True

    # -- what happened ----------------------------------------------------------------------

    def played(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "play"]

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]


class MemoryBox:
    """A :class:`~minipbx.pbx.voicemail.Mailbox` in a dictionary."""

    def __init__(
        self,
        extension: str = "100",
        *,
        pin: str | None = "1234",
        max_seconds: float = 120.0,
        max_messages: int | None = None,
        greeting: bytes | None = None,
        guard: PinGuard | None = None,
        zone: tzinfo | None = PARIS,
        fail_save: bool = False,
    ) -> None:
        self._extension = extension
        self.pin = pin
        self._max_seconds = max_seconds
        self._max_messages = max_messages
        self.greeting_wav = greeting
        self.guard = guard or PinGuard()
        self._zone = zone
        self.fail_save = fail_save
        self.store: dict[int, tuple[Message, bytes]] = {}
        self.changes: list[tuple[str, int]] = []
        self.next_id = 1

    tenant_id = 1

    @property
    def extension(self) -> str:
        return self._extension

    @property
    def has_pin(self) -> bool:
        return bool(self.pin)

    @property
    def max_seconds(self) -> float:
        return self._max_seconds

    @property
    def max_messages(self) -> int | None:
        return self._max_messages

    @property
    def zone(self) -> tzinfo | None:
        return self._zone

    def add(self, caller: str, received: float, folder: str = NEW, wav: bytes = SPEECH) -> int:
        message_id = self.next_id
        self.next_id += 1
        self.store[message_id] = (Message(message_id, folder, caller, received, 3.0), wav)
        return message_id

    def folders(self) -> dict[int, str]:
        return {i: m.folder for i, (m, _) in self.store.items()}

    async def greeting(self) -> bytes | None:
        return self.greeting_wav

    async def save(self, wav: bytes, caller: str, seconds: float, received: float) -> int | None:
        if self.fail_save:
            raise OSError(28, "No space left on device")
        message_id = self.add(caller, received, wav=wav)
        self.changes.append(("save", message_id))
        return message_id

    async def messages(self) -> list[Message]:
        return sorted((m for m, _ in self.store.values()), key=lambda m: (m.received, m.id))

    async def audio(self, message_id: int) -> bytes | None:
        found = self.store.get(message_id)
        return None if found is None else found[1]

    async def move(self, message_id: int, folder: str) -> None:
        message, wav = self.store[message_id]
        self.store[message_id] = (
            Message(message.id, folder, message.caller, message.received, message.seconds),
            wav,
        )
        self.changes.append((folder, message_id))

    async def delete(self, message_id: int) -> None:
        del self.store[message_id]
        self.changes.append(("delete", message_id))

    async def check_pin(self, pin: str, now: float) -> PinCheck:
        return self.guard.check(("box", self._extension), self.pin, pin, now)

    async def set_pin(self, pin: str) -> None:
        self.pin = pin

    async def save_greeting(self, wav: bytes) -> None:
        self.greeting_wav = wav


class Boxes:
    """A :class:`~minipbx.pbx.voicemail.MailboxLookup` over some boxes."""

    def __init__(self, *boxes: MemoryBox) -> None:
        self.boxes = {b.extension: b for b in boxes}

    async def open(self, tenant_id: int, extension: str) -> Mailbox | None:
        return self.boxes.get(extension) if tenant_id == 1 else None


# --- deposit -------------------------------------------------------------------------------


async def test_deposit_default_greeting_beep_record_save() -> None:
    box = MemoryBox("105", max_seconds=30.0)
    channel = FakeChannel(recordings=[rec()])
    assert await deposit(channel, box) == "saved"
    assert channel.played() == [
        "vm_person_at_extension",
        "num_1",
        "num_0",
        "num_5",
        "vm_not_available",
        "beep",
        "vm_message_recorded",
        "goodbye",
    ]
    assert channel.kinds("record") == [(30.0, 5.0, "#")]
    (message, wav), *_ = box.store.values()
    assert wav == SPEECH and message.caller == "0612345678" and message.folder == NEW
    assert message.received == NOW + 9.0  # after the greeting, the beep and 3 s of message
    assert channel.kinds("hangup") == [("voicemail",)]
    assert box.changes == [("save", 1)]


async def test_deposit_recorded_greeting_and_busy_greeting() -> None:
    channel = FakeChannel(recordings=[rec()])
    assert await deposit(channel, MemoryBox(greeting=GREETING)) == "saved"
    assert channel.played()[:2] == ["audio:greeting", "beep"]
    channel = FakeChannel(recordings=[rec()])
    assert await deposit(channel, MemoryBox(), busy=True) == "saved"
    assert channel.played()[:2] == ["vm_busy", "beep"]


async def test_key_skips_greeting_and_does_not_end_the_recording() -> None:
    channel = FakeChannel(recordings=[rec()], barge={"num_0": "#"})
    assert await deposit(channel, MemoryBox()) == "saved"
    assert channel.played()[:3] == ["vm_person_at_extension", "num_1", "num_0"]
    assert channel.played()[3] == "beep"  # the rest of the greeting was skipped
    assert ("flush", ("#",)) in channel.events  # the key is gone before the recording


async def test_hangup_while_recording_still_saves() -> None:
    box = MemoryBox()
    channel = FakeChannel(recordings=[rec(reason="hangup")])
    assert await deposit(channel, box) == "saved"
    assert len(box.store) == 1
    assert channel.played()[-1] == "beep"  # nothing played (or hung up) after the recording
    assert channel.kinds("hangup") == []


@pytest.mark.parametrize(
    ("recording", "why"),
    [
        (rec(wav_bytes(tone(440.0, 0.6, -20.0)), 0.6), "too_short"),
        (rec(wav_bytes(np.zeros(24000, dtype=np.int16)), 3.0), "silent"),
        (rec(wav_bytes(tone(440.0, 3.0, -60.0)), 3.0), "silent"),  # a line's hiss
        (rec(wav_bytes(tone(440.0, 0.5, -20.0)), 3.0), "too_short"),  # the WAV is what counts
    ],
)
async def test_short_or_silent_recordings_are_discarded(recording: Recording, why: str) -> None:
    box = MemoryBox()
    channel = FakeChannel(recordings=[recording])
    assert await deposit(channel, box) == f"discarded {why}"
    assert box.store == {}
    assert channel.played()[-2:] == ["beep", "goodbye"]
    assert unusable(recording) == why


async def test_discarded_after_hangup_plays_nothing() -> None:
    channel = FakeChannel(recordings=[rec(wav_bytes(tone(440.0, 0.3)), 0.3, "hangup")])
    assert await deposit(channel, MemoryBox()) == "discarded too_short"
    assert channel.played()[-1] == "beep"


def test_usable_recording() -> None:
    assert unusable(rec()) is None
    assert unusable(rec(b"not a wav", 3.0)) is None  # unreadable: kept rather than lost


async def test_full_box_takes_no_message() -> None:
    box = MemoryBox(max_messages=1)
    box.add("101", NOW - 60)
    channel = FakeChannel()
    assert await deposit(channel, box) == "mailbox_full"
    assert channel.played() == ["vm_mailbox_full", "goodbye"]
    assert channel.kinds("record") == [] and len(box.store) == 1


async def test_save_failure_is_told() -> None:
    channel = FakeChannel(recordings=[rec()])
    assert await deposit(channel, MemoryBox(fail_save=True)) == "save_failed"
    assert channel.played()[-2:] == ["call_cannot_complete", "goodbye"]


async def test_hangup_during_greeting() -> None:
    box = MemoryBox()
    channel = FakeChannel(hangup_on="vm_not_available")
    assert await deposit(channel, box) == "caller_hung_up"
    assert box.store == {} and channel.kinds("record") == []


def test_greetings_and_targets() -> None:
    assert default_greeting("1+2") == [
        "vm_person_at_extension",
        "num_1",
        "plus",
        "num_2",
        "vm_not_available",
    ]
    assert default_greeting("alice") == ["vm_unavailable"]
    assert default_greeting("100", busy=True) == ["vm_busy"]
    assert parse_target("100") == ("100", False)
    assert parse_target("100:busy") == ("100", True)
    assert parse_target("100:noanswer") == ("100", False)


# --- retrieval: login ----------------------------------------------------------------------


async def test_own_box_wrong_pin_three_times() -> None:
    box = MemoryBox("0612345678", pin="4321")
    channel = FakeChannel(["1111", "2222", "", "4321"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "login_failed"
    assert channel.played() == [
        "vm_enter_pin",
        "vm_login_incorrect",
        "vm_enter_pin",
        "vm_login_incorrect",
        "vm_enter_pin",
        "vm_login_incorrect",
        "goodbye",
    ]
    assert channel.kinds("hangup") == [("voicemail",)]
    assert box.changes == []


async def test_pin_lockout_across_calls() -> None:
    guard = PinGuard(max_failures=5, window=900.0, lockout=900.0)
    box = MemoryBox("0612345678", pin="4321", guard=guard)
    boxes = Boxes(box)
    first = FakeChannel(["1", "2", "3"], caller="0612345678")
    assert await retrieve(first, boxes, own=True) == "login_failed"
    second = FakeChannel(["4", "5", "4321"], caller="0612345678")  # locked at the 5th
    assert await retrieve(second, boxes, own=True) == "login_failed"
    assert guard.check(("box", "0612345678"), "4321", "4321", 899.0) is PinCheck.LOCKED
    assert guard.check(("box", "0612345678"), "4321", "4321", 20_000.0) is PinCheck.OK


async def test_own_box_without_pin_opens_and_unknown_caller_is_refused() -> None:
    box = MemoryBox("0612345678", pin=None)
    channel = FakeChannel(["*"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert channel.played()[0] == "you_have"
    channel = FakeChannel(["*"], caller="999")
    assert await retrieve(channel, Boxes(box), own=True) == "no_mailbox"
    assert channel.played() == ["call_not_allowed", "goodbye"]


async def test_any_box_asks_number_and_pin_without_telling_which_was_wrong() -> None:
    boxes = Boxes(MemoryBox("200", pin="2468"), MemoryBox("300", pin=None))
    inputs = ["999", "2468", "300", "", "200", "2468", "*"]
    channel = FakeChannel(inputs, caller="101")
    assert await retrieve(channel, boxes, own=False) == "goodbye"
    assert channel.played()[:8] == [
        "vm_enter_mailbox",
        "vm_enter_pin",
        "vm_login_incorrect",  # unknown box: same answer
        "vm_enter_mailbox",
        "vm_enter_pin",
        "vm_login_incorrect",  # a box without a PIN cannot be opened from *98
        "vm_enter_mailbox",
        "vm_enter_pin",
    ]
    assert channel.played()[8] == "you_have"


async def test_pin_typed_ahead_of_its_prompt_counts() -> None:
    boxes = Boxes(MemoryBox("200", pin="2468"))
    channel = FakeChannel(["200", "*"], barge={"vm_enter_pin": "2468"}, caller="101")
    assert await retrieve(channel, boxes, own=False) == "goodbye"
    assert "you_have" in channel.played()


# --- retrieval: messages -------------------------------------------------------------------


def three_messages() -> MemoryBox:
    box = MemoryBox("0612345678", pin=None)
    box.add("101", NOW - 3 * 86400, folder=OLD)  # 1: old, Sunday
    box.add("", NOW - 3600)  # 2: new, unknown caller, today 14:30
    box.add("102", NOW - 86400 - 7200)  # 3: new, yesterday 13:30
    return box


async def test_summary_and_order_new_first_oldest_first() -> None:
    box = three_messages()
    # main menu 1; message 3 (oldest new) heard; 2 next; message 2 heard; 2; message 1; 2
    channel = FakeChannel(["1", "2", "2", "2", "*"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert channel.played() == [
        *("you_have", "num_2", "new", "messages", "and", "num_1", "old", "message"),
        "vm_main_menu",
        *("message", "num_1", "vm_received", "yesterday", "at", "num_1", "num_30", "pm"),
        *("from", "num_1", "num_0", "num_2", "audio:speech", "vm_message_menu"),
        *("message", "num_2", "vm_received", "today", "at", "num_2", "num_30", "pm"),
        *("vm_from_unknown", "audio:speech", "vm_message_menu"),
        *("message", "num_3", "vm_received", "on", "day_sunday", "month_january", "ord_6"),
        *("at", "num_3", "num_30", "pm", "from", "num_1", "num_0", "num_1", "audio:speech"),
        *("vm_message_menu", "vm_no_more_messages", "vm_main_menu", "goodbye"),
    ]
    assert box.folders() == {1: OLD, 2: OLD, 3: OLD}
    assert box.changes == [(OLD, 3), (OLD, 2)]  # each new one once, when heard to the end
    assert channel.kinds("hangup") == [("voicemail",)]


async def test_header_of_an_older_message_names_the_day() -> None:
    box = MemoryBox("0612345678", pin=None)
    box.add("101", datetime(2030, 1, 6, 9, 5, tzinfo=PARIS).timestamp())  # Sunday 9:05
    channel = FakeChannel(["1", "#", "*"], caller="0612345678")
    await retrieve(channel, Boxes(box), own=True)
    played = channel.played()
    start = played.index("vm_received")
    assert played[start : start + 13] == [
        "vm_received",
        "on",
        "day_sunday",
        "month_january",
        "ord_6",
        "at",
        "num_9",
        "oh",
        "num_5",
        "am",
        "from",
        "num_1",
        "num_0",
    ]


async def test_keys_repeat_delete_save_previous_and_back() -> None:
    box = three_messages()
    # 1 messages; msg3: 1 repeat, 3 delete -> msg2: 4 save -> msg1: * previous -> msg2: #
    channel = FakeChannel(["1", "1", "3", "4", "*", "#", "*"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    played = channel.played()
    assert played.count("audio:speech") == 5  # msg3 twice, msg2, msg1, msg2 again
    assert "vm_message_deleted" in played and "vm_message_saved" in played
    assert 3 not in box.store
    assert box.folders() == {1: OLD, 2: SAVED}
    assert ("delete", 3) in box.changes and (SAVED, 2) in box.changes
    assert "vm_no_more_messages" not in played  # left with # before the end


async def test_key_during_message_acts_at_once() -> None:
    box = three_messages()
    channel = FakeChannel(["1", "#", "*"], barge={"audio:speech": "3"}, caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert ("play", "audio:speech", "interrupted") in channel.events
    assert box.folders() == {1: OLD, 2: OLD}  # 3 deleted at once; 2 heard to the end
    played = channel.played()
    deleted = played.index("vm_message_deleted")
    # the next message takes the deleted one's place: it is "message one" now
    assert played[deleted - 1] == "audio:speech" and played[deleted + 1 : deleted + 3] == [
        "message",
        "num_1",
    ]


async def test_interrupted_message_stays_new_until_next() -> None:
    box = three_messages()
    channel = FakeChannel(["1", "#", "*"], barge={"audio:speech": "#"}, caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert box.folders() == {1: OLD, 2: NEW, 3: NEW}
    channel = FakeChannel(["1", "2", "#", "*"], barge={"audio:speech": "2"}, caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert box.folders()[3] == OLD  # 2 = next marks it heard


async def test_invalid_key_replays_menu_and_idle_caller_is_dropped() -> None:
    box = three_messages()
    channel = FakeChannel(["1", "9", "", "", ""], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "idle"
    played = channel.played()
    after = played[played.index("audio:speech") + 1 :]
    assert after == [
        "vm_message_menu",
        "invalid_option",
        "vm_message_menu",
        "vm_message_menu",
        "vm_message_menu",
        "goodbye",
    ]
    assert channel.kinds("hangup") == [("voicemail",)]


async def test_empty_box() -> None:
    box = MemoryBox("0612345678", pin=None)
    channel = FakeChannel(["1", "*"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert channel.played()[:7] == [
        "you_have",
        "no",
        "new",
        "messages",
        "and",
        "no",
        "old",
    ]
    assert "vm_no_more_messages" in channel.played()


async def test_missing_audio_is_said_and_the_message_can_be_deleted() -> None:
    box = MemoryBox("0612345678", pin=None)
    box.add("101", NOW - 60)
    box.store[1] = (box.store[1][0], b"")
    box.audio = _no_audio  # type: ignore[method-assign]
    channel = FakeChannel(["1", "3", "*"], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert "call_cannot_complete" in channel.played() and box.store == {}


async def _no_audio(message_id: int) -> bytes | None:
    return None


async def test_caller_hangs_up_while_listening() -> None:
    box = three_messages()
    channel = FakeChannel(["1"], hangup_on="audio:speech", caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "caller_hung_up"
    assert box.folders()[3] == NEW


# --- retrieval: greeting and PIN -----------------------------------------------------------


async def test_record_greeting_and_change_pin() -> None:
    box = MemoryBox("0612345678", pin="1234")
    inputs = ["1234", "2", "3", "98765", "*"]
    channel = FakeChannel(inputs, recordings=[rec(GREETING, 2.0)], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert box.greeting_wav == GREETING and box.pin == "98765"
    played = channel.played()
    assert played[played.index("vm_record_greeting") : played.index("vm_record_greeting") + 3] == [
        "vm_record_greeting",
        "beep",
        "vm_greeting_saved",
    ]
    assert "vm_pin_changed" in played
    assert channel.kinds("record") == [(60.0, 5.0, "#")]


async def test_bad_greeting_and_bad_pin_are_refused() -> None:
    box = MemoryBox("0612345678", pin="1234", greeting=GREETING)
    silent = rec(wav_bytes(np.zeros(16000, dtype=np.int16)), 2.0)
    inputs = ["1234", "2", "3", "12", "3", "", "*"]
    channel = FakeChannel(inputs, recordings=[silent], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "goodbye"
    assert box.greeting_wav == GREETING and box.pin == "1234"
    assert channel.played().count("please_try_again") == 3


async def test_hangup_while_recording_greeting_keeps_the_old_one() -> None:
    box = MemoryBox("0612345678", pin=None, greeting=GREETING)
    channel = FakeChannel(["2"], recordings=[rec(SPEECH, 3.0, "hangup")], caller="0612345678")
    assert await retrieve(channel, Boxes(box), own=True) == "caller_hung_up"
    assert box.greeting_wav == GREETING


# --- helpers -------------------------------------------------------------------------------


def test_pin_guard_window_and_capacity() -> None:
    guard = PinGuard(max_failures=3, window=60.0, lockout=100.0, capacity=2)
    key = "a"
    assert guard.check(key, "1234", "0000", 0.0) is PinCheck.WRONG
    assert guard.check(key, "1234", "0000", 30.0) is PinCheck.WRONG
    assert guard.check(key, "1234", "0000", 70.0) is PinCheck.WRONG  # the first aged out
    assert not guard.locked(key, 70.0)
    assert guard.check(key, "1234", "0000", 80.0) is PinCheck.WRONG  # third within 60 s
    assert guard.locked(key, 81.0)
    assert guard.check(key, "1234", "1234", 150.0) is PinCheck.LOCKED
    assert guard.check(key, "1234", "1234", 181.0) is PinCheck.OK
    assert guard.check(key, None, "", 200.0) is PinCheck.WRONG  # no PIN never matches
    for other in ("b", "c", "d"):
        guard.check(other, "1", "2", 300.0)
    assert len(guard._failures) == 2
    with pytest.raises(ValueError):
        PinGuard(max_failures=0)


def test_pins_and_counts() -> None:
    assert is_valid_pin("1234") and is_valid_pin("1" * 16)
    assert not is_valid_pin("123") and not is_valid_pin("1" * 17) and not is_valid_pin("12a4")
    assert not is_valid_pin("١٢٣٤")  # Arabic-Indic digits are digits, but not keys
    messages = [
        Message(1, NEW, "", 0.0, 1.0),
        Message(2, OLD, "", 0.0, 1.0),
        Message(3, SAVED, "", 0.0, 1.0),
    ]
    assert count(messages) == Counts(1, 2)


async def test_storage_trouble_before_the_recording_does_not_stop_the_caller() -> None:
    box = MemoryBox(max_messages=1, greeting=GREETING)

    async def broken_list() -> list[Message]:
        raise OSError("database is down")

    async def broken_greeting() -> bytes | None:
        raise OSError("disk error")

    box.messages = broken_list  # type: ignore[method-assign]
    box.greeting = broken_greeting  # type: ignore[method-assign]
    channel = FakeChannel(recordings=[rec()])
    assert await deposit(channel, box) == "saved"
    assert channel.played()[0] == "vm_person_at_extension"  # the default greeting
    assert len(box.store) == 1
