"""Dial plan matching: patterns, specificity, conditions, rewriting (pure, property tests)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.pbx.dialplan import (
    Action,
    DialPlan,
    DialPlanError,
    Pattern,
    TimeCondition,
    make_rule,
    to_e164,
)

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    """Wall-clock seconds of a local time in ``zone``."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def plan(*rules: dict[str, object]) -> DialPlan:
    return DialPlan("test", tuple(make_rule(position=i, **r) for i, r in enumerate(rules)))  # type: ignore[arg-type]


# --- patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("9", ["9", "912345", "9*"], ["", "8", "19"]),
        ("", ["", "1", "*97"], []),
        ("*97", ["*97", "*971"], ["*9", "97"]),
        ("9NXXXXXX", ["92345678", "99999999"], ["91234567", "9234567", "923456789"]),
        ("011.", ["0111", "01144207"], ["011", "012345"]),
        ("_X.", ["12", "999"], ["1", "*1", ""]),
        ("_ZXX", ["100", "999"], ["099", "10", "1000"]),
        ("_1[2-4]!", ["12", "14999", "13"], ["15", "1"]),
        ("_[136]X", ["10", "69"], ["20", "1"]),
        ("_+X.", ["+33", "+4420"], ["33", "+"]),
        ("_*9X", ["*90", "*99"], ["*9", "#90"]),
    ],
)
def test_pattern_semantics(pattern: str, yes: list[str], no: list[str]) -> None:
    compiled = Pattern.parse(pattern)
    for number in yes:
        assert compiled.matches(number), (pattern, number)
    for number in no:
        assert not compiled.matches(number), (pattern, number)


@pytest.mark.parametrize(
    ("pattern", "where"),
    [("9Q", "'Q' at position 2"), ("_1[2-", "digit set"), ("_", "empty"), ("9.X", "'.'")],
)
def test_bad_patterns_say_where(pattern: str, where: str) -> None:
    with pytest.raises(DialPlanError, match=where.replace("[", r"\[")):
        Pattern.parse(pattern)


def _reference(pattern: str, number: str) -> bool:
    """A slow, obviously right matcher for X/Z/N/digits and a final '.' or '!'."""
    if not pattern:
        return not number
    head, rest = pattern[0], pattern[1:]
    if head == "." and not rest:
        return len(number) >= 1
    if head == "!" and not rest:
        return True
    if not number:
        return False
    allowed = {"X": "0123456789", "Z": "123456789", "N": "23456789"}.get(head, head)
    return number[0] in allowed and _reference(rest, number[1:])


@given(
    st.text("0123456789XZN", min_size=1, max_size=6),
    st.sampled_from(["", ".", "!"]),
    st.text("0123456789", max_size=9),
)
def test_patterns_agree_with_a_reference_matcher(body: str, tail: str, number: str) -> None:
    assert Pattern.parse("_" + body + tail).matches(number) == _reference(body + tail, number)


@given(
    st.lists(st.text("0123", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
    st.text("0123", min_size=0, max_size=6),
)
def test_longest_prefix_wins(prefixes: list[str], number: str) -> None:
    rules = [{"pattern": p, "action": "local", "target": p} for p in prefixes]
    decision = plan(*rules).decide(number, caller="100", level=1, wall=0.0)
    matching = [p for p in prefixes if number.startswith(p)]
    if not matching:
        assert decision.rule is None and decision.status == 404
    else:
        assert decision.rule is not None
        assert decision.rule.target == max(matching, key=len)


def test_specificity_literals_then_classes_then_position() -> None:
    rules = plan(
        {"pattern": "9", "action": "trunk", "target": "any"},
        {"pattern": "9NXXXXXX", "action": "trunk", "target": "local8"},
        {"pattern": "_9.", "action": "trunk", "target": "dot"},
        {"pattern": "91", "action": "trunk", "target": "mobile"},
        {"pattern": "91", "action": "trunk", "target": "second"},
    )
    pick = lambda n: rules.decide(n, caller="1", level=1, wall=0).rule.target  # noqa: E731
    assert pick("92345678") == "local8"  # 1 literal + 7 classes beats the prefix 9
    assert pick("9123") == "mobile"  # 2 literals; equal rules go by position
    assert pick("95") == "any"  # '9' (1 literal) and '_9.' (1 literal): position
    assert pick("9") == "any"


# --- conditions and decisions -----------------------------------------------------------


def test_time_condition_windows_holidays_and_zone() -> None:
    cond = TimeCondition.parse(
        "mon-fri 08:00-12:00,13:00-17:30; sat 09:00-12:00; not 2026-12-25; not 01-01; "
        "tz Europe/Paris"
    )
    assert cond.holds(at("2026-11-26T08:00"))  # Thursday
    assert not cond.holds(at("2026-11-26T12:30"))  # lunch
    assert not cond.holds(at("2026-11-26T17:30"))  # end is exclusive
    assert cond.holds(at("2026-11-28T11:59"))  # Saturday
    assert not cond.holds(at("2026-11-29T10:00"))  # Sunday
    assert not cond.holds(at("2026-12-25T10:00"))  # a Friday, but a holiday
    assert not cond.holds(at("2027-01-01T10:00"))  # every year
    # Zone: 07:30 UTC is 08:30 in Paris in winter.
    assert cond.holds(datetime.fromisoformat("2026-11-26T07:30+00:00").timestamp())
    midnight = TimeCondition.parse("sun-mon 22:00-24:00; tz UTC")
    assert midnight.holds(datetime.fromisoformat("2026-11-29T23:59:59+00:00").timestamp())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mon-fry 08:00-10:00", "unknown day"),
        ("mon 10:00-09:00", "ends before"),
        ("mon 25:00-26:00", "hour"),
        ("not 2026-02-30", "day"),
        ("tz Mars/Olympus", "Mars"),
    ],
)
def test_bad_time_conditions_name_the_clause(text: str, fragment: str) -> None:
    with pytest.raises(DialPlanError, match="clause") as info:
        TimeCondition.parse(text)
    assert fragment in str(info.value)


def test_fall_through_on_conditions_with_explanation() -> None:
    rules = plan(
        {
            "pattern": "0",
            "action": "trunk",
            "target": "day",
            "time_condition": "mon-fri 08:00-18:00; tz Europe/Paris",
        },
        {"pattern": "0", "action": "service", "target": "voicemail"},
        {
            "pattern": "00",
            "action": "trunk",
            "target": "intl",
            "level": 3,
            "strip": 2,
            "prepend": "+",
        },
        {"pattern": "0800", "action": "reject", "reject_status": 403, "caller_pattern": "_2XX"},
    )
    office = at("2026-11-26T10:00")
    night = at("2026-11-26T22:00")
    day = rules.decide("0123", caller="100", level=1, wall=office)
    assert day.rule is not None and day.rule.target == "day"
    after = rules.decide("0123", caller="100", level=1, wall=night)
    assert after.action is Action.SERVICE
    assert any("outside its time condition" in n for n in after.explanation)
    low = rules.decide("0044123", caller="100", level=1, wall=office)
    assert low.rule is not None and low.rule.target == "day"  # level 3 needed for '00'
    assert any("needs call level 3" in n for n in low.explanation)
    high = rules.decide("0044123", caller="100", level=3, wall=office)
    assert high.rule is not None and high.number == "+44123"
    rejected = rules.decide("0800123", caller="200", level=1, wall=office)
    assert rejected.action is Action.REJECT and rejected.status == 403
    other = rules.decide("0800123", caller="100", level=1, wall=office)
    assert other.action is Action.TRUNK  # caller 100 is not _2XX


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"action": "dial"}, "action"),
        ({"action": "reject"}, "reject_status"),
        ({"action": "reject", "reject_status": 200}, "reject_status"),
        ({"action": "trunk"}, "target"),
        ({"action": "local", "strip": -1}, "strip"),
        ({"action": "local", "prepend": "9a"}, "prepend"),
        ({"action": "local", "max_seconds": 0}, "max_seconds"),
        ({"action": "local", "level": 0}, "level"),
        ({"action": "local", "pattern": "9?"}, "pattern"),
        ({"action": "local", "time_condition": "someday"}, "time condition"),
    ],
)
def test_bad_rules_name_the_field(fields: dict[str, object], name: str) -> None:
    values: dict[str, object] = {"position": 1, "pattern": "1", **fields}
    with pytest.raises(DialPlanError, match=name):
        make_rule(**values)  # type: ignore[arg-type]


def test_disabled_rules_are_ignored() -> None:
    rules = plan(
        {"pattern": "1", "action": "local", "target": "a", "enabled": False},
        {"pattern": "", "action": "local", "target": "b"},
    )
    chosen = rules.decide("123", caller="1", level=1, wall=0).rule
    assert chosen is not None and chosen.target == "b"


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("02071234567", "+442071234567"),
        ("0033123456", "+33123456"),
        ("+15551234", "+15551234"),
        ("1234", "1234"),  # a subscriber number: no area code to add
        ("*97", "*97"),
        ("", ""),
    ],
)
def test_to_e164(number: str, e164: str) -> None:
    assert to_e164(number, "44") == e164
