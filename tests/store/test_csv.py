"""CSV import: all or nothing, every bad row reported with its line number."""

from __future__ import annotations

import pytest

from minipbx.sip.digest import Algorithm, compute_ha1
from minipbx.store import CsvImportError, ImportProblem, SqlTenantRepo, SqlUserRepo
from minipbx.store.csvimport import parse_users_csv


async def _problems(users: SqlUserRepo, text: str, **kwargs: bool) -> list[tuple[int, str]]:
    with pytest.raises(CsvImportError) as info:
        await users.import_csv(text, source="users.csv", **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("users.csv: ")
    assert "nothing imported" in message
    return [(p.line, p.message) for p in info.value.problems]


async def test_import_creates_users(users: SqlUserRepo, tenants: SqlTenantRepo) -> None:
    await tenants.create("b.example")
    text = (
        "\ufeffExtension, Password ,name,email,domain\r\n"
        "100,pw100,Alice,alice@example.com,\r\n"
        '101,"p,w 101",,,\r\n'
        "\r\n"
        "100,pwb,Bob,,B.example\r\n"
    )
    result = await users.import_csv(text)
    assert (result.created, result.updated) == (3, 0)
    listed = {(u.domain, u.extension): u for u in await users.list_users()}
    assert set(listed) == {("default", "100"), ("default", "101"), ("b.example", "100")}
    alice = listed[("default", "100")]
    assert (alice.display_name, alice.email) == ("Alice", "alice@example.com")
    assert listed[("default", "101")].ha1_md5 == compute_ha1(
        "101", "minipbx", "p,w 101", Algorithm.MD5
    )
    assert listed[("b.example", "100")].ha1_sha256 == compute_ha1(
        "100", "b.example", "pwb", Algorithm.SHA_256
    )


async def test_minimal_columns_in_any_order(users: SqlUserRepo) -> None:
    result = await users.import_csv("password,extension\npw,100\n")
    assert result.created == 1
    assert [u.extension for u in await users.list_users()] == ["100"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file: expected a header row extension,password[,name,email,domain]"),
        ("extension,name\n100,x\n", "bad header: missing column 'password'"),
        ("extension,password,phone\n100,x,1\n", "bad header: unknown column 'phone'"),
        ("100,secret\n101,secret\n", "bad header: unknown column '100'"),
        ("extension,password,password\n", "bad header: column 'password' given twice"),
    ],
)
async def test_bad_header(users: SqlUserRepo, text: str, message: str) -> None:
    [(line, reported)] = await _problems(users, text)
    assert line == 1 and reported.startswith(message), reported
    assert await users.count() == 0


async def test_all_bad_rows_reported_and_nothing_written(
    users: SqlUserRepo, tenants: SqlTenantRepo
) -> None:
    await users.add("500", "pw")
    version = await users.users_version()
    text = (
        "extension,password,name,email,domain\n"  # 1
        "100,pw,,,\n"  # 2 good
        "101,,,,\n"  # 3 missing password
        "100,pw2,,,\n"  # 4 duplicate of line 2
        "102,pw,,,nowhere.example\n"  # 5 unknown domain
        "bad ext,pw,,,\n"  # 6 invalid extension
        "103,pw,,nope,\n"  # 7 invalid email
        "500,pw,,,\n"  # 8 exists already
        "104,pw,,,,extra\n"  # 9 too many fields
        '"105,pw\n'  # 10 unterminated quote
    )
    problems = await _problems(users, text)
    assert problems == [
        (3, "missing password"),
        (4, "extension '100' (domain 'default') already on line 2"),
        (5, "unknown domain 'nowhere.example'"),
        (
            6,
            "invalid extension 'bad ext' (letters, digits and . _ + - only, at most 64 characters)",
        ),
        (7, "invalid email 'nope'"),
        (8, "extension '500' already exists in domain 'default'"),
        (9, "6 fields, the header has 5"),
        (10, "bad CSV: unexpected end of data"),
    ]
    assert [u.extension for u in await users.list_users()] == ["500"]
    assert await users.users_version() == version


async def test_error_details_name_file_and_line(users: SqlUserRepo) -> None:
    with pytest.raises(CsvImportError) as info:
        await users.import_csv("extension,password\n100,\n", source="staff.csv")
    assert info.value.details() == ["staff.csv:2: missing password"]
    assert info.value.problems == (ImportProblem(2, "missing password"),)


async def test_duplicate_in_file_across_domain_spellings(
    users: SqlUserRepo, tenants: SqlTenantRepo
) -> None:
    await tenants.create("b.example")
    text = "extension,password,domain\n100,pw,b.example\n100,pw,B.Example.\n"
    assert await _problems(users, text) == [
        (3, "extension '100' (domain 'b.example') already on line 2")
    ]


async def test_unknown_domain_does_not_create_default_tenant(
    users: SqlUserRepo, tenants: SqlTenantRepo
) -> None:
    await _problems(users, "extension,password,domain\n100,pw,\n101,pw,nowhere.example\n")
    assert await tenants.list_tenants() == []  # the rollback covers the default tenant too


async def test_replace_updates_existing(users: SqlUserRepo) -> None:
    old = await users.add("100", "old", name="Old")
    result = await users.import_csv("extension,password,name\n100,new,New\n101,pw,\n", replace=True)
    assert (result.created, result.updated) == (1, 1)
    new = await users.get("100")
    assert new is not None
    assert (new.id, new.display_name) == (old.id, "New")
    assert new.ha1_md5 == compute_ha1("100", "minipbx", "new", Algorithm.MD5)


async def test_large_import(users: SqlUserRepo) -> None:
    rows = "".join(f"{1000 + i},pw{i}\n" for i in range(1500))
    result = await users.import_csv("extension,password\n" + rows)
    assert result.created == 1500
    assert await users.count() == 1500
    with pytest.raises(CsvImportError):
        await users.import_csv("extension,password\n" + rows)


def test_parser_counts_physical_lines() -> None:
    parsed = parse_users_csv('extension,password,name\n100,pw,"two\nlines"\n\n101,,\n102,pw,\n')
    assert [u.extension for u in parsed.users] == ["102"]
    assert [(p.line, p.message) for p in parsed.problems] == [
        (2, "invalid name 'two\\nlines'"),
        (5, "missing password"),
    ]
