"""Registrations persist across a restart; expired ones are dropped."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from minipbx.store import Database, SqlRegistrationRepo, SqlUserRepo
from minipbx.store.models import Registration
from minipbx.store.records import RegistrationRecord
from minipbx.store.registrations import sqlite_time

NOW = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _binding(
    user_id: int, aor: str, contact: str, expires_in: float, **kw: object
) -> RegistrationRecord:
    fields: dict[str, object] = {
        "received_transport": "udp",
        "received_host": "198.51.100.7",
        "received_port": 40123,
        "updated_at": NOW,
    }
    fields.update(kw)
    return RegistrationRecord(
        user_id=user_id,
        aor=aor,
        contact=contact,
        expires_at=NOW + timedelta(seconds=expires_in),
        **fields,  # type: ignore[arg-type]
    )


async def test_bindings_round_trip(users: SqlUserRepo, registrations: SqlRegistrationRepo) -> None:
    user = await users.add("100", "pw")
    full = _binding(
        user.id,
        "sip:100@default",
        "sip:100@10.0.0.5:5062;transport=tcp",
        3600,
        params=';+sip.instance="<urn:uuid:0001>";reg-id=1;expires=3600',
        received_transport="tcp",
        local="tcp:0.0.0.0:5060",
        path="<sip:edge.example;lr>,<sip:core.example;lr>",
        call_id="abc@10.0.0.5",
        cseq=42,
        user_agent="Linphone/5.2",
        instance_id="<urn:uuid:0001>",
        reg_id=1,
        q=0.8,
    )
    minimal = _binding(user.id, "sip:100@default", "sip:100@10.0.0.6", 60)
    await registrations.replace("sip:100@default", [full, minimal])
    assert await registrations.load_active(NOW) == [full, minimal]


async def test_replace_and_delete(users: SqlUserRepo, registrations: SqlRegistrationRepo) -> None:
    a, b = await users.add("100", "pw"), await users.add("101", "pw")
    one = _binding(a.id, "sip:100@default", "sip:100@10.0.0.5", 600)
    two = _binding(a.id, "sip:100@default", "sip:100@10.0.0.6", 600)
    other = _binding(b.id, "sip:101@default", "sip:101@10.0.0.7", 600)
    await registrations.replace_many({"sip:100@default": [one, two], "sip:101@default": [other]})
    await registrations.replace("sip:100@default", [replace(two, cseq=2)])
    active = await registrations.load_active(NOW)
    assert [(r.contact, r.cseq) for r in active] == [
        ("sip:100@10.0.0.6", 2),
        ("sip:101@10.0.0.7", 0),
    ]
    assert await registrations.delete("sip:100@default") == 1
    assert await registrations.delete("sip:100@default") == 0
    await registrations.replace("sip:101@default", [])  # empty set unregisters
    assert await registrations.load_active(NOW) == []


async def test_expired_bindings_dropped_on_load_and_purged(
    db: Database, users: SqlUserRepo, registrations: SqlRegistrationRepo
) -> None:
    user = await users.add("100", "pw")
    live = _binding(user.id, "sip:100@default", "sip:100@10.0.0.5", 30)
    dead = _binding(user.id, "sip:100@default", "sip:100@10.0.0.6", -1)
    edge = _binding(user.id, "sip:100@default", "sip:100@10.0.0.7", 0)  # expires exactly now
    await registrations.replace("sip:100@default", [live, dead, edge])
    # A "restart": a new Database object on the same file.
    await db.close()
    restarted = SqlRegistrationRepo(Database(db.url))
    assert await restarted.load_active(NOW) == [live]
    assert await restarted.purge_expired(NOW) == 2
    assert await restarted.purge_expired(NOW) == 0
    assert await restarted.load_active(NOW + timedelta(seconds=31)) == []


async def test_bindings_of_deleted_users_are_skipped(
    users: SqlUserRepo, registrations: SqlRegistrationRepo
) -> None:
    user = await users.add("100", "pw")
    await users.remove("100")
    binding = _binding(user.id, "sip:100@default", "sip:100@10.0.0.5", 600)
    await registrations.replace("sip:100@default", [binding])  # no error
    assert await registrations.load_active(NOW) == []


async def test_binding_under_wrong_aor_rejected(
    users: SqlUserRepo, registrations: SqlRegistrationRepo
) -> None:
    user = await users.add("100", "pw")
    binding = _binding(user.id, "sip:100@default", "sip:100@10.0.0.5", 600)
    with pytest.raises(ValueError, match="given under AOR"):
        await registrations.replace("sip:101@default", [binding])


def test_record_requires_aware_times() -> None:
    with pytest.raises(ValueError, match="aware"):
        RegistrationRecord(1, "sip:a@b", "sip:a@c", datetime(2030, 1, 1), "udp", "1.2.3.4", 5060)


async def test_replace_many_inserts_in_chunks(
    users: SqlUserRepo, registrations: SqlRegistrationRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("minipbx.store.registrations.CHUNK", 2)
    monkeypatch.setattr("minipbx.store.registrations.SQLITE_ROWS_PER_INSERT", 2)
    made = [await users.add(str(100 + i), "pw") for i in range(3)]
    changes = {
        f"sip:{u.extension}@default": [
            _binding(u.id, f"sip:{u.extension}@default", f"sip:{u.extension}@10.0.0.{n}", 600)
            for n in (5, 6)
        ]
        for u in made
    }
    await registrations.replace_many(changes)  # 6 rows, 3 inserts of 2 (either path)
    loaded = await registrations.load_active(NOW)
    assert loaded == [b for rows in changes.values() for b in rows]


async def test_sqlite_batches_store_what_the_orm_stores(
    db: Database, users: SqlUserRepo, registrations: SqlRegistrationRepo
) -> None:
    """SQLite's write-behind path (one JSON parameter a batch) stores the very values the
    ORM's bind processors give, so rows read back the same whichever path wrote them."""
    user = await users.add("100", "pw")
    paris = timezone(timedelta(hours=1))
    record = _binding(
        user.id,
        "sip:100@default",
        'sip:100@10.0.0.5;x="a\\b"',
        3600,
        params=';+sip.instance="<urn:uuid:ü>"',
        path="<sip:a;lr>\n<sip:b;lr>",
        user_agent='Téléphone "1"',
        nat=True,
        q=0.5,
        updated_at=datetime(2030, 1, 1, 13, 0, 0, tzinfo=paris),  # no microseconds, UTC+1
    )
    assert sqlite_time(record.updated_at) == "2030-01-01 12:00:00.000000"  # type: ignore[arg-type]
    await registrations.replace_many({"sip:100@default": [record]})
    async with db.write("orm copy") as session:
        session.add(Registration(**{**asdict(record), "aor": "sip:100@orm"}))
    async with db.read("compare") as session:
        rows = (await session.execute(text("SELECT * FROM registrations ORDER BY id"))).all()
    fast, orm = (dict(row._mapping) for row in rows)
    assert fast.pop("aor") == "sip:100@default" and orm.pop("aor") == "sip:100@orm"
    fast.pop("id"), orm.pop("id")
    assert fast == orm
    with pytest.raises(ValueError, match="naive"):
        sqlite_time(datetime(2030, 1, 1))
