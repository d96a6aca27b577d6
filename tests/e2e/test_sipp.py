"""Registration and calls through a live ``minipbx run``, driven by SIPp scenarios.

Callee phones are SIPp UAS processes on their own ports, registered by a separate SIPp run
whose Contact names the UAS port (RFC 3261 10.2; REAL-PEERS.md).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.conftest import Pbx, RegisterFn, SippFactory
from tests.e2e.support import (
    HOST,
    SipMessage,
    Sipp,
    SippRun,
    free_port,
    sdp_lines,
    udp_listening,
    wait_for,
)

pytestmark = pytest.mark.slow


def _callee(sipp: SippFactory, register: RegisterFn, pbx: Pbx, scenario: str) -> tuple[str, Sipp]:
    """A registered callee extension and its SIPp UAS (started, listening)."""
    extension, password = pbx.take_user()
    port = free_port()
    register(extension, password, port)
    uas = sipp(scenario, name=f"callee-{extension}", port=port).start()
    assert wait_for(lambda: udp_listening(port), 5.0), "the callee SIPp did not bind its port"
    return extension, uas


def _call(sipp: SippFactory, pbx: Pbx, scenario: str, callee: str, **kw: float) -> SippRun:
    extension, password = pbx.take_user()
    return sipp(
        scenario, name=f"caller-{extension}", rows=[(extension, password, callee)], auth=True, **kw
    ).run()


def _finals(run: SippRun) -> list[int]:
    """Final statuses the caller got for its INVITEs, in order."""
    return [s for s in run.responses("INVITE") if s >= 200]


def _first(messages: list[SipMessage], what: str) -> SipMessage:
    assert messages, f"no {what}"
    return messages[0]


def test_register_gets_200_listing_the_contact(sipp: SippFactory, pbx: Pbx) -> None:
    extension, password = pbx.take_user()
    contact_port = free_port()
    run = sipp(
        "register.xml", name="register", rows=[(extension, password, str(contact_port))], auth=True
    ).run()
    assert run.returncode == 0, run.describe()
    assert run.responses("REGISTER") == [401, 200], run.describe()
    challenge = run.received[0]
    algorithms = " ".join(challenge.all("WWW-Authenticate"))
    assert "algorithm=MD5" in algorithms, run.describe()
    ok = run.received[-1]
    contacts = ok.all("Contact")
    expected = f"<sip:{extension}@{HOST}:{contact_port}>"
    assert any(c.startswith(expected) and "expires=" in c for c in contacts), run.describe()


def test_register_with_a_wrong_password_is_refused(sipp: SippFactory, pbx: Pbx) -> None:
    extension, password = pbx.take_user()
    run = sipp(
        "register_wrong_password.xml",
        name="register-wrong",
        rows=[(extension, password + "-wrong", str(free_port()))],
        auth=True,
    ).run()
    assert run.returncode == 0, run.describe()
    statuses = run.responses("REGISTER")
    assert 200 not in statuses, run.describe()
    assert statuses[0] == 401 and statuses[-1] in (401, 403), run.describe()
    assert len(statuses) == 2, run.describe()


def test_call_answered_and_hung_up(sipp: SippFactory, register: RegisterFn, pbx: Pbx) -> None:
    callee, uas = _callee(sipp, register, pbx, "uas_answer.xml")
    caller = _call(sipp, pbx, "uac_call.xml", callee)
    answered = uas.wait()
    assert caller.returncode == 0, caller.describe()
    assert answered.returncode == 0, answered.describe()
    assert _finals(caller) == [407, 200], caller.describe()

    a_invite = [m for m in caller.sent if m.method == "INVITE"][-1]
    b_invite = _first(answered.requests_received("INVITE"), "INVITE at the callee")
    assert b_invite.get("Call-ID") != a_invite.get("Call-ID"), "the B leg needs its own Call-ID"
    assert sdp_lines(b_invite.body) == sdp_lines(a_invite.body), "offer not passed through"
    a_ok = [m for m in caller.received if m.status == 200 and m.cseq_method == "INVITE"][-1]
    b_ok = [m for m in answered.sent if m.status == 200 and m.cseq_method == "INVITE"][-1]
    assert sdp_lines(a_ok.body) == sdp_lines(b_ok.body), "answer not passed through"
    assert answered.requests_received("ACK"), answered.describe()
    assert answered.requests_received("BYE"), answered.describe()
    assert caller.responses("BYE") == [200], caller.describe()


def test_sigusr1_logs_what_the_server_holds(
    sipp: SippFactory, register: RegisterFn, pbx: Pbx
) -> None:
    """``kill -USR1`` writes one ``event=state`` line (calls, transactions, timers...), at
    any log level: after a finished call it holds no call, only its transactions' timers."""
    callee, uas = _callee(sipp, register, pbx, "uas_answer.xml")
    caller = _call(sipp, pbx, "uac_call.xml", callee)
    assert uas.wait().returncode == 0 and caller.returncode == 0, caller.describe()
    pbx.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while "event=state " not in pbx.log_since_mark() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in pbx.log_since_mark().splitlines() if "event=state " in x)
    counts = dict(item.split("=", 1) for item in line.split("event=state ", 1)[1].split())
    assert counts["calls"] == "0" and counts["legs"] == "0", line
    assert int(counts["bindings"]) >= 1 and int(counts["server_transactions"]) >= 1, line
    assert {"timers", "digest_nonces", "relays", "services"} <= counts.keys(), line


def test_busy_callee_gives_486(sipp: SippFactory, register: RegisterFn, pbx: Pbx) -> None:
    callee, uas = _callee(sipp, register, pbx, "uas_busy.xml")
    caller = _call(sipp, pbx, "uac_rejected.xml", callee)
    busy = uas.wait()
    assert caller.returncode == 0, caller.describe()
    assert _finals(caller) == [407, 486], caller.describe()
    assert busy.returncode == 0, busy.describe()  # the PBX ACKed the 486


def test_unregistered_callee_gives_480(sipp: SippFactory, pbx: Pbx) -> None:
    offline, _ = pbx.take_user()
    caller = _call(sipp, pbx, "uac_rejected.xml", offline)
    assert caller.returncode == 0, caller.describe()
    assert _finals(caller) == [407, 480], caller.describe()


def test_unknown_extension_gives_404_after_auth(sipp: SippFactory, pbx: Pbx) -> None:
    caller = _call(sipp, pbx, "uac_rejected.xml", "999")
    assert caller.returncode == 0, caller.describe()
    assert _finals(caller) == [407, 404], caller.describe()


def test_cancel_after_ringing(sipp: SippFactory, register: RegisterFn, pbx: Pbx) -> None:
    callee, uas = _callee(sipp, register, pbx, "uas_ring.xml")
    caller = _call(sipp, pbx, "uac_cancel.xml", callee)
    ringing = uas.wait()
    assert caller.returncode == 0, caller.describe()
    invite = [m for m in caller.sent if m.method == "INVITE"][-1]
    cancel = _first([m for m in caller.sent if m.method == "CANCEL"], "CANCEL sent")
    assert cancel.get("Via") == invite.get("Via"), "scenario bug: CANCEL must match the INVITE"
    assert _finals(caller) == [407, 487], caller.describe()
    assert caller.responses("CANCEL") == [200], caller.describe()
    assert ringing.returncode == 0, ringing.describe()
    assert ringing.requests_received("CANCEL"), ringing.describe()


def test_no_answer_times_out_with_480(sipp: SippFactory, register: RegisterFn, pbx: Pbx) -> None:
    """The server runs with ``[calls] ring_timeout = 3``: the callee gets CANCEL, caller 480."""
    callee, uas = _callee(sipp, register, pbx, "uas_ring.xml")
    caller = _call(sipp, pbx, "uac_rejected.xml", callee, recv_timeout=10.0)
    ringing = uas.wait()
    assert caller.returncode == 0, caller.describe()
    assert _finals(caller) == [407, 480], caller.describe()
    assert ringing.returncode == 0, ringing.describe()
    assert ringing.requests_received("CANCEL"), ringing.describe()
