"""Field checks for repository input: each names the field in its InvalidInputError.

A check is a function ``check(field, value) -> normalized value``; the factories here build
them, and :func:`validate` applies a table of them (field name -> check) to keyword
arguments, refusing fields the table does not know. Web forms and CSV files hand in text,
so numbers, money and flags also accept their usual string forms.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from minipbx.store.errors import InvalidInputError

Check = Callable[[str, Any], Any]

MONEY_STEP = Decimal("0.000001")  # models.MONEY has 6 decimals...
MONEY_LIMIT = Decimal(10) ** 10  # ...and 16 digits in all
INT_MAX = 2**31 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

DIGITS = re.compile(r"[0-9]+")
#: Numbers as dialed or forwarded to: digits, letters (extensions), + * # . _ -
NUMBER = re.compile(r"[A-Za-z0-9+*#._\-]+")
#: Names operators type (trunks, dial plans, rate tables, usernames, setting keys).
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+\-]*")


def invalid(field: str, reason: str) -> InvalidInputError:
    """The error for a bad value: ``invalid <field>: <reason>``."""
    return InvalidInputError(f"invalid {field}: {reason}")


def validate(checks: Mapping[str, Check], values: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``checks`` to ``values``; InvalidInputError for a bad value or unknown field."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        check = checks.get(name)
        if check is None:
            raise InvalidInputError(f"unknown field {name!r} (known: {', '.join(sorted(checks))})")
        checked[name] = check(name, value)
    return checked


def text(
    max_len: int | None = None,
    *,
    required: bool = False,
    nullable: bool = False,
    pattern: re.Pattern[str] | None = None,
    hint: str = "",
    multiline: bool = False,
    strip: bool = True,
) -> Check:
    """A string, stripped if ``strip`` (not for passwords); ``nullable``: "" gives None.

    ``multiline`` allows line breaks and tabs; other control characters are refused.
    """
    control = _CONTROL_BUT_LINES if multiline else _CONTROL

    def check(field: str, value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise invalid(field, f"expected text, got {type(value).__name__}")
        result = value.strip() if strip else value
        if not result:
            if nullable:
                return None
            if required:
                raise invalid(field, "cannot be empty")
            return result
        if max_len is not None and len(result) > max_len:
            raise invalid(field, f"longer than {max_len} characters")
        if control.search(result):
            raise invalid(field, "contains a control character")
        if pattern is not None and pattern.fullmatch(result) is None:
            raise invalid(field, f"{result!r} is not allowed{f' ({hint})' if hint else ''}")
        return result

    return check


def integer(lo: int | None = 0, hi: int | None = INT_MAX, *, nullable: bool = False) -> Check:
    """An int in ``[lo, hi]`` (a decimal string is accepted); ``nullable``: None or ""."""

    def check(field: str, value: Any) -> int | None:
        if nullable and (value is None or value == ""):
            return None
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(field, f"expected a whole number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise invalid(field, f"{value} is not between {lo} and {hi}")
        return value

    return check


def flag() -> Check:
    """A bool (or one of the strings 1/0, true/false, yes/no, on/off)."""

    def check(field: str, value: Any) -> bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
        if not isinstance(value, bool):
            raise invalid(field, f"expected true or false, got {value!r}")
        return value

    return check


def choice(*options: str) -> Check:
    """One of ``options`` (compared lower-case)."""

    def check(field: str, value: Any) -> str:
        lowered = value.strip().lower() if isinstance(value, str) else value
        if lowered not in options:
            raise invalid(field, f"{value!r} is not one of {', '.join(options)}")
        return str(lowered)

    return check


def parse_money(field: str, value: Any) -> Decimal:
    """A Decimal with at most 6 decimals and under 10^10 in size (strings accepted)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise invalid(field, f"expected an amount, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise invalid(field, f"{value!r} is not a decimal number") from None
    if not amount.is_finite() or abs(amount) >= MONEY_LIMIT:
        raise invalid(field, f"{value!r} is out of range")
    if amount != amount.quantize(MONEY_STEP):
        raise invalid(field, f"{value!r} has more than 6 decimals")
    return amount.quantize(MONEY_STEP)


def money(*, lo: Decimal | None = None, nullable: bool = False) -> Check:
    """An amount (see :func:`parse_money`) no smaller than ``lo``."""

    def check(field: str, value: Any) -> Decimal | None:
        if nullable and (value is None or value == ""):
            return None
        amount = parse_money(field, value)
        if lo is not None and amount < lo:
            raise invalid(field, f"{amount} is below {lo}")
        return amount

    return check


def moment(*, nullable: bool = True) -> Check:
    """An aware datetime, or an ISO 8601 string with a UTC offset (``Z`` allowed)."""

    def check(field: str, value: Any) -> datetime | None:
        if nullable and (value is None or value == ""):
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise invalid(field, f"{value!r} is not an ISO 8601 date and time") from None
        if not isinstance(value, datetime):
            raise invalid(field, f"expected a date and time, got {value!r}")
        if value.tzinfo is None:
            raise invalid(field, f"{value.isoformat()} has no time zone (add Z or +00:00)")
        return value

    return check


def upper(check: Check) -> Check:
    """Upper-case a string before ``check``."""
    return lambda field, value: check(field, value.upper() if isinstance(value, str) else value)


def currency() -> Check:
    """An ISO 4217 code (upper-cased) or "" for none."""
    return upper(text(3, pattern=re.compile(r"[A-Z]{3}"), hint="a currency code like EUR"))


def cidr_list() -> Check:
    """Comma-separated IPv4/IPv6 networks or addresses, normalised (``10.0.0.0/8,::1/128``),
    or ``address:port`` / ``[v6-address]:port`` for one source port only."""

    def check(field: str, value: Any) -> str:
        raw = text(multiline=False)(field, value)
        networks = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            try:
                networks.append(_source(item))
            except ValueError:
                raise invalid(field, f"{item!r} is not an IP network or address:port") from None
        return ",".join(networks)

    return check


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_source(item: str) -> IpNetwork | tuple[str, int]:
    """An ``allowed_ips`` entry: a network (an address is a /32 or /128), or
    ``address:port`` / ``[v6-address]:port`` as ``(address, port)``; ValueError otherwise."""
    host, sep, port = item.rpartition(":")
    if sep and (item.count(":") == 1 or host.startswith("[")):
        address = ipaddress.ip_address(host.strip("[]"))
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(item)
        return str(address), number
    return ipaddress.ip_network(item, strict=False)


def _source(item: str) -> str:
    """An ``allowed_ips`` entry, normalised."""
    parsed = parse_source(item)
    if isinstance(parsed, tuple):
        address, port = parsed
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return str(parsed)


def name_list(max_len: int) -> Check:
    """Comma-separated tokens (codec names), spaces removed, none empty."""

    def check(field: str, value: Any) -> str:
        raw = text(max_len, required=True)(field, value)
        items = [part.strip() for part in raw.split(",")]
        if not all(re.fullmatch(r"[A-Za-z0-9.\-/]+", item) for item in items):
            raise invalid(field, f"{raw!r} is not a comma-separated list of names")
        return ",".join(items)

    return check


def json_object() -> Check:
    """A JSON object, as text or as a dict (stored compact, keys sorted)."""

    def check(field: str, value: Any) -> str:
        if isinstance(value, str):
            try:
                value = json.loads(value or "{}")
            except ValueError as exc:
                raise invalid(field, f"not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise invalid(field, "expected a JSON object")
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise invalid(field, str(exc)) from None

    return check
