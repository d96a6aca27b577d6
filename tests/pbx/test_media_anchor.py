"""The relay decision and SDP rewriting of :class:`RelayAnchor`, alone and in the B2BUA."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from minipbx.pbx.call import Target
from minipbx.pbx.media_anchor import (
    WARNING_TONE,
    RelayAnchor,
    media_address,
    needs_relay,
    warning_tone,
)
from minipbx.sip import SipUri
from minipbx.sip.dialog import Dialog
from minipbx.sip.sdp import SessionDescription
from minipbx.transport.address import Address
from tests.pbx.phones import PBX, Net, sdp
from tests.pbx.test_calls import _pair, _via


@dataclass
class FakeSession:
    ports: dict[str, int]
    expected: list[tuple[str, str, int, int | None]] = field(default_factory=list)
    injected: list[tuple[str, Any]] = field(default_factory=list)

    def port(self, side: str) -> int:
        return self.ports[side]

    def expect(self, side: str, ip: str, port: int, rtcp_port: int | None = None) -> None:
        self.expected.append((side, ip, port, rtcp_port))

    def inject(self, side: str, pcm: Any) -> None:
        self.injected.append((side, pcm))


@dataclass
class FakeRelays:
    fail: bool = False
    opened: dict[str, FakeSession] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)

    def open(self, key: str) -> FakeSession:
        if self.fail:
            raise OSError("no free RTP port in 10000-10010")
        session = FakeSession(
            {"a": 10000 + 4 * len(self.opened), "b": 10002 + 4 * len(self.opened)}
        )
        self.opened[key] = session
        return session

    def close(self, key: str) -> None:
        self.closed.append(key)


def _anchor(relays: FakeRelays, mode: str = "auto", **users: str) -> RelayAnchor:
    return RelayAnchor(
        relays, lambda remote: "127.0.0.9", mode, lambda tenant, ext: users.get(ext, "auto")
    )


def _call(
    body: bytes, source: str = "127.0.0.1", caller: str = "100", warn_at: float | None = None
) -> Any:
    invite = SimpleNamespace(body=body)
    return SimpleNamespace(
        id="c1",
        invite=invite,
        source=Address("udp", source, 5071),
        tenant_id=1,
        caller=caller,
        callee="101",
        inbound_trunk=None,
        legs=[],
        winner=None,
        warn_at=warn_at,
    )


def _target(nat: bool = False) -> Target:
    return Target(SipUri("127.0.0.1", "101"), Address("udp", "127.0.0.1", 5072), nat=nat)


def _offer(address: str) -> bytes:
    return sdp(4000).replace(b"127.0.0.1", address.encode())


def test_needs_relay_compares_sdp_and_signalling_addresses() -> None:
    assert needs_relay("192.168.1.10", "203.0.113.5")
    assert not needs_relay("203.0.113.5", "203.0.113.5")
    assert not needs_relay("0.0.0.0", "203.0.113.5")  # hold, not NAT
    assert not needs_relay(None, "203.0.113.5")
    assert needs_relay("phone.example.com", "203.0.113.5")
    assert media_address(_offer("10.1.2.3")) == "10.1.2.3"
    assert media_address(b"garbage") is None


@pytest.mark.parametrize(
    ("mode", "users", "address", "nat", "relayed"),
    [
        ("auto", {}, "127.0.0.1", False, False),  # both reachable: end to end
        ("auto", {}, "192.168.1.10", False, True),  # caller behind NAT
        ("auto", {}, "127.0.0.1", True, True),  # callee registered from behind NAT
        ("always", {}, "127.0.0.1", False, True),
        ("auto", {"101": "always"}, "127.0.0.1", False, True),  # the callee's own setting
        ("auto", {"100": "never"}, "192.168.1.10", False, False),  # never wins
        ("never", {}, "192.168.1.10", True, False),
    ],
)
def test_relay_decision(
    mode: str, users: dict[str, str], address: str, nat: bool, relayed: bool
) -> None:
    relays = FakeRelays()
    anchor = _anchor(relays, mode, **users)
    call = _call(_offer(address))
    anchor.prepare(call, [_target(nat)])
    assert bool(relays.opened) is relayed
    out = anchor.sdp(call, call.invite.body, from_a=True)
    assert (out != call.invite.body) is relayed


def test_sdp_both_ways_goes_through_the_relay_ports() -> None:
    relays = FakeRelays()
    anchor = _anchor(relays)
    offer = _offer("192.168.1.10").replace(b"t=0 0\r\n", b"t=0 0\r\na=rtcp:4001\r\n")
    call = _call(offer)
    anchor.prepare(call, [_target()])
    session = relays.opened["c1"]
    to_b = SessionDescription.parse(anchor.sdp(call, offer, from_a=True))
    assert to_b.connection is not None and to_b.connection.address == "127.0.0.9"
    assert to_b.media[0].port == 10002  # the b side faces the callee
    to_a = SessionDescription.parse(anchor.sdp(call, sdp(6000), from_a=False))
    assert to_a.media[0].port == 10000
    assert session.expected == [("a", "192.168.1.10", 4000, None), ("b", "127.0.0.1", 6000, None)]
    anchor.prepare(call, [_target()])  # a forward rings again: the same relay
    assert len(relays.opened) == 1
    anchor.release(call)
    anchor.release(call)
    assert relays.closed == ["c1"] and anchor.count == 0


def test_no_ports_left_means_end_to_end_media_not_a_failed_call() -> None:
    anchor = _anchor(FakeRelays(fail=True), "always")
    call = _call(sdp(4000))
    anchor.prepare(call, [_target()])
    assert anchor.sdp(call, sdp(4000), from_a=True) == sdp(4000)


@pytest.mark.parametrize(
    ("mode", "users", "relayed"),
    [
        ("auto", {}, True),  # reachable phones, relayed only to be able to warn
        ("always", {}, True),
        ("never", {}, False),  # the server's never wins: no warning then
        ("auto", {"100": "never"}, False),  # so does a user's (docs/architecture.md)
    ],
)
def test_prepare_relays_a_call_that_must_be_warned(
    mode: str, users: dict[str, str], relayed: bool
) -> None:
    relays = FakeRelays()
    anchor = _anchor(relays, mode, **users)
    call = _call(_offer("127.0.0.1"), warn_at=540.0)
    anchor.prepare(call, [_target()])
    assert bool(relays.opened) is relayed
    assert anchor.warn(call) is relayed


def test_warn_plays_the_tone_to_the_caller_of_a_relayed_call() -> None:
    relays = FakeRelays()
    anchor = _anchor(relays)
    plain = _call(_offer("127.0.0.1"))
    anchor.prepare(plain, [_target()])
    assert not relays.opened and not anchor.warn(plain)  # end to end: nothing to inject into
    call = _call(_offer("127.0.0.1"), warn_at=60.0)
    anchor.prepare(call, [_target()])
    assert anchor.warn(call)
    ((side, pcm),) = relays.opened["c1"].injected
    assert side == "a" and pcm is WARNING_TONE
    anchor.release(call)
    assert not anchor.warn(call)


def test_no_warning_into_srtp() -> None:
    relays = FakeRelays()
    anchor = _anchor(relays)
    call = _call(_offer("127.0.0.1").replace(b"RTP/AVP", b"RTP/SAVP"), warn_at=60.0)
    anchor.prepare(call, [_target()])
    anchor.sdp(call, call.invite.body, from_a=True)
    assert not anchor.warn(call) and not relays.opened["c1"].injected


def test_warning_tone_is_three_short_beeps() -> None:
    pcm = WARNING_TONE
    assert pcm.dtype == np.int16 and len(pcm) == 6400  # 0.8 s: 40 frames of 20 ms
    loud = np.abs(pcm.astype(np.int32)).max()
    assert loud == pytest.approx(32767 * 10 ** (-15 / 20), abs=2)  # -15 dBFS peak
    frames = np.abs(pcm.reshape(-1, 40).astype(np.int32)).max(axis=1) > 0  # 5 ms steps
    starts = np.flatnonzero(frames[1:] & ~frames[:-1]) + 1
    assert frames[0] and len(starts) == 2  # three beeps
    assert frames.sum() == 3 * 30  # 150 ms each
    assert len(warning_tone(beeps=0)) == 0


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, always, never"):
        RelayAnchor(FakeRelays(), lambda r: r, "sometimes")


def test_relayed_call_through_the_b2bua() -> None:
    net = Net()
    relays = FakeRelays()
    net.core.b2bua.media = _anchor(relays, "always")
    alice, bob = _pair(net)
    alice.invite("101")
    b_invite = next(r for r in bob.requests if r.method == "INVITE")
    assert SessionDescription.parse(b_invite.body).media[0].port == 10002
    answered = alice.responses[-1]
    assert answered.status == 200
    assert SessionDescription.parse(answered.body).media[0].port == 10000
    dialog = Dialog.from_uac(alice.invite_request, answered)
    alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
    net.run()
    alice.send(dialog.create_request("BYE", via=_via(alice)))
    (key,) = relays.opened
    assert relays.closed == [key]
