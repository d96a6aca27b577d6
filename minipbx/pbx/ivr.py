"""The auto attendant (IVR): menus as data, and the coroutine that runs one call through them.

A tenant's menus are named :class:`IvrMenu` objects. A call reaches the attendant through
a dial plan rule ``service`` with target ``ivr:<menu name>`` (:func:`menu_of_target`), or
from an inbound trunk routed the same way; :func:`run_ivr` then drives the call's
:class:`~minipbx.pbx.channel.Channel`:

1. Business hours: when the menu has ``hours`` and they do not hold at ``channel.wall()``,
   its ``after_hours`` menu runs instead (followed again if that one is closed too).
2. The greeting plays with barge-in: the first key stops it.
3. Input, without dial-by-extension: one key, waited for ``timeout`` seconds after the
   greeting. With dial-by-extension: keys until ``#``, ``max_digits`` keys or
   ``digit_timeout`` seconds without a key. **Precedence**: a complete input that is
   exactly one option key runs that option (so options on digit keys keep working, the
   caller presses ``#`` after the key or waits ``digit_timeout``); a longer input of digits
   is an extension, transferred as :attr:`TransferKind.USER` (the router decides whether
   it exists: its status tells). ``#`` pressed first is the ``#`` option. An option key
   wins outright only when dial-by-extension is off.
4. An unknown key (or an unknown extension) plays ``invalid_prompt`` (the router's 404
   plays ``ivr_invalid_extension``) and the menu again; no key at all plays the menu again.
   Each of those uses one of the ``retries``; when none are left the ``timeout_action``
   runs (hang up by default, or e.g. a transfer to the operator).
5. Transfers: 200 means the call left the attendant (``call_transferring`` plays first,
   except before voicemail). A failure plays ``call_busy`` / ``call_no_answer`` /
   ``ivr_invalid_extension`` / ``call_unavailable`` and the menu again (a failed
   ``timeout_action`` transfer says goodbye and hangs up instead).

Every step (one greeting and its input) counts against ``max_steps``, so no configuration
keeps a call in the attendant for ever; menus that send a silent caller round in a circle
are refused by :func:`validate_menus` anyway (``after_hours`` and ``timeout_action`` menu
links must not cycle; loops through option keys are fine, the caller drives them).

Pure: no sockets, clock or randomness; the channel gives ``now()`` and ``wall()``.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from minipbx.pbx.channel import Channel, ChannelClosedError, CollectEnd, TransferKind
from minipbx.pbx.dialplan import DialPlanError, TimeCondition

log = logging.getLogger("minipbx.ivr")

KEYS = frozenset("0123456789*#")
PROMPT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # as minipbx.media.prompts names them
MENU_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,63}")
EXTENSION = re.compile(r"[A-Za-z0-9+*#._\-]{1,64}")
DIALABLE = re.compile(r"[0-9*#+]{1,64}")
TARGET_PREFIX = "ivr:"

# Limits (seconds, counts) the validation enforces.
TIMEOUT_RANGE = (1.0, 60.0)
DIGIT_TIMEOUT_RANGE = (0.5, 30.0)
RETRIES_RANGE = (0, 10)
MAX_DIGITS_RANGE = (1, 20)
MAX_GREETING = 20

# Prompts the attendant plays besides the menus' own.
GOODBYE = "goodbye"
TRANSFERRING = "call_transferring"
BUSY = "call_busy"
NO_ANSWER = "call_no_answer"
INVALID_EXTENSION = "ivr_invalid_extension"
INVALID_OPTION = "invalid_option"

UNAVAILABLE = "call_unavailable"

_BUSY_STATUSES = frozenset({486, 600})
_NO_ANSWER_STATUSES = frozenset({408, 480, 487})
_UNKNOWN_STATUSES = frozenset({404, 410, 484, 604})


class IvrError(ValueError):
    """A menu that cannot be used; the message starts with the field at fault."""


class IvrActionKind(enum.Enum):
    """What a key (or the end of the retries) does."""

    USER = "user"  # ring a local extension (its own forwarding applies)
    FOLLOWME = "followme"  # the follow-me list of a user
    VOICEMAIL = "voicemail"  # leave a message in a user's mailbox
    MENU = "menu"  # go to another menu (target: its name)
    NUMBER = "number"  # a number routed through the caller's dial plan (e.g. a trunk)
    HANGUP = "hangup"  # say goodbye and hang up
    REPEAT = "repeat"  # play the menu again

    @property
    def needs_target(self) -> bool:
        """True for the actions that go somewhere named by a target."""
        return self not in (IvrActionKind.HANGUP, IvrActionKind.REPEAT)


_TRANSFERS = {
    IvrActionKind.USER: TransferKind.USER,
    IvrActionKind.FOLLOWME: TransferKind.FOLLOWME,
    IvrActionKind.VOICEMAIL: TransferKind.VOICEMAIL,
    IvrActionKind.NUMBER: TransferKind.NUMBER,
}


def parse_action(text: str, field_name: str = "action") -> IvrActionKind:
    """The action named ``text``; IvrError listing the choices otherwise."""
    try:
        return IvrActionKind(text.strip().lower())
    except ValueError:
        choices = ", ".join(a.value for a in IvrActionKind)
        raise IvrError(f"{field_name}: {text!r} is not one of {choices}") from None


def _check_target(kind: IvrActionKind, target: str, field_name: str) -> None:
    if not kind.needs_target:
        if target:
            raise IvrError(f"{field_name}: a {kind.value} action takes no target")
        return
    if not target:
        raise IvrError(f"{field_name}: a {kind.value} action needs a target")
    pattern, hint = {
        IvrActionKind.MENU: (MENU_NAME, "a menu name"),
        IvrActionKind.NUMBER: (DIALABLE, "digits, + * #"),
    }.get(kind, (EXTENSION, "an extension"))
    if not pattern.fullmatch(target):
        raise IvrError(f"{field_name}: {target!r} is not {hint}")


@dataclass(frozen=True, slots=True)
class IvrOption:
    """What key ``key`` does: ``action`` with ``target`` (extension, menu name, number;
    empty for hangup and repeat). Checked when built."""

    key: str
    action: IvrActionKind
    target: str = ""

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise IvrError(f"key: {self.key!r} is not one of 0-9 * #")
        _check_target(self.action, self.target, "target")


def _within(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise IvrError(f"{name}: {value:g} is not between {low:g} and {high:g}")


def _prompt(name: str, value: str) -> None:
    if not PROMPT_NAME.fullmatch(value):
        raise IvrError(f"{name}: {value!r} is not a prompt name (a-z first, then a-z 0-9 _)")


@dataclass(frozen=True, slots=True)
class IvrMenu:
    """One menu of the attendant (see the module doc for how it runs). Checked when built;
    references to other menus are checked by :func:`validate_menus`."""

    name: str
    greeting: tuple[str, ...]
    options: Mapping[str, IvrOption] = field(default_factory=dict)
    dial_by_extension: bool = False
    max_digits: int = 4
    timeout: float = 5.0  # seconds for the first key after the greeting
    digit_timeout: float = 3.0  # seconds between keys of an extension
    retries: int = 2  # invalid or missing input this many times more, then timeout_action
    invalid_prompt: str = INVALID_OPTION
    timeout_action: IvrActionKind = IvrActionKind.HANGUP
    timeout_target: str = ""
    hours: TimeCondition | None = None  # when set and not holding: after_hours runs
    after_hours: str | None = None

    def __post_init__(self) -> None:
        if not MENU_NAME.fullmatch(self.name):
            raise IvrError(f"name: {self.name!r} is not a menu name (letters, digits . _ @ + -)")
        if not self.greeting:
            raise IvrError("greeting: a menu needs at least one prompt")
        if len(self.greeting) > MAX_GREETING:
            raise IvrError(f"greeting: at most {MAX_GREETING} prompts")
        for prompt in self.greeting:
            _prompt("greeting", prompt)
        _prompt("invalid_prompt", self.invalid_prompt)
        for key, option in self.options.items():
            if key != option.key:
                raise IvrError(f"options: entry {key!r} holds the option of key {option.key!r}")
        _within("max_digits", self.max_digits, MAX_DIGITS_RANGE)
        _within("timeout", self.timeout, TIMEOUT_RANGE)
        _within("digit_timeout", self.digit_timeout, DIGIT_TIMEOUT_RANGE)
        _within("retries", self.retries, RETRIES_RANGE)
        if self.timeout_action is IvrActionKind.REPEAT:
            raise IvrError("timeout_action: repeat would never end; use menu, hangup or a transfer")
        _check_target(self.timeout_action, self.timeout_target, "timeout_target")
        if (self.hours is None) != (self.after_hours is None):
            raise IvrError(
                "after_hours: business hours and an after-hours menu go together "
                "(the after-hours menu runs when the hours do not hold)"
            )
        if self.after_hours is not None and self.after_hours == self.name:
            raise IvrError("after_hours: a menu cannot be its own after-hours menu")

    def is_open(self, wall: float) -> bool:
        """True when the menu itself runs at wall-clock time ``wall``."""
        return self.hours is None or self.hours.holds(wall)


def parse_hours(text: str) -> TimeCondition | None:
    """A menu's business hours from their stored text ("" for none); IvrError naming the
    clause that is wrong (the syntax of dial plan time conditions)."""
    if not text.strip():
        return None
    try:
        return TimeCondition.parse(text)
    except DialPlanError as exc:
        raise IvrError(f"hours: {exc}") from None


def menu_of_target(target: str) -> str | None:
    """The menu name of a dial plan service target ``ivr:<name>``, else None."""
    if not target.startswith(TARGET_PREFIX):
        return None
    return target[len(TARGET_PREFIX) :].strip() or None


# --- validation of a set of menus ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IvrProblem:
    """Something wrong between menus: the menu, its field (``options``, ``timeout_target``,
    ``after_hours``), the option key if any, and what is wrong."""

    menu: str
    field: str
    message: str
    key: str | None = None

    def __str__(self) -> str:
        where = f"option {self.key}" if self.key is not None else self.field
        return f"menu {self.menu!r} {where}: {self.message}"


def _links(menu: IvrMenu) -> Iterator[tuple[str, str | None, str]]:
    """(field, option key, menu name) of every menu ``menu`` names."""
    for option in menu.options.values():
        if option.action is IvrActionKind.MENU:
            yield "options", option.key, option.target
    if menu.timeout_action is IvrActionKind.MENU:
        yield "timeout_target", None, menu.timeout_target
    if menu.after_hours is not None:
        yield "after_hours", None, menu.after_hours


def _unattended(menu: IvrMenu) -> Iterator[tuple[str, str]]:
    """(field, menu name) of the links a caller who presses nothing may follow."""
    if menu.after_hours is not None:
        yield "after_hours", menu.after_hours
    if menu.timeout_action is IvrActionKind.MENU:
        yield "timeout_target", menu.timeout_target


def _cycle_from(menus: Mapping[str, IvrMenu], start: str) -> list[str] | None:
    """A path start -> ... -> start over unattended links, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        menu = menus.get(name)
        if menu is None:
            continue
        for _, nxt in _unattended(menu):
            if nxt == start:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def menu_problems(menus: Mapping[str, IvrMenu]) -> list[IvrProblem]:
    """Every problem between ``menus`` (by name): unknown menus referenced, menu names that
    differ from their keys, and cycles a silent caller would go round for ever."""
    problems: list[IvrProblem] = []
    for name, menu in menus.items():
        if name != menu.name:
            problems.append(IvrProblem(name, "name", f"is stored as {menu.name!r}"))
        for field_name, key, target in _links(menu):
            if target not in menus:
                problems.append(IvrProblem(name, field_name, f"no menu {target!r}", key))
        cycle = _cycle_from(menus, name)
        if cycle is not None:
            first = next(f for f, nxt in _unattended(menu) if nxt == cycle[1])
            path = " -> ".join(cycle)
            message = f"{path} goes round for ever for a caller who presses nothing"
            problems.append(IvrProblem(name, first, message))
    return problems


def validate_menus(menus: Mapping[str, IvrMenu]) -> list[str]:
    """The problems of ``menus`` as messages (empty: the set is usable)."""
    return [str(problem) for problem in menu_problems(menus)]


def check_menus(menus: Mapping[str, IvrMenu]) -> None:
    """Raise IvrError listing every problem of ``menus`` (see :func:`validate_menus`)."""
    problems = validate_menus(menus)
    if problems:
        raise IvrError("; ".join(problems))


# --- running a call --------------------------------------------------------------------------

Outcome = str | None
"""What an action led to: None to go on with the current menu, else how the run ended."""


def failure_prompt(status: int, *, dialled: bool) -> str:
    """The prompt for a failed transfer: busy, no answer, unknown extension (only for what
    the caller dialled: a configured target that does not exist is "not available"), or
    not available (anything else)."""
    if status in _BUSY_STATUSES:
        return BUSY
    if status in _NO_ANSWER_STATUSES:
        return NO_ANSWER
    if dialled and status in _UNKNOWN_STATUSES:
        return INVALID_EXTENSION
    return UNAVAILABLE


class _Run:
    """One call's walk through the menus (the state of :func:`run_ivr`)."""

    def __init__(self, channel: Channel, menus: Mapping[str, IvrMenu], max_steps: int) -> None:
        self.channel = channel
        self.menus = menus
        self.max_steps = max_steps
        self.steps = 0
        self.menu: IvrMenu | None = None
        self.attempts = 0
        self.before: list[str] = []  # prompts to play before the next greeting

    def _log(self, event: str, **fields: object) -> None:
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        name = self.menu.name if self.menu is not None else ""
        log.info("event=%s call_id=%s menu=%s%s", event, self.channel.call_id, name, extra)

    def enter(self, name: str) -> Outcome:
        """Go to menu ``name`` (or to the after-hours menu it leads to now)."""
        wall, first = self.channel.wall(), name
        for _ in range(len(self.menus) + 1):
            menu = self.menus.get(name)
            if menu is None:
                log.error("event=ivr_unknown_menu call_id=%s menu=%s", self.channel.call_id, name)
                return f"error: no menu {name}"
            self.menu = menu
            if menu.is_open(wall) or menu.after_hours is None:
                self.attempts = 0
                self._log("ivr_menu")
                return None
            self._log("ivr_after_hours", after_hours=menu.after_hours)
            name = menu.after_hours
        return f"error: the after-hours menus of {first} go round"

    async def step(self) -> Outcome:
        """Play the current menu, take the input and act on it."""
        assert self.menu is not None
        menu = self.menu
        self.steps += 1
        if self.steps > self.max_steps:
            self._log("ivr_max_steps", steps=self.max_steps)
            await self.goodbye()
            return "max_steps"
        prompts = [*self.before, *menu.greeting]
        self.before = []
        await self.channel.play(prompts, barge_in=True)
        if menu.dial_by_extension:
            got = await self.channel.collect(
                max_digits=menu.max_digits,
                terminators="#",
                first_digit_timeout=menu.timeout,
                inter_digit_timeout=menu.digit_timeout,
            )
            digits = got.digits or ("#" if got.reason is CollectEnd.TERMINATOR else "")
        else:
            got = await self.channel.collect(
                max_digits=1, terminators="", first_digit_timeout=menu.timeout
            )
            digits = got.digits
        return await self.handle(menu, digits)

    async def handle(self, menu: IvrMenu, digits: str) -> Outcome:
        """Act on a complete input ("" when nothing was pressed)."""
        if not digits:
            self._log("ivr_no_input", attempt=self.attempts + 1)
            return await self.retry(menu, [])
        option = menu.options.get(digits) if len(digits) == 1 else None
        if option is not None:
            self._log("ivr_key", key=digits, action=option.action.value)
            return await self.act(option.action, option.target)
        if menu.dial_by_extension and digits.isdigit():
            self._log("ivr_dialled", extension=digits)
            status = await self.transfer(IvrActionKind.USER, digits)
            if status == 200:
                return f"transferred user {digits}"
            if status in _UNKNOWN_STATUSES:
                return await self.retry(menu, [INVALID_EXTENSION])
            self.before = [failure_prompt(status, dialled=True)]
            return None
        self._log("ivr_invalid", key=digits, attempt=self.attempts + 1)
        return await self.retry(menu, [menu.invalid_prompt])

    async def retry(self, menu: IvrMenu, prompts: list[str]) -> Outcome:
        """Count a failed attempt: the menu again after ``prompts``, or the timeout action."""
        self.attempts += 1
        if self.attempts <= menu.retries:
            self.before = prompts
            return None
        if prompts:
            await self.channel.play(prompts, barge_in=False)
        kind, target = menu.timeout_action, menu.timeout_target
        self._log("ivr_retries_exhausted", action=kind.value)
        if kind not in _TRANSFERS:
            return await self.act(kind, target)
        status = await self.transfer(kind, target)
        if status == 200:
            return f"transferred {kind.value} {target}"
        await self.channel.play([failure_prompt(status, dialled=False)], barge_in=False)
        await self.goodbye()
        return f"hangup after failed transfer {kind.value} {target}"

    async def act(self, kind: IvrActionKind, target: str) -> Outcome:
        """Run an action (an option's, or the timeout action)."""
        if kind is IvrActionKind.MENU:
            return self.enter(target)
        if kind is IvrActionKind.REPEAT:
            return None  # the loop plays the menu again
        if kind is IvrActionKind.HANGUP:
            await self.goodbye()
            return "hangup"
        status = await self.transfer(kind, target)
        if status == 200:
            return f"transferred {kind.value} {target}"
        self.before = [failure_prompt(status, dialled=False)]
        return None

    async def transfer(self, kind: IvrActionKind, target: str) -> int:
        """Hand the call to ``target``: 200 (the call left the attendant) or why not."""
        if kind is not IvrActionKind.VOICEMAIL:
            await self.channel.play([TRANSFERRING], barge_in=False)
        self.channel.flush_digits()
        status = await self.channel.transfer(_TRANSFERS[kind], target)
        self._log("call_transferring", kind=kind.value, target=target, status=status)
        return status

    async def goodbye(self) -> None:
        """Say goodbye and hang up."""
        await self.channel.play([GOODBYE], barge_in=False)
        await self.channel.hangup("ivr")

    async def run(self, start: str) -> str:
        """Walk the menus from ``start`` until an action ends the run."""
        outcome = self.enter(start)
        if outcome is None:
            log.info(
                "event=ivr_start call_id=%s caller=%s", self.channel.call_id, self.channel.caller
            )
        while outcome is None:
            outcome = await self.step()
        if outcome.startswith("error"):
            await self.channel.hangup("ivr error")
        return outcome


async def run_ivr(
    channel: Channel, menus: Mapping[str, IvrMenu], start: str, *, max_steps: int = 50
) -> str:
    """Run the attendant on ``channel`` from menu ``start`` (see the module doc).

    Returns what happened, for logs: ``transferred user 101``, ``hangup``,
    ``caller_hung_up`` (:class:`ChannelClosedError` was raised: the caller hung up, nothing
    more is done), ``hangup after failed transfer ...``, ``max_steps`` or ``error: ...``
    (an unknown menu: the call is hung up). IvrError if ``max_steps`` is not positive.
    """
    if max_steps < 1:
        raise IvrError(f"max_steps: {max_steps} is not positive")
    run = _Run(channel, menus, max_steps)
    try:
        outcome = await run.run(start)
    except ChannelClosedError:
        outcome = "caller_hung_up"
    log.info("event=ivr_end call_id=%s outcome=%r steps=%d", channel.call_id, outcome, run.steps)
    return outcome


def options_of(options: Sequence[IvrOption]) -> dict[str, IvrOption]:
    """Options by key; IvrError naming a key given twice."""
    found: dict[str, IvrOption] = {}
    for option in options:
        if option.key in found:
            raise IvrError(f"options: key {option.key!r} is given twice")
        found[option.key] = option
    return found


__all__ = [
    "KEYS",
    "IvrActionKind",
    "IvrError",
    "IvrMenu",
    "IvrOption",
    "IvrProblem",
    "check_menus",
    "failure_prompt",
    "menu_of_target",
    "menu_problems",
    "options_of",
    "parse_action",
    "parse_hours",
    "run_ivr",
    "validate_menus",
]
