"""Tenants and users: add, remove, list, lookups, HA1 values, change counter."""

from __future__ import annotations

import pytest

from minipbx.sip.digest import Algorithm, compute_ha1
from minipbx.store import (
    ConflictError,
    Database,
    InvalidInputError,
    NotFoundError,
    SqlRegistrationRepo,
    SqlTenantRepo,
    SqlUserRepo,
)
from minipbx.store.records import RegistrationRecord


async def test_ensure_default_tenant_is_idempotent(tenants: SqlTenantRepo) -> None:
    assert await tenants.get_default() is None
    first = await tenants.ensure_default()
    again = await tenants.ensure_default()
    assert first == again
    assert (first.domain, first.realm, first.is_default) == ("default", "minipbx", True)
    assert first.created_at.tzinfo is not None
    assert await tenants.get_default() == first
    assert await tenants.list_tenants() == [first]


async def test_create_tenant_lower_cases_domain(tenants: SqlTenantRepo) -> None:
    tenant = await tenants.create("PBX.Example.COM.", name="Example")
    assert (tenant.domain, tenant.realm, tenant.is_default) == (
        "pbx.example.com",
        "pbx.example.com",
        False,
    )
    assert await tenants.get_by_domain("pbx.EXAMPLE.com") == tenant
    assert await tenants.get_by_domain("other.example.com") is None
    with pytest.raises(ConflictError, match="already exists"):
        await tenants.create("pbx.example.com")
    with pytest.raises(InvalidInputError, match="invalid domain"):
        await tenants.create("bad domain")


async def test_new_default_tenant_replaces_old(tenants: SqlTenantRepo) -> None:
    await tenants.ensure_default()
    second = await tenants.create("b.example", is_default=True)
    assert await tenants.get_default() == second
    assert [t.is_default for t in await tenants.list_tenants()] == [True, False]


async def test_add_list_remove(users: SqlUserRepo) -> None:
    assert await users.count() == 0
    added = await users.add("100", "secret", name="Alice", email="alice@example.com")
    await users.add("101", "secret2")
    assert (added.domain, added.extension, added.display_name, added.email) == (
        "default",
        "100",
        "Alice",
        "alice@example.com",
    )
    assert added.enabled
    assert [u.extension for u in await users.list_users()] == ["100", "101"]
    assert [u.extension for u in await users.list_users(domain="default")] == ["100", "101"]
    assert await users.count() == 2
    await users.remove("100")
    assert [u.extension for u in await users.list_users()] == ["101"]
    with pytest.raises(NotFoundError, match="no extension '100' in domain 'default'"):
        await users.remove("100")


async def test_duplicate_extension_rejected(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    await users.add("100", "pw")
    with pytest.raises(ConflictError, match="extension '100' already exists in domain 'default'"):
        await users.add("100", "other")
    await tenants.create("b.example")
    other = await users.add("100", "pw", domain="B.example")  # another tenant: fine
    assert other.domain == "b.example"
    assert await users.count() == 2


async def test_ha1_values(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    user = await users.add("100", "s3cr:et")
    assert user.realm == "minipbx"
    assert user.ha1_md5 == compute_ha1("100", "minipbx", "s3cr:et", Algorithm.MD5)
    assert user.ha1_sha256 == compute_ha1("100", "minipbx", "s3cr:et", Algorithm.SHA_256)
    assert user.ha1(Algorithm.MD5_SESS) == user.ha1_md5
    assert user.ha1(Algorithm.SHA_256_SESS) == user.ha1_sha256
    assert len(user.ha1_md5) == 32 and len(user.ha1_sha256) == 64
    stored = await users.get("100")
    assert stored is not None and stored.ha1_md5 == user.ha1_md5


async def test_password_is_never_stored(db: Database, users: SqlUserRepo) -> None:
    await users.add("100", "plaintext-pw-123")
    path = db.url.database
    assert path is not None
    await db.close()  # checkpoint the WAL into the main file
    for suffix in ("", "-wal"):
        try:
            with open(path + suffix, "rb") as fh:
                assert b"plaintext-pw-123" not in fh.read()
        except FileNotFoundError:
            pass


async def test_set_password(users: SqlUserRepo) -> None:
    before = await users.add("100", "old")
    after = await users.set_password("100", "new")
    assert after.ha1_md5 == compute_ha1("100", "minipbx", "new", Algorithm.MD5)
    assert after.ha1_sha256 == compute_ha1("100", "minipbx", "new", Algorithm.SHA_256)
    assert after.updated_at >= before.updated_at
    with pytest.raises(NotFoundError):
        await users.set_password("999", "x")
    with pytest.raises(InvalidInputError, match="missing password"):
        await users.set_password("100", "")


async def test_realm_survives_domain_rename(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    await tenants.create("old.example")
    user = await users.add("200", "pw", domain="old.example")
    renamed = await tenants.rename("old.example", "new.example")
    assert (renamed.domain, renamed.realm) == ("new.example", "old.example")
    moved = await users.get("200", domain="new.example")
    assert moved is not None
    assert (moved.domain, moved.realm, moved.ha1_md5) == (
        "new.example",
        "old.example",
        user.ha1_md5,
    )
    changed = await users.set_password("200", "pw", domain="new.example")
    assert changed.ha1_md5 == user.ha1_md5  # still hashed with the original realm


async def test_get_falls_back_to_default_tenant(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    await users.add("100", "pw")
    await tenants.create("b.example")
    await users.add("300", "pw", domain="b.example")
    for domain in (None, "default", "192.0.2.10", "[2001:db8::1]", "unknown.example"):
        found = await users.get("100", domain=domain)
        assert found is not None and found.domain == "default", domain
    assert await users.get("100", domain="b.example") is None  # a known domain is authoritative
    found = await users.get("300", domain="B.EXAMPLE")
    assert found is not None and found.domain == "b.example"


async def test_unknown_domain_on_write(users: SqlUserRepo) -> None:
    with pytest.raises(NotFoundError, match=r"unknown domain 'nowhere\.example'"):
        await users.add("100", "pw", domain="nowhere.example")
    with pytest.raises(NotFoundError):
        await users.list_users(domain="nowhere.example")


@pytest.mark.parametrize(
    ("extension", "password", "email", "message"),
    [
        ("", "pw", None, "invalid extension"),
        ("10 0", "pw", None, "invalid extension"),
        ('1"0', "pw", None, "invalid extension"),
        ("x" * 65, "pw", None, "invalid extension"),
        ("100", "", None, "missing password"),
        ("100", "a\nb", None, "control character"),
        ("100", "pw", "not-an-email", "invalid email"),
    ],
)
async def test_bad_input(
    users: SqlUserRepo, extension: str, password: str, email: str | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await users.add(extension, password, email=email)
    assert await users.count() == 0


async def test_remove_drops_registrations(
    users: SqlUserRepo, registrations: SqlRegistrationRepo
) -> None:
    from datetime import UTC, datetime, timedelta

    user = await users.add("100", "pw")
    expires = datetime.now(UTC) + timedelta(hours=1)
    binding = RegistrationRecord(
        user.id, "sip:100@default", "sip:100@192.0.2.1:5060", expires, "udp", "192.0.2.1", 5060
    )
    await registrations.replace("sip:100@default", [binding])
    await users.remove("100")
    assert await registrations.load_active() == []


async def test_every_write_bumps_users_version(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    versions = [await users.users_version()]
    await tenants.ensure_default()
    versions.append(await users.users_version())
    await users.add("100", "pw")
    versions.append(await users.users_version())
    await users.set_password("100", "pw2")
    versions.append(await users.users_version())
    await tenants.create("b.example")
    versions.append(await users.users_version())
    await tenants.rename("b.example", "c.example")
    versions.append(await users.users_version())
    await users.remove("100")
    versions.append(await users.users_version())
    assert versions == sorted(set(versions)), versions  # strictly increasing
    await tenants.ensure_default()  # no change, no bump
    assert await users.users_version() == versions[-1]


def test_user_select_matches_record_fields() -> None:
    from dataclasses import fields

    from minipbx.store.records import UserRecord
    from minipbx.store.repos import USER_SELECT

    assert [c.name for c in USER_SELECT.selected_columns] == [f.name for f in fields(UserRecord)]


async def test_tenant_quotas(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    await tenants.create("hosted.example")
    record = await tenants.set_quotas(
        "hosted.example", max_users=2, max_call_seconds=600, free_account=True
    )
    assert (record.max_users, record.max_call_seconds, record.free_account) == (2, 600, True)
    assert record.max_concurrent_calls is None
    await users.add("100", "pw", domain="hosted.example")
    with pytest.raises(ConflictError, match="limit of 2 users"):
        await users.import_csv(
            "extension,password,domain\n101,pw,hosted.example\n102,pw,hosted.example\n"
        )
    assert len(await users.list_users(domain="hosted.example")) == 1  # nothing imported
    await users.add("101", "pw", domain="hosted.example")
    with pytest.raises(ConflictError, match=r"hosted\.example"):
        await users.add("102", "pw", domain="hosted.example")
    await users.add("102", "pw")  # the default tenant has no quota
    for bad in ({"max_users": 0}, {"max_users": "5"}, {"free_account": 1}, {"max_calls": 3}):
        with pytest.raises(InvalidInputError):
            await tenants.set_quotas("hosted.example", **bad)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await tenants.set_quotas("nowhere.example", max_users=None)
