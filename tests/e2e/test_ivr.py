"""The auto attendant end to end: SIPp callers, a real ``minipbx run`` of this module's own.

The tenant's dial plan sends ``500`` to the attendant menu ``main`` (``service ivr:main``):
its greeting plays, key ``1`` transfers to extension ``TARGET``, ``0`` hangs up. The caller
presses keys as RFC 4733 events (SIPp's ``dtmf_2833_1.pcap``) or SIP INFO; the PBX answers
with its own SDP, then hands the call to the extension's SIPp (late offer) and re-INVITEs the
caller with that phone's offer, so media ends up end to end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from minipbx.store import Database, SqlTenantRepo, SqlUserRepo
from minipbx.store.ivr import SqlIvrRepo
from minipbx.store.pbxrecords import DialPlanRule
from minipbx.store.pbxrepos import SqlDialPlanRepo, SqlUserSettingsRepo
from tests.e2e.conftest import Pbx, RegisterFn, SippFactory, start_pbx
from tests.e2e.support import HOST, SippRun, free_port, require_tool, stop, tail
from tests.e2e.test_trunks import in_db

pytestmark = pytest.mark.slow

FIRST_EXTENSION = 400
USER_COUNT = 6
ATTENDANT = "500"
RTP_LOW = 24000  # this module's server's RTP range (the session's server uses 10000-20000)


async def _configure(db: Database, users: dict[str, str], target: str) -> None:
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    for extension, password in users.items():
        await SqlUserRepo(db).add(extension, password)
    await SqlIvrRepo(db).add(
        tenant.id,
        "main",
        greeting=("ivr_welcome",),
        timeout_seconds=3,
        options=[
            {"key": "1", "action": "user", "target": target},
            {"key": "0", "action": "hangup"},
        ],
    )
    plans = SqlDialPlanRepo(db)
    plan = await plans.add(tenant.id, "attendant", description="e2e attendant")
    await plans.replace_rules(
        plan.id,
        [
            DialPlanRule(pattern=ATTENDANT, action="service", target="ivr:main"),
            DialPlanRule(pattern="4", action="local"),
        ],
    )
    await plans.set_tenant_plan(tenant.id, plan.id)


@dataclass
class IvrLab:
    pbx: Pbx
    target: str
    target_password: str
    callers: list[tuple[str, str]]


@pytest.fixture(scope="module")
def ivr_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IvrLab]:
    require_tool("sipp", "sip-tester")
    root = tmp_path_factory.mktemp("minipbx-ivr")
    extensions = [str(FIRST_EXTENSION + i) for i in range(USER_COUNT)]
    users = {ext: f"pw{ext}-{os.urandom(4).hex()}" for ext in extensions}
    target, *callers = extensions
    in_db(root / "data", lambda db: _configure(db, users, target))
    pbx = start_pbx(
        root,
        {ext: users[ext] for ext in callers},
        create_users=False,
        config=f"[media]\nrtp_port_min = {RTP_LOW}\nrtp_port_max = {RTP_LOW + 200}\n",
    )
    try:
        assert "ivr_menus=1 problems=0" in pbx.log(), tail(pbx.log())
        yield IvrLab(pbx, target, users[target], [(e, users[e]) for e in callers])
    finally:
        alive = pbx.process.poll() is None
        code = stop(pbx.process, 5.0)
    log = pbx.log()
    assert alive, f"minipbx died during the tests (exit {code}):\n{tail(log)}"
    assert code == 0, f"minipbx exited {code} after SIGTERM:\n{tail(log)}"


@pytest.fixture
def pbx(ivr_lab: IvrLab) -> Iterator[Pbx]:
    server = ivr_lab.pbx
    server.mark = len(server.log())
    yield server
    new = server.log_since_mark()
    assert server.process.poll() is None, f"minipbx died:\n{tail(new)}"
    assert "Traceback" not in new, f"minipbx logged a traceback:\n{new}"


class RtpCounter:
    """Counts RTP packets arriving on a UDP port (the caller's media port)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        self.sock.settimeout(0.2)
        self.packets = 0
        self.voiced = 0  # packets whose payload is not silence (a prompt playing)
        self.payload_types: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except OSError:
                continue
            if len(data) >= 12 and data[0] >> 6 == 2:
                self.packets += 1
                self.payload_types.add(data[1] & 0x7F)
                self.voiced += len(set(data[12:])) > 8

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _heard(
    sipp: SippFactory,
    scenario: str,
    name: str,
    caller: tuple[str, str],
    dialled: str,
    recv_timeout: float,
) -> tuple[SippRun, RtpCounter]:
    """Run a SIPp ``caller`` (extension, password) of ``scenario`` dialling ``dialled``
    with its media on an :class:`RtpCounter`'s port: the run and what that port got."""
    media = RtpCounter(free_port())
    try:
        result = sipp(
            scenario,
            name=name,
            rows=[(*caller, dialled, str(media.sock.getsockname()[1]))],
            auth=True,
            recv_timeout=recv_timeout,
        ).run()
    finally:
        media.close()
    return result, media


def test_attendant_transfers_on_a_key_and_hands_media_back(
    ivr_lab: IvrLab, pbx: Pbx, sipp: SippFactory, register: RegisterFn
) -> None:
    callee_port = free_port()
    register(ivr_lab.target, ivr_lab.target_password, callee_port)
    callee = sipp("uas_late_offer.xml", name="callee", port=callee_port, recv_timeout=20).start()
    caller_ext, caller_pw = ivr_lab.callers[0]
    caller = sipp(
        "ivr_caller.xml",
        name="caller",
        rows=[(caller_ext, caller_pw, ATTENDANT)],
        auth=True,
        recv_timeout=20,
    )
    result = caller.run()
    assert result.returncode == 0, result.describe()
    done = callee.wait(20)
    assert done.returncode == 0, done.describe()
    log = pbx.log_since_mark()
    assert "event=call_service" in log and "service=ivr:main" in log, log
    assert "event=dtmf" in log and "digit=1" in log, log
    assert "event=call_handed_back" in log, log
    assert f"outcome=transferred user {ivr_lab.target}" in log, log
    # the attendant's own RTP stream was open and is closed again
    assert "event=media_open" in log and "event=media_closed" in log, log


def test_attendant_hangs_up_after_retries_without_input(
    ivr_lab: IvrLab, pbx: Pbx, sipp: SippFactory
) -> None:
    """A caller that presses nothing hears the menu again, then the PBX says goodbye and
    sends BYE; the prompt audio reaches the caller's RTP port."""
    started = time.monotonic()
    caller = ivr_lab.callers[1]
    result, media = _heard(sipp, "ivr_silent_caller.xml", "silent", caller, ATTENDANT, 60)
    assert result.returncode == 0, result.describe()
    assert time.monotonic() - started < 60
    assert media.voiced > 50, (media.voiced, media.packets)  # > 1 s of prompts at 20 ms
    assert media.payload_types == {0}  # PCMU, as offered
    log = pbx.log_since_mark()
    assert "outcome=hangup" in log or "outcome=no input" in log or "event=service_end" in log, log


def test_feature_code_sets_and_cancels_call_forwarding(
    ivr_lab: IvrLab, pbx: Pbx, sipp: SippFactory
) -> None:
    """``*93*N`` makes the PBX answer, store the forward, say "call forwarding activated"
    and hang up; ``*93`` cancels it."""
    caller_ext, caller_pw = ivr_lab.callers[2]
    for dialled, expected in ((f"*93*{ivr_lab.target}", ivr_lab.target), ("*93%23", None)):
        caller = (caller_ext, caller_pw)
        result, media = _heard(sipp, "ivr_silent_caller.xml", "feature", caller, dialled, 20)
        assert result.returncode == 0, result.describe()
        assert media.voiced > 20, media.voiced  # the confirmation was spoken
        stored = in_db(pbx.data_dir, lambda db: _forward_of(db, caller_ext))
        assert stored == expected
    log = pbx.log_since_mark()
    assert f"event=forward_set user={caller_ext} forward_unconditional={ivr_lab.target}" in log


async def _forward_of(db: Database, extension: str) -> str | None:
    user = await SqlUserRepo(db).get(extension)
    assert user is not None
    return (await SqlUserSettingsRepo(db).get_settings(user.id)).forward_unconditional


def test_a_caller_without_an_offer_hears_the_service_in_the_codec_it_answered(
    ivr_lab: IvrLab, pbx: Pbx, sipp: SippFactory
) -> None:
    """A late offer (INVITE without SDP, as some phones and trunks send): the PBX's 200
    carries its offer, the caller's ACK answers with PCMA only, and the service speaks
    PCMA to the address of that answer (``*93#``: "call forwarding cancelled")."""
    caller = ivr_lab.callers[3]
    result, media = _heard(sipp, "ivr_late_offer_caller.xml", "late-offer", caller, "*93%23", 20)
    assert result.returncode == 0, result.describe()
    assert media.voiced > 20, (media.voiced, media.packets)  # the confirmation was spoken
    assert media.payload_types == {8}, media.payload_types  # PCMA, as answered
    log = pbx.log_since_mark()
    assert "event=call_service" in log and "event=media_answered" in log, log
    answered = next(line for line in log.splitlines() if "event=media_answered" in line)
    assert "codec=PCMA/8" in answered, answered
