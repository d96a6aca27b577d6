"""Call detail records end to end: real calls through ``minipbx run``, read back with
``minipbx cdr export``, shipped to a private MariaDB server, and kept through a SIGKILL.

- Answered, busy and cancelled SIPp calls through the session's server give one record each,
  with the fields billing needs (JSON export, and the CSV export once).
- A MariaDB server private to this module (its own data directory and port on 127.0.0.1;
  the machine's server is never touched) receives every record exactly once and in order:
  with the server up, and across a SIGKILL and restart of it during a call load.
- A wrong password is logged at start (without the password) and calls go on; a malformed
  ``cdr.mysql_url`` stops ``minipbx run`` with one line.
- A SIGKILL of the PBX during a call load loses no record of a call SIPp saw complete (the
  PBX holds the 200 to a BYE until the record is committed) and duplicates none.

Loads use ``uac_call_load.xml`` / ``uas_answer_load.xml`` (SIPp's own MD5 digest, no helper
process per call); the caller logs "answered <Call-ID>" for each call it completed.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from minipbx.store.cdrs import CDR_FIELDS
from tests.e2e.conftest import Pbx, RegisterFn, SippFactory, run_cli, start_pbx
from tests.e2e.support import (
    HOST,
    Sipp,
    SippRun,
    digest_variables,
    free_port,
    stop,
    tail,
    udp_listening,
    wait_for,
)

pytestmark = pytest.mark.slow

CALLER, CALLEE = "200", "201"  # the users of the PBXs this module starts itself
EXPORT_TIMEOUT = 10.0  # seconds for records to show up after SIPp is done
SHIP_TIMEOUT = 30.0  # seconds for the mirror to catch up once reachable
RETRY_MAX = 1  # [cdr] retry_max of the mirrored PBXs: the shipper retries every second


# --- reading records ---------------------------------------------------------------------------


def export(pbx: Pbx, fmt: str = "json", *options: str) -> str:
    """``minipbx cdr export`` of ``pbx``'s data directory (it may be running)."""
    done = run_cli("cdr", "export", "--format", fmt, "--data-dir", str(pbx.data_dir), *options)
    assert done.returncode == 0, f"cdr export failed ({done.returncode}):\n{done.stderr}"
    assert re.search(r"exported \d+ call record", done.stderr), done.stderr
    return done.stdout


def records(pbx: Pbx, *options: str) -> list[dict[str, Any]]:
    """The exported records (JSON), in local commit order."""
    data = json.loads(export(pbx, "json", *options))
    assert isinstance(data, list)
    return data


def wait_records(
    pbx: Pbx, ready: Callable[[list[dict[str, Any]]], bool], timeout: float = EXPORT_TIMEOUT
) -> list[dict[str, Any]]:
    """Export until ``ready(records)`` (the last export when time runs out)."""
    found: list[list[dict[str, Any]]] = [[]]

    def check() -> bool:
        found[0] = records(pbx)
        return ready(found[0])

    wait_for(check, timeout, interval=0.3)
    return found[0]


def parse_time(text: str) -> datetime:
    """An exported time (ISO 8601, UTC, ``Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def duplicates(values: Sequence[str]) -> list[str]:
    """Values that occur more than once."""
    return sorted(v for v, n in Counter(values).items() if n > 1)


# --- SIPp runs ----------------------------------------------------------------------------------


def answered_call_ids(run: SippRun) -> list[str]:
    """Call-IDs the load caller logged as completed (200 to its BYE)."""
    path = run.workdir / "calls.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return re.findall(r"^answered (\S+)", text, re.MULTILINE)


def screen_counts(run: SippRun) -> tuple[int, int]:
    """SIPp's final (successful, failed) call counts, from its screen file."""
    counts = []
    for label in ("Successful call", "Failed call"):
        rows = [line for line in run.screen.splitlines() if line.strip().startswith(label)]
        assert rows, f"no {label!r} row in the SIPp screen:\n{run.describe()}"
        counts.append(int(rows[-1].split("|")[-1].strip()))
    return counts[0], counts[1]


# --- a private MariaDB server -------------------------------------------------------------------


def _find(*names: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


@dataclass
class MariaDb:
    """A mariadbd of our own: data directory, socket and port under ``root``."""

    root: Path
    server: str
    client: str
    port: int
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "sock"

    def url(self, database: str, password: str | None = None) -> str:
        """The ``cdr.mysql_url`` for user ``minipbx`` (its real password unless given)."""
        pw = self.password if password is None else password
        return f"mysql://minipbx:{pw}@{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """Start (or restart) mariadbd on the same data directory and port; wait for it."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = self.root / f"mariadbd-{self.starts}.log"
        cmd = [
            self.server,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--pid-file={self.root / 'mariadbd.pid'}",
            f"--log-error={log}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")  # mariadbd refuses to run as root without it
        with (self.root / f"mariadbd-{self.starts}.out").open("wb") as out:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        process = self.process

        def ready() -> bool:
            return process.poll() is not None or self._query("SELECT 1").returncode == 0

        if not wait_for(ready, 30.0, interval=0.1) or process.poll() is not None:
            self.kill()
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"private mariadbd did not start:\n{tail(text, 30)}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop mariadbd with ``sig`` and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _query(self, sql: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [self.client, "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-B"]
        cmd += ["-e", sql, *([database] if database else [])]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def sql(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run ``sql`` as root over the socket; the rows (tab-separated fields)."""
        done = self._query(sql, database)
        assert done.returncode == 0, f"mariadb {sql!r} failed:\n{done.stderr}"
        return [line.split("\t") for line in done.stdout.splitlines()]

    def table_exists(self, database: str) -> bool:
        rows = self.sql(
            "SELECT COUNT(*) FROM information_schema.tables "
            f"WHERE table_schema = '{database}' AND table_name = 'cdr'"
        )
        return rows == [["1"]]

    def count(self, database: str) -> int:
        """Rows in table ``cdr`` of ``database`` (0 when it does not exist yet)."""
        if not self.table_exists(database):
            return 0
        return int(self.sql("SELECT COUNT(*) FROM cdr", database)[0][0])


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    """A private MariaDB server for this module, with user ``minipbx`` (a password) and
    databases ``cdr_up``, ``cdr_fault``, ``cdr_denied``. Killed at the end."""
    server = _find("mariadbd", "mysqld")
    install = _find("mariadb-install-db", "mysql_install_db")
    client = _find("mariadb", "mysql")
    if server is None or install is None or client is None:
        pytest.skip(
            "MariaDB server not installed (Debian packages mariadb-server and mariadb-client: "
            "mariadbd, mariadb-install-db, mariadb)"
        )
    root = tmp_path_factory.mktemp("mariadb")
    db = MariaDb(root, server, client, free_port(tcp=True))
    install_cmd = [
        install,
        "--no-defaults",
        "--auth-root-authentication-method=normal",
        f"--datadir={db.datadir}",
        "--skip-test-db",
    ]
    install_cmd.append("--user=root" if os.geteuid() == 0 else f"--user={getpass.getuser()}")
    done = subprocess.run(install_cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(install_cmd)} failed:\n{done.stdout}\n{done.stderr}")
    try:
        db.start()
        db.sql(
            "CREATE DATABASE cdr_up; CREATE DATABASE cdr_fault; CREATE DATABASE cdr_denied; "
            f"CREATE USER 'minipbx'@'{HOST}' IDENTIFIED BY '{db.password}'; "
            f"GRANT ALL ON *.* TO 'minipbx'@'{HOST}';"
        )
        yield db
    finally:
        db.kill(signal.SIGTERM)


# --- PBXs and SIPp processes of this module -------------------------------------------------------


@dataclass
class Lab:
    """PBXs and SIPp processes a test starts; all stopped at its end (also on failure)."""

    root: Path
    pbxs: list[Pbx] = field(default_factory=list)
    sipps: list[Sipp] = field(default_factory=list)
    passwords: dict[str, str] = field(
        default_factory=lambda: {e: f"pw{e}-{secrets.token_hex(4)}" for e in (CALLER, CALLEE)}
    )

    def pbx(self, *, config: str = "", args: Sequence[str] = (), restart: Pbx | None = None) -> Pbx:
        """Start ``minipbx run`` with users CALLER and CALLEE (``restart``: again, on the
        same data directory and port)."""
        (self.root / "pbx").mkdir(exist_ok=True)
        pbx = start_pbx(
            self.root / "pbx",
            self.passwords,
            config=config,
            args=args,
            port=restart.port if restart else None,
            create_users=restart is None,
        )
        self.pbxs.append(pbx)
        return pbx

    def sipp(self, pbx: Pbx, scenario: str, name: str, **options: Any) -> Sipp:
        runner = Sipp(
            name=name,
            scenario=scenario,
            pbx_port=pbx.port,
            workdir=self.root / f"{len(self.sipps)}-{name}",
            port=options.pop("port", None) or free_port(),
            **options,
        )
        self.sipps.append(runner)
        return runner

    def register(self, pbx: Pbx, extension: str, contact_port: int) -> None:
        run = self.sipp(
            pbx,
            "register.xml",
            f"register-{extension}",
            rows=[(extension, self.passwords[extension], str(contact_port))],
            variables=digest_variables(),
        ).run()
        assert run.returncode == 0, run.describe()

    def callee(self, pbx: Pbx) -> Sipp:
        """A SIPp UAS answering every call to CALLEE (registered, listening)."""
        port = free_port()
        uas = self.sipp(
            pbx,
            "uas_answer_load.xml",
            "callee",
            port=port,
            calls=0,
            trace_messages=False,
            timeout=110.0,
            recv_timeout=10.0,
        ).start()
        assert wait_for(lambda: udp_listening(port), 5.0), "the callee SIPp did not bind"
        self.register(pbx, CALLEE, port)
        return uas

    def load(
        self,
        pbx: Pbx,
        *,
        calls: int,
        rate: float,
        hold_ms: int = 100,
        recv_timeout: float = 10.0,
        timeout: float = 60.0,
    ) -> Sipp:
        """Start a SIPp caller placing ``calls`` calls from CALLER to CALLEE at ``rate``/s."""
        auth = f"[authentication username={CALLER} password={self.passwords[CALLER]}]"
        return self.sipp(
            pbx,
            "uac_call_load.xml",
            "caller",
            rows=[(CALLER, auth, CALLEE)],
            calls=calls,
            trace_messages=False,
            timeout=timeout,
            recv_timeout=recv_timeout,
            extra_args=[
                *("-r", f"{rate:g}", "-l", "500", "-d", str(hold_ms)),
                *("-trace_logs", "-log_file", "calls.log"),
                # SIPp's digest uri is sip:remote_ip:remote_port unless told; RFC 3261 22.4
                # (and minipbx) want the Request-URI.
                *("-auth_uri", f"{CALLEE}@{HOST}:{pbx.port}"),
            ],
        ).start()

    def close(self) -> list[str]:
        """Stop everything; the problems seen in the PBX logs."""
        for runner in self.sipps:
            runner.kill()
        problems = []
        for pbx in self.pbxs:
            stop(pbx.process)
            log = pbx.log()
            if "Traceback" in log:
                problems.append(f"minipbx logged a traceback ({pbx.stderr_path}):\n{log}")
        return problems


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        problems = lab.close()
    assert not problems, "\n".join(problems)


def mirrored_config(url: str) -> str:
    return f'[cdr]\nmysql_url = "{url}"\nretry_max = {RETRY_MAX}\n'


# --- 1. one record per call, with the right fields ------------------------------------------------


def _check_common(record: dict[str, Any], caller: str, callee: str, call_id: str) -> None:
    assert record["call_id"] == call_id
    assert record["caller_number"] == caller
    assert record["called_number"] == callee and record["routed_number"] == callee
    assert record["route_type"] == "local" and record["trunk"] is None
    assert record["tenant"] == "default"
    assert record["source_ip"] == HOST
    assert record["user_agent"] == "minipbx-e2e"
    assert Decimal(record["cost"]) == 0 and record["currency"] == ""
    assert re.fullmatch(r"[0-9a-f-]{36}", record["uuid"]), record["uuid"]
    start, end = parse_time(record["start_time"]), parse_time(record["end_time"])
    assert start <= end
    assert abs(float(record["duration"]) - (end - start).total_seconds()) <= 0.002
    assert abs(datetime.now(start.tzinfo) - start) < timedelta(minutes=5), "not UTC wall time"


def test_answered_busy_and_cancelled_calls_give_one_record_each(
    sipp: SippFactory, register: RegisterFn, pbx: Pbx
) -> None:
    scenarios = {  # caller scenario, callee scenario
        "answered": ("uac_call.xml", "uas_answer.xml"),
        "busy": ("uac_rejected.xml", "uas_busy.xml"),
        "cancelled": ("uac_cancel.xml", "uas_ring.xml"),
    }
    callers: dict[str, tuple[str, Sipp]] = {}
    callees: dict[str, tuple[str, Sipp]] = {}
    for kind, (_, uas) in scenarios.items():
        extension, password = pbx.take_user()
        port = free_port()
        register(extension, password, port)
        callees[kind] = extension, sipp(uas, name=f"callee-{kind}", port=port).start()
        assert wait_for(lambda port=port: udp_listening(port), 5.0), "callee SIPp did not bind"
    for kind, (uac, _) in scenarios.items():  # the three calls run at the same time
        extension, password = pbx.take_user()
        runner = sipp(
            uac, name=f"caller-{kind}", rows=[(extension, password, callees[kind][0])], auth=True
        )
        callers[kind] = extension, runner.start()
    runs = {kind: runner.wait() for kind, (_, runner) in callers.items()}
    for kind, run in runs.items():
        assert run.returncode == 0, run.describe()
        assert callees[kind][1].wait().returncode == 0, f"{kind} callee failed"
    call_ids = {
        kind: [m for m in run.sent if m.method == "INVITE"][-1].get("Call-ID") or ""
        for kind, run in runs.items()
    }
    numbers = {callers[kind][0] for kind in scenarios}

    def ours(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in found if r["caller_number"] in numbers]

    found = ours(wait_records(pbx, lambda rs: len(ours(rs)) >= 3))
    by_call_id = {kind: [r for r in found if r["call_id"] == cid] for kind, cid in call_ids.items()}
    assert len(found) == 3 and all(len(v) == 1 for v in by_call_id.values()), (
        "want exactly one record per call (none for the 407-challenged INVITE):\n"
        + json.dumps(found, indent=1)
    )
    answered, busy, cancelled = (by_call_id[k][0] for k in ("answered", "busy", "cancelled"))
    for kind, record in (("answered", answered), ("busy", busy), ("cancelled", cancelled)):
        _check_common(record, callers[kind][0], callees[kind][0], call_ids[kind])

    assert answered["disposition"] == "ANSWERED" and answered["sip_status"] == 200
    assert answered["hangup_by"] == "caller" and answered["reason_cause"] == ""
    assert answered["answer_time"] is not None
    start, answer, end = (
        parse_time(answered[k]) for k in ("start_time", "answer_time", "end_time")
    )
    assert start <= answer <= end
    talk = (end - answer).total_seconds()
    assert talk >= 0.9, "uac_call.xml holds the call 1 s"  # 1 s pause after the ACK
    # Whole seconds, to the nearest, half up (cdr.record_of); the record rounds the exact
    # span, the exported times are rounded each: 2 ms of slack.
    nearest = [math.floor(talk + slack + 0.5) for slack in (-0.002, 0.002)]
    assert nearest[0] <= answered["billable_seconds"] <= nearest[1], (talk, answered)

    assert busy["disposition"] == "BUSY" and busy["sip_status"] == 486
    assert busy["hangup_by"] == "callee"
    assert cancelled["disposition"] == "CANCELLED" and cancelled["sip_status"] == 487
    assert cancelled["hangup_by"] == "caller"
    for record in (busy, cancelled):
        assert record["answer_time"] is None and record["billable_seconds"] == 0

    # The CSV export: documented columns in order, the same values as the JSON export.
    rows = list(csv.DictReader(io.StringIO(export(pbx, "csv"))))
    assert rows and list(rows[0]) == list(CDR_FIELDS)
    for record in (answered, busy, cancelled):
        (row,) = [r for r in rows if r["uuid"] == record["uuid"]]
        assert row == {k: "" if v is None else str(v) for k, v in record.items()}

    # --since / --until select by end time.
    ends = sorted(parse_time(r["end_time"]) for r in found)
    window = records(
        pbx,
        "--since",
        ends[0].isoformat(),
        "--until",
        (ends[-1] + timedelta(milliseconds=1)).isoformat(),
    )
    assert {r["uuid"] for r in found} <= {r["uuid"] for r in window}
    later = records(pbx, "--since", (ends[-1] + timedelta(milliseconds=1)).isoformat())
    assert not {r["uuid"] for r in found} & {r["uuid"] for r in later}


# --- 2. shipping to MySQL/MariaDB ----------------------------------------------------------------

_MIRROR_COLUMNS = (
    "cdr_uuid",
    "call_id",
    "caller_number",
    "called_number",
    "disposition",
    "sip_status",
    "hangup_by",
    "billable_seconds",
    "source_ip",
    "user_agent",
    "DATE_FORMAT(start_time, '%Y-%m-%dT%H:%i:%s.%fZ')",
    "DATE_FORMAT(end_time, '%Y-%m-%dT%H:%i:%s.%fZ')",
    "duration",
)


def _mirror_rows(db: MariaDb, database: str) -> list[tuple[str, ...]]:
    """Table ``cdr`` in ``id`` order: the columns above, times as the export writes them."""
    rows = db.sql(f"SELECT {', '.join(_MIRROR_COLUMNS)} FROM cdr ORDER BY id", database)
    # DATETIME(3) prints microseconds through %f: cut to milliseconds like the export.
    return [(*r[:10], r[10][:-4] + "Z", r[11][:-4] + "Z", r[12]) for r in rows]


def _local_rows(found: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    names = [c.split("(")[-1].split(",")[0] for c in _MIRROR_COLUMNS]
    return [tuple(str(r["uuid" if n == "cdr_uuid" else n]) for n in names) for r in found]


def _assert_mirror_equals_local(db: MariaDb, database: str, found: list[dict[str, Any]]) -> None:
    uuids = [r["uuid"] for r in found]
    assert not duplicates(uuids), "local records share a uuid"
    (total, distinct) = db.sql("SELECT COUNT(*), COUNT(DISTINCT cdr_uuid) FROM cdr", database)[0]
    assert int(total) == int(distinct) == len(found), (total, distinct, len(found))
    mirror = _mirror_rows(db, database)
    local = _local_rows(found)
    if mirror != local:
        missing = set(uuids) - {m[0] for m in mirror}
        first = next(i for i, (m, lo) in enumerate(zip(mirror, local, strict=False)) if m != lo)
        pytest.fail(
            f"table cdr differs from the local records: {len(missing)} missing; first "
            f"difference at row {first}:\nmirror {mirror[first]}\nlocal  {local[first]}"
        )


def _assert_end_order(found: list[dict[str, Any]]) -> None:
    """Records are committed (and shipped) in the order their calls ended."""
    ends = [parse_time(r["end_time"]) for r in found]
    slack = timedelta(milliseconds=2)  # each end time is rounded to the millisecond
    late = [i for i in range(1, len(ends)) if ends[i] + slack < ends[i - 1]]
    assert not late, (
        f"records out of end order at {late[:5]}: {[ends[i - 1 : i + 1] for i in late[:3]]}"
    )


def test_mirror_gets_every_record_once_in_order(lab: Lab, mariadb: MariaDb) -> None:
    pbx = lab.pbx(config=mirrored_config(mariadb.url("cdr_up")))
    assert "event=cdr_mirror_ready" in pbx.log(), tail(pbx.log())
    lab.callee(pbx)
    calls = 200
    run = lab.load(pbx, calls=calls, rate=100).wait()
    assert run.returncode == 0, run.describe()
    assert screen_counts(run) == (calls, 0), run.describe()
    assert len(answered_call_ids(run)) == calls

    found = wait_records(pbx, lambda rs: len(rs) >= calls)
    assert len(found) == calls
    assert wait_for(lambda: mariadb.count("cdr_up") >= calls, SHIP_TIMEOUT, interval=0.2), (
        f"{mariadb.count('cdr_up')} of {calls} records in MySQL:\n{tail(pbx.log())}"
    )
    _assert_mirror_equals_local(mariadb, "cdr_up", found)
    _assert_end_order(found)
    assert {r["call_id"] for r in found} == set(answered_call_ids(run))
    assert "cdr_mirror_failed" not in pbx.log(), tail(pbx.log())


def test_mirror_outage_loses_and_duplicates_nothing(lab: Lab, mariadb: MariaDb) -> None:
    database = "cdr_fault"
    pbx = lab.pbx(config=mirrored_config(mariadb.url(database)))
    lab.callee(pbx)
    calls, rate = 300, 50  # 6 s of calls; the outage lasts about 2.5 s of them
    caller = lab.load(pbx, calls=calls, rate=rate)
    try:
        assert wait_for(lambda: mariadb.count(database) >= 40, 15.0, interval=0.1), (
            f"nothing shipped before the outage:\n{tail(pbx.log())}"
        )
        mariadb.kill(signal.SIGKILL)  # in the middle of the load (and maybe of a batch)
        failed = re.compile(r"event=cdr_mirror_failed .*queued=(\d+)")
        assert wait_for(lambda: failed.search(pbx.log()) is not None, 10.0), tail(pbx.log())
        match = failed.search(pbx.log())
        assert match is not None and int(match.group(1)) > 0, match and match.group(0)
        time.sleep(1.5)  # calls go on while the mirror is down
        assert caller.process is not None and caller.process.poll() is None, "load ended early"
    finally:
        if mariadb.process is None or mariadb.process.poll() is not None:
            mariadb.start()  # same data directory and port (also for the next tests)
    run = caller.wait()
    assert run.returncode == 0, run.describe()
    assert screen_counts(run) == (calls, 0), run.describe()

    found = wait_records(pbx, lambda rs: len(rs) >= calls)
    assert len(found) == calls
    assert {r["call_id"] for r in found} == set(answered_call_ids(run))
    assert wait_for(lambda: mariadb.count(database) >= calls, SHIP_TIMEOUT, interval=0.2), (
        f"{mariadb.count(database)} of {calls} records in MySQL:\n{tail(pbx.log())}"
    )
    _assert_mirror_equals_local(mariadb, database, found)
    assert "event=cdr_mirror_recovered" in pbx.log(), tail(pbx.log())


def test_wrong_mirror_password_is_logged_and_calls_go_on(lab: Lab, mariadb: MariaDb) -> None:
    wrong = f"wrong-{secrets.token_hex(4)}"
    url = mariadb.url("cdr_denied", password=wrong)
    pbx = lab.pbx(args=["--cdr-mysql-url", url])  # the flag this time, not the file
    target = f"target=mysql+asyncmy://minipbx:***@{HOST}:{mariadb.port}/cdr_denied"
    lines = [line for line in pbx.log().splitlines() if "event=cdr_mirror_unavailable" in line]
    assert len(lines) == 1 and target in lines[0], tail(pbx.log())
    assert "Access denied" in lines[0], lines[0]
    assert wrong not in pbx.log() and mariadb.password not in pbx.log()
    assert "event=started" in pbx.log()

    lab.callee(pbx)
    run = lab.load(pbx, calls=5, rate=10).wait()
    assert run.returncode == 0, run.describe()
    found = wait_records(pbx, lambda rs: len(rs) >= 5)
    assert [r["disposition"] for r in found] == ["ANSWERED"] * 5
    assert {r["call_id"] for r in found} == set(answered_call_ids(run))
    assert mariadb.count("cdr_denied") == 0
    assert wrong not in pbx.log()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--cdr-mysql-url", "postgresql://x/y"], "bad cdr.mysql_url: "),
        (["--cdr-mysql-url", "notaurl"], "bad cdr.mysql_url: "),
        (["--config", "retry_max = 0"], "cdr retry_max must be"),
    ],
    ids=["postgresql-url", "not-a-url", "retry-max-0"],
)
def test_bad_cdr_settings_stop_the_start_with_one_line(
    tmp_path: Path, option: list[str], message: str
) -> None:
    if option[0] == "--config":
        config = tmp_path / "minipbx.toml"
        config.write_text(f"[cdr]\n{option[1]}\n")
        option = ["--config", str(config)]
    done = run_cli(
        "run",
        "--data-dir",
        str(tmp_path / "data"),
        "--bind",
        HOST,
        "--sip-port",
        str(free_port(tcp=True)),
        "--http-port",
        str(free_port(tcp=True)),
        *option,
        timeout=30.0,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"minipbx: {message}"), done.stderr


# --- 3. a SIGKILL during a call load ---------------------------------------------------------------


def test_sigkill_during_load_keeps_every_completed_call(lab: Lab) -> None:
    pbx = lab.pbx()
    uas = lab.callee(pbx)
    calls, rate = 480, 80  # 6 s of calls, the kill after about 1.5 s
    caller = lab.load(pbx, calls=calls, rate=rate, hold_ms=100, recv_timeout=3.0)
    ended = re.compile(r"event=call_end .*disposition=ANSWERED")
    assert wait_for(lambda: len(ended.findall(pbx.log())) >= 120, 15.0), tail(pbx.log())
    pbx.process.send_signal(signal.SIGKILL)
    pbx.process.wait(5)
    again = lab.pbx(restart=pbx)  # same data directory and port
    assert uas.process is not None and uas.process.poll() is None, "the callee SIPp ended"
    lab.register(again, CALLEE, uas.port)
    run = caller.wait()
    successful, failed = screen_counts(run)
    completed = answered_call_ids(run)
    assert len(completed) == successful, "calls.log disagrees with SIPp's statistics"
    assert failed > 0, f"the SIGKILL hit no call in progress?\n{run.describe()}"
    assert len(ended.findall(again.log())) > 0, f"no call after the restart:\n{tail(again.log())}"
    code = stop(again.process)
    assert code == 0, tail(again.log())

    found = records(again)
    answered = [r for r in found if r["disposition"] == "ANSWERED"]
    assert len(answered) >= successful, (len(answered), successful)
    missing = set(completed) - {r["call_id"] for r in answered}
    assert not missing, (
        f"{len(missing)} completed calls without a record, e.g. {sorted(missing)[:3]}"
    )
    assert not duplicates([r["uuid"] for r in found]), "a uuid twice"
    assert not duplicates([r["call_id"] for r in found]), "a call recorded twice"
