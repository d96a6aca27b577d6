"""Parsing and checking of a users CSV file (``minipbx user import``), without the database.

Format: a header row naming the columns (any order, case-insensitive): ``extension`` and
``password`` required, ``name``, ``email`` and ``domain`` optional; then one user per row.
Blank lines are skipped; a row's line number is the physical line it starts on (the header
is line 1).
The database checks (unknown domain, extension taken) are done by
:meth:`minipbx.store.repos.SqlUserRepo.import_csv`, which reports them together with these.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from minipbx.store.errors import ImportProblem, InvalidInputError
from minipbx.store.records import (
    check_email,
    check_extension,
    check_name,
    check_password,
    normalize_domain,
)

REQUIRED_COLUMNS = ("extension", "password")
OPTIONAL_COLUMNS = ("name", "email", "domain")
_EXPECTED = "extension,password[,name,email,domain]"


@dataclass(frozen=True, slots=True)
class CsvUser:
    """One checked row: ``domain`` None means the default tenant."""

    line: int
    extension: str
    password: str
    name: str
    email: str | None
    domain: str | None


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    """The good rows and the problems of a CSV text; ``header_ok`` False means no rows."""

    users: list[CsvUser]
    problems: list[ImportProblem]
    header_ok: bool


def parse_users_csv(text: str) -> ParsedCsv:
    """Parse and check every row of ``text``; never raises for bad content."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    problems: list[ImportProblem] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return ParsedCsv([], [ImportProblem(reader.line_num or 1, f"bad CSV: {exc}")], False)
    columns, header_problem = _check_header(header)
    if header_problem is not None:
        return ParsedCsv([], [ImportProblem(1, header_problem)], False)
    users: list[CsvUser] = []
    while True:
        line = reader.line_num + 1  # where the record starts (it may span lines)
        try:
            row = next(reader, None)
        except csv.Error as exc:
            problems.append(ImportProblem(line, f"bad CSV: {exc}"))
            break  # the reader cannot resynchronise after a quoting error
        if row is None:
            break
        if not any(field.strip() for field in row):
            continue
        user = _check_row(line, row, columns, problems)
        if user is not None:
            users.append(user)
    return ParsedCsv(users, problems, True)


def _check_header(header: list[str] | None) -> tuple[list[str], str | None]:
    if header is None:
        return [], f"empty file: expected a header row {_EXPECTED}"
    columns = [name.strip().lower() for name in header]
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    unknown = [name for name in columns if name not in known]
    if unknown:
        return columns, f"bad header: unknown column {unknown[0]!r} (expected {_EXPECTED})"
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        return columns, f"bad header: column {duplicated[0]!r} given twice"
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        return columns, f"bad header: missing column {missing[0]!r} (expected {_EXPECTED})"
    return columns, None


def _check_row(
    line: int, row: list[str], columns: list[str], problems: list[ImportProblem]
) -> CsvUser | None:
    if len(row) > len(columns):
        problems.append(ImportProblem(line, f"{len(row)} fields, the header has {len(columns)}"))
        return None
    values = dict(zip(columns, row, strict=False))
    try:
        extension = check_extension(values.get("extension", "").strip())
        password = check_password(values.get("password", ""))
        name = check_name(values.get("name", ""))
        email = check_email(values.get("email"))
        raw_domain = values.get("domain", "").strip()
        domain = normalize_domain(raw_domain) if raw_domain else None
    except InvalidInputError as exc:
        problems.append(ImportProblem(line, str(exc)))
        return None
    return CsvUser(line, extension, password, name, email, domain)
