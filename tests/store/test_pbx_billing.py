"""Billing data repositories (migration 0003): rate tables and the rates CSV, calling
cards and their batches, the balance ledger.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from minipbx.store import (
    ConflictError,
    CsvImportError,
    Database,
    InvalidInputError,
    NotFoundError,
    SqlCardRepo,
    SqlLedgerRepo,
    SqlRateRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
)
from minipbx.store import billing as billing_module
from minipbx.store.models import Card, LedgerEntry
from tests.store.test_pbx_data import CSV_OK, T0, _tenant_id, _version

# --- rates -----------------------------------------------------------------------------------


async def test_rate_tables_and_rates(db: Database) -> None:
    rates = SqlRateRepo(db)
    tenant_id = await _tenant_id(db)
    table = await rates.add(tenant_id, "retail", currency="usd")
    assert table.currency == "USD"
    with pytest.raises(ConflictError):
        await rates.add(tenant_id, "retail")
    before = await _version(db, "rates_version")
    rate = await rates.add_rate(table.id, "49", "0.0125", description="Germany")
    assert (rate.price_per_minute, rate.connection_fee, rate.first_increment) == (
        Decimal("0.0125"),
        Decimal(0),
        60,
    )
    assert await _version(db, "rates_version") > before
    with pytest.raises(ConflictError, match="already has prefix '49'"):
        await rates.add_rate(table.id, "49", "0.02")  # valid_from NULL: checked by the repo
    dated = await rates.add_rate(table.id, "49", "0.01", valid_from=T0)
    assert dated.valid_from == T0
    with pytest.raises(InvalidInputError, match="valid_until"):
        await rates.add_rate(table.id, "33", "1", valid_from=T0, valid_until=T0)
    with pytest.raises(InvalidInputError, match="price_per_minute"):
        await rates.add_rate(table.id, "33", "1,5")
    with pytest.raises(InvalidInputError, match="prefix"):
        await rates.add_rate(table.id, "+33", "1")
    assert [r.id for r in await rates.list_rates(table.id)] == [rate.id, dated.id]
    await rates.remove_rate(dated.id)
    assert [r.id for r in await rates.list_rates(table.id)] == [rate.id]
    updated = await rates.update(table.id, name="wholesale")
    assert updated.name == "wholesale"
    assert [t.name for t in await rates.list_by_tenant(tenant_id)] == ["wholesale"]


async def test_rate_csv_import_and_export(db: Database) -> None:
    rates = SqlRateRepo(db)
    tenant_id = await _tenant_id(db)
    table = await rates.add(tenant_id, "retail", currency="EUR")
    result = await rates.import_csv(table.id, CSV_OK)
    assert (result.created, result.updated) == (3, 0)
    listed = await rates.list_rates(table.id)
    assert [(r.prefix, r.description, r.price_per_minute) for r in listed] == [
        ("1", "USA, Canada", Decimal("0.01")),
        ("49", "Germany", Decimal("0.0125")),
        ("4915", "Germany mobile", Decimal("0.19")),
    ]
    exported = await rates.export_csv(table.id)
    assert exported.splitlines()[0] == (
        "prefix,description,connection_fee,price_per_minute,first_increment,next_increment,"
        "min_duration,free_seconds"
    )
    assert "4915,Germany mobile,0.05,0.19,30,6,0,0" in exported.splitlines()
    again = await rates.add(tenant_id, "copy")
    assert (await rates.import_csv(again.id, exported)).created == 3
    assert await rates.export_csv(again.id) == exported

    with pytest.raises(CsvImportError, match="already in the table"):
        await rates.import_csv(table.id, CSV_OK)
    replaced = await rates.import_csv(
        table.id, "prefix,price_per_minute\n49,0.02\n44,0.03\n", replace=True
    )
    assert (replaced.created, replaced.updated) == (1, 1)
    assert [(r.prefix, r.price_per_minute) for r in await rates.list_rates(table.id)] == [
        ("44", Decimal("0.03")),
        ("49", Decimal("0.02")),
    ]


async def test_rate_csv_bad_lines_reported_nothing_imported(db: Database) -> None:
    rates = SqlRateRepo(db)
    table = await rates.add(await _tenant_id(db), "retail")
    bad = (
        "prefix,description,price_per_minute,connection_fee,valid_from\n"
        "49,Germany,0.0125,0,\n"
        "33,France,abc,0,\n"
        "44,UK,0.01,0.1234567,\n"
        "49,Again,0.02,0,\n"
        "39,Italy,0.01,0,2030-01-01T00:00:00\n"
        "34,Spain,0.01,0,2030-01-01T00:00:00Z,extra\n"
        ",Anything,0.5,0,\n"
    )
    with pytest.raises(CsvImportError) as info:
        await rates.import_csv(table.id, bad, source="rates.csv")
    assert info.value.details() == [
        "rates.csv:3: invalid price_per_minute: 'abc' is not a decimal number",
        "rates.csv:4: invalid connection_fee: '0.1234567' has more than 6 decimals",
        "rates.csv:5: prefix '49' already on line 2",
        "rates.csv:6: invalid valid_from: 2030-01-01T00:00:00 has no time zone (add Z or +00:00)",
        "rates.csv:7: 6 fields, the header has 5",
    ]
    assert await rates.list_rates(table.id) == []
    for header, message in [
        ("", "empty file"),
        ("prefix,price\n", "unknown column 'price'"),
        ("prefix,description\n", "missing column 'price_per_minute'"),
        ("prefix,prefix,price_per_minute\n", "column 'prefix' given twice"),
    ]:
        with pytest.raises(CsvImportError, match=message):
            await rates.import_csv(table.id, header)


# --- cards and the ledger --------------------------------------------------------------------


async def test_cards_and_ledger(db: Database, users: SqlUserRepo) -> None:
    cards, ledger = SqlCardRepo(db), SqlLedgerRepo(db)
    tenant_id = await _tenant_id(db)
    card = await cards.add(tenant_id, "12345678", "0042", balance="10.50", currency="eur")
    assert (card.balance, card.currency, card.status, card.failed_pins) == (
        Decimal("10.5"),
        "EUR",
        "active",
        0,
    )
    assert "0042" not in repr(card)
    assert await cards.find(tenant_id, "12345678") == card
    with pytest.raises(ConflictError, match="card '12345678' already exists"):
        await cards.add(tenant_id, "12345678", "1111")
    with pytest.raises(InvalidInputError, match="pin"):
        await cards.add(tenant_id, "87654321", "12")
    with pytest.raises(InvalidInputError, match="balance"):
        await cards.update(card.id, balance=100)
    assert await ledger.total(card_id=card.id) == Decimal("10.5")  # the opening topup

    charged = await ledger.add("charge", "-0.25", card_id=card.id, cdr_uuid="c0ffee00-1234")
    assert (charged.balance_after, charged.tenant_id) == (Decimal("10.25"), tenant_id)
    with pytest.raises(ConflictError, match="insufficient balance"):
        await ledger.add("reserve", "-20", card_id=card.id, min_balance=0)
    assert (await cards.get(card.id)).balance == Decimal("10.25")
    with pytest.raises(InvalidInputError, match="amount"):
        await ledger.add("topup", "-1", card_id=card.id)
    with pytest.raises(InvalidInputError, match="amount"):
        await ledger.add("charge", "1", card_id=card.id)
    with pytest.raises(InvalidInputError, match="kind"):
        await ledger.add("gift", "1", card_id=card.id)
    with pytest.raises(InvalidInputError, match="user_id"):
        await ledger.add("topup", "1")
    with pytest.raises(NotFoundError, match="no card"):
        await ledger.add("topup", "1", card_id=card.id + 99)

    user = await users.add("100", "pw")
    await ledger.add("topup", 5, user_id=user.id, note="cash")
    await ledger.add("reserve", "-1.5", user_id=user.id)
    await ledger.add("release", "1.5", user_id=user.id)
    last = await ledger.add("charge", "-0.123456", user_id=user.id)
    assert last.balance_after == Decimal("4.876544")
    balance = (await SqlUserSettingsRepo(db).get_settings(user.id)).balance
    assert balance == await ledger.total(user_id=user.id) == Decimal("4.876544")
    entries = await ledger.list_entries(user_id=user.id, limit=2)
    assert [e.kind for e in entries] == ["charge", "release"]
    assert (await users.get("100")) == user  # a balance change is not a profile change

    locked = None
    for _ in range(3):
        locked = await cards.record_failed_pin(card.id, lock_after=3)
    assert locked is not None and (locked.failed_pins, locked.status) == (3, "locked")
    used = await cards.record_use(card.id, T0)
    assert (used.failed_pins, used.last_used_at) == (0, T0)
    assert (await cards.set_status(card.id, "active")).status == "active"
    with pytest.raises(InvalidInputError, match="status"):
        await cards.set_status(card.id, "lost")
    await cards.remove(card.id)
    assert [e.card_id for e in await ledger.list_entries(card_id=card.id)] == []
    async with db.read() as session:  # the ledger outlives the card (card_id SET NULL)
        orphans = LedgerEntry.card_id.is_(None) & LedgerEntry.user_id.is_(None)
        kept = await session.scalar(select(func.count(LedgerEntry.id)).where(orphans))
    assert kept == 2


async def test_card_batch_numbers_unique(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    cards = SqlCardRepo(db)
    tenant_id = await _tenant_id(db)
    batch = await cards.generate_batch(tenant_id, 300, 6, 4, "5", "EUR")
    numbers = [c.number for c in batch]
    assert len(numbers) == len(set(numbers)) == 300
    assert all(len(n) == 6 and n[0] != "0" and n.isdigit() for n in numbers)
    assert all(len(c.pin) == 4 and c.pin.isdigit() for c in batch)
    assert {c.balance for c in batch} == {Decimal(5)}

    # A generator that repeats itself and numbers already taken: the batch still gets
    # fresh, distinct numbers.
    taken = numbers[:3]
    sequence = iter(
        [*taken, taken[0], "700001", "700001", "700002", *[f"7000{i:02}" for i in range(3, 99)]]
    )
    real = billing_module._digits
    monkeypatch.setattr(
        billing_module,
        "_digits",
        lambda length, *, leading_zero: (
            real(length, leading_zero=True) if leading_zero else next(sequence)
        ),
    )
    more = await cards.generate_batch(tenant_id, 3, 6, 4, 0, "")
    assert sorted(c.number for c in more) == ["700001", "700002", "700003"]
    async with db.read() as session:
        assert await session.scalar(select(func.count(Card.id))) == 303
        assert await session.scalar(select(func.count(LedgerEntry.id))) == 300  # no 0 topups
    monkeypatch.undo()
    with pytest.raises(InvalidInputError, match="number_len"):
        await cards.generate_batch(tenant_id, 5000, 4, 4, 0, "")
    assert len(await cards.generate_batch(tenant_id, 1000, 4, 4, 0, "")) == 1000
    with pytest.raises(InvalidInputError, match="number_len"):
        await cards.generate_batch(tenant_id, 3600, 4, 4, 0, "")
    with pytest.raises(InvalidInputError, match="count"):
        await cards.generate_batch(tenant_id, 0, 8, 4, 0, "")
