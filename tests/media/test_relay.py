"""The sans-IO relay: symmetric latching (RFC 4961), its guard against RTP injection, stats.

A fake clock throughout: ``now`` is a number the test advances.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.media.relay import (
    DirectionStats,
    LatchingPeer,
    PeerStats,
    direction_stats,
    is_idle,
    last_activity,
)

SDP = ("192.168.1.10", 4000)  # what the phone's SDP says (its private address)
NAT = ("198.51.100.7", 31000)  # where its packets really come from (the NAT's mapping)
REBOUND = ("198.51.100.7", 31544)  # the NAT's new mapping after a rebinding
ATTACKER = ("203.0.113.66", 5555)


def latched_peer(now: float = 0.0) -> LatchingPeer:
    peer = LatchingPeer()
    peer.expect(*SDP)
    assert peer.accept(NAT, now, 172)
    return peer


def test_no_destination_before_sdp_or_packets() -> None:
    peer = LatchingPeer()
    assert peer.destination is None
    assert peer.stats() == PeerStats(0, 0, 0, 0, None, None)


def test_sdp_address_is_the_destination_until_a_packet_latches() -> None:
    peer = LatchingPeer()
    peer.expect(*SDP)
    assert peer.destination == SDP
    assert peer.accept(NAT, 0.0, 172)
    assert peer.destination == NAT
    assert (peer.packets, peer.bytes, peer.dropped, peer.relatches) == (1, 172, 0, 0)


def test_first_packet_latches_even_before_the_sdp_arrives() -> None:
    """A callee's RTP may overtake the processing of its 200 OK; the SDP then re-arms."""
    peer = LatchingPeer()
    assert peer.accept(NAT, 0.0)
    assert peer.destination == NAT
    peer.expect(*SDP)
    assert peer.destination == SDP  # re-armed: nothing committed early
    assert peer.accept(REBOUND, 0.01)
    assert peer.destination == REBOUND


def test_only_the_latched_source_is_accepted() -> None:
    peer = latched_peer()
    now = 0.0
    for _ in range(10):
        now += 0.02
        assert peer.accept(NAT, now, 172)
        assert not peer.accept(ATTACKER, now + 0.001, 172)
    assert peer.destination == NAT
    assert (peer.packets, peer.bytes, peer.dropped) == (11, 11 * 172, 10)


def test_fast_path_keeps_the_latched_tuple() -> None:
    """An equal source (a new tuple per datagram, as the loop makes them) changes nothing."""
    peer = latched_peer()
    latched = peer.latched
    assert peer.accept((NAT[0], NAT[1]), 0.02, 172)
    assert peer.latched is latched


def test_relatch_after_silence_follows_a_nat_rebinding() -> None:
    peer = latched_peer(now=10.0)
    assert not peer.accept(REBOUND, 10.999)  # the old mapping spoke 999 ms ago
    assert peer.accept(REBOUND, 11.0)  # silent for relatch_after (1 s): take the new one
    assert peer.destination == REBOUND
    assert (peer.relatches, peer.dropped) == (1, 1)
    assert not peer.accept(NAT, 11.5)  # and the old one is now the stranger


def test_relatch_after_is_configurable() -> None:
    peer = LatchingPeer(relatch_after=5.0)
    peer.expect(*SDP)
    assert peer.accept(NAT, 0.0)
    assert not peer.accept(ATTACKER, 4.9)
    assert peer.accept(ATTACKER, 5.0)
    with pytest.raises(ValueError, match="relatch_after must be >= 0"):
        LatchingPeer(relatch_after=-1)


def test_new_sdp_rearms_latching_while_the_old_source_still_talks() -> None:
    """A re-INVITE moved the party (transfer, new device): its next packet latches."""
    peer = latched_peer()
    assert peer.accept(NAT, 0.02)
    peer.expect("192.168.1.20", 6000)
    assert peer.destination == ("192.168.1.20", 6000)
    assert peer.accept(REBOUND, 0.03)
    assert peer.destination == REBOUND
    assert not peer.accept(NAT, 0.04)


def test_the_sdp_address_takes_the_latch_back_from_a_hijacker() -> None:
    """RTP bleed: a sprayer won the race for the first packet; the real party (not behind
    NAT, sending from its SDP address) gets the latch back with its first packet."""
    peer = LatchingPeer()
    peer.expect(*NAT)
    assert peer.accept(ATTACKER, 0.0)  # first packet after expect: indistinguishable
    assert peer.accept(NAT, 0.01)
    assert peer.destination == NAT
    assert not peer.accept(ATTACKER, 0.02)
    assert peer.relatches == 1


def test_a_talking_party_cannot_be_hijacked() -> None:
    peer = latched_peer()
    for tick in range(1, 200):  # 4 s of 20 ms packets, the attacker between each
        assert peer.accept(NAT, tick * 0.02)
        assert not peer.accept(ATTACKER, tick * 0.02 + 0.01)
    assert peer.destination == NAT
    assert peer.dropped == 199


def test_hold_address_gives_no_destination() -> None:
    """RFC 3264 8.4: c=0.0.0.0 means "send nothing"; sending there would reach this host."""
    peer = latched_peer()
    peer.expect("0.0.0.0", 4000)
    assert peer.destination is None
    peer.expect("::", 4000)
    assert peer.destination is None
    assert peer.accept(NAT, 1.0)  # it resumed from behind its NAT
    assert peer.destination == NAT


def test_ipv6_sdp_address_matches_the_kernel_spelling() -> None:
    peer = LatchingPeer()
    peer.expect("2001:DB8:0:0::1", 4000)
    assert peer.expected == ("2001:db8::1", 4000)
    assert peer.accept(("2001:db8::99", 4000, 0, 0), 0.0)  # first packet latches
    assert peer.accept(("2001:db8::1", 4000, 0, 0), 0.01)  # the SDP address takes over
    assert peer.destination == ("2001:db8::1", 4000, 0, 0)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_expect_rejects_impossible_ports(port: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        LatchingPeer().expect("192.168.1.10", port)


def test_rejected_source_is_logged_once_per_latch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="minipbx.media")
    peer = LatchingPeer(name="call-1/a/rtp")
    peer.expect(*SDP)
    peer.accept(NAT, 0.0)
    for i in range(5):
        peer.accept(ATTACKER, 0.001 * i)
    rejected = [r.getMessage() for r in caplog.records if "rtp_source_rejected" in r.message]
    assert rejected == [
        "event=rtp_source_rejected peer=call-1/a/rtp src=203.0.113.66:5555 latched=198.51.100.7:31000"
    ]
    peer.accept(REBOUND, 5.0)
    moved = [r.getMessage() for r in caplog.records if "rtp_relatched" in r.message]
    assert moved == [
        "event=rtp_relatched peer=call-1/a/rtp src=198.51.100.7:31544"
        " old=198.51.100.7:31000 reason=silence"
    ]


def test_direction_stats_leave_out_unroutable_packets() -> None:
    rtp, rtcp = LatchingPeer(), LatchingPeer()
    rtp.accept(NAT, 0.0, 172)
    rtp.no_route(172)  # the other party's address was not known yet
    rtp.accept(NAT, 0.02, 172)
    rtp.accept(NAT, 0.04, 172)
    rtcp.accept(("198.51.100.7", 31001), 0.05, 52)
    assert not rtp.accept(ATTACKER, 0.05, 172)
    stats = direction_stats(rtp, rtcp)
    assert stats == DirectionStats(
        rtp_packets=2, rtp_bytes=344, rtcp_packets=1, rtcp_bytes=52, unroutable=1
    )
    assert (stats.packets, stats.bytes) == (3, 396)


def test_idle_only_after_traffic_and_silence() -> None:
    a, b = LatchingPeer(), LatchingPeer()
    peers = (a, b)
    assert last_activity(peers) is None
    assert not is_idle(peers, 1000.0, 60.0)  # never any packet: not idle (not started)
    a.accept(NAT, 10.0)
    b.accept(ATTACKER, 30.0)
    assert last_activity(peers) == 30.0
    assert not is_idle(peers, 89.9, 60.0)
    assert is_idle(peers, 90.0, 60.0)
    assert not a.accept(("203.0.113.1", 1), 10.5)  # a dropped packet is no activity
    assert last_activity(peers) == 30.0


sources = st.sampled_from([NAT, REBOUND, ATTACKER])


@given(st.lists(st.tuples(sources, st.floats(min_value=0.0, max_value=2.0)), max_size=60))
def test_latch_moves_only_after_silence_or_to_the_sdp_address(
    packets: list[tuple[tuple[str, int], float]],
) -> None:
    """Model check: whatever the arrival order, the latch changes only on the first packet,
    to the SDP address, or after the latched source was silent for relatch_after."""
    peer = LatchingPeer()
    peer.expect(*REBOUND)
    now = 0.0
    latched: tuple[str, int] | None = None
    last = 0.0
    for source, gap in packets:
        now += gap
        accepted = peer.accept(source, now)
        if latched is None or source == latched:
            assert accepted
        else:
            assert accepted == (source == REBOUND or now - last >= 1.0)
        if accepted:
            latched, last = source, now
        assert peer.destination == latched
