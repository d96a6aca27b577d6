"""What an answered call costs under a rate, and how long a balance lets a call last (pure).

Money is :class:`~decimal.Decimal` only (rates come from the store with at most 6 decimals);
the arithmetic below is done in exact integers, never floats. The rules, in order, for an
answered call of ``seconds`` whole seconds (the CDR's ``billable_seconds``):

1. **Free seconds**: the first ``free_seconds`` of the call cost nothing. What is left is the
   *chargeable* time, ``max(seconds - free_seconds, 0)``.
2. **Minimum duration**: chargeable time that is not zero is at least ``min_duration``
   seconds. A call that ends within its free seconds stays free (the minimum applies to the
   chargeable part only, so free seconds longer than the minimum make the minimum moot).
3. **Increments**: chargeable time is rounded *up*: first to ``first_increment`` seconds,
   then beyond that to whole blocks of ``next_increment`` seconds (60/60: whole minutes;
   30/6: half a minute, then 6-second steps; 1/1: per second). The result is
   :attr:`Charge.billed_seconds`.
4. **Duration cost**: ``price_per_minute * billed_seconds / 60`` (prorated per second of
   billed time), rounded **half up to 4 decimal places** (0.0001).
5. **Connection fee**: charged once for every answered call (a call answered and hung up at
   once pays it too; an unanswered call is not charged at all and is never passed here),
   rounded half up to 4 decimal places.
6. **Total** = fee + duration cost, exact (so 4 decimal places): what the ledger debits and
   the CDR's ``cost`` holds. Balances are *shown* and *said* with 2 decimals, truncated
   (:func:`minipbx.media.prompts.say_amount`): a balance is never overstated.

:func:`max_seconds` inverts :func:`charge`: the longest answered duration whose total is
within an available amount, such that ``charge(m).total <= available < charge(m + 1).total``.
:class:`RateIndex` finds the rate of a number: the longest matching prefix among the rates
valid at a moment; a number no rate covers is *unrated* (None), and the router refuses
such calls (toll-fraud guard). See ``docs/billing.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from minipbx.store.pbxrecords import RateRecord

#: Quantum of charges (4 decimal places) and of display (2).
CHARGE_STEP = Decimal("0.0001")
DISPLAY_STEP = Decimal("0.01")
#: What :func:`max_seconds` answers when not even the connection fee is affordable.
NOT_AFFORDABLE = -1

_MICRO = 10**6  # rates have at most 6 decimals: amounts in integer millionths
_UNITS = 10**4  # charges are integers of 1/10000
_MAX_INCREMENT = 86_400


class RateError(ValueError):
    """A rate that cannot be charged with (the message names the field)."""


def _micro(field: str, value: Decimal) -> int:
    """``value`` in exact millionths; RateError unless a non-negative Decimal with <= 6 dp."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise RateError(f"{field}: expected a finite Decimal, got {value!r}")
    scaled = value * _MICRO
    if value < 0 or scaled != scaled.to_integral_value():
        raise RateError(f"{field}: {value} must be >= 0 with at most 6 decimals")
    return int(scaled)


def _half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _money(units: int) -> Decimal:
    """Integer 1/10000s as a Decimal with 4 places."""
    return (Decimal(units) / _UNITS).quantize(CHARGE_STEP)


@dataclass(frozen=True, slots=True)
class RateRule:
    """One rate of a rate table (checked when built: RateError names the field)."""

    prefix: str
    price_per_minute: Decimal
    connection_fee: Decimal = Decimal(0)
    first_increment: int = 60
    next_increment: int = 60
    min_duration: int = 0
    free_seconds: int = 0
    description: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if not self.prefix.isdigit() and self.prefix != "":
            raise RateError(f"prefix: {self.prefix!r} must be digits")
        _micro("price_per_minute", self.price_per_minute)
        _micro("connection_fee", self.connection_fee)
        for name, low in (
            ("first_increment", 1),
            ("next_increment", 1),
            ("min_duration", 0),
            ("free_seconds", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RateError(f"{name}: expected an int, got {value!r}")
            if not low <= value <= _MAX_INCREMENT:
                raise RateError(f"{name}: {value} is not between {low} and {_MAX_INCREMENT}")
        start, end = self.valid_from, self.valid_until
        if start is not None and end is not None and end <= start:
            raise RateError("valid_until: must be after valid_from")

    @classmethod
    def of(cls, record: RateRecord) -> RateRule:
        """The rule of a stored rate."""
        return cls(
            prefix=record.prefix,
            price_per_minute=record.price_per_minute,
            connection_fee=record.connection_fee,
            first_increment=record.first_increment,
            next_increment=record.next_increment,
            min_duration=record.min_duration,
            free_seconds=record.free_seconds,
            description=record.description,
            valid_from=record.valid_from,
            valid_until=record.valid_until,
            id=record.id,
        )

    def valid_at(self, when: datetime) -> bool:
        """True when ``valid_from <= when < valid_until`` (open ends always hold)."""
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when < self.valid_until

    @property
    def free(self) -> bool:
        """True when duration costs nothing (only the fee is charged): no duration limit."""
        return self.price_per_minute == 0


@dataclass(frozen=True, slots=True)
class Charge:
    """The cost of one answered call (amounts with 4 decimal places)."""

    fee: Decimal
    duration_cost: Decimal
    total: Decimal
    billed_seconds: int  # chargeable seconds after free seconds, minimum and increments


def billed_seconds(seconds: int, rate: RateRule) -> int:
    """Rules 1-3 of the module docstring: the seconds the duration price applies to."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    chargeable = seconds - rate.free_seconds
    if chargeable <= 0:
        return 0
    chargeable = max(chargeable, rate.min_duration)
    first = rate.first_increment
    if chargeable <= first:
        return first
    blocks = -(-(chargeable - first) // rate.next_increment)  # ceiling division
    return first + blocks * rate.next_increment


def _units(seconds: int, rate: RateRule) -> tuple[int, int, int]:
    """(fee, duration cost) in 1/10000 and the billed seconds."""
    billed = billed_seconds(seconds, rate)
    fee = _half_up(_micro("connection_fee", rate.connection_fee), _MICRO // _UNITS)
    price = _micro("price_per_minute", rate.price_per_minute)
    # price/10^6 * billed/60 in 1/10^4 units = price * billed / 6000
    duration = _half_up(price * billed, 60 * _MICRO // _UNITS)
    return fee, duration, billed


def charge(seconds: int, rate: RateRule) -> Charge:
    """The cost of a call answered for ``seconds`` whole seconds (module docstring)."""
    fee, duration, billed = _units(seconds, rate)
    return Charge(_money(fee), _money(duration), _money(fee + duration), billed)


def _affordable_units(available: Decimal) -> int:
    """The largest whole number of 1/10000 that is <= ``available``."""
    if not isinstance(available, Decimal) or not available.is_finite():
        raise ValueError(f"expected a finite Decimal amount, got {available!r}")
    return int((available * _UNITS).to_integral_value(rounding=ROUND_FLOOR))


def max_seconds(available: Decimal, rate: RateRule) -> int | None:
    """The longest answered duration (whole seconds) whose :func:`charge` total is at most
    ``available``.

    None: unlimited (the rate has no duration price and the fee is affordable);
    :data:`NOT_AFFORDABLE` (-1): not even the connection fee is. Otherwise ``m`` with
    ``charge(m).total <= available < charge(m + 1).total``: the end of the last block the
    money pays for in full (with 60/60 increments and money for two minutes: 120).
    """
    budget = _affordable_units(available)

    def fits(seconds: int) -> bool:
        fee, duration, _ = _units(seconds, rate)
        return fee + duration <= budget

    if not fits(0):
        return NOT_AFFORDABLE
    if rate.free:
        return None
    low, high = 0, rate.free_seconds + 1  # fits(low); find a high that does not fit
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:  # charge is non-decreasing in seconds: bisect
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def for_display(amount: Decimal) -> Decimal:
    """An amount as the console shows it: 2 decimals, half up (prompts truncate instead)."""
    return amount.quantize(DISPLAY_STEP, rounding=ROUND_HALF_UP)


class RateIndex:
    """A rate table searchable by number: longest prefix among the rates valid then.

    Several rates may share a prefix with different validity (a price list loaded ahead of
    time); the one valid at the moment asked wins, the latest ``valid_from`` first when
    several are. A longer prefix with no rate valid then falls back to a shorter one.
    """

    def __init__(self, rates: Iterable[RateRule], currency: str = "") -> None:
        self.currency = currency
        by_prefix: dict[str, list[RateRule]] = {}
        for rate in rates:
            by_prefix.setdefault(rate.prefix, []).append(rate)
        for found in by_prefix.values():
            found.sort(key=_newest_first)
        self._by_prefix = by_prefix
        self._longest = max((len(p) for p in by_prefix), default=0)

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_prefix.values())

    def lookup(self, number: str, when: datetime) -> RateRule | None:
        """The rate of ``number`` (a leading ``+`` is ignored) at ``when``; None: unrated."""
        digits = number[1:] if number.startswith("+") else number
        if not digits.isdigit():
            return None  # *codes, letters: never rated, so never charged for
        for length in range(min(len(digits), self._longest), -1, -1):
            for rate in self._by_prefix.get(digits[:length], ()):
                if rate.valid_at(when):
                    return rate
        return None


def _newest_first(rate: RateRule) -> float:
    return -rate.valid_from.timestamp() if rate.valid_from is not None else float("inf")
