"""Trunks and dial plans end to end: a ``minipbx run`` of this module's own, SIPp as providers.

The module starts its own server (own data directory and ports) so its dial plan never
reaches the session's server, whose tests dial extensions with no plan at all. The database
is configured before the server starts, through the repositories (so the first
``event=routing_loaded`` already has everything); only the registering trunk is added while
it runs. SIPp plays the providers on 127.0.0.1:

- a registrar that challenges the trunk's REGISTER (401, MD5, a fixed nonce) and checks the
  answer with ``verifyauth``;
- a provider that challenges the trunk's INVITE (407) and answers the authenticated one;
- a provider answering 503 and a backup one answering 200 (failover);
- a carrier sending INVITEs to a DID from an address:port its trunk trusts (no digest).

Trunk dial plan of the tenant (``PLAN``): ``0`` -> trunk ``provider`` (strip 1, prepend +44,
caller ID ``CALLER_ID``), ``9`` -> trunk ``down`` with failover ``backup`` (strip 1),
``900`` -> reject 403, ``DID`` -> local DID extension, ``8`` -> local (strip 1) with a
``LIMIT`` s duration limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest

from minipbx.pbx.b2bua import LIMIT_REASON
from minipbx.store import Database, SqlTenantRepo, SqlUserRepo
from minipbx.store.db import default_url
from minipbx.store.pbxrecords import DialPlanRule
from minipbx.store.pbxrepos import SqlDialPlanRepo, SqlTrunkRepo
from tests.e2e.conftest import Pbx, RegisterFn, SippFactory, run_cli, start_pbx
from tests.e2e.support import (
    HOST,
    SipMessage,
    Sipp,
    SippRun,
    free_port,
    parse_trace,
    require_tool,
    stop,
    tail,
    udp_listening,
    wait_for,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")

FIRST_EXTENSION = 300
USER_COUNT = 8
PLAN = "trunks"
REALM = "provider.test"  # the realm of the SIPp providers' challenges
NONCE_401 = "e2e0trunk0nonce0401"  # fixed nonces of trunk_registrar.xml / trunk_provider_auth.xml
NONCE_407 = "e2e0trunk0nonce0407"
OUT_USER, OUT_PASSWORD = "acct-out", "out-secret-7"  # trunk "provider"
REG_TRUNK, REG_USER, REG_PASSWORD = "registering", "acct-reg", "reg-secret-9"
CALLER_ID = "442079460000"  # the caller ID of the "0" rule
TRUNK_CALLER_ID = "442070000001"  # trunk "provider"'s own (the rule's wins)
NATIONAL = "2071234567"  # dialled as 0 + NATIONAL, sent as +44 + NATIONAL
DID = "5551000"
CARRIER_CALLER = "+15550001"
LIMIT = 2  # seconds: the "8" rule's max_seconds
STOP_TIMEOUT = 5.0


# --- the module's server -------------------------------------------------------------------


def in_db(data_dir: Path, action: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``action`` on the SQLite database of ``data_dir`` (the server sees the change
    within a second or two)."""

    async def run() -> T:
        db = Database(default_url(data_dir))
        try:
            await db.open()
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())


def _rules(did_extension: str) -> list[DialPlanRule]:
    return [
        DialPlanRule(
            pattern="0",
            action="trunk",
            target="provider",
            strip=1,
            prepend="+44",
            caller_id=CALLER_ID,
        ),
        DialPlanRule(pattern="9", action="trunk", target="down", failover_target="backup", strip=1),
        DialPlanRule(pattern="900", action="reject", reject_status=403),
        DialPlanRule(pattern=DID, action="local", target=did_extension),
        DialPlanRule(pattern="8", action="local", strip=1, max_seconds=LIMIT),
    ]


async def _configure(
    db: Database, users: dict[str, str], did_extension: str, ports: dict[str, int]
) -> int:
    """Users, trunks and the tenant's dial plan; returns the tenant id."""
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    for extension, password in users.items():
        await SqlUserRepo(db).add(extension, password)
    trunks = SqlTrunkRepo(db)
    await trunks.add(
        tenant.id,
        "provider",
        host=HOST,
        port=ports["provider"],
        username=OUT_USER,
        password=OUT_PASSWORD,
        register=False,
        caller_id=TRUNK_CALLER_ID,
    )
    await trunks.add(tenant.id, "down", host=HOST, port=ports["down"], register=False)
    await trunks.add(tenant.id, "backup", host=HOST, port=ports["backup"], register=False)
    await trunks.add(tenant.id, "carrier", allowed_ips=f"{HOST}:{ports['carrier']}")
    plans = SqlDialPlanRepo(db)
    plan = await plans.add(tenant.id, PLAN, description="e2e trunks")
    await plans.replace_rules(plan.id, _rules(did_extension))
    await plans.set_tenant_plan(tenant.id, plan.id)
    return tenant.id


@dataclass
class TrunkLab:
    """The module's server and what its data holds."""

    pbx: Pbx
    tenant_id: int
    did_extension: str
    did_password: str
    ports: dict[str, int]  # trunk name -> the port its SIPp peer uses

    def db(self, action: Callable[[Database], Awaitable[T]]) -> T:
        return in_db(self.pbx.data_dir, action)


@pytest.fixture(scope="module")
def trunk_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrunkLab]:
    """A ``minipbx run`` with the trunks and dial plan of this module; stopped at the end
    (SIGTERM, which must exit 0)."""
    require_tool("sipp", "sip-tester")
    root = tmp_path_factory.mktemp("minipbx-trunks")
    extensions = [str(FIRST_EXTENSION + i) for i in range(USER_COUNT)]
    users = {ext: f"pw{ext}-{os.urandom(4).hex()}" for ext in extensions}
    did_extension, *pool = extensions
    ports = {name: free_port() for name in ("provider", "down", "backup", "carrier")}
    tenant_id = in_db(root / "data", lambda db: _configure(db, users, did_extension, ports))
    pbx = start_pbx(root, {ext: users[ext] for ext in pool}, create_users=False)
    try:
        assert "event=routing_loaded plans=1 trunks=4 ivr_menus=0 problems=0" in pbx.log(), tail(
            pbx.log()
        )
        yield TrunkLab(pbx, tenant_id, did_extension, users[did_extension], ports)
    finally:
        alive = pbx.process.poll() is None
        code = stop(pbx.process, STOP_TIMEOUT)
    log = pbx.log()
    assert alive, f"minipbx died during the tests (exit {code}):\n{tail(log)}"
    assert code == 0, f"minipbx exited {code} after SIGTERM, not 0:\n{tail(log)}"
    assert "event=stopped" in log, f"no clean stop logged:\n{tail(log)}"


@pytest.fixture
def pbx(trunk_lab: TrunkLab) -> Iterator[Pbx]:
    """This module's server instead of the session's (conftest's ``sipp`` and ``register``
    use it); checked after each test: still running, no traceback logged."""
    server = trunk_lab.pbx
    server.mark = len(server.log())
    yield server
    new = server.log_since_mark()
    assert server.process.poll() is None, f"minipbx died:\n{tail(new)}"
    assert "Traceback" not in new, f"minipbx logged a traceback:\n{new}"


# --- reading what SIPp saw -----------------------------------------------------------------

_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_USER = re.compile(r"sips?:([^@;>]+)@")
_STAMP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.MULTILINE)


def _user(uri_text: str | None) -> str | None:
    """The user part of the first SIP URI in a start line or header value."""
    found = _USER.search(uri_text or "")
    return found.group(1) if found else None


def _request_uri(message: SipMessage) -> str:
    return message.start_line.split()[1]


def _finals(run: SippRun) -> list[int]:
    """Final statuses received for INVITEs, in order."""
    return [s for s in run.responses("INVITE") if s >= 200]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _check_digest(
    header: str | None, method: str, uri: str, user: str, password: str, nonce: str
) -> None:
    """``header`` answers our fixed challenge for ``uri`` with the right password."""
    assert header is not None, f"no credentials on the {method}"
    scheme, _, rest = header.partition(" ")
    assert scheme.lower() == "digest", header
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }
    expected = {"username": user, "realm": REALM, "nonce": nonce, "uri": uri}
    assert {k: params.get(k) for k in expected} == expected, header
    ha1 = _md5(f"{user}:{REALM}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if "qop" in params:
        assert params["qop"] == "auth", header
        digest = _md5(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    else:
        digest = _md5(f"{ha1}:{nonce}:{ha2}")
    assert params.get("response") == digest, f"wrong digest response: {header}"


def _timed(run: SippRun) -> list[tuple[float, SipMessage]]:
    """SIPp's messages with the time (Unix seconds) its trace gives each."""
    text = (run.workdir / "messages.log").read_text(errors="replace")
    stamps = [
        datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f").timestamp() for s in _STAMP.findall(text)
    ]
    messages = parse_trace(text)
    assert len(stamps) == len(messages), f"cannot pair trace times and messages:\n{text}"
    return list(zip(stamps, messages, strict=True))


def _when(timed: list[tuple[float, SipMessage]], what: Callable[[SipMessage], bool]) -> float:
    found = [t for t, m in timed if what(m)]
    assert found, "message not in the trace"
    return found[0]


def _start(sipp: SippFactory, scenario: str, name: str, port: int) -> Sipp:
    """A SIPp UAS on ``port``, started and listening."""
    uas = sipp(scenario, name=name, port=port).start()
    assert wait_for(lambda: udp_listening(port), 5.0), f"SIPp {name} did not bind {port}"
    return uas


def _logged(pbx: Pbx, text: str, timeout: float) -> bool:
    return wait_for(lambda: text in pbx.log_since_mark(), timeout, interval=0.1)


# --- the tests -----------------------------------------------------------------------------


def test_registering_trunk_registers_with_digest(
    trunk_lab: TrunkLab, pbx: Pbx, sipp: SippFactory
) -> None:
    """Added while the server runs: REGISTER, 401, REGISTER with the trunk's digest, 200
    granting 60 s; removed: un-REGISTER (Expires: 0)."""
    port = free_port()
    registrar = sipp(
        "trunk_registrar.xml", name="registrar", port=port, rows=[(REG_USER, REG_PASSWORD)]
    ).start()
    assert wait_for(lambda: udp_listening(port), 5.0), "the registrar SIPp did not bind"
    trunk = trunk_lab.db(
        lambda db: SqlTrunkRepo(db).add(
            trunk_lab.tenant_id,
            REG_TRUNK,
            host=HOST,
            port=port,
            username=REG_USER,
            password=REG_PASSWORD,
            register=True,
            register_expires=300,
        )
    )
    name = f"trunk={trunk_lab.tenant_id}/{REG_TRUNK}"
    try:
        registered = _logged(pbx, f"event=trunk_registered {name} expires=60", 10.0)
    finally:
        trunk_lab.db(lambda db: SqlTrunkRepo(db).remove(trunk.id))
    assert registered, f"no trunk_registered:\n{pbx.log_since_mark()}"
    run = registrar.wait()
    assert run.returncode == 0, run.describe()
    assert _logged(pbx, f"event=trunk_unregistered {name}", 5.0), pbx.log_since_mark()

    registers = run.requests_received("REGISTER")
    assert len(registers) == 3, run.describe()
    first, second, last = registers
    assert first.get("Authorization") is None, run.describe()
    assert first.get("Expires") == "300", run.describe()
    _check_digest(
        second.get("Authorization"),
        "REGISTER",
        _request_uri(second),
        REG_USER,
        REG_PASSWORD,
        NONCE_401,
    )
    assert _request_uri(second) == f"sip:{HOST}:{port}", run.describe()
    assert _user(second.get("To")) == REG_USER, run.describe()
    contact = second.get("Contact") or ""
    assert contact.startswith(f"<sip:{REG_USER}@{HOST}:{pbx.port}"), run.describe()
    assert {m.get("Call-ID") for m in registers} == {first.get("Call-ID")}, run.describe()
    assert last.get("Expires") == "0", run.describe()
    granted = next(m for m in run.sent if m.status == 200)
    assert (granted.get("Contact") or "").endswith(";expires=60"), run.describe()


def test_outbound_call_through_trunk_with_digest(
    pbx: Pbx, trunk_lab: TrunkLab, sipp: SippFactory
) -> None:
    """0 + number: out through ``provider`` as +44 number with the rule's caller ID; the
    provider's 407 is answered with the trunk's credentials."""
    provider = _start(sipp, "trunk_provider_auth.xml", "provider", trunk_lab.ports["provider"])
    extension, password = pbx.take_user()
    caller = sipp(
        "uac_call.xml",
        name=f"caller-{extension}",
        rows=[(extension, password, "0" + NATIONAL)],
        auth=True,
    ).run()
    answered = provider.wait()
    assert caller.returncode == 0, caller.describe()
    assert answered.returncode == 0, answered.describe()
    assert _finals(caller) == [407, 200], caller.describe()
    assert caller.responses("BYE") == [200], caller.describe()

    invites = answered.requests_received("INVITE")
    assert len(invites) == 2, answered.describe()
    first, second = invites
    for invite in invites:
        assert _user(invite.start_line) == "+44" + NATIONAL, answered.describe()
        assert _user(invite.get("From")) == CALLER_ID, answered.describe()
        assert _user(invite.get("To")) == "+44" + NATIONAL, answered.describe()
    assert first.get("Proxy-Authorization") is None, answered.describe()
    _check_digest(
        second.get("Proxy-Authorization"),
        "INVITE",
        _request_uri(second),
        OUT_USER,
        OUT_PASSWORD,
        NONCE_407,
    )
    assert second.get("Call-ID") == first.get("Call-ID"), answered.describe()
    assert second.cseq_method == "INVITE" and second.get("CSeq") != first.get("CSeq")
    assert len(answered.requests_received("ACK")) == 2, answered.describe()  # 407, then 200
    assert answered.requests_received("BYE"), answered.describe()


def test_failover_to_second_trunk_after_503(
    pbx: Pbx, trunk_lab: TrunkLab, sipp: SippFactory
) -> None:
    """9 + number: trunk ``down`` answers 503, the call goes on through ``backup``."""
    down = _start(sipp, "trunk_provider_503.xml", "down", trunk_lab.ports["down"])
    backup = _start(sipp, "uas_answer.xml", "backup", trunk_lab.ports["backup"])
    extension, password = pbx.take_user()
    caller = sipp(
        "uac_call.xml",
        name=f"caller-{extension}",
        rows=[(extension, password, "9" + NATIONAL)],
        auth=True,
    ).run()
    refused, answered = down.wait(), backup.wait()
    assert caller.returncode == 0, caller.describe()
    assert _finals(caller) == [407, 200], caller.describe()
    assert refused.returncode == 0, refused.describe()
    assert answered.returncode == 0, answered.describe()
    for run in (refused, answered):
        invite = run.requests_received("INVITE")[0]
        assert _user(invite.start_line) == NATIONAL, run.describe()
        assert _user(invite.get("From")) == extension, run.describe()  # no caller ID set
    assert answered.requests_received("BYE"), answered.describe()
    assert "event=call_failover" in pbx.log_since_mark()


def test_inbound_did_from_ip_authenticated_trunk(
    pbx: Pbx, trunk_lab: TrunkLab, sipp: SippFactory, register: RegisterFn
) -> None:
    """From the carrier's trusted address:port: a DID rings its extension without digest,
    a number routed to a trunk is refused 403 (toll fraud); from another port: 407."""
    phone_port = free_port()
    register(trunk_lab.did_extension, trunk_lab.did_password, phone_port)
    phone = _start(sipp, "uas_answer.xml", f"did-{trunk_lab.did_extension}", phone_port)
    carrier_port = trunk_lab.ports["carrier"]
    call = sipp(
        "trunk_inbound_call.xml", name="carrier", port=carrier_port, rows=[(DID, CARRIER_CALLER)]
    ).run()
    answered = phone.wait()
    assert call.returncode == 0, call.describe()
    assert answered.returncode == 0, answered.describe()
    assert _finals(call) == [200], call.describe()  # no challenge
    invite = answered.requests_received("INVITE")[0]
    assert _user(invite.start_line) == trunk_lab.did_extension, answered.describe()
    assert _user(invite.get("From")) == CARRIER_CALLER, answered.describe()
    assert call.responses("BYE") == [200], call.describe()

    fraud = sipp(
        "trunk_inbound_refused.xml",
        name="carrier-to-trunk",
        port=carrier_port,
        rows=[("0" + NATIONAL, CARRIER_CALLER)],
    ).run()
    assert fraud.returncode == 0, fraud.describe()
    assert _finals(fraud) == [403], fraud.describe()
    assert "event=toll_fraud_blocked from_trunk=carrier" in pbx.log_since_mark()

    stranger = sipp(
        "trunk_inbound_refused.xml", name="stranger", rows=[(DID, CARRIER_CALLER)]
    ).run()
    assert stranger.returncode == 0, stranger.describe()
    assert _finals(stranger) == [407], stranger.describe()


def test_duration_limit_ends_call_with_reason(
    pbx: Pbx, sipp: SippFactory, register: RegisterFn
) -> None:
    """8 + extension: the rule's max_seconds cuts the answered call; both legs get a BYE
    with a Reason header after about LIMIT seconds."""
    callee, callee_password = pbx.take_user()
    port = free_port()
    register(callee, callee_password, port)
    uas = _start(sipp, "uas_answer.xml", f"callee-{callee}", port)
    extension, password = pbx.take_user()
    caller = sipp(
        "trunk_uac_limited.xml",
        name=f"caller-{extension}",
        rows=[(extension, password, "8" + callee)],
        auth=True,
        recv_timeout=12.0,
    ).run()
    answered = uas.wait()
    assert caller.returncode == 0, caller.describe()
    assert answered.returncode == 0, answered.describe()
    assert _finals(caller) == [407, 200], caller.describe()
    assert not [m for m in caller.sent if m.method == "BYE"], caller.describe()
    for run in (caller, answered):
        byes = run.requests_received("BYE")
        assert len({m.get("CSeq") for m in byes}) == 1, run.describe()
        assert byes[0].all("Reason") == [LIMIT_REASON], run.describe()

    timed = _timed(caller)
    ok = _when(timed, lambda m: m.status == 200 and m.cseq_method == "INVITE")
    bye = _when(timed, lambda m: m.method == "BYE")
    assert 1.5 <= bye - ok <= 4.0, f"BYE {bye - ok:.2f} s after the answer, limit {LIMIT} s"
    timed = _timed(answered)
    ok = _when(timed, lambda m: m.status == 200 and m.cseq_method == "INVITE")
    bye = _when(timed, lambda m: m.method == "BYE")
    assert 1.5 <= bye - ok <= 4.0, f"callee's BYE {bye - ok:.2f} s after its answer"


def test_route_test_explains_the_plan(trunk_lab: TrunkLab) -> None:
    """``minipbx route test`` on the running server's data: one line per decision."""
    caller = trunk_lab.did_extension
    expected = {
        "0" + NATIONAL: f"result: trunk via trunk provider, number +44{NATIONAL}, "
        f"caller ID {CALLER_ID}",
        "9" + NATIONAL: f"result: trunk via trunk down, number {NATIONAL}, caller ID {caller}, "
        "failover trunk backup",
        "900123": "result: reject with 403",
        DID: f"result: local {caller}",
        "8301": "result: local 301, cut after 2 s",
        "777": "result: rejected with 404",
    }
    data_dir = str(trunk_lab.pbx.data_dir)

    def explain(number: str) -> subprocess.CompletedProcess[str]:
        return run_cli("route", "test", "--from", caller, "--to", number, "--data-dir", data_dir)

    with ThreadPoolExecutor(max_workers=3) as pool:  # each CLI start costs a second or two
        outputs = dict(zip(expected, pool.map(explain, expected), strict=True))
    for number, result in expected.items():
        done = outputs[number]
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"caller {caller} (call level 1), dialled {number}", done.stdout
        assert lines[1] == f"dial plan {PLAN!r}", done.stdout
        assert lines[-1] == result, done.stdout
        assert "warning" not in done.stdout, done.stdout
