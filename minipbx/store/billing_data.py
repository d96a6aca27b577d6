"""What prepaid billing keeps in memory, read in bulk for ``minipbx.billing_runtime``.

The call path never waits on the database, so the server holds the prepaid (or rated)
users, every rate table and the balances of the accounts in use, and refreshes them when
something moved: :func:`billing_marks` is the cheap poll (two change counters and the
newest ledger id: a top-up changes a balance without bumping ``users_version``),
:func:`load_billing_users` / :func:`load_rate_tables` the reloads, :func:`ledger_touched`
and :func:`read_balances` the refresh of balances after ledger entries. Writes go through
:class:`~minipbx.store.billing.SqlLedgerRepo` (one transaction per entry).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, or_, select

from minipbx.store.crud import as_money, to_record
from minipbx.store.db import Database
from minipbx.store.models import (
    RATES_VERSION,
    USERS_VERSION,
    Card,
    LedgerEntry,
    Meta,
    Rate,
    RateTable,
    User,
)
from minipbx.store.pbxrecords import RateRecord
from minipbx.store.registrations import CHUNK


@dataclass(frozen=True, slots=True)
class BillingMarks:
    """Where the billing data stood: reload what moved."""

    users_version: int = 0
    rates_version: int = 0
    ledger_id: int = 0


@dataclass(frozen=True, slots=True)
class UserBilling:
    """A user's billing settings: prepaid or not, balance, credit limit, rate table."""

    user_id: int
    tenant_id: int
    extension: str
    prepaid: bool
    balance: Decimal
    credit_limit: Decimal
    currency: str
    rate_table_id: int | None


@dataclass(frozen=True, slots=True)
class RateTableData:
    """A rate table with all its rates."""

    id: int
    tenant_id: int
    name: str
    currency: str
    rates: tuple[RateRecord, ...]


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's stored balance and credit limit (cards have no credit)."""

    balance: Decimal
    credit_limit: Decimal = Decimal(0)


async def billing_marks(db: Database) -> BillingMarks:
    """The change counters and the newest ledger id (one small read)."""
    async with db.read("read billing marks") as session:
        stmt = select(Meta.name, Meta.version).where(Meta.name.in_((USERS_VERSION, RATES_VERSION)))
        rows = {name: int(version or 0) for name, version in (await session.execute(stmt)).all()}
        ledger = await session.scalar(select(func.max(LedgerEntry.id)))
    return BillingMarks(rows.get(USERS_VERSION, 0), rows.get(RATES_VERSION, 0), int(ledger or 0))


async def load_billing_users(db: Database) -> list[UserBilling]:
    """Users that are prepaid or have a rate table (the others are not billed)."""
    stmt = select(User).where(or_(User.prepaid.is_(True), User.rate_table_id.is_not(None)))
    async with db.read("load billing users") as session:
        return [
            UserBilling(
                u.id,
                u.tenant_id,
                u.extension,
                bool(u.prepaid),
                as_money(u.balance),
                as_money(u.credit_limit),
                u.currency,
                u.rate_table_id,
            )
            for u in await session.scalars(stmt)
        ]


async def load_rate_tables(db: Database) -> list[RateTableData]:
    """Every rate table with its rates (one transaction)."""
    async with db.read("load rate tables") as session:
        rates: dict[int, list[RateRecord]] = {}
        for row in await session.scalars(select(Rate).order_by(Rate.rate_table_id, Rate.id)):
            rates.setdefault(row.rate_table_id, []).append(to_record(RateRecord, row))
        return [
            RateTableData(t.id, t.tenant_id, t.name, t.currency, tuple(rates.get(t.id, ())))
            for t in await session.scalars(select(RateTable))
        ]


async def ledger_touched(db: Database, after_id: int) -> tuple[int, set[int], set[int]]:
    """Ledger entries after ``after_id``: (the newest id, user ids, card ids they touched)."""
    stmt = select(LedgerEntry.id, LedgerEntry.user_id, LedgerEntry.card_id).where(
        LedgerEntry.id > after_id
    )
    users: set[int] = set()
    cards: set[int] = set()
    newest = after_id
    async with db.read("read new ledger entries") as session:
        for entry_id, user_id, card_id in await session.execute(stmt):
            newest = max(newest, entry_id)
            if user_id is not None:
                users.add(user_id)
            if card_id is not None:
                cards.add(card_id)
    return newest, users, cards


async def read_balances(
    db: Database, user_ids: Collection[int], card_ids: Collection[int]
) -> tuple[dict[int, Balance], dict[int, Balance]]:
    """The stored balances of some users and cards (missing ids: deleted rows)."""
    users: dict[int, Balance] = {}
    cards: dict[int, Balance] = {}
    async with db.read("read balances") as session:
        ids = sorted(user_ids)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            stmt = select(User.id, User.balance, User.credit_limit).where(User.id.in_(chunk))
            for user_id, balance, credit in await session.execute(stmt):
                users[user_id] = Balance(as_money(balance), as_money(credit))
        ids = sorted(card_ids)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            for card_id, balance in await session.execute(
                select(Card.id, Card.balance).where(Card.id.in_(chunk))
            ):
                cards[card_id] = Balance(as_money(balance))
    return users, cards


async def has_charge(
    db: Database, cdr_uuid: str, *, user_id: int | None, card_id: int | None
) -> bool:
    """Whether the ledger already holds the charge of call record ``cdr_uuid`` for the
    account (a retried or spooled settlement is then not charged twice)."""
    owner = (
        LedgerEntry.user_id == user_id if user_id is not None else LedgerEntry.card_id == card_id
    )
    stmt = (
        select(LedgerEntry.id)
        .where(LedgerEntry.cdr_uuid == cdr_uuid, LedgerEntry.kind == "charge", owner)
        .limit(1)
    )
    async with db.read("find charge") as session:
        return await session.scalar(stmt) is not None
