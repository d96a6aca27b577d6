"""Voicemail by phone: leaving a message (:func:`deposit`) and listening (:func:`retrieve`).

Both are coroutines over a :class:`~minipbx.pbx.channel.Channel` and a :class:`Mailbox`
(the storage of one box, a Protocol: the app implements it over the database and WAV files
in :mod:`minipbx.voicemail`, tests with a dictionary). Pure: no sockets, clock or
randomness; times come from ``channel.now()`` (monotonic, PIN lock-out) and
``channel.wall()`` (dates).

**Leaving a message** (dial plan target ``voicemail:<extension>``, or
``voicemail:<extension>:busy`` when the user is on another call):

1. A full box (``max_messages``) says ``vm_mailbox_full``, goodbye, and hangs up.
2. The greeting: the user's recorded greeting if there is one, else "The person at
   extension one zero zero is not available. Please leave a message after the tone"
   (``vm_busy`` for a busy user). A key skips it (and is forgotten, so it cannot end the
   recording).
3. A beep, then the recording until ``#``, :data:`SILENCE_SECONDS` of silence, the box's
   ``max_seconds`` (default :data:`DEFAULT_MAX_SECONDS`) or the caller hanging up.
4. A recording shorter than :data:`MIN_SECONDS` (trailing silence is already trimmed by
   the recorder) or with no 20 ms frame at :data:`SILENT_DBFS` or louder is discarded.
   Anything else is saved **before** anything more is played, so a caller who hangs up
   while recording (``Recording.reason == "hangup"``) leaves the message all the same.
5. "Your message has been recorded. Goodbye." and the PBX hangs up.

**Listening** (feature codes: ``*97`` own box, ``*98`` any box):

- Own box (``*97``): the box of the calling extension. Its PIN is asked when it has one;
  a box without a PIN opens directly (the caller is authenticated as that extension by
  SIP digest). ``*98`` asks the mailbox number, then the PIN, and always tells only
  "Mailbox number or PIN incorrect" (no hint which one); a box without a PIN cannot be
  opened from ``*98``.
- :data:`PIN_TRIES` wrong logins in one call: goodbye and hang-up. Across calls, a box
  locks for :attr:`PinGuard.lockout` seconds after :attr:`PinGuard.max_failures` wrong
  PINs within :attr:`PinGuard.window` (then even the right PIN is refused, with the same
  words): guessing 4 digits by phone takes years.
- After the login: "You have two new messages and one old message", then the main menu:

  ====  =====================================================================
  key   main menu (``vm_main_menu``)
  ====  =====================================================================
  1     the messages (below)
  2     record the greeting (``#`` ends it; the old one is kept if the new one
        is too short or silent)
  3     change the PIN (4 to 16 digits, then ``#``)
  ``*`` goodbye
  ====  =====================================================================

- Messages play new ones first, then old and saved ones, each group **oldest first** (in
  the order they came, as on a phone's answering machine), each preceded by "Message
  one. Received today at nine oh five a.m. from one zero one" (``vm_from_unknown`` when
  the caller is unknown or not a number). A new message counts as heard (moves to
  ``old``) once it played to the end or the caller pressed 2 or 4. Keys, during the
  message or at ``vm_message_menu`` after it:

  ====  =====================================================================
  key   message menu
  ====  =====================================================================
  1     repeat the message
  2     next message (the message becomes old)
  3     delete the message, then the next one
  4     save the message (folder ``saved``; kept, counted as old), then the next
  ``*`` previous message
  ``#`` back to the main menu
  ====  =====================================================================

  After the last message: "No more messages", and the main menu. No key for
  :data:`MENU_TRIES` menus in a row (main or message menu): goodbye and hang-up.

Mailbox changes go through the :class:`Mailbox` (which tells message-waiting, RFC 3842).
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Protocol

import numpy as np

from minipbx.media.player import frame_levels, read_wav
from minipbx.media.prompts import say_count, say_datetime, say_digits, say_number
from minipbx.pbx.channel import Channel, ChannelClosedError, Recording

log = logging.getLogger("minipbx.voicemail")

# Folders of the store (minipbx.store.pbxrecords.VOICEMAIL_FOLDERS).
NEW = "new"
OLD = "old"
SAVED = "saved"

DEFAULT_MAX_SECONDS = 120.0
"""Longest message when the box sets no length of its own."""
MIN_SECONDS = 1.0
"""Shorter recordings (after the trailing silence is trimmed) are discarded."""
SILENCE_SECONDS = 5.0
"""Silence that ends a message."""
SILENT_DBFS = -45.0
"""A recording none of whose 20 ms frames reaches this level (RMS, dBFS) is silent (the
recorder's own silence threshold, :class:`minipbx.media.player.Recorder`)."""
GREETING_MAX_SECONDS = 60.0
PIN_TRIES = 3
"""Wrong logins in one call before goodbye."""
MENU_TRIES = 3
"""Menus in a row without a key before goodbye."""
PIN_MIN, PIN_MAX = 4, 16
"""PIN lengths (as :mod:`minipbx.store.pbxrecords` checks them)."""
MAILBOX_MAX_DIGITS = 16
KEY_TIMEOUT = 5.0
"""Seconds to wait for a menu key."""
ENTRY_TIMEOUT = 10.0
"""Seconds to wait for the first key of a mailbox number or PIN."""
DIGIT_TIMEOUT = 5.0
"""Seconds between keys of a mailbox number or PIN."""

# Prompts (minipbx/prompts/en/prompts.txt).
BEEP = "beep"
GOODBYE = "goodbye"
P_PERSON_AT = "vm_person_at_extension"
P_NOT_AVAILABLE = "vm_not_available"
P_UNAVAILABLE = "vm_unavailable"
P_BUSY = "vm_busy"
P_RECORDED = "vm_message_recorded"
P_FULL = "vm_mailbox_full"
P_ENTER_MAILBOX = "vm_enter_mailbox"
P_ENTER_PIN = "vm_enter_pin"
P_LOGIN_INCORRECT = "vm_login_incorrect"
P_MAIN_MENU = "vm_main_menu"
P_RECEIVED = "vm_received"
P_FROM_UNKNOWN = "vm_from_unknown"
P_MESSAGE_MENU = "vm_message_menu"
P_DELETED = "vm_message_deleted"
P_SAVED = "vm_message_saved"
P_NO_MORE = "vm_no_more_messages"
P_RECORD_GREETING = "vm_record_greeting"
P_GREETING_SAVED = "vm_greeting_saved"
P_ENTER_NEW_PIN = "vm_enter_new_pin"
P_PIN_CHANGED = "vm_pin_changed"
P_INVALID = "invalid_option"
P_TRY_AGAIN = "please_try_again"
P_NOT_ALLOWED = "call_not_allowed"
P_CANNOT = "call_cannot_complete"


class PinCheck(enum.Enum):
    """What :meth:`Mailbox.check_pin` found."""

    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"  # too many wrong PINs lately: refused whatever was typed


@dataclass(frozen=True, slots=True)
class Message:
    """A message as the retrieval flow sees it. ``received`` is Unix time; ``folder`` is
    ``new``, ``old`` or ``saved``; ``caller`` the caller's number ("" if unknown)."""

    id: int
    folder: str
    caller: str
    received: float
    seconds: float
    caller_name: str = ""

    @property
    def is_new(self) -> bool:
        """True until the message was heard."""
        return self.folder == NEW


@dataclass(frozen=True, slots=True)
class Counts:
    """Messages of a box: ``new`` ones, and ``old`` ones (heard: folders old and saved),
    as message-waiting (RFC 3842 ``Voice-Message: new/old``) reports them."""

    new: int
    old: int


def count(messages: Sequence[Message]) -> Counts:
    """The counts of ``messages``."""
    new = sum(1 for m in messages if m.is_new)
    return Counts(new, len(messages) - new)


class Mailbox(Protocol):
    """The storage of one voice mailbox. Every change (a message saved, moved, deleted)
    is reported by the implementation to message waiting."""

    @property
    def tenant_id(self) -> int:
        """The tenant of the box's user."""
        ...

    @property
    def extension(self) -> str:
        """The user's extension (the mailbox number)."""
        ...

    @property
    def has_pin(self) -> bool:
        """True when the box has a PIN."""
        ...

    @property
    def max_seconds(self) -> float:
        """Longest message."""
        ...

    @property
    def max_messages(self) -> int | None:
        """Most messages the box keeps (None: no limit)."""
        ...

    @property
    def zone(self) -> tzinfo | None:
        """Time zone dates are said in (None: the server's)."""
        ...

    async def greeting(self) -> bytes | None:
        """The user's recorded greeting (WAV), or None for the default one."""
        ...

    async def save(self, wav: bytes, caller: str, seconds: float, received: float) -> int | None:
        """Store a new message durably; its id (None: durable, but its id is not known
        yet, e.g. the database is down and the message will be filed later)."""
        ...

    async def messages(self) -> list[Message]:
        """Every message of the box, oldest first."""
        ...

    async def audio(self, message_id: int) -> bytes | None:
        """A message's WAV (None when the file is missing)."""
        ...

    async def move(self, message_id: int, folder: str) -> None:
        """Move a message to ``new``, ``old`` or ``saved``."""
        ...

    async def delete(self, message_id: int) -> None:
        """Delete a message and its audio."""
        ...

    async def check_pin(self, pin: str, now: float) -> PinCheck:
        """Check a PIN typed at monotonic time ``now`` (failures count towards a lock-out,
        see :class:`PinGuard`)."""
        ...

    async def set_pin(self, pin: str) -> None:
        """Change the PIN (4 to 16 digits)."""
        ...

    async def save_greeting(self, wav: bytes) -> None:
        """Replace the recorded greeting."""
        ...


class MailboxLookup(Protocol):
    """Finds boxes: :func:`retrieve` opens the one the caller names."""

    async def open(self, tenant_id: int, extension: str) -> Mailbox | None:
        """The box of a user with voicemail enabled, else None."""
        ...


class PinGuard:
    """Counts wrong PINs per box and locks a box after too many (pure: times are given).

    ``max_failures`` wrong PINs within ``window`` seconds lock the box for ``lockout``
    seconds; the right PIN clears the count. At most ``capacity`` boxes are tracked (the
    least recently failed are forgotten first), so the table cannot grow without bound.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 900.0,
        lockout: float = 900.0,
        capacity: int = 10_000,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout <= 0 or capacity < 1:
            raise ValueError("PinGuard limits must be positive")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.capacity = capacity
        self._failures: OrderedDict[object, list[float]] = OrderedDict()
        self._locked_until: dict[object, float] = {}

    def locked(self, key: object, now: float) -> bool:
        """True while ``key`` is locked out."""
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._locked_until[key]
        return False

    def check(self, key: object, expected: str | None, given: str, now: float) -> PinCheck:
        """Compare ``given`` with ``expected`` (in constant time) and count the result."""
        if self.locked(key, now):
            return PinCheck.LOCKED
        if expected and hmac.compare_digest(expected.encode(), given.encode()):
            self._failures.pop(key, None)
            return PinCheck.OK
        recent = [t for t in self._failures.pop(key, []) if now - t < self.window]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._locked_until[key] = now + self.lockout
            log.warning("event=voicemail_pin_locked box=%s seconds=%g", key, self.lockout)
            return PinCheck.WRONG
        self._failures[key] = recent
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)
        return PinCheck.WRONG


def is_valid_pin(pin: str) -> bool:
    """True for 4 to 16 digits."""
    return pin.isascii() and pin.isdigit() and PIN_MIN <= len(pin) <= PIN_MAX


def unusable(recording: Recording) -> str | None:
    """Why a recording is not worth keeping (``too_short``, ``silent``), or None."""
    if recording.seconds < MIN_SECONDS:
        return "too_short"
    try:
        samples = read_wav(recording.wav, "recording")
    except ValueError as exc:  # not our format: keep it rather than lose a message
        log.warning("event=voicemail_unreadable_recording error=%s", exc)
        return None
    if len(samples) < MIN_SECONDS * 8000:
        return "too_short"
    if not np.any(frame_levels(samples) >= SILENT_DBFS):
        return "silent"
    return None


def default_greeting(extension: str, busy: bool = False) -> list[str]:
    """The greeting of a box without a recorded one: the extension said digit by digit
    (``vm_unavailable`` when it is not all digits; ``vm_busy`` for a busy user)."""
    if busy:
        return [P_BUSY]
    try:
        digits = say_digits(extension)
    except ValueError:
        return [P_UNAVAILABLE]
    return [P_PERSON_AT, *digits, P_NOT_AVAILABLE] if digits else [P_UNAVAILABLE]


def parse_target(arg: str) -> tuple[str, bool]:
    """The extension of a deposit target argument and whether it says ``busy``
    (``100`` or ``100:busy``; other reasons, ``100:noanswer``, use the usual greeting)."""
    extension, _, reason = arg.partition(":")
    return extension.strip(), reason.strip().lower() == "busy"


async def _goodbye(channel: Channel, before: Sequence[str] = ()) -> None:
    """Say ``before`` and goodbye, hang up; a caller already gone is fine."""
    try:
        await channel.play([*before, GOODBYE], barge_in=False)
        await channel.hangup("voicemail")
    except ChannelClosedError:
        pass


async def _full(box: Mailbox, call_id: str) -> bool:
    """True when the box holds ``max_messages``; False when that cannot be known (the
    storage failing must not keep a caller from leaving a message)."""
    if box.max_messages is None:
        return False
    try:
        held = len(await box.messages())
    except Exception:
        log.exception("event=voicemail_count_failed call_id=%s box=%s", call_id, box.extension)
        return False
    if held >= box.max_messages:
        log.warning("event=voicemail_box_full call_id=%s box=%s", call_id, box.extension)
        return True
    return False


async def _greeting(box: Mailbox, call_id: str) -> bytes | None:
    """The recorded greeting; None (the default greeting) when it cannot be read."""
    try:
        return await box.greeting()
    except Exception:
        log.exception("event=voicemail_greeting_failed call_id=%s box=%s", call_id, box.extension)
        return None


async def deposit(channel: Channel, box: Mailbox, *, busy: bool = False) -> str:
    """Take a message for ``box`` (see the module doc). Returns the outcome for the log:
    ``saved``, ``discarded too_short``, ``discarded silent``, ``mailbox_full``,
    ``save_failed`` or ``caller_hung_up`` (before the recording started)."""
    call_id = channel.call_id
    log.info(
        "event=voicemail_deposit_start call_id=%s box=%s caller=%s",
        call_id,
        box.extension,
        channel.caller,
    )
    try:
        if await _full(box, call_id):
            await _goodbye(channel, [P_FULL])
            return "mailbox_full"
        greeting = await _greeting(box, call_id)
        if greeting is not None:
            await channel.play_audio(greeting, barge_in=True)
        else:
            await channel.play(default_greeting(box.extension, busy), barge_in=True)
        channel.flush_digits()  # a key skipped the greeting: it must not end the recording
        await channel.play([BEEP], barge_in=False)
        recording = await channel.record(
            max_seconds=box.max_seconds, silence_seconds=SILENCE_SECONDS, terminators="#"
        )
    except ChannelClosedError:
        return "caller_hung_up"
    hung_up = recording.reason == "hangup"
    problem = unusable(recording)
    if problem is not None:
        log.info(
            "event=voicemail_discarded call_id=%s box=%s why=%s seconds=%.2f",
            call_id,
            box.extension,
            problem,
            recording.seconds,
        )
        if not hung_up:
            await _goodbye(channel)
        return f"discarded {problem}"
    try:  # first of all, whatever the caller does now
        wall = channel.wall()
        message_id = await box.save(recording.wav, channel.caller, recording.seconds, wall)
    except Exception:  # disk full...: the caller must hear it was not kept
        log.exception("event=voicemail_save_failed call_id=%s box=%s", call_id, box.extension)
        if not hung_up:
            await _goodbye(channel, [P_CANNOT])
        return "save_failed"
    log.info(
        "event=voicemail_saved call_id=%s box=%s id=%s seconds=%.2f end=%s",
        call_id,
        box.extension,
        message_id,
        recording.seconds,
        recording.reason,
    )
    if not hung_up:
        await _goodbye(channel, [P_RECORDED])
    return "saved"


# -- retrieval --------------------------------------------------------------------------------


async def _entry(channel: Channel, prompt: str, *, flush: bool = True) -> str:
    """Play ``prompt`` and collect digits until ``#`` (``flush``: forget keys pressed
    before the prompt; without, keys typed ahead count)."""
    if flush:
        channel.flush_digits()
    await channel.play([prompt], barge_in=True)
    got = await channel.collect(
        max_digits=MAILBOX_MAX_DIGITS,
        terminators="#",
        first_digit_timeout=ENTRY_TIMEOUT,
        inter_digit_timeout=DIGIT_TIMEOUT,
    )
    return got.digits


async def _key(channel: Channel, prompts: Sequence[str]) -> str:
    """Play a menu (a key stops it) and take one key ("" when none came)."""
    await channel.play(prompts, barge_in=True)
    got = await channel.collect(max_digits=1, terminators="", first_digit_timeout=KEY_TIMEOUT)
    return got.digits


async def _pin_ok(channel: Channel, box: Mailbox, pin: str) -> bool:
    if not pin or not box.has_pin:
        return False  # nothing typed (or no PIN to match) does not count towards a lock-out
    result = await box.check_pin(pin, channel.now())
    log.info(
        "event=voicemail_login call_id=%s box=%s result=%s caller=%s",
        channel.call_id,
        box.extension,
        result.value,
        channel.caller,
    )
    return result is PinCheck.OK


async def _login_own(channel: Channel, lookup: MailboxLookup) -> Mailbox | str:
    """The caller's own box, or the outcome of a failed login."""
    box = await lookup.open(channel.tenant_id, channel.caller)
    if box is None:
        log.info("event=voicemail_no_box call_id=%s caller=%s", channel.call_id, channel.caller)
        await _goodbye(channel, [P_NOT_ALLOWED])
        return "no_mailbox"
    if not box.has_pin:
        return box
    for _ in range(PIN_TRIES):
        if await _pin_ok(channel, box, await _entry(channel, P_ENTER_PIN)):
            return box
        await channel.play([P_LOGIN_INCORRECT], barge_in=False)
    await _goodbye(channel)
    return "login_failed"


async def _login_any(channel: Channel, lookup: MailboxLookup) -> Mailbox | str:
    """The box the caller names (with its PIN), or the outcome of a failed login."""
    for _ in range(PIN_TRIES):
        number = await _entry(channel, P_ENTER_MAILBOX)
        pin = await _entry(channel, P_ENTER_PIN, flush=False)
        box = await lookup.open(channel.tenant_id, number) if number else None
        if box is not None and await _pin_ok(channel, box, pin):
            return box
        log.info(
            "event=voicemail_login_failed call_id=%s box=%s known=%s caller=%s",
            channel.call_id,
            number,
            box is not None,
            channel.caller,
        )
        await channel.play([P_LOGIN_INCORRECT], barge_in=False)
    await _goodbye(channel)
    return "login_failed"


def _ordered(messages: Sequence[Message]) -> list[Message]:
    """New messages first, then the others; each group oldest first."""
    return sorted(messages, key=lambda m: (not m.is_new, m.received, m.id))


class _Session:
    """A caller logged in to a box (the state of :func:`retrieve`)."""

    def __init__(self, channel: Channel, box: Mailbox) -> None:
        self.channel = channel
        self.box = box
        self.idle = 0  # menus in a row without a key

    def _log(self, event: str, **fields: object) -> None:
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        log.info(
            "event=%s call_id=%s box=%s%s", event, self.channel.call_id, self.box.extension, extra
        )

    async def menu_key(self, prompts: Sequence[str]) -> str | None:
        """A key of a menu; None when :data:`MENU_TRIES` menus went by without one (the
        caller was then told goodbye)."""
        key = await _key(self.channel, prompts)
        if key:
            self.idle = 0
            return key
        self.idle += 1
        if self.idle >= MENU_TRIES:
            await _goodbye(self.channel)
            return None
        return ""

    async def run(self) -> str:
        counts = count(await self.box.messages())
        summary = [
            "you_have",
            *say_count(counts.new, "message", "new"),
            "and",
            *say_count(counts.old, "message", "old"),
        ]
        self._log("voicemail_open", new=counts.new, old=counts.old)
        await self.channel.play(summary, barge_in=True)
        while True:
            key = await self.menu_key([P_MAIN_MENU])
            if key is None:
                return "idle"
            if key == "1":
                if not await self.messages():
                    return "idle"
            elif key == "2":
                await self.record_greeting()
            elif key == "3":
                await self.change_pin()
            elif key == "*":
                await _goodbye(self.channel)
                return "goodbye"
            elif key:
                await self.channel.play([P_INVALID], barge_in=True)

    def header(self, number: int, message: Message) -> list[str]:
        """ "Message two. Received yesterday at nine oh five a.m. from one zero one"."""
        zone = self.box.zone
        when = datetime.fromtimestamp(message.received, zone)  # zone None: the server's
        today = datetime.fromtimestamp(self.channel.wall(), zone).date()
        try:
            caller = ["from", *say_digits(message.caller)] if message.caller else [P_FROM_UNKNOWN]
        except ValueError:  # a name, "anonymous"...
            caller = [P_FROM_UNKNOWN]
        if caller == ["from"]:
            caller = [P_FROM_UNKNOWN]
        return ["message", *say_number(number), P_RECEIVED, *say_datetime(when, today), *caller]

    async def play_message(self, number: int, message: Message) -> str | None:
        """The header and the recording; the key that stopped them, or None."""
        key = await self.channel.play(self.header(number, message), barge_in=True)
        if key is not None:
            return key
        audio = await self.box.audio(message.id)
        if audio is None:
            self._log("voicemail_audio_missing", id=message.id)
            return await self.channel.play([P_CANNOT], barge_in=True)
        return await self.channel.play_audio(audio, barge_in=True)

    async def mark(self, message: Message, folder: str) -> Message:
        if message.folder != folder:
            await self.box.move(message.id, folder)
            self._log("voicemail_moved", id=message.id, folder=folder)
        return replace(message, folder=folder)

    async def messages(self) -> bool:
        """Play the messages with their keys; False when the caller left by idling."""
        messages = _ordered(await self.box.messages())
        index = 0
        while 0 <= index < len(messages):
            message = messages[index]
            self.channel.flush_digits()
            stopped = await self.play_message(index + 1, message)
            if stopped is None and message.is_new:  # heard to the end
                message = messages[index] = await self.mark(message, OLD)
            key = await self.message_key(stopped is not None)
            if key is None:
                return False
            if key == "1":
                continue
            if key == "2":
                messages[index] = await self.mark(message, OLD)
                index += 1
            elif key == "3":
                await self.box.delete(message.id)
                self._log("voicemail_deleted", id=message.id)
                del messages[index]
                await self.channel.play([P_DELETED], barge_in=True)
            elif key == "4":
                messages[index] = await self.mark(message, SAVED)
                await self.channel.play([P_SAVED], barge_in=True)
                index += 1
            elif key == "*":
                index = max(0, index - 1)
            elif key == "#":
                return True
        await self.channel.play([P_NO_MORE], barge_in=True)
        return True

    async def message_key(self, pressed: bool) -> str | None:
        """The key pressed during the message, else one from the message menu (an invalid
        key plays the menu again)."""
        if pressed:
            got = await self.channel.collect(
                max_digits=1, terminators="", first_digit_timeout=KEY_TIMEOUT
            )
            if got.digits in ("1", "2", "3", "4", "*", "#"):
                self.idle = 0
                return got.digits
        before: list[str] = [P_INVALID] if pressed else []
        while True:
            key = await self.menu_key([*before, P_MESSAGE_MENU])
            if key is None or key in ("1", "2", "3", "4", "*", "#"):
                return key
            before = [P_INVALID] if key else []

    async def record_greeting(self) -> None:
        """Record a new greeting (kept only when usable and ended by the caller)."""
        channel = self.channel
        await channel.play([P_RECORD_GREETING], barge_in=False)
        channel.flush_digits()
        await channel.play([BEEP], barge_in=False)
        recording = await channel.record(
            max_seconds=GREETING_MAX_SECONDS, silence_seconds=SILENCE_SECONDS, terminators="#"
        )
        problem = unusable(recording)
        if recording.reason == "hangup":
            raise ChannelClosedError("the caller hung up while recording a greeting")
        if problem is not None:
            self._log("voicemail_greeting_discarded", why=problem)
            await channel.play([P_TRY_AGAIN], barge_in=True)
            return
        await self.box.save_greeting(recording.wav)
        self._log("voicemail_greeting_saved", seconds=f"{recording.seconds:.2f}")
        await channel.play([P_GREETING_SAVED], barge_in=True)

    async def change_pin(self) -> None:
        """Ask a new PIN and store it when it is 4 to 16 digits."""
        pin = await _entry(self.channel, P_ENTER_NEW_PIN)
        if not is_valid_pin(pin):
            self._log("voicemail_pin_refused", length=len(pin))
            await self.channel.play([P_TRY_AGAIN], barge_in=True)
            return
        await self.box.set_pin(pin)
        self._log("voicemail_pin_changed")
        await self.channel.play([P_PIN_CHANGED], barge_in=True)


async def retrieve(channel: Channel, lookup: MailboxLookup, own: bool) -> str:
    """Let the caller listen to a box (``own``: the caller's, ``*97``; else any box, after
    its number, ``*98``); see the module doc for the keys. Returns the outcome for the
    log: ``goodbye``, ``idle``, ``login_failed``, ``no_mailbox`` or ``caller_hung_up``."""
    try:
        box = await (_login_own(channel, lookup) if own else _login_any(channel, lookup))
        if isinstance(box, str):
            return box
        return await _Session(channel, box).run()
    except ChannelClosedError:
        return "caller_hung_up"


__all__ = [
    "DEFAULT_MAX_SECONDS",
    "MIN_SECONDS",
    "NEW",
    "OLD",
    "SAVED",
    "Counts",
    "Mailbox",
    "MailboxLookup",
    "Message",
    "PinCheck",
    "PinGuard",
    "count",
    "default_greeting",
    "deposit",
    "is_valid_pin",
    "parse_target",
    "retrieve",
    "unusable",
]
