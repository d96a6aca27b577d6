"""Charge arithmetic against a deliberately naive model, edge cases, max_seconds, RateIndex.

The model walks the call second by second and the increments block by block, and keeps
money as exact fractions, rounded half up to integer 1/10000s only at the end: nothing of
the implementation's integer shortcuts is shared.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minipbx.pbx.charging import (
    NOT_AFFORDABLE,
    Charge,
    RateError,
    RateIndex,
    RateRule,
    billed_seconds,
    charge,
    for_display,
    max_seconds,
)
from minipbx.store.pbxrecords import RateRecord

T0 = datetime(2030, 1, 1, tzinfo=UTC)


# --- the naive model -----------------------------------------------------------------------


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def model(seconds: int, rate: RateRule) -> tuple[int, int, int]:
    """(fee, duration cost) in integer 1/10000 and billed seconds, the slow way."""
    chargeable = 0
    for second in range(seconds):  # second by second: the free ones first
        if second >= rate.free_seconds:
            chargeable += 1
    billed = 0
    if chargeable:
        chargeable = max(chargeable, rate.min_duration)
        step = rate.first_increment
        while billed < chargeable:  # increment by increment
            billed += step
            step = rate.next_increment
    per_second = Fraction(rate.price_per_minute) / 60
    duration = _round_half_up(per_second * billed * 10_000)
    fee = _round_half_up(Fraction(rate.connection_fee) * 10_000)
    return fee, duration, billed


def units(amount: Decimal) -> int:
    scaled = amount * 10_000
    assert scaled == scaled.to_integral_value(), f"{amount} has more than 4 decimals"
    return int(scaled)


# --- strategies ----------------------------------------------------------------------------


def money(most: int) -> st.SearchStrategy[Decimal]:
    """Amounts up to ``most`` with 6 decimals (as the store keeps them)."""
    return st.integers(0, most * 10**6).map(lambda n: Decimal(n).scaleb(-6))


@st.composite
def rates(draw: st.DrawFn, *, free_price: bool = False, cheapest: int = 0) -> RateRule:
    """Rates; ``cheapest``: the least price per minute, in millionths."""
    increments = st.sampled_from([1, 6, 30, 60]) | st.integers(1, 120)
    price = st.integers(cheapest, 5 * 10**6).map(lambda n: Decimal(n).scaleb(-6))
    return RateRule(
        prefix=draw(st.text("0123456789", max_size=6)),
        price_per_minute=Decimal(0) if free_price else draw(price),
        connection_fee=draw(st.sampled_from([Decimal(0)]) | money(2)),
        first_increment=draw(increments),
        next_increment=draw(increments),
        min_duration=draw(st.sampled_from([0]) | st.integers(0, 300)),
        free_seconds=draw(st.sampled_from([0]) | st.integers(0, 300)),
    )


# --- charge against the model --------------------------------------------------------------


@given(rates(), st.integers(0, 4000))
@settings(max_examples=500)
def test_charge_matches_the_naive_model(rate: RateRule, seconds: int) -> None:
    result = charge(seconds, rate)
    fee, duration, billed = model(seconds, rate)
    assert (units(result.fee), units(result.duration_cost), result.billed_seconds) == (
        fee,
        duration,
        billed,
    )
    assert result.total == result.fee + result.duration_cost
    assert result.total.as_tuple().exponent == -4  # stored with 4 places


@given(rates(), st.integers(0, 4000))
def test_charge_never_decreases_with_duration(rate: RateRule, seconds: int) -> None:
    assert charge(seconds, rate).total <= charge(seconds + 1, rate).total


@given(rates(), st.integers(0, 4000))
def test_billed_time_covers_the_chargeable_time_by_less_than_one_increment(
    rate: RateRule, seconds: int
) -> None:
    chargeable = max(seconds - rate.free_seconds, 0)
    billed = billed_seconds(seconds, rate)
    if chargeable == 0:
        assert billed == 0
        return
    wanted = max(chargeable, rate.min_duration)
    assert billed >= wanted
    step = rate.first_increment if billed == rate.first_increment else rate.next_increment
    assert billed - wanted < step


# --- edge cases ----------------------------------------------------------------------------

PER_MINUTE = RateRule("49", Decimal("0.60"), Decimal("0.10"))  # 60/60, 10 cents to connect


def test_zero_seconds_pays_the_fee_and_the_minimum() -> None:
    assert charge(0, PER_MINUTE) == Charge(
        Decimal("0.1000"), Decimal("0.0000"), Decimal("0.1000"), 0
    )
    with_minimum = RateRule(
        "1", Decimal("0.60"), min_duration=30, first_increment=1, next_increment=1
    )
    # 0 s: nothing chargeable, so no minimum either (only a fee, here none)
    assert charge(0, with_minimum).total == Decimal(0)
    assert charge(1, with_minimum) == Charge(Decimal(0), Decimal("0.3000"), Decimal("0.3000"), 30)


@pytest.mark.parametrize(
    ("seconds", "billed", "total"),
    [
        (1, 60, "0.7000"),
        (59, 60, "0.7000"),
        (60, 60, "0.7000"),  # exactly at the increment: not one more
        (61, 120, "1.3000"),
        (120, 120, "1.3000"),
        (121, 180, "1.9000"),
    ],
)
def test_whole_minutes(seconds: int, billed: int, total: str) -> None:
    result = charge(seconds, PER_MINUTE)
    assert (result.billed_seconds, result.total) == (billed, Decimal(total))


@pytest.mark.parametrize(
    ("seconds", "billed"), [(1, 30), (30, 30), (31, 36), (36, 36), (37, 42), (100, 102)]
)
def test_30_6_increments(seconds: int, billed: int) -> None:
    rate = RateRule("33", Decimal("0.12"), first_increment=30, next_increment=6)
    assert billed_seconds(seconds, rate) == billed
    assert charge(seconds, rate).duration_cost == Decimal("0.002") * billed


def test_free_seconds_longer_than_the_minimum() -> None:
    rate = RateRule(
        "7", Decimal("0.60"), min_duration=10, free_seconds=30, first_increment=1, next_increment=1
    )
    assert charge(30, rate).total == 0  # within the free seconds: free, minimum moot
    assert charge(31, rate).billed_seconds == 10  # 1 chargeable second billed as 10
    assert charge(45, rate).billed_seconds == 15
    assert charge(45, rate).total == Decimal("0.1500")


def test_fee_only_rate_is_unlimited_once_the_fee_is_paid() -> None:
    rate = RateRule("", Decimal(0), Decimal("0.25"))
    assert charge(10_000, rate).total == Decimal("0.2500")
    assert max_seconds(Decimal("0.25"), rate) is None
    assert max_seconds(Decimal("0.2499"), rate) == NOT_AFFORDABLE
    assert max_seconds(Decimal(0), RateRule("", Decimal(0))) is None  # free altogether


def test_rounding_is_half_up_to_four_places() -> None:
    # 0.00003 per minute for 60 s: 0.00003 -> 0.0000; 0.00005 -> 0.0001 (half up)
    assert charge(60, RateRule("1", Decimal("0.00003"))).total == Decimal("0.0000")
    assert charge(60, RateRule("1", Decimal("0.00005"))).total == Decimal("0.0001")
    # 1/60 of 0.01 per second, 1/1 increments: 7 s = 0.0011666... -> 0.0012
    assert charge(7, RateRule("1", Decimal("0.01"), first_increment=1, next_increment=1)).total == (
        Decimal("0.0012")
    )
    assert charge(0, RateRule("1", Decimal(0), Decimal("0.00015"))).fee == Decimal("0.0002")
    assert for_display(Decimal("1.2350")) == Decimal("1.24")


def test_rules_are_checked() -> None:
    with pytest.raises(RateError, match="first_increment"):
        RateRule("1", Decimal(1), first_increment=0)
    with pytest.raises(RateError, match="price_per_minute"):
        RateRule("1", Decimal("0.0000001"))
    with pytest.raises(RateError, match="price_per_minute"):
        RateRule("1", 0.5)  # type: ignore[arg-type]  # floats are refused
    with pytest.raises(RateError, match="connection_fee"):
        RateRule("1", Decimal(1), Decimal(-1))
    with pytest.raises(RateError, match="prefix"):
        RateRule("+1", Decimal(1))
    with pytest.raises(RateError, match="valid_until"):
        RateRule("1", Decimal(1), valid_from=T0, valid_until=T0)
    with pytest.raises(ValueError, match="negative"):
        charge(-1, PER_MINUTE)


# --- max_seconds ---------------------------------------------------------------------------


def model_max_seconds(available: Decimal, rate: RateRule, limit: int) -> int | None:
    """The longest duration up to ``limit`` the model charges no more than ``available``."""
    budget = Fraction(available) * 10_000
    best = NOT_AFFORDABLE
    for seconds in range(limit + 1):
        fee, duration, _ = model(seconds, rate)
        if fee + duration <= budget:
            best = seconds
    return best


@given(rates(), money(3))
@settings(max_examples=300)
def test_max_seconds_is_consistent_with_charge(rate: RateRule, available: Decimal) -> None:
    longest = max_seconds(available, rate)
    assume(rate.price_per_minute > 0)
    assert longest is not None
    if longest == NOT_AFFORDABLE:
        assert charge(0, rate).total > available
        return
    assert charge(longest, rate).total <= available < charge(longest + 1, rate).total


@given(rates(cheapest=500_000), st.integers(0, 30_000).map(lambda n: Decimal(n).scaleb(-4)))
@settings(max_examples=60)
def test_max_seconds_matches_a_linear_search(rate: RateRule, available: Decimal) -> None:
    longest = max_seconds(available, rate)
    assert longest is not None
    assert longest == model_max_seconds(available, rate, (longest if longest > 0 else 0) + 400)


def test_max_seconds_ends_at_the_last_paid_block() -> None:
    assert max_seconds(Decimal("1.30"), PER_MINUTE) == 120  # fee + two minutes
    assert max_seconds(Decimal("1.2999"), PER_MINUTE) == 60
    assert max_seconds(Decimal("0.0999"), PER_MINUTE) == NOT_AFFORDABLE
    assert max_seconds(Decimal("0.10"), PER_MINUTE) == 0  # the fee only: answer, no time
    per_second = RateRule("1", Decimal("0.60"), first_increment=1, next_increment=1)
    assert max_seconds(Decimal("0.30"), per_second) == 30
    # sub-unit amounts cannot buy anything more: 0.30009 is 0.3000 to spend
    assert max_seconds(Decimal("0.300099"), per_second) == 30
    free_first = RateRule("1", Decimal("0.60"), free_seconds=20, first_increment=60)
    assert max_seconds(Decimal("0.59"), free_first) == 20  # only the free part
    assert max_seconds(Decimal("0.60"), free_first) == 80


@given(rates(free_price=True), st.integers(0, 10**12).map(lambda n: Decimal(n).scaleb(-6)))
def test_zero_price_is_unlimited_when_the_fee_is_paid(rate: RateRule, available: Decimal) -> None:
    expected = None if charge(0, rate).total <= available else NOT_AFFORDABLE
    assert max_seconds(available, rate) == expected


def test_max_seconds_with_a_large_balance_is_fast_and_exact() -> None:
    rate = RateRule("1", Decimal("0.000001"), first_increment=1, next_increment=1)
    longest = max_seconds(Decimal("99999.99"), rate)
    assert longest is not None
    assert charge(longest, rate).total <= Decimal("99999.99") < charge(longest + 1, rate).total


# --- RateIndex -----------------------------------------------------------------------------


def test_longest_prefix_wins() -> None:
    index = RateIndex(
        [
            RateRule("", Decimal("1.00"), description="anywhere"),
            RateRule("4", Decimal("0.50")),
            RateRule("49", Decimal("0.10")),
            RateRule("4915", Decimal("0.30"), description="German mobiles"),
        ],
        "EUR",
    )
    assert len(index) == 4
    found = index.lookup("4915112345", T0)
    assert found is not None and found.description == "German mobiles"
    assert (r := index.lookup("+4930123", T0)) is not None and r.prefix == "49"
    assert (r := index.lookup("44207", T0)) is not None and r.prefix == "4"
    assert (r := index.lookup("1212", T0)) is not None and r.prefix == ""
    assert index.lookup("*900", T0) is None  # feature codes are never rated
    assert index.lookup("", T0) is None


def test_unrated_destination_is_none() -> None:
    index = RateIndex([RateRule("44", Decimal("0.10"))])
    assert index.lookup("33123", T0) is None
    assert RateIndex([]).lookup("33123", T0) is None


def test_validity_dates_choose_the_price_list() -> None:
    new_list = T0 + timedelta(days=30)
    index = RateIndex(
        [
            RateRule("49", Decimal("0.10")),  # open-ended, the fallback
            RateRule("49", Decimal("0.08"), valid_from=new_list),
            RateRule("4915", Decimal("0.30"), valid_until=T0),  # expired promotion
            RateRule("4916", Decimal("0.25"), valid_from=T0, valid_until=new_list),
        ]
    )

    def price(number: str, when: datetime) -> Decimal | None:
        rate = index.lookup(number, when)
        return None if rate is None else rate.price_per_minute

    assert price("4930", T0) == Decimal("0.10")
    assert price("4930", new_list) == Decimal("0.08")  # the new list from its first second
    assert price("4930", new_list - timedelta(microseconds=1)) == Decimal("0.10")
    assert price("491511", T0) == Decimal("0.10")  # until is exclusive: falls back to 49
    assert price("491511", T0 - timedelta(seconds=1)) == Decimal("0.30")
    assert price("491611", T0) == Decimal("0.25")
    assert price("491611", new_list) == Decimal("0.08")


def test_rule_from_a_stored_rate() -> None:
    record = RateRecord(
        id=7,
        rate_table_id=1,
        prefix="44",
        description="UK",
        connection_fee=Decimal("0.050000"),
        price_per_minute=Decimal("0.012500"),
        first_increment=30,
        next_increment=6,
        min_duration=10,
        free_seconds=5,
        valid_from=T0,
        valid_until=None,
    )
    rule = RateRule.of(record)
    assert (rule.id, rule.prefix, rule.first_increment, rule.next_increment) == (7, "44", 30, 6)
    assert charge(35, rule) == charge(
        35,
        RateRule(
            "44",
            Decimal("0.0125"),
            Decimal("0.05"),
            first_increment=30,
            next_increment=6,
            min_duration=10,
            free_seconds=5,
        ),
    )
