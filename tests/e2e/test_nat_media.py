"""Two baresip phones, each behind its own NAT, call each other through the PBX.

The network is the namespace lab of ``tests/e2e/netns.py``: phone 1 behind a port-preserving
NAT, phone 2 behind a symmetric one (``--random-fully``), the PBX on the public segment.
Each phone's SDP names its private address, which nobody on the public side can reach, so
audio flows both ways only when the PBX relays it (its own address in the SDP each phone
sees, symmetric latching to where each phone's packets come from).

- with the relay (``MINIPBX_MEDIA_RELAY=always``, and ``auto``, which must see these phones
  are behind NAT): each phone receives RTP and its decoded audio is the other's tone;
- without it (``never``: SDP untouched, media end to end): the call is set up, the phones
  send, and audio does not flow both ways.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.netns import PBX_IP, NatLab, NatPhone, nat_lab
from tests.e2e.support import require_tool, tail, wait_for

pytestmark = pytest.mark.slow

CALL_SECONDS = 6  # the caller hangs up after this
MIN_PACKETS = 100  # 20 ms packets: two seconds of audio
CALLER_TONE, CALLEE_TONE = 440.0, 1000.0
START_TIMEOUT = 20.0


@dataclass
class Pbx:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def lab() -> Iterator[NatLab]:
    require_tool("baresip", "baresip")
    with nat_lab() as built:
        yield built


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "minipbx.cli", *args]


def _env(relay: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPBX_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MINIPBX_MEDIA_RELAY"] = relay
    return env


def start_pbx(lab: NatLab, root: Path, relay: str, users: dict[str, str]) -> Pbx:
    """``minipbx run`` on the public address, in the public namespace, with ``users``."""
    data = root / "data"
    for extension, password in users.items():
        done = subprocess.run(
            _cli("user", "add", extension, "--password", password, "--data-dir", str(data)),
            env=_env(relay),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"minipbx user add failed:\n{done.stderr}"
    log = root / "pbx.log"
    args = ["run", "--data-dir", str(data), "--bind", PBX_IP, "--sip-port", "5060"]
    process = lab.popen(lab.public, _cli(*args, "--http-port", "0"), log, _env(relay))
    pbx = Pbx(process, log)
    started = wait_for(
        lambda: "event=started" in pbx.log() or process.poll() is not None, START_TIMEOUT
    )
    assert started and process.poll() is None, f"minipbx did not start:\n{tail(pbx.log())}"
    return pbx


@dataclass
class CallResult:
    caller: NatPhone
    callee: NatPhone
    pbx: Pbx
    lab: NatLab

    def report(self) -> str:
        return "\n".join(
            [
                self.caller.describe(),
                self.callee.describe(),
                "--- routers:",
                self.lab.describe(),
                "--- minipbx log:",
                tail(self.pbx.log(), 40),
            ]
        )


def nat_call(lab: NatLab, root: Path, relay: str) -> CallResult:
    """Phone 2 registers, phone 1 calls it for CALL_SECONDS; both quit; their output stays."""
    users = {"201": secrets.token_hex(8), "202": secrets.token_hex(8)}
    pbx = start_pbx(lab, root, relay, users)
    site1, site2 = lab.sites
    tone_seconds = CALL_SECONDS + 30
    caller = NatPhone.create(root, site1, "201", users["201"], CALLER_TONE, tone_seconds)
    callee = NatPhone.create(root, site2, "202", users["202"], CALLEE_TONE, tone_seconds)
    result = CallResult(caller, callee, pbx, lab)
    callee.start(lab, CALL_SECONDS + 20)
    wait_for(callee.registration_settled, 10.0)
    assert callee.registered(), f"phone 2 did not register through its NAT\n{result.report()}"
    caller.start(lab, CALL_SECONDS, f"/dial sip:202@{PBX_IP}")
    assert caller.process is not None and callee.process is not None
    try:
        caller.process.wait(CALL_SECONDS + 15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"phone 1 did not quit\n{result.report()}")
    # the BYE reaches phone 2 through the PBX and its NAT: it prints its statistics then
    wait_for(lambda: callee.packets() is not None, 5.0)
    for phone in (caller, callee):
        assert "Call established" in phone.output(), f"no call\n{result.report()}"
    assert pbx.process.poll() is None, f"minipbx died\n{result.report()}"
    assert "Traceback" not in pbx.log(), f"minipbx logged a traceback:\n{pbx.log()}"
    return result


@pytest.mark.parametrize("relay", ["always", "auto"])
def test_relay_gives_two_way_audio_between_natted_phones(
    lab: NatLab, tmp_path: Path, relay: str
) -> None:
    call = nat_call(lab, tmp_path, relay)
    report = call.report()
    for phone, other in ((call.caller, call.callee), (call.callee, call.caller)):
        packets = phone.packets()
        assert packets is not None, f"{phone.name}: no RTP statistics\n{report}"
        sent, received = packets
        assert sent >= MIN_PACKETS and received >= MIN_PACKETS, (
            f"{phone.name}: RTP sent {sent}, received {received}\n{report}"
        )
        assert phone.hears(other.tone), f"{phone.name} did not hear {other.name}\n{report}"
    for site in call.lab.sites:  # the media crossed each NAT both ways
        received, sent = call.lab.packets(site.router, "wan")
        assert received >= MIN_PACKETS and sent >= MIN_PACKETS, report


def test_without_relay_audio_does_not_flow_both_ways(lab: NatLab, tmp_path: Path) -> None:
    """The control: the NAT is real, so SDP passed through untouched cannot give two-way
    audio (here both phones are behind NAT: typically neither hears the other)."""
    call = nat_call(lab, tmp_path, "never")
    report = call.report()
    for phone in (call.caller, call.callee):
        packets = phone.packets()
        assert packets is not None, f"{phone.name}: no RTP statistics\n{report}"
        assert packets[0] >= MIN_PACKETS, f"{phone.name} sent no audio\n{report}"
    two_way = call.caller.hears(call.callee.tone) and call.callee.hears(call.caller.tone)
    assert not two_way, f"two-way audio without a relay: the NAT is not real\n{report}"
