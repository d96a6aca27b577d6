"""Dial plans: which rule routes a called number, and what it becomes (pure, no I/O).

A dial plan is an ordered list of :class:`Rule`. A rule matches the called number with a
:class:`Pattern`:

- a plain prefix (digits, ``*``, ``#``, ``+``): ``9``, ``0044``, ``*97``; the empty prefix
  matches every number;
- or a pattern, written with a leading ``_`` or recognised by its wildcards:
  ``X`` any digit, ``Z`` 1-9, ``N`` 2-9, ``[1-5]`` / ``[136]`` a digit of the set, ``.`` one
  or more further characters, ``!`` zero or more; everything else is literal. A pattern
  without ``.`` or ``!`` matches numbers of exactly its length (``9NXXXXXX``, ``_X.``,
  ``011.``).

The most specific matching rule wins, as in miniSipServer's longest-prefix matching: more
literal characters first, then more constrained positions (``N``, ``X``...), then a fixed
length; equal rules go by position. A rule also needs its caller pattern to match the caller
number, its level at or below the caller's call level, and its time condition to hold;
when the best rule fails one of those, the next best is tried (so a business-hours rule and
an after-hours rule can share a pattern). :meth:`DialPlan.decide` returns the
:class:`Decision` with the explanation a dry run shows.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_PREFIX = re.compile(r"[0-9*#+]*")
_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}
_LITERAL = frozenset("0123456789*#+")


class DialPlanError(ValueError):
    """A rule, pattern or time condition that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled called/caller number pattern (see the module docstring)."""

    text: str
    regex: re.Pattern[str] | None  # None: a plain prefix
    literals: int  # literal characters
    classes: int  # constrained positions (X, Z, N, [..])
    fixed_length: bool

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Compile ``text``; :class:`DialPlanError` names the offending character."""
        raw = text.strip()
        forced = raw.startswith("_")
        body = raw[1:] if forced else raw
        if not forced and _PREFIX.fullmatch(body):
            return cls(raw, None, len(body), 0, False)
        if not body:
            raise DialPlanError(f"pattern {text!r} is empty after '_'")
        regex, literals, classes, fixed = _compile(body, text)
        return cls(raw, regex, literals, classes, fixed)

    def matches(self, number: str) -> bool:
        """True when ``number`` matches (a prefix matches every number starting with it)."""
        if self.regex is None:
            return number.startswith(self.text)
        return self.regex.fullmatch(number) is not None

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: higher is more specific."""
        return (self.literals, self.classes, 1 if self.fixed_length else 0)


def _compile(body: str, text: str) -> tuple[re.Pattern[str], int, int, bool]:
    out: list[str] = []
    literals = classes = 0
    fixed = True
    i = 0
    while i < len(body):
        ch = body[i]
        upper = ch.upper()
        if ch in _LITERAL:
            out.append(re.escape(ch))
            literals += 1
        elif upper in _CLASSES:
            out.append(_CLASSES[upper])
            classes += 1
        elif ch == "[":
            end = body.find("]", i)
            inner = body[i + 1 : end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"(?:[0-9](?:-[0-9])?)+", inner):
                raise DialPlanError(f"pattern {text!r}: bad digit set at position {i + 1}")
            out.append(f"[{inner}]")
            classes += 1
            i = end
        elif ch in ".!" and i == len(body) - 1:
            out.append(".+" if ch == "." else ".*")
            fixed = False
        else:
            raise DialPlanError(
                f"pattern {text!r}: unexpected {ch!r} at position {i + 1} "
                "(use digits * # +, X Z N, [1-5], and . or ! at the end)"
            )
        i += 1
    return re.compile("".join(out)), literals, classes, fixed


def to_e164(number: str, country: str, *, international: str = "00", national: str = "0") -> str:
    """``number`` in E.164 form (``+`` and digits) where it can tell: ``00...`` -> ``+...``,
    ``0...`` -> ``+<country>...``; an E.164 number stays, anything else (a short or
    subscriber number, a feature code) is left as dialled."""
    if number.startswith("+") or not number.isdigit():
        return number
    if international and number.startswith(international):
        return "+" + number[len(international) :]
    if national and number.startswith(national):
        return "+" + country + number[len(national) :]
    return number


# --- time conditions -------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Days of the week (0 = Monday) and the time ranges [start, end) on them."""

    days: frozenset[int]
    ranges: tuple[tuple[time, time], ...]  # empty: the whole day

    def holds(self, moment: datetime) -> bool:
        if moment.weekday() not in self.days:
            return False
        now = moment.time()
        return not self.ranges or any(start <= now < end for start, end in self.ranges)


@dataclass(frozen=True, slots=True)
class TimeCondition:
    """When a rule applies: any of ``windows`` (none: always), except on ``holidays``.

    Written as clauses separated by ``;``: ``mon-fri 08:00-12:00,13:00-17:30``,
    ``sat 09:00-12:00``, ``not 2026-12-25`` (a date) or ``not 12-25`` (every year),
    ``tz Europe/Paris`` (default: the server's local time zone). Times are local to that
    zone; a range ending at ``24:00`` runs to midnight.
    """

    text: str
    windows: tuple[TimeWindow, ...]
    holidays: frozenset[date]
    yearly: frozenset[tuple[int, int]]
    zone: tzinfo | None

    @classmethod
    def parse(cls, text: str) -> TimeCondition:
        """Compile ``text``; :class:`DialPlanError` names the clause that is wrong."""
        windows: list[TimeWindow] = []
        holidays: set[date] = set()
        yearly: set[tuple[int, int]] = set()
        zone: tzinfo | None = None
        for clause in (c.strip() for c in text.split(";")):
            if not clause:
                continue
            word, _, rest = clause.partition(" ")
            word, rest = word.lower(), rest.strip()
            try:
                if word == "tz":
                    zone = ZoneInfo(rest)
                elif word == "not":
                    _holiday(rest, holidays, yearly)
                else:
                    windows.append(_window(clause))
            except (ValueError, ZoneInfoNotFoundError) as exc:
                raise DialPlanError(f"time condition clause {clause!r}: {exc}") from None
        return cls(text, tuple(windows), frozenset(holidays), frozenset(yearly), zone)

    def holds(self, wall: float) -> bool:
        """True when the condition holds at wall-clock time ``wall`` (Unix seconds)."""
        moment = datetime.fromtimestamp(wall, self.zone) if self.zone else _local(wall)
        day = moment.date()
        if day in self.holidays or (day.month, day.day) in self.yearly:
            return False
        return not self.windows or any(w.holds(moment) for w in self.windows)


def _local(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC).astimezone()


def _holiday(text: str, holidays: set[date], yearly: set[tuple[int, int]]) -> None:
    for item in text.replace(",", " ").split():
        if item.count("-") == 2:
            holidays.add(date.fromisoformat(item))
        else:
            month, _, day = item.partition("-")
            date(2000, int(month), int(day))  # validates (2000 is a leap year)
            yearly.add((int(month), int(day)))


def _window(clause: str) -> TimeWindow:
    parts = clause.split()
    days: set[int] = set()
    ranges: list[tuple[time, time]] = []
    for part in parts:
        if _RANGE.match(part):
            ranges += [_time_range(r) for r in part.split(",")]
        else:
            days |= _days(part)
    return TimeWindow(frozenset(days or range(7)), tuple(ranges))


def _days(text: str) -> set[int]:
    out: set[int] = set()
    for item in text.lower().split(","):
        if item == "*":
            return set(range(7))
        first, _, last = item.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"unknown day {item!r} (use mon..sun, ranges like mon-fri)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        out |= set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(b + 1))
    return out


def _time_range(text: str) -> tuple[time, time]:
    found = _RANGE.fullmatch(text)
    if not found:
        raise ValueError(f"bad time range {text!r} (use HH:MM-HH:MM)")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    start = time(h1, m1)
    end = time.max if (h2, m2) == (24, 0) else time(h2, m2)
    if end <= start:
        raise ValueError(f"time range {text!r} ends before it starts")
    return start, end


# --- rules and decisions --------------------------------------------------------------------


class Action(enum.Enum):
    """What a rule does with a call."""

    LOCAL = "local"  # ring a user of the tenant (target: extension, or the routed number)
    FOLLOWME = "followme"  # the follow-me list of a user
    TRUNK = "trunk"  # out through a trunk (target: trunk name; failover: second trunk)
    SERVICE = "service"  # a PBX service (voicemail, attendant, calling card...)
    REJECT = "reject"  # answer with ``reject_status``


@dataclass(frozen=True, slots=True)
class Rule:
    """One dial plan rule (validated when built from stored text by :func:`make_rule`)."""

    position: int
    pattern: Pattern
    action: Action
    target: str = ""
    failover: str | None = None
    caller: Pattern | None = None
    level: int = 1
    when: TimeCondition | None = None
    strip: int = 0
    prepend: str = ""
    caller_id: str | None = None
    reject_status: int | None = None
    max_seconds: int | None = None
    enabled: bool = True
    id: int | None = None

    def rewrite(self, number: str) -> str:
        """The number as routed: ``strip`` leading characters removed, ``prepend`` added."""
        return self.prepend + number[self.strip :]


def make_rule(
    *,
    position: int,
    pattern: str,
    action: str,
    target: str = "",
    failover: str | None = None,
    caller_pattern: str | None = None,
    level: int = 1,
    time_condition: str = "",
    strip: int = 0,
    prepend: str = "",
    caller_id: str | None = None,
    reject_status: int | None = None,
    max_seconds: int | None = None,
    enabled: bool = True,
    id: int | None = None,
) -> Rule:
    """A :class:`Rule` from its stored fields; :class:`DialPlanError` names a bad field."""
    try:
        kind = Action(action)
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise DialPlanError(f"action: {action!r} is not one of {choices}") from None
    if kind is Action.REJECT and not (reject_status and 400 <= reject_status <= 699):
        raise DialPlanError("reject_status: a reject rule needs a status from 400 to 699")
    if kind in (Action.TRUNK, Action.SERVICE, Action.FOLLOWME) and not target:
        raise DialPlanError(f"target: a {kind.value} rule needs a target")
    if strip < 0 or not _PREFIX.fullmatch(prepend):
        raise DialPlanError("strip/prepend: strip >= 0; prepend only digits * # +")
    if max_seconds is not None and max_seconds <= 0:
        raise DialPlanError("max_seconds: must be positive (or empty for no limit)")
    if level < 1:
        raise DialPlanError("level: must be 1 or more")
    return Rule(
        position=position,
        pattern=Pattern.parse(pattern),
        action=kind,
        target=target,
        failover=failover or None,
        caller=Pattern.parse(caller_pattern) if caller_pattern else None,
        level=level,
        when=TimeCondition.parse(time_condition) if time_condition.strip() else None,
        strip=strip,
        prepend=prepend,
        caller_id=caller_id or None,
        reject_status=reject_status,
        max_seconds=max_seconds,
        enabled=enabled,
        id=id,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one call: the rule chosen (None: no rule) and what it yields."""

    rule: Rule | None
    number: str  # as routed
    status: int = 0  # the answer when nothing can be rung (404 no rule, reject status)
    explanation: tuple[str, ...] = ()

    @property
    def action(self) -> Action | None:
        """The chosen rule's action."""
        return self.rule.action if self.rule is not None else None


@dataclass(frozen=True, slots=True)
class DialPlan:
    """A named dial plan; rules in any order (specificity, then position, decides)."""

    name: str
    rules: tuple[Rule, ...]
    id: int | None = None
    ordered: tuple[Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = sorted(
            (r for r in self.rules if r.enabled),
            key=lambda r: (tuple(-v for v in r.pattern.specificity), r.position),
        )
        object.__setattr__(self, "ordered", tuple(ordered))

    def candidates(self, number: str) -> Iterable[Rule]:
        """Enabled rules whose pattern matches ``number``, best first."""
        return (r for r in self.ordered if r.pattern.matches(number))

    def decide(self, number: str, *, caller: str, level: int, wall: float) -> Decision:
        """The rule for a call from ``caller`` (call level ``level``) to ``number`` now."""
        notes: list[str] = []
        for rule in self.candidates(number):
            label = f"rule {rule.position} ({rule.pattern.text})"
            if rule.caller is not None and not rule.caller.matches(caller):
                notes.append(f"{label}: caller {caller} does not match {rule.caller.text}")
            elif rule.level > level:
                notes.append(f"{label}: needs call level {rule.level}, caller has {level}")
            elif rule.when is not None and not rule.when.holds(wall):
                notes.append(f"{label}: outside its time condition ({rule.when.text})")
            else:
                notes.append(f"{label}: matches, {rule.action.value} {rule.target}".rstrip())
                status = (rule.reject_status or 0) if rule.action is Action.REJECT else 0
                return Decision(rule, rule.rewrite(number), status, tuple(notes))
        notes.append(f"no rule of dial plan {self.name!r} routes {number!r}")
        return Decision(None, number, 404, tuple(notes))


__all__ = [
    "Action",
    "Decision",
    "DialPlan",
    "DialPlanError",
    "Pattern",
    "Rule",
    "TimeCondition",
    "make_rule",
]
