"""Registrations written behind to the database and restored after a restart."""

from __future__ import annotations

from pathlib import Path

from minipbx.app import RegistrationStore
from minipbx.pbx.location import Binding
from minipbx.store import Database, SqlRegistrationRepo, SqlTenantRepo, SqlUserRepo, UserDirectory
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
