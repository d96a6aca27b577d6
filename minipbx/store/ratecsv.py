"""Rate tables as CSV (``minipbx rate import/export``), without the database.

Header (any order, case-insensitive)::

    prefix,description,connection_fee,price_per_minute,first_increment,next_increment,
    min_duration,free_seconds[,valid_from,valid_until]

``prefix`` and ``price_per_minute`` are required, the other columns optional (defaults:
those of :class:`~minipbx.store.models.Rate`). Amounts are decimals with a dot and at most 6
decimals (``0.0125``); ``valid_from``/``valid_until`` ISO 8601 with a UTC offset. Blank
lines are skipped; line numbers are physical lines (the header is line 1), as in
:mod:`minipbx.store.csvimport`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from minipbx.store.checks import invalid, validate
from minipbx.store.errors import ImportProblem, InvalidInputError
from minipbx.store.pbxrecords import RATE_CHECKS, RateRecord

COLUMNS = (
    "prefix",
    "description",
    "connection_fee",
    "price_per_minute",
    "first_increment",
    "next_increment",
    "min_duration",
    "free_seconds",
)
DATE_COLUMNS = ("valid_from", "valid_until")
REQUIRED = ("prefix", "price_per_minute")
# Values of the optional columns when absent (the models' defaults).
DEFAULTS: dict[str, Any] = {
    "description": "",
    "connection_fee": Decimal(0),
    "first_increment": 60,
    "next_increment": 60,
    "min_duration": 0,
    "free_seconds": 0,
    "valid_from": None,
    "valid_until": None,
}
_EXPECTED = ",".join(COLUMNS)


@dataclass(frozen=True, slots=True)
class CsvRate:
    """One checked row: every column of a rate, defaults filled in."""

    line: int
    values: dict[str, Any]


@dataclass(slots=True)
class ParsedRates:
    """The good rows and the problems of a rates CSV; ``header_ok`` False means no rows."""

    rates: list[CsvRate] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)
    header_ok: bool = True


def check_rate(fields: dict[str, Any]) -> dict[str, Any]:
    """Check a rate's fields (InvalidInputError names the field) and fill the defaults."""
    values = {**DEFAULTS, **validate(RATE_CHECKS, fields)}
    for name in REQUIRED:
        if values.get(name) is None:
            raise invalid(name, "missing")
    start, end = values["valid_from"], values["valid_until"]
    if start is not None and end is not None and end <= start:
        raise invalid("valid_until", "must be after valid_from")
    return values


def _records(text: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line, row, None) per CSV record, or (line, None, error) where the CSV breaks."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, None, f"bad CSV: {exc}"
            return  # the reader cannot resynchronise after a quoting error
        yield line, row, None


def _header_problem(columns: list[str]) -> str | None:
    known = COLUMNS + DATE_COLUMNS
    unknown = [name for name in columns if name not in known]
    if unknown:
        return f"bad header: unknown column {unknown[0]!r} (expected {_EXPECTED})"
    twice = sorted({name for name in columns if columns.count(name) > 1})
    if twice:
        return f"bad header: column {twice[0]!r} given twice"
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        return f"bad header: missing column {missing[0]!r} (expected {_EXPECTED})"
    return None


def parse_rates_csv(text: str) -> ParsedRates:
    """Parse and check every row of ``text``; never raises for bad content."""
    parsed = ParsedRates()
    records = _records(text)
    line, header, error = next(records, (1, None, None))
    if header is None:
        empty = error or f"empty file: expected a header row {_EXPECTED}"
        return ParsedRates([], [ImportProblem(line, empty)], header_ok=False)
    columns = [name.strip().lower() for name in header]
    problem = _header_problem(columns)
    if problem is not None:
        return ParsedRates([], [ImportProblem(1, problem)], header_ok=False)
    for line, row, error in records:
        if row is None:
            parsed.problems.append(ImportProblem(line, error or "bad CSV"))
        elif len(row) > len(columns):
            parsed.problems.append(
                ImportProblem(line, f"{len(row)} fields, the header has {len(columns)}")
            )
        elif any(value.strip() for value in row):
            fields = {name: value for name, value in zip(columns, row, strict=False) if value != ""}
            fields.setdefault("prefix", "")
            try:
                parsed.rates.append(CsvRate(line, check_rate(fields)))
            except InvalidInputError as exc:
                parsed.problems.append(ImportProblem(line, str(exc)))
    return parsed


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def format_rates_csv(rates: Iterable[RateRecord]) -> str:
    """The CSV text of ``rates``; the date columns only when some rate has a date."""
    rates = list(rates)
    dated = any(r.valid_from is not None or r.valid_until is not None for r in rates)
    columns = COLUMNS + DATE_COLUMNS if dated else COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for rate in rates:
        writer.writerow([_cell(getattr(rate, name)) for name in columns])
    return out.getvalue()
