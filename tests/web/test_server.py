"""The web server inside the PBX process, the admin commands, and one end-to-end run."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from minipbx.app import App
from minipbx.config import Settings
from minipbx.store import Database, default_url
from minipbx.web import StaticLiveState, WebContext, create_app
from minipbx.web.server import WebServer, WebServerError
from tests.app.test_cli import run

HOST = "127.0.0.1"


async def test_app_serves_the_api_on_its_loop(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", bind=HOST, sip_port=0, http_port=0, stun_port=None
    )
    app = App(settings)
    try:
        await app.start()
        assert app.http_port > 0 and app.admin_password
        base = f"http://{HOST}:{app.http_port}/api/v1"
        async with httpx.AsyncClient(base_url=base) as client:
            login = await client.post(
                "/auth/login", json={"username": "admin", "password": app.admin_password}
            )
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['token']}"}
            users = await client.get("/users", headers=auth)
            assert sorted(u["extension"] for u in users.json()) == ["100", "101", "102"]
            status = (await client.get("/status", headers=auth)).json()
            assert status["users"] == 3 and status["calls"] == 0
            assert (await client.delete("/calls/nope", headers=auth)).status_code == 404
        assert not app.hangup_call("nope")
    finally:
        await app.stop()
    # the port is released, and a second start keeps the first admin (no new password)
    again = App(settings)
    try:
        await again.start()
        assert again.admin_password is None
    finally:
        await again.stop()


async def test_web_server_port_in_use(tmp_path: Path) -> None:
    db = Database(default_url(tmp_path / "data"))
    ctx = WebContext(db=db, live=StaticLiveState(), secret=b"x" * 32, data_dir=tmp_path)
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen()
    try:
        server = WebServer(create_app(ctx), HOST, busy.getsockname()[1])
        with pytest.raises(WebServerError, match=r"cannot listen on http 127\.0\.0\.1:.*in use"):
            await server.start()
    finally:
        busy.close()
        await db.close()


def test_run_with_http_port_in_use_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen()
    try:
        code, _, err = run(
            capsys,
            "run",
            "--data-dir",
            str(tmp_path / "d"),
            "--bind",
            HOST,
            "--sip-port",
            "0",
            "--http-port",
            str(busy.getsockname()[1]),
        )
    finally:
        busy.close()
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("minipbx: cannot listen on http") and "in use" in last


def test_admin_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    code, out, _ = run(capsys, "admin", "add", "root", "--password", "long enough", *data)
    assert code == 0 and "system admin root" in out
    code, _, err = run(
        capsys, "admin", "add", "t", "--password", "long enough", "--tenant", "x.example", *data
    )
    assert code == 1 and err.strip() == "minipbx: unknown domain 'x.example'"
    code, out, _ = run(
        capsys, "admin", "add", "t", "--password", "long enough", "--tenant", "default", *data
    )
    assert code == 0 and "tenant admin of default" in out
    code, _, err = run(capsys, "admin", "add", "u", "--password", "short", *data)
    assert code == 1 and "password" in err and err.count("\n") == 1
    code, _, err = run(capsys, "admin", "add", "root", "--password", "long enough", *data)
    assert code == 1 and "already exists" in err
    code, out, _ = run(capsys, "admin", "list", *data)
    lines = out.strip().splitlines()
    assert lines[1].split()[:3] == ["root", "(system)", "yes"]
    assert lines[2].split()[:3] == ["t", "default", "yes"]
    code, out, _ = run(capsys, "token", "create", "root", "--label", "ci", *data)
    token = out.strip()
    assert code == 0 and re.fullmatch(r"[A-Za-z0-9_\-]{40,}", token)
    code, out, _ = run(capsys, "admin", "password", "root", "--password", "another one", *data)
    assert code == 0

    async def check() -> None:
        db = Database(default_url(tmp_path / "data"))
        ctx = WebContext(db=db, live=StaticLiveState(), secret=b"x" * 32, data_dir=tmp_path)
        transport = httpx.ASGITransport(app=create_app(ctx))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                me = await client.get(
                    "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                )
                assert me.json()["username"] == "root"
                login = await client.post(
                    "/api/v1/auth/login", json={"username": "root", "password": "another one"}
                )
                assert login.status_code == 200
        finally:
            await db.close()

    asyncio.run(check())
    code, out, _ = run(capsys, "admin", "remove", "t", *data)
    assert code == 0
    code, _, err = run(capsys, "admin", "remove", "t", *data)
    assert code == 1 and "no admin 't'" in err
    code, _, err = run(capsys, "token", "create", "nobody", *data)
    assert code == 1 and "no admin 'nobody'" in err


@pytest.mark.slow
def test_minipbx_run_then_log_in_and_list_users(tmp_path: Path) -> None:
    """``minipbx run --http-port 0``: the banner gives the port and the admin's password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPBX_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MINIPBX_STUN_PORT"] = "0"  # no STUN server: its port may be taken
    argv = [sys.executable, "-m", "minipbx.cli", "run", "--data-dir", str(tmp_path / "data")]
    argv += ["--bind", HOST, "--sip-port", "0", "--http-port", "0"]
    log = (tmp_path / "stderr.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "admin admin  password" not in banner and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            banner += line
        port = re.search(r"REST API http://127\.0\.0\.1:(\d+)/", banner)
        password = re.search(r"admin admin  password (\S+)", banner)
        assert port and password, banner + (tmp_path / "stderr.log").read_text()
        base = f"http://{HOST}:{port.group(1)}/api/v1"
        login = httpx.post(
            f"{base}/auth/login", json={"username": "admin", "password": password.group(1)}
        )
        assert login.status_code == 200, login.text
        users = httpx.get(
            f"{base}/users", headers={"Authorization": f"Bearer {login.json()['token']}"}
        )
        assert sorted(u["extension"] for u in users.json()) == ["100", "101", "102"]
        assert "content-security-policy" in users.headers
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "stderr.log").read_text()
