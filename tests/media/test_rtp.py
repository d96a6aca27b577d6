"""RTP packets, sequence/timestamp arithmetic, SSRC changes and the send side (RFC 3550)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.media.rtp import (
    PacketError,
    RtpExtension,
    RtpPacket,
    RtpSender,
    RtpSource,
    Unwrapper,
    is_rtcp,
    seq_diff,
    timestamp_diff,
    wrap_diff,
)

# V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq 0x1234 | ts 0x01020304 | SSRC 0xdeadbeef | payload
SIMPLE = bytes.fromhex("8080123401020304deadbeef") + b"\xff" * 4


def test_parse_known_bytes() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(0, 0x1234, 0x01020304, 0xDEADBEEF, b"\xff" * 4, marker=True)
    assert bytes(packet) == SIMPLE


def test_csrc_extension_and_padding() -> None:
    packet = RtpPacket(
        8,
        65535,
        0xFFFFFFFF,
        1,
        b"abc",
        csrc=(7, 8),
        extension=RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=5,
    )
    wire = bytes(packet)
    assert wire[0] == 0x80 | 0x20 | 0x10 | 2
    assert wire[-5:] == b"\x00\x00\x00\x00\x05"
    assert len(wire) == 12 + 8 + 4 + 4 + 3 + 5
    assert RtpPacket.parse(wire) == packet


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b * 4)),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


@given(st.binary(max_size=80))
def test_fuzz_only_packet_errors(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except PacketError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "RTP packet of 2 bytes: shorter than the 12-byte header"),
        (b"\x40" + SIMPLE[1:], "RTP version 1, expected 2"),
        (b"\x83" + SIMPLE[1:12] + b"\x00" * 8, "RTP CSRC count 3 runs past the end"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde", "RTP extension header runs past the end"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde\x00\x02" + bytes(4), "extension of 2 words runs"),
        (b"\xa0" + SIMPLE[1:12] + b"ab\x00", "RTP padding count 0 does not fit"),
        (b"\xa0" + SIMPLE[1:12] + b"ab\x04", "RTP padding count 4 does not fit"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload_type": 128}, "payload type must be 0-127, not 128"),
        ({"sequence_number": 65536}, "sequence number must be 0-65535"),
        ({"timestamp": -1}, "RTP timestamp must be a 32-bit number, not -1"),
        ({"ssrc": 1 << 32}, "RTP ssrc must be a 32-bit number"),
        ({"csrc": tuple(range(16))}, "at most 15"),
        ({"padding": 256}, "padding must be 0-255 bytes, not 256"),
    ],
)
def test_invalid_fields(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    with pytest.raises(ValueError, match=message):
        RtpPacket(**(fields | kwargs))  # type: ignore[arg-type]


def test_invalid_extension() -> None:
    with pytest.raises(ValueError, match="whole 32-bit words, not 3"):
        RtpExtension(1, b"abc")
    with pytest.raises(ValueError, match="profile must be 0-0xFFFF"):
        RtpExtension(0x10000)


def test_is_rtcp() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06") and is_rtcp(b"\x81\xc9")
    assert not is_rtcp(SIMPLE) and not is_rtcp(b"\x80\x7f") and not is_rtcp(b"\x80")


# -- arithmetic ------------------------------------------------------------------------------


def test_wrapping_differences() -> None:
    assert seq_diff(2, 65534) == 4 and seq_diff(65534, 2) == -4
    assert seq_diff(32767, 0) == 32767 and seq_diff(32768, 0) == -32768
    assert timestamp_diff(160, 0xFFFFFF60) == 320
    assert wrap_diff(0, 255, 8) == 1


def test_unwrapper_across_the_wrap_with_reordering() -> None:
    unwrap = Unwrapper(16)
    seen = [unwrap.unwrap(s) for s in (65533, 65535, 65534, 0, 1, 65535, 3, 2)]
    assert seen == [65533, 65535, 65534, 65536, 65537, 65535, 65539, 65538]
    assert unwrap.highest == 65539
    for _ in range(3):  # many cycles
        for s in range(0, 65536, 1000):
            unwrap.unwrap(s)
    assert unwrap.highest is not None and unwrap.highest > 3 * 65536


def test_source_reports_ssrc_changes_and_restarts() -> None:
    source = RtpSource()
    first = RtpPacket(0, 65535, 1000, ssrc=1)
    assert not source.accept(first) and source.extended_sequence(first) == 65535
    following = RtpPacket(0, 0, 1160, ssrc=1)
    assert not source.accept(following) and source.extended_sequence(following) == 65536
    other = RtpPacket(0, 100, 5, ssrc=2)
    assert source.accept(other) and source.changes == 1
    assert source.extended_sequence(other) == 100  # not unwrapped against the old stream
    assert source.extended_timestamp(other) == 5


# -- sending ---------------------------------------------------------------------------------


def test_sender_numbers_packets_and_follows_the_clock() -> None:
    sender = RtpSender(ssrc=42, sequence=65534, timestamp_origin=0xFFFFFF00, clock_origin=100.0)
    assert sender.timestamp_at(100.0) == 0xFFFFFF00
    assert sender.timestamp_at(100.02) == (0xFFFFFF00 + 160) & 0xFFFFFFFF
    assert sender.timestamp_at(100.0 + 3600) == (0xFFFFFF00 + 3600 * 8000) & 0xFFFFFFFF
    out = [sender.packet(0, sender.timestamp_at(100 + i * 0.02), b"x" * 160) for i in range(3)]
    assert [p.sequence_number for p in out] == [65534, 65535, 0]
    assert all(p.ssrc == 42 for p in out)
    assert (sender.packets_sent, sender.octets_sent) == (3, 480)
    assert sender.last_timestamp == out[-1].timestamp
