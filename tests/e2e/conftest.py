"""End-to-end fixtures: a real ``minipbx run`` on 127.0.0.1 and real SIP peers driving it.

One server serves the whole e2e session (starting one costs a few seconds); every test takes
fresh extensions from a pool so tests never see each other's registrations. The server's
stderr since the start of a test is attached to that test's failure report.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from minipbx.store import Database, SqlUserRepo
from minipbx.store.db import default_url
from minipbx.store.pbxrepos import SqlUserSettingsRepo
from tests.e2e.support import (
    HOST,
    Sipp,
    SippRun,
    digest_variables,
    free_port,
    options_ping,
    require_tool,
    stop,
    tail,
    wait_for,
)

RING_TIMEOUT = 3.0  # seconds; the no-answer test waits for it
USER_COUNT = 40  # extensions 100..139, a few per test
FIRST_EXTENSION = 100
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass
class Pbx:
    """A running ``minipbx run`` process."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    stdout_path: Path
    passwords: dict[str, str]  # extension -> password, in the order tests take them
    mark: int = 0  # length of the log when the current test started
    _free: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._free = iter(list(self.passwords))

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def log_since_mark(self) -> str:
        """What the server logged during the current test."""
        return self.log()[self.mark :]

    def take_user(self) -> tuple[str, str]:
        """A fresh extension and its password (never handed out before in this session)."""
        try:
            extension = next(self._free)
        except StopIteration:
            raise RuntimeError(f"all {USER_COUNT} test extensions used: raise USER_COUNT") from None
        return extension, self.passwords[extension]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "minipbx.cli", *args]


def _env() -> dict[str, str]:
    """The environment for minipbx processes: ours without MINIPBX_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPBX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``minipbx ARGS`` to the end (without our MINIPBX_* settings); output as text."""
    return subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=timeout)


def _create_users(data_dir: Path, passwords: dict[str, str], env: dict[str, str]) -> None:
    """The first user with ``minipbx user add``, the rest with one ``minipbx user import``."""
    (first, first_pw), *rest = passwords.items()
    for args in (
        ["user", "add", first, "--password", first_pw, "--data-dir", str(data_dir)],
        ["user", "import", str(_users_csv(data_dir.parent, rest)), "--data-dir", str(data_dir)],
    ):
        done = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"minipbx {' '.join(args)} failed:\n{done.stderr}"


async def _voicemail_off(data_dir: Path) -> None:
    db = Database(default_url(data_dir))
    try:
        await db.open()
        settings = SqlUserSettingsRepo(db)
        for user in await SqlUserRepo(db).list_users():
            await settings.update_settings(user.id, voicemail_enabled=False)
    finally:
        await db.close()


def _users_csv(directory: Path, users: Sequence[tuple[str, str]]) -> Path:
    path = directory / "users.csv"
    path.write_text("extension,password\n" + "".join(f"{e},{p}\n" for e, p in users))
    return path


_launches = itertools.count()


def start_pbx(
    root: Path,
    passwords: dict[str, str],
    *,
    config: str = "",
    args: Sequence[str] = (),
    port: int | None = None,
    create_users: bool = True,
    voicemail: bool = True,
) -> Pbx:
    """Start ``minipbx run`` on a free port (retried when another process takes the port).

    ``config`` is appended to the generated ``minipbx.toml``, ``args`` to the command line;
    ``voicemail=False`` turns the created users' voicemail off (their missed calls then fail
    as the B2BUA answers them, instead of reaching the mailbox);
    ``port`` pins the SIP port and ``create_users=False`` reuses ``root/data`` as it is
    (a restart on the same data directory).
    """
    env = _env()
    data_dir = root / "data"
    if create_users:
        _create_users(data_dir, passwords, env)
        if not voicemail:
            asyncio.run(_voicemail_off(data_dir))
    config_path = root / "minipbx.toml"
    config_path.write_text(f"[calls]\nring_timeout = {RING_TIMEOUT}\n{config}")
    problems = []
    for attempt in range(3 if port is None else 1):
        sip_port = free_port(tcp=True) if port is None else port
        launch = next(_launches)
        stdout_path, stderr_path = root / f"stdout-{launch}.log", root / f"stderr-{launch}.log"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                _cli(
                    "run",
                    "--data-dir",
                    str(data_dir),
                    "--config",
                    str(config_path),
                    "--bind",
                    HOST,
                    "--sip-port",
                    str(sip_port),
                    "--http-port",
                    str(free_port(tcp=True)),
                    *args,
                ),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        pbx = Pbx(sip_port, data_dir, process, stderr_path, stdout_path, passwords)

        def answering(pbx: Pbx = pbx) -> bool:
            if pbx.process.poll() is not None:
                return True  # stop waiting: it died
            reply = options_ping(pbx.port, timeout=0.2)
            return reply is not None and reply.startswith("SIP/2.0 200")

        if wait_for(answering, START_TIMEOUT, interval=0.1) and process.poll() is None:
            return pbx
        code = stop(process)
        problems.append(f"attempt {attempt} port {sip_port}: exit {code}\n{tail(pbx.log())}")
        if "in use" not in pbx.log():
            break
    pytest.fail("minipbx run did not answer OPTIONS:\n" + "\n".join(problems))


@pytest.fixture(autouse=True)
def _sipp_installed() -> None:
    """Every e2e test needs SIPp: skipped without it, except in CI (CI=true) where it fails."""
    require_tool("sipp", "sip-tester")


@pytest.fixture(scope="session")
def pbx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    """One ``minipbx run`` for the session; stopped with SIGTERM, which must exit 0."""
    require_tool("sipp", "sip-tester")
    root = tmp_path_factory.mktemp("minipbx")
    extensions = (str(FIRST_EXTENSION + i) for i in range(USER_COUNT))
    passwords = {ext: f"pw{ext}-{os.urandom(4).hex()}" for ext in extensions}
    pbx = start_pbx(root, passwords, voicemail=False)  # voicemail: tests/e2e/test_voicemail.py
    yield pbx
    alive = pbx.process.poll() is None
    code = stop(pbx.process, STOP_TIMEOUT)
    log = pbx.log()
    assert alive, f"minipbx died during the tests (exit {code}):\n{tail(log)}"
    assert code == 0, f"minipbx exited {code} after SIGTERM, not 0:\n{tail(log)}"
    assert "event=stopped" in log, f"no clean stop logged:\n{tail(log)}"


@pytest.fixture
def pbx(pbx_server: Pbx) -> Iterator[Pbx]:
    """The session's server, checked after each test: still running, no traceback logged."""
    pbx_server.mark = len(pbx_server.log())
    yield pbx_server
    new = pbx_server.log_since_mark()
    assert pbx_server.process.poll() is None, f"minipbx died:\n{tail(new)}"
    assert "Traceback" not in new, f"minipbx logged a traceback:\n{new}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server's stderr (during this test) to a failing test's report."""
    report = yield
    server = getattr(item, "funcargs", {}).get("pbx")
    if report.failed and isinstance(server, Pbx):
        report.sections.append(("minipbx stderr (this test)", server.log_since_mark()))
    return report


SippFactory = Callable[..., Sipp]


@pytest.fixture
def sipp(pbx: Pbx, tmp_path: Path) -> Iterator[SippFactory]:
    """Make SIPp processes against the server; each gets its own directory and port.

    ``sipp(scenario, name=..., rows=[(field0, field1, ...)], port=None, auth=False,
    recv_timeout=8.0)``; ``auth=True`` passes what the digest helper needs.
    """
    made: list[Sipp] = []
    counter = itertools.count()

    def make(
        scenario: str,
        *,
        name: str = "sipp",
        rows: Sequence[Sequence[str]] = (),
        port: int | None = None,
        auth: bool = False,
        recv_timeout: float = 8.0,
    ) -> Sipp:
        runner = Sipp(
            name=name,
            scenario=scenario,
            pbx_port=pbx.port,
            workdir=tmp_path / f"{next(counter)}-{name}",
            port=port if port is not None else free_port(),
            rows=rows,
            recv_timeout=recv_timeout,
            variables=digest_variables() if auth else {},
        )
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.kill()


RegisterFn = Callable[[str, str, int], SippRun]


@pytest.fixture
def register(sipp: SippFactory, pbx: Pbx) -> RegisterFn:
    """Register ``extension`` with a Contact on ``contact_port`` (a separate UAS process)."""

    def run(extension: str, password: str, contact_port: int) -> SippRun:
        result = sipp(
            "register.xml",
            name=f"register-{extension}",
            rows=[(extension, password, str(contact_port))],
            auth=True,
        ).run()
        assert result.returncode == 0, result.describe()
        return result

    return run
