"""Storage errors: each carries a one-line message an operator can act on."""

from __future__ import annotations

from dataclasses import dataclass


class StoreError(Exception):
    """A storage failure (bad URL, unreachable or read-only database, bad input).

    ``str()`` is one line, fit for a CLI error or a log field; no SQL, no traceback.
    """


class InvalidInputError(StoreError):
    """A value given to a repository is malformed (extension, domain, password, ...)."""


class NotFoundError(StoreError):
    """The tenant or user named does not exist."""


class ConflictError(StoreError):
    """The write would duplicate a unique value (an extension in a tenant, a domain)."""


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """One bad row of a CSV import: the physical line number (1 = header) and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CsvImportError(StoreError):
    """A CSV import was rejected as a whole; ``problems`` lists every bad row."""

    def __init__(self, source: str, problems: list[ImportProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        rows = "row" if len(problems) == 1 else "rows"
        first = problems[0] if problems else ImportProblem(0, "no rows")
        super().__init__(f"{source}: {len(problems)} bad {rows}, nothing imported (first: {first})")

    def details(self) -> list[str]:
        """One ``source:line: message`` string per problem, in file order."""
        return [f"{self.source}:{p.line}: {p.message}" for p in self.problems]
