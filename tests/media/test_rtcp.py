"""RTCP compound packets and receiver statistics (RFC 3550 6, A.3, A.8)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.media.rtcp import (
    SDES_CNAME,
    SDES_TOOL,
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpUnknown,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    serialize_rtcp,
)
from minipbx.media.rtp import PacketError, RtpPacket

BLOCK = ReportBlock(0x11111111, 25, -3, 0x0001FFFF, 80, 0xAABBCCDD, 0x00010000)


def test_compound_round_trip() -> None:
    packets = [
        SenderReport(0xCAFE, ntp_timestamp(1_700_000_000.5), 123456, 50, 8000, (BLOCK, BLOCK)),
        SourceDescription(
            (SdesChunk(0xCAFE, ((SDES_CNAME, "pbx@192.0.2.1"), (SDES_TOOL, "mini"))),)
        ),
        Bye((0xCAFE,), "call ended"),
    ]
    wire = serialize_rtcp(packets)
    assert len(wire) % 4 == 0
    assert parse_rtcp(wire) == packets


def test_receiver_report_bytes() -> None:
    """RFC 3550 6.4.2 layout, written out by hand."""
    wire = bytes(ReceiverReport(0x01020304, (BLOCK,)))
    assert wire[:8] == bytes.fromhex("81c90007") + bytes.fromhex("01020304")
    assert wire[8:] == bytes.fromhex("11111111 19 fffffd 0001ffff 00000050 aabbccdd 00010000")
    assert parse_rtcp(wire) == [ReceiverReport(0x01020304, (BLOCK,))]


def test_sdes_padding_and_empty_bye() -> None:
    for text in ("", "a", "ab", "abc", "abcd"):  # every padding length
        sdes = SourceDescription((SdesChunk(1, ((SDES_CNAME, text),)), SdesChunk(2)))
        assert parse_rtcp(bytes(sdes)) == [sdes]
    assert parse_rtcp(bytes(Bye())) == [Bye()]
    assert bytes(Bye()) == bytes.fromhex("80cb0000")


def test_unknown_packet_types_are_kept() -> None:
    app = RtcpUnknown(204, 3, b"name" + b"data")
    rr = ReceiverReport(9)
    assert parse_rtcp(bytes(rr) + bytes(app)) == [rr, app]


def test_padding_on_the_last_packet() -> None:
    wire = bytearray(bytes(ReceiverReport(9)) + bytes(Bye((9,))))
    wire[8] |= 0x20  # P bit of the BYE
    wire[10:12] = (2).to_bytes(2, "big")  # one more word...
    wire += b"\x00\x00\x00\x04"  # ...of padding, counting itself
    assert parse_rtcp(bytes(wire)) == [ReceiverReport(9), Bye((9,))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty RTCP datagram"),
        (b"\x81\xc9\x00", "RTCP header truncated at offset 0"),
        (b"\x41\xc9\x00\x00", "RTCP version 1 at offset 0, expected 2"),
        (b"\x81\xc9\x00\x07" + bytes(8), "RTCP packet type 201 at offset 0 runs past the end"),
        (b"\x82\xc9\x00\x07" + bytes(28), "RR with 2 report blocks: 28 bytes, need 52"),
        (b"\x80\xc8\x00\x01" + bytes(4), "SR with 0 report blocks: 4 bytes, need 24"),
        (b"\x81\xca\x00\x01" + bytes.fromhex("00000001"), "SDES item list without its end"),
        (b"\x81\xca\x00\x02" + bytes.fromhex("00000001 01056162"), "SDES item 1 of 5"),
        (b"\x81\xcb\x00\x02" + bytes.fromhex("00000001 09616263"), "BYE reason of 9 bytes"),
        (b"\xa0\xcb\x00\x01" + bytes.fromhex("00000009"), "padding count 9 does not fit"),
        (b"\xa0\xcb\x00\x00", "padding count 0 does not fit"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        parse_rtcp(data)


@given(st.binary(max_size=120))
def test_fuzz_only_packet_errors(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        parse_rtcp(data)


@given(
    st.binary(max_size=100).map(
        lambda b: b"\x81\xca" + (len(b) // 4).to_bytes(2, "big") + b[: len(b) // 4 * 4]
    )
)
def test_fuzz_sdes_bodies(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        parse_rtcp(data)


def test_building_invalid_values_fails() -> None:
    with pytest.raises(ValueError, match="fraction lost must be 0-255"):
        ReportBlock(1, fraction_lost=256)
    with pytest.raises(ValueError, match="24 signed bits"):
        ReportBlock(1, packets_lost=1 << 23)
    with pytest.raises(ValueError, match="at most 31 items"):
        bytes(Bye(tuple(range(32))))
    with pytest.raises(ValueError, match="SDES item 0: type 1-255"):
        SdesChunk(1, ((0, "x"),))
    with pytest.raises(ValueError, match="BYE reason: at most 255 bytes"):
        Bye((), "x" * 256)


def test_ntp_helpers() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(0.5) & 0xFFFFFFFF == 1 << 31
    assert ntp_middle(0x0123456789ABCDEF) == 0x456789AB


# -- receiver statistics ----------------------------------------------------------------------


def _rtp(seq: int, timestamp: int, ssrc: int = 7) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc, bytes(160))


def test_loss_and_fraction_per_interval() -> None:
    stats = ReceptionStats()
    assert stats.report_block(0.0) is None
    for i in range(100):
        if i % 10 != 3:  # 10% lost
            stats.receive(_rtp(65500 + i, i * 160), i * 0.02)
    block = stats.report_block(2.0)
    assert block is not None and block.ssrc == 7
    assert (block.packets_lost, block.highest_sequence) == (10, 65500 + 99)
    assert block.fraction_lost == (10 << 8) // 100
    for i in range(100, 150):  # no loss in the next interval
        stats.receive(_rtp(65500 + i, i * 160), i * 0.02)
    block = stats.report_block(3.0)
    assert block is not None and (block.fraction_lost, block.packets_lost) == (0, 10)


def test_jitter() -> None:
    steady = ReceptionStats()
    for i in range(50):
        steady.receive(_rtp(i, i * 160), 10 + i * 0.02)
    assert steady.jitter < 1e-6
    shaky = ReceptionStats()
    for i in range(500):  # arrivals alternate 5 ms early and late: |D| = 80 samples
        shaky.receive(_rtp(i, i * 160), 10 + i * 0.02 + (0.005 if i % 2 else -0.005))
    assert shaky.jitter == pytest.approx(80, rel=0.01)


def test_sender_report_round_trip_fields_and_ssrc_change() -> None:
    stats = ReceptionStats()
    stats.receive(_rtp(1, 0), 0.0)
    ntp = ntp_timestamp(1_700_000_000.0)
    stats.sender_report(SenderReport(7, ntp, 0, 1, 160), arrival=5.0)
    stats.sender_report(SenderReport(8, 0, 0, 1, 160), arrival=6.0)  # another source: ignored
    block = stats.report_block(5.5)
    assert block is not None
    assert (block.last_sr, block.delay_since_last_sr) == (ntp_middle(ntp), 32768)
    assert stats.receive(_rtp(500, 99, ssrc=9), 7.0)  # new SSRC: restarted
    block = stats.report_block(8.0)
    assert block is not None and block.ssrc == 9
    assert (block.packets_lost, block.last_sr, block.highest_sequence) == (0, 0, 500)
