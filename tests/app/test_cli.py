"""The command line: user management against a real SQLite data dir, and clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from minipbx.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_user_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    code, out, _ = run(
        capsys, "user", "add", "200", "--password", "s3cret", "--name", "Ann", "--data-dir", data
    )
    assert code == 0 and "added user 200" in out
    code, out, _ = run(capsys, "user", "list", "--data-dir", data)
    assert code == 0 and "200" in out and "Ann" in out
    assert "s3cret" not in out  # passwords are never stored or shown
    code, _, err = run(capsys, "user", "add", "200", "--password", "x", "--data-dir", data)
    assert code == 1 and err.startswith("minipbx: ") and err.count("\n") == 1
    code, out, _ = run(capsys, "user", "remove", "200", "--data-dir", data)
    assert code == 0
    code, _, err = run(capsys, "user", "remove", "200", "--data-dir", data)
    assert code == 1 and err.startswith("minipbx: ")


def test_user_import_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    bad = tmp_path / "bad.csv"
    bad.write_text("extension,password\n300,pw1\n301,\n")
    code, _, err = run(capsys, "user", "import", str(bad), "--data-dir", data)
    assert code == 1 and ":3:" in err and "nothing imported" in err
    good = tmp_path / "good.csv"
    good.write_text("extension,password,name\n300,pw1,A\n301,pw2,B\n")
    code, out, _ = run(capsys, "user", "import", str(good), "--data-dir", data)
    assert code == 0 and "imported 2" in out
    code, out, _ = run(capsys, "user", "list", "--data-dir", data)
    assert "300" in out and "301" in out


def test_unreadable_import_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "user", "import", str(tmp_path / "nope.csv"), "--data-dir", str(tmp_path)
    )
    assert code == 1 and "cannot read" in err


def test_bad_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--sip-port", "abc"])
    assert info.value.code == 2


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nsip_port = -1\n")
    code, _, err = run(capsys, "run", "--config", str(cfg), "--data-dir", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "sip_port" in err


def test_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        code, _, err = run(
            capsys,
            "run",
            "--data-dir",
            str(tmp_path / "d"),
            "--bind",
            "127.0.0.1",
            "--sip-port",
            str(port),
        )
    finally:
        busy.close()
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("minipbx: ") and "in use" in last


def test_sip_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "ok.sip"
    good.write_bytes(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: x\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    bad = tmp_path / "bad.sip"
    bad.write_bytes(good.read_bytes().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    code, out, _ = run(capsys, "sip-check", str(good), str(bad))
    assert code == 1
    assert "ok.sip: ok" in out and "bad.sip: invalid (answer 505)" in out


def test_cdr_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import json

    from minipbx.store import Database, default_url
    from minipbx.store.cdrs import SqlCdrRepo
    from tests.store.test_cdrs import make_cdr

    data = tmp_path / "data"

    async def fill() -> None:
        db = Database(default_url(data))
        await db.upgrade()
        await SqlCdrRepo(db).add_many([make_cdr(n) for n in range(3)])
        await db.close()

    asyncio.run(fill())
    code, out, err = run(capsys, "cdr", "export", "--data-dir", str(data))
    assert code == 0 and out.count("\n") == 4 and "exported 3" in err
    code, out, _ = run(
        capsys,
        "cdr",
        "export",
        "--format",
        "json",
        "--since",
        "2030-05-01T12:01:00",  # no offset: UTC
        "--until",
        "2030-05-01T13:02:00+01:00",
        "--data-dir",
        str(data),
    )
    assert code == 0 and [r["call_id"] for r in json.loads(out)] == ["call-1@127.0.0.1"]
    code, _, err = run(capsys, "cdr", "export", "--since", "yesterday", "--data-dir", str(data))
    assert code == 1 and "--since" in err and err.count("\n") == 1
    code, _, err = run(
        capsys,
        "cdr",
        "export",
        "--since",
        "2030-01-02",
        "--until",
        "2030-01-01",
        "--data-dir",
        str(data),
    )
    assert code == 1 and "before" in err


def test_bad_cdr_mysql_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    for url in ("postgresql://u@127.0.0.1/db", "::nonsense::"):
        code, _, err = run(
            capsys, "run", "--data-dir", data, "--sip-port", "0", "--cdr-mysql-url", url
        )
        assert code == 1 and err.startswith("minipbx: ") and err.count("\n") == 1
        assert "URL" in err or "url" in err
