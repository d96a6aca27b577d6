"""CDR export as CSV or JSON (``minipbx cdr export``; the console's download uses it too).

Columns are :data:`~minipbx.store.cdrs.CDR_FIELDS` in that order (the billing details
``rate_prefix`` .. ``card_number`` last), times in ISO 8601 UTC with milliseconds, money and
durations as decimal strings (no float rounding); a value not set (the billing details of a
call that was not priced) is empty in CSV and null in JSON. Records are read a page at a
time, so an export of millions of rows runs in constant memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from minipbx.store.cdrs import CDR_FIELDS, CdrRecord, SqlCdrRepo

PAGE = 1000


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value)
    return value


def export_row(record: CdrRecord) -> dict[str, Any]:
    """The record's exported fields (JSON-ready: strings, numbers, null)."""
    return {name: _text(getattr(record, name)) for name in CDR_FIELDS}


async def _pages(
    repo: SqlCdrRepo, since: datetime | None, until: datetime | None
) -> AsyncIterator[list[CdrRecord]]:
    after = 0
    while True:
        page = await repo.between(since, until, after_id=after, limit=PAGE)
        if not page:
            return
        yield page
        after = page[-1].id or after


async def write_cdrs(
    repo: SqlCdrRepo,
    out: TextIO,
    fmt: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the CDRs that ended in ``[since, until)`` to ``out`` as ``csv`` or ``json``.

    Returns how many were written. JSON is one array of objects.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown CDR export format {fmt!r} (csv or json)")
    count = 0
    writer = csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n")
    if fmt == "csv":
        writer.writeheader()
    else:
        out.write("[")
    async for page in _pages(repo, since, until):
        for record in page:
            row = export_row(record)
            if fmt == "csv":
                writer.writerow(row)
            else:
                out.write(("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False))
            count += 1
    if fmt == "json":
        out.write("\n]\n" if count else "]\n")
    return count
