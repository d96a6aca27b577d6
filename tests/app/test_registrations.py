"""Registrations written behind to the database and restored after a restart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from minipbx.app import RegistrationStore
from minipbx.pbx.location import Binding
from minipbx.store import (
    Database,
    RegistrationRecord,
    SqlRegistrationRepo,
    SqlTenantRepo,
    SqlUserRepo,
    StoreError,
    UserDirectory,
)
from minipbx.transport.address import Address


async def test_flush_then_load_round_trip(tmp_path: Path) -> None:
    db = Database.for_data_dir(tmp_path)
    await db.upgrade()
    await SqlTenantRepo(db).ensure_default()
    user = await SqlUserRepo(db).add("100", "pw")
    directory = UserDirectory.for_database(db)
    await directory.load()
    store = RegistrationStore(SqlRegistrationRepo(db), directory, {})
    binding = Binding(
        aor=(user.tenant_id, "100"),
        contact="sip:100@127.0.0.1:5071",
        expires_at=2_000_000_000.0,
        received=Address("udp", "127.0.0.1", 40000),
        nat=True,
        path=("<sip:127.0.0.1:5090;lr>",),
        call_id="c1",
        cseq=7,
        q=0.5,
    )
    store.changed(binding.aor, (binding,))
    store.changed((user.tenant_id, "999"), (binding,))  # no such user: skipped, no error
    await store.flush()
    assert not store.dirty
    (loaded,) = await store.load(1_900_000_000.0)
    assert loaded.aor == binding.aor and loaded.contact == binding.contact
    assert loaded.received == binding.received and loaded.nat and loaded.path == binding.path
    assert (loaded.call_id, loaded.cseq, loaded.q) == ("c1", 7, 0.5)
    assert await store.load(2_100_000_000.0) == []  # expired by then
    store.changed(binding.aor, ())  # unregistered
    await store.flush()
    assert await store.load(1_900_000_000.0) == []
    await db.close()


def _binding(aor: tuple[int, str], port: int) -> Binding:
    return Binding(
        aor=aor,
        contact=f"sip:{aor[1]}@127.0.0.1:{port}",
        expires_at=2_000_000_000.0,
        received=Address("udp", "127.0.0.1", port),
        call_id=f"c{port}",
        cseq=1,
    )


class _CountingRepo(SqlRegistrationRepo):
    """Counts the write transactions; fails the one numbered ``fail_at``."""

    def __init__(self, db: Database, fail_at: int | None = None) -> None:
        super().__init__(db)
        self.writes: list[int] = []
        self.fail_at = fail_at

    async def replace_many(self, changes: Mapping[str, Sequence[RegistrationRecord]]) -> None:
        self.writes.append(len(changes))
        if len(self.writes) == self.fail_at:
            raise StoreError("database is locked")
        await super().replace_many(changes)


async def _users(tmp_path: Path, count: int) -> tuple[Database, UserDirectory, list[int]]:
    db = Database.for_data_dir(tmp_path)
    await db.upgrade()
    default = await SqlTenantRepo(db).ensure_default()
    other = await SqlTenantRepo(db).create("other.example.com")
    users = SqlUserRepo(db)
    for i in range(count):  # the same extensions in two tenants
        await users.add(str(100 + i), "pw")
        await users.add(str(100 + i), "pw", domain="other.example.com")
    directory = UserDirectory.for_database(db)
    await directory.load()
    return db, directory, [default.id, other.id]


async def test_flush_writes_bounded_batches_and_keeps_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, directory, tenants = await _users(tmp_path, 6)
    repo = _CountingRepo(db, fail_at=2)
    store = RegistrationStore(repo, directory, {})
    monkeypatch.setattr(RegistrationStore, "FLUSH_BATCH", 4)
    aors = [(t, str(100 + i)) for t in tenants for i in range(6)]
    for n, aor in enumerate(aors):
        store.changed(aor, (_binding(aor, 5000 + n),))
    await store.flush()
    assert repo.writes == [4, 4]  # the second batch failed: the rest waits for the next flush
    assert list(store.dirty) == aors[4:]
    await store.flush()
    assert repo.writes == [4, 4, 4, 4]
    assert not store.dirty
    loaded = await store.load(1_900_000_000.0)
    assert sorted(b.aor for b in loaded) == sorted(aors)  # both tenants' users, by user id
    await db.close()


async def test_a_storm_of_changes_trims_the_c_heap_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, directory, tenants = await _users(tmp_path, 3)
    trims: list[int] = []
    store = RegistrationStore(SqlRegistrationRepo(db), directory, {}, malloc_trim=trims.append)
    monkeypatch.setattr(RegistrationStore, "STORM", 3)
    store.changed((tenants[0], "100"), (_binding((tenants[0], "100"), 5000),))
    await store.flush()
    assert trims == []  # a registration is no storm
    for i in range(3):
        aor = (tenants[1], str(100 + i))
        store.changed(aor, (_binding(aor, 5001 + i),))
    await store.flush()
    assert trims == [0]
    await store.flush()  # nothing changed, but within TRIM_EVERY of the last trim
    assert trims == [0]
    store.trimmed_at -= store.TRIM_EVERY
    await store.flush()
    assert trims == [0, 0]
    store.trim_until = 0.0  # TRIM_FOR has passed
    store.trimmed_at -= store.TRIM_EVERY
    await store.flush()
    assert trims == [0, 0]
    await db.close()


async def test_trim_is_found_in_the_c_library(tmp_path: Path) -> None:
    db, directory, _ = await _users(tmp_path, 1)
    store = RegistrationStore(SqlRegistrationRepo(db), directory, {})
    store.trim_until = float("inf")
    await store.flush()
    assert store.malloc_trim is False or callable(store.malloc_trim)
    await db.close()
