"""Billing data: rate tables and rates, calling cards, the balance ledger.

Re-exported by :mod:`minipbx.store.pbxrepos`, whose conventions apply. Balances change only
through :meth:`SqlLedgerRepo.add` (or a card's opening balance), in the transaction that
writes the ledger entry, with the user's or card's row locked (PostgreSQL/MySQL
``SELECT ... FOR UPDATE``; SQLite serialises writers). Rate writes bump ``rates_version``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.store.checks import integer, invalid, parse_money, validate
from minipbx.store.coltypes import utcnow
from minipbx.store.crud import (
    DbRepo,
    TableSpec,
    TenantNamedRepo,
    as_money,
    bump_all,
    check_refs,
    flush_unique,
    get_locked,
    get_row,
    to_record,
)
from minipbx.store.errors import ConflictError, CsvImportError, ImportProblem, InvalidInputError
from minipbx.store.models import (
    RATES_VERSION,
    USERS_VERSION,
    Card,
    DialPlan,
    LedgerEntry,
    Rate,
    RateTable,
    User,
)
from minipbx.store.pbxrecords import (
    CARD_CHECKS,
    LEDGER_CHECKS,
    LEDGER_CREDITS,
    RATE_TABLE_CHECKS,
    CardRecord,
    LedgerRecord,
    RateRecord,
    RateTableRecord,
)
from minipbx.store.ratecsv import CsvRate, check_rate, format_rates_csv, parse_rates_csv
from minipbx.store.registrations import CHUNK
from minipbx.store.repos import ImportResult

log = logging.getLogger(__name__)

# --- rates ---------------------------------------------------------------------------------

_RATE_TABLES = TableSpec(
    model=RateTable,
    record=RateTableRecord,
    what="rate table",
    checks=RATE_TABLE_CHECKS,
    counters=(RATES_VERSION,),
    remove_counters=(USERS_VERSION,),
)
RateKey = tuple[str, datetime | None]


def _rate_key(prefix: str, valid_from: datetime | None) -> RateKey:
    return prefix, None if valid_from is None else valid_from.astimezone(UTC)


def _describe(key: RateKey) -> str:
    since = "" if key[1] is None else f" from {key[1].isoformat()}"
    return f"prefix {key[0]!r}{since}"


async def _rate_keys(session: AsyncSession, table_id: int) -> dict[RateKey, int]:
    stmt = select(Rate.id, Rate.prefix, Rate.valid_from).where(Rate.rate_table_id == table_id)
    return {_rate_key(p, v): rate_id for rate_id, p, v in await session.execute(stmt)}


class SqlRateRepo(TenantNamedRepo[RateTableRecord]):
    """Rate tables (add, get, find, list_by_tenant, update, remove) and their rates."""

    spec = _RATE_TABLES

    async def add(self, tenant_id: int, name: str, *, currency: str = "") -> RateTableRecord:
        """Create an empty rate table ``name`` in a tenant."""
        return await self._add(tenant_id, {"name": name, "currency": currency})

    async def add_rate(
        self, table_id: int, prefix: str, price_per_minute: Any, **fields: Any
    ) -> RateRecord:
        """Add a rate (fields as in the CSV columns); ConflictError if the prefix and
        ``valid_from`` are already in the table.
        """
        values = check_rate({"prefix": prefix, "price_per_minute": price_per_minute, **fields})
        key = _rate_key(values["prefix"], values["valid_from"])
        async with self._db.write("add rate") as session:
            await get_row(session, RateTable, table_id, "rate table")
            if key in await _rate_keys(session, table_id):
                raise ConflictError(f"rate table {table_id} already has {_describe(key)}")
            rate = Rate(rate_table_id=table_id, **values)
            session.add(rate)
            await flush_unique(session, f"rate table {table_id} already has {_describe(key)}")
            await bump_all(session, (RATES_VERSION,))
            return to_record(RateRecord, rate)

    async def list_rates(self, table_id: int) -> list[RateRecord]:
        """The rates of a table by prefix and start; NotFoundError for an unknown table."""
        async with self._db.read("list rates") as session:
            await get_row(session, RateTable, table_id, "rate table")
            stmt = (
                select(Rate)
                .where(Rate.rate_table_id == table_id)
                .order_by(Rate.prefix, Rate.valid_from, Rate.id)
            )
            return [to_record(RateRecord, row) for row in await session.scalars(stmt)]

    async def remove_rate(self, rate_id: int) -> None:
        """Delete one rate; NotFoundError if there is none."""
        async with self._db.write("remove rate") as session:
            await session.delete(await get_row(session, Rate, rate_id, "rate"))
            await session.flush()
            await bump_all(session, (RATES_VERSION,))

    async def export_csv(self, table_id: int) -> str:
        """The table's rates as CSV (see :mod:`minipbx.store.ratecsv`)."""
        return format_rates_csv(await self.list_rates(table_id))

    async def import_csv(
        self, table_id: int, text: str, *, source: str = "<csv>", replace: bool = False
    ) -> ImportResult:
        """Load rates from CSV text into a table, all or nothing.

        Every row is checked first (format, amounts, a prefix and start repeated in the file,
        or already in the table unless ``replace``); if any is bad nothing is written and
        :class:`CsvImportError` lists every bad row with its line. With ``replace`` the file
        becomes the table's complete rate list: rates in both are updated, rates only in
        the table are deleted.
        """
        parsed = parse_rates_csv(text)
        if not parsed.header_ok:
            raise CsvImportError(source, parsed.problems)
        problems = list(parsed.problems)
        rows = _unique_rows(parsed.rates, problems)
        async with self._db.write("import rates") as session:
            await get_row(session, RateTable, table_id, "rate table")
            existing = await _rate_keys(session, table_id)
            if not replace:
                problems.extend(
                    ImportProblem(r.line, f"{_describe(k)} is already in the table")
                    for k, r in rows.items()
                    if k in existing
                )
            if problems:
                raise CsvImportError(source, sorted(problems, key=lambda p: p.line))
            updated = sum(1 for key in rows if key in existing)
            if replace:
                await _delete_rates(session, existing.values())
            new = [{"rate_table_id": table_id, **row.values} for row in rows.values()]
            if new:
                await session.execute(insert(Rate), new)
            await bump_all(session, (RATES_VERSION,))
        result = ImportResult(created=len(rows) - updated, updated=updated)
        log.info(
            "store.rates_imported table_id=%s source=%s created=%d updated=%d",
            table_id,
            source,
            result.created,
            result.updated,
        )
        return result


def _unique_rows(rates: list[CsvRate], problems: list[ImportProblem]) -> dict[RateKey, CsvRate]:
    seen: dict[RateKey, CsvRate] = {}
    for rate in rates:
        key = _rate_key(rate.values["prefix"], rate.values["valid_from"])
        if key in seen:
            problems.append(
                ImportProblem(rate.line, f"{_describe(key)} already on line {seen[key].line}")
            )
        else:
            seen[key] = rate
    return seen


async def _delete_rates(session: AsyncSession, rate_ids: Iterable[int]) -> None:
    ids = list(rate_ids)
    for start in range(0, len(ids), CHUNK):
        await session.execute(delete(Rate).where(Rate.id.in_(ids[start : start + CHUNK])))


# --- ledger --------------------------------------------------------------------------------


async def _post(
    session: AsyncSession,
    values: dict[str, Any],
    *,
    user_id: int | None,
    card_id: int | None,
    min_balance: Decimal | None,
) -> LedgerEntry:
    """Apply a checked entry to the user's or card's balance (row locked) and log it."""
    model: Any = User if user_id is not None else Card
    owner_id = user_id if user_id is not None else card_id
    what = "user" if user_id is not None else "card"
    owner = await get_locked(session, model, int(owner_id or 0), what)
    amount: Decimal = values["amount"]
    balance = as_money(owner.balance) + amount
    if min_balance is not None and amount < 0 and balance < min_balance:
        raise ConflictError(
            f"insufficient balance: {what} {owner.id} has {as_money(owner.balance)}, "
            f"a {values['kind']} of {-amount} would leave less than {min_balance}"
        )
    # A Core UPDATE: a balance change is not a change of the user's profile (updated_at).
    changes: dict[str, Any] = {"balance": balance}
    if model is User:
        changes["updated_at"] = User.updated_at
    await session.execute(update(model).where(model.id == owner.id).values(**changes))
    entry = LedgerEntry(
        tenant_id=owner.tenant_id, user_id=user_id, card_id=card_id, balance_after=balance, **values
    )
    session.add(entry)
    await session.flush()
    return entry


def _check_entry(kind: str, amount: Any, cdr_uuid: str | None, note: str) -> dict[str, Any]:
    values = validate(
        LEDGER_CHECKS, {"kind": kind, "amount": amount, "cdr_uuid": cdr_uuid, "note": note}
    )
    credit = values["kind"] in LEDGER_CREDITS
    if (credit and values["amount"] < 0) or (not credit and values["amount"] > 0):
        sign = "positive or zero" if credit else "negative or zero"
        raise invalid("amount", f"a {values['kind']} amount must be {sign}")
    return values


class SqlLedgerRepo(DbRepo):
    """Balance changes of users and cards; each entry updates the balance it names."""

    async def add(
        self,
        kind: str,
        amount: Any,
        *,
        user_id: int | None = None,
        card_id: int | None = None,
        cdr_uuid: str | None = None,
        note: str = "",
        min_balance: Any = None,
    ) -> LedgerRecord:
        """Add ``amount`` (signed: topup/refund/release >= 0, charge/reserve <= 0) to the
        balance of exactly one of ``user_id`` / ``card_id``, and record it.

        ``min_balance`` (e.g. minus the credit limit): a debit that would leave less raises
        ConflictError and changes nothing, atomically with the balance read.
        """
        if (user_id is None) == (card_id is None):
            raise InvalidInputError("invalid user_id: give exactly one of user_id and card_id")
        values = _check_entry(kind, amount, cdr_uuid, note)
        floor = None if min_balance is None else parse_money("min_balance", min_balance)
        async with self._db.write("add ledger entry") as session:
            entry = await _post(
                session, values, user_id=user_id, card_id=card_id, min_balance=floor
            )
            record = to_record(LedgerRecord, entry)
        log.info(
            "store.ledger kind=%s amount=%s user_id=%s card_id=%s balance=%s",
            record.kind,
            record.amount,
            user_id,
            card_id,
            record.balance_after,
        )
        return record

    @staticmethod
    def _owner_filter(user_id: int | None, card_id: int | None) -> Any:
        if user_id is not None:
            return LedgerEntry.user_id == user_id
        if card_id is not None:
            return LedgerEntry.card_id == card_id
        raise InvalidInputError("invalid user_id: give user_id or card_id")

    async def list_entries(
        self, *, user_id: int | None = None, card_id: int | None = None, limit: int = 100
    ) -> list[LedgerRecord]:
        """The newest ``limit`` entries of a user or a card, newest first."""
        limit = integer(1, 100_000)("limit", limit)
        stmt = (
            select(LedgerEntry)
            .where(self._owner_filter(user_id, card_id))
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
        )
        async with self._db.read("list ledger") as session:
            return [to_record(LedgerRecord, row) for row in await session.scalars(stmt)]

    async def total(self, *, user_id: int | None = None, card_id: int | None = None) -> Decimal:
        """The sum of a user's or a card's entries (equals its balance)."""
        stmt = select(func.sum(LedgerEntry.amount)).where(self._owner_filter(user_id, card_id))
        async with self._db.read("sum ledger") as session:
            return as_money(await session.scalar(stmt))


# --- cards ---------------------------------------------------------------------------------

_CARD_REFS = {"rate_table_id": (RateTable, "rate table"), "dial_plan_id": (DialPlan, "dial plan")}
_CARDS = TableSpec(
    model=Card,
    record=CardRecord,
    what="card",
    checks=CARD_CHECKS,
    key="number",
    required=("pin",),
    refs=_CARD_REFS,
)
MAX_BATCH = 10_000


def _opening_entry(card: Card) -> LedgerEntry:
    return LedgerEntry(
        tenant_id=card.tenant_id,
        card_id=card.id,
        kind="topup",
        amount=card.balance,
        balance_after=card.balance,
        note="opening balance",
    )


async def _open_balances(session: AsyncSession, cards: Iterable[Card]) -> None:
    """Ledger entries for new cards' opening balances (so a card's entries sum to it)."""
    session.add_all(_opening_entry(card) for card in cards if card.balance)
    await session.flush()


async def _open_balance(session: AsyncSession, card: Card) -> None:
    await _open_balances(session, [card])


class SqlCardRepo(TenantNamedRepo[CardRecord]):
    """Calling cards: add, generate_batch, get, find (by number), list_by_tenant, update
    (pin, status, ...), record_failed_pin, record_use, remove. Balances: the ledger.
    """

    spec = _CARDS

    async def add(
        self, tenant_id: int, number: str, pin: str, *, balance: Any = 0, **fields: Any
    ) -> CardRecord:
        """Create a card; its opening ``balance`` is written to the ledger as a topup.

        ``fields``: currency, rate_table_id, dial_plan_id (of the same tenant),
        expires_at, status.
        """
        card = {"number": number, "pin": pin, "balance": balance, **fields}
        return await self._add(tenant_id, card, _open_balance)

    async def update(self, row_id: int, **fields: Any) -> CardRecord:
        """Change a card's fields (not ``balance``: that takes a ledger entry)."""
        if "balance" in fields:
            raise invalid("balance", "changes only through the ledger (SqlLedgerRepo.add)")
        return await super().update(row_id, **fields)

    async def set_status(self, card_id: int, status: str) -> CardRecord:
        """Set a card's status (active, locked, expired, used)."""
        return await self.update(card_id, status=status)

    async def record_failed_pin(self, card_id: int, *, lock_after: int | None = None) -> CardRecord:
        """Count a wrong PIN; at ``lock_after`` failures the card is locked."""
        async with self._db.write("record failed pin") as session:
            card = await get_locked(session, Card, card_id, "card")
            card.failed_pins += 1
            if lock_after is not None and card.failed_pins >= lock_after:
                card.status = "locked"
                log.warning(
                    "store.card_locked card_id=%s failed_pins=%d", card_id, card.failed_pins
                )
            await session.flush()
            return to_record(CardRecord, card)

    async def record_use(self, card_id: int, at: datetime | None = None) -> CardRecord:
        """A successful PIN: reset the failure count and set ``last_used_at``."""
        async with self._db.write("record card use") as session:
            card = await get_row(session, Card, card_id, "card")
            card.failed_pins, card.last_used_at = 0, at or utcnow()
            await session.flush()
            return to_record(CardRecord, card)

    async def generate_batch(
        self,
        tenant_id: int,
        count: int,
        number_len: int,
        pin_len: int,
        balance: Any,
        currency: str,
        **fields: Any,
    ) -> list[CardRecord]:
        """Create ``count`` cards with random (``secrets``) numbers unused in the tenant and
        random PINs, each with ``balance`` (a ledger topup) in ``currency``.

        ``fields`` as for :meth:`add`. Numbers do not start with 0. InvalidInputError when
        the number length leaves too little room for that many new numbers.
        """
        count = integer(1, MAX_BATCH)("count", count)
        number_len = integer(4, 32)("number_len", number_len)
        pin_len = integer(4, 16)("pin_len", pin_len)
        values = self._validate({"balance": balance, "currency": currency, **fields})
        async with self._db.write("generate cards") as session:
            await check_refs(session, _CARD_REFS, values, tenant_id)
            await _check_room(session, tenant_id, count, number_len)
            numbers = await _free_numbers(session, tenant_id, count, number_len)
            cards = [
                Card(
                    tenant_id=tenant_id,
                    number=number,
                    pin=_digits(pin_len, leading_zero=True),
                    **values,
                )
                for number in numbers
            ]
            session.add_all(cards)
            await flush_unique(session, "a generated card number was taken concurrently; retry")
            await _open_balances(session, cards)
            records = [to_record(CardRecord, card) for card in cards]
        log.info("store.cards_generated tenant_id=%s count=%d", tenant_id, count)
        return records


def _digits(length: int, *, leading_zero: bool) -> str:
    first = str(secrets.randbelow(10 if leading_zero else 9) + (0 if leading_zero else 1))
    return first + "".join(str(secrets.randbelow(10)) for _ in range(length - 1))


async def _check_room(session: AsyncSession, tenant_id: int, count: int, length: int) -> None:
    """Refuse a batch that would fill over half the numbers of that length (slow to draw)."""
    stmt = select(func.count(Card.id)).where(
        Card.tenant_id == tenant_id, func.length(Card.number) == length
    )
    used = int(await session.scalar(stmt) or 0)
    if (used + count) * 2 > 9 * 10 ** (length - 1):
        raise invalid("number_len", f"{length} digits leave too few numbers for {count} more cards")


async def _free_numbers(
    session: AsyncSession, tenant_id: int, count: int, length: int
) -> list[str]:
    """``count`` distinct random numbers of ``length`` digits no card of the tenant has."""
    found: set[str] = set()
    while len(found) < count:
        candidates = {_digits(length, leading_zero=False) for _ in range(count - len(found))}
        candidates -= found
        batch = sorted(candidates)
        for start in range(0, len(batch), CHUNK):
            stmt = select(Card.number).where(
                Card.tenant_id == tenant_id, Card.number.in_(batch[start : start + CHUNK])
            )
            candidates -= set(await session.scalars(stmt))
        found |= candidates
    return sorted(found)
