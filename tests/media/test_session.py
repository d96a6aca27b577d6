"""MediaSession: pacing and comfort silence, DTMF, latching, recording, RTCP, garbage.

A fake clock throughout: ``now`` is a float the test advances; the session is driven like
the glue drives it (wake at ``next_deadline``, handle the timer, take the packets due).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipbx.media.dtmf import DtmfSender
from minipbx.media.g711 import PCMA, PCMU
from minipbx.media.player import StopReason, read_wav, tone
from minipbx.media.rtcp import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
)
from minipbx.media.rtp import RtpPacket, RtpSender
from minipbx.media.session import (
    DigitReceived,
    MediaSession,
    RecordingStopped,
    RemoteBye,
    RemoteLatched,
    RemoteMedia,
    SourceChanged,
    codec_for,
)
from minipbx.sip.offer_answer import NegotiatedCodec
from minipbx.sip.sdp import Direction, RtpMap, SessionDescription

SDP_ADDR = ("192.0.2.10", 4000)
NAT_ADDR = ("198.51.100.7", 61000)
TS0 = 0xFFFFF000  # our timestamps wrap early on purpose
OUR_SSRC = 0x5EED5EED
T0 = 1000.0


def _session(
    now: float = T0,
    *,
    direction: Direction = Direction.SENDRECV,
    rtp: tuple[str, int] | None = SDP_ADDR,
    **kwargs: object,
) -> MediaSession:
    remote = RemoteMedia(rtp, None if rtp is None else (rtp[0], rtp[1] + 1), direction)
    settings: dict[str, object] = {
        "telephone_event": 101,
        "ssrc": OUR_SSRC,
        "sequence": 65530,
        "timestamp": TS0,
        "now": now,
        "remote": remote,
        "cname": "pbx@test",
        "wall_offset": 1_700_000_000.0 - T0,
    }
    settings.update(kwargs)
    return MediaSession(PCMU, **settings)  # type: ignore[arg-type]


def _drive(session: MediaSession, until: float, lateness: float = 0.0, seed: int = 1):
    """Wake at each deadline (plus a random lateness up to ``lateness``) until ``until``;
    return ``(wake time, packet)`` for every RTP packet sent."""
    rng = random.Random(seed)
    sent: list[tuple[float, RtpPacket]] = []
    now = 0.0
    while (when := session.next_deadline()) is not None and when <= until:
        now = max(now, when + rng.uniform(0, lateness))
        session.handle_timer(now)
        sent += [(now, RtpPacket.parse(p)) for p in session.packets_due(now)]
        session.rtcp_due(now)
    return sent


class Phone:
    """The remote party's RTP stream (its own SSRC, sequence, media clock)."""

    def __init__(self, ssrc: int = 0xABCDEF01, seq: int = 65000, ts: int = 0x7FFFFF00) -> None:
        self.sender = RtpSender(ssrc, seq, ts, T0)
        self.codec = PCMU

    def audio(self, samples: np.ndarray, at: float) -> RtpPacket:
        return self.sender.packet(0, self.sender.timestamp_at(at), self.codec.encode(samples))

    def frames(self, samples: np.ndarray, start: float) -> list[tuple[float, bytes]]:
        """``samples`` cut in 20 ms packets sent from ``start`` on: (send time, datagram)."""
        out = []
        for i in range(0, len(samples), 160):
            at = start + i / 8000
            out.append((at, bytes(self.audio(samples[i : i + 160], at))))
        return out


# -- pacing and comfort silence ----------------------------------------------------------------


def test_silence_then_prompt_on_one_grid() -> None:
    session = _session()
    assert session.next_deadline() == T0  # first comfort-silence frame at once
    sent = _drive(session, T0 + 0.095)  # silence at 0, 20, 40, 60, 80 ms
    assert [round(t - T0, 6) for t, _ in sent] == [0.0, 0.02, 0.04, 0.06, 0.08]
    session.play(tone(440, 0.1), T0 + 0.0913)  # between two slots: starts on the next
    sent += _drive(session, T0 + 0.3)
    times = [round(t - T0, 6) for t, _ in sent]
    assert times == [round(0.02 * i, 6) for i in range(16)]
    packets = [p for _, p in sent]
    assert [p.sequence_number for p in packets] == [(65530 + i) & 0xFFFF for i in range(16)]
    assert [p.timestamp for p in packets] == [(TS0 + 160 * i) & 0xFFFFFFFF for i in range(16)]
    assert {p.payload_type for p in packets} == {0} and {p.ssrc for p in packets} == {OUR_SSRC}
    assert [p.marker for p in packets] == [False] * 5 + [True] + [False] * 10
    prompt = b"".join(p.payload for p in packets[5:10])
    assert prompt == PCMU.encode(tone(440, 0.1))
    assert {p.payload for p in packets[:5] + packets[10:]} == {b"\xff" * 160}


def test_no_drift_with_late_timers() -> None:
    """Ten minutes with every wake-up up to 3 ms late: frame n still carries ts0 + 160 n and
    is sent at its slot (plus the lateness), never earlier, never bunched."""
    session = _session()
    session.play(tone(300, 600.0, level=-20), T0)
    sent = _drive(session, T0 + 599.99, lateness=0.003, seed=7)
    assert len(sent) == 30_000 and session.player.skipped == 0
    for n, (when, packet) in enumerate(sent[::997]):
        slot = n * 997
        assert packet.timestamp == (TS0 + 160 * slot) & 0xFFFFFFFF
        assert 0 <= when - (T0 + slot * 0.02) <= 0.003 + 1e-9
    assert not session.playing


def test_late_timer_sends_no_burst_of_silence() -> None:
    session = _session()
    _drive(session, T0 + 0.02)
    late = T0 + 0.5  # the loop stalled for half a second
    packets = [RtpPacket.parse(p) for p in session.packets_due(late)]
    assert len(packets) == 1 and packets[0].timestamp == (TS0 + 25 * 160) & 0xFFFFFFFF
    assert session.next_deadline() == pytest.approx(T0 + 0.52)


def test_prompts_queue_and_barge_in_keeps_the_grid() -> None:
    session = _session(comfort_silence=False)
    assert session.next_deadline() is not None  # RTCP only
    session.play(tone(440, 0.06), T0 + 0.005)
    session.play(tone(880, 0.04), T0 + 0.005)  # queued behind
    sent = _drive(session, T0 + 0.085)  # frames on slots 1-4: 20, 40, 60, 80 ms
    assert [round(t - T0, 6) for t, _ in sent] == [0.02, 0.04, 0.06, 0.08]
    assert len(sent) == 4 and [p.marker for _, p in sent] == [True, False, False, False]
    session.stop_playing()
    assert not session.playing and session.packets_due(T0 + 0.2) == []
    session.play(tone(440, 0.02), T0 + 0.203)
    (when, packet), *_ = _drive(session, T0 + 0.3)
    assert when == pytest.approx(T0 + 0.22) and packet.marker
    assert packet.timestamp == (TS0 + 11 * 160) & 0xFFFFFFFF  # same grid, later slot


def test_hold_sends_nothing_and_leaves_no_sequence_gap() -> None:
    session = _session(direction=Direction.SENDONLY)  # the remote holds us
    session.play(tone(440, 0.1), T0)
    assert _drive(session, T0 + 0.5) == [] and not session.playing  # it ran its course
    assert session.stream.packets_sent == 0
    session.update_remote(RemoteMedia(SDP_ADDR, None, Direction.SENDRECV))
    (_, first), *_ = _drive(session, T0 + 0.6)
    assert first.sequence_number == 65530


def test_no_address_no_packets_until_latched() -> None:
    session = _session(rtp=None)  # c=0.0.0.0
    assert not session.sending and session.rtcp_destination is None
    assert session.next_deadline() is None
    phone = Phone()
    events = session.receive(bytes(phone.audio(tone(1000, 0.02), T0)), NAT_ADDR, T0 + 0.01)
    assert events == [RemoteLatched(NAT_ADDR, None)]
    assert session.destination == NAT_ADDR and session.sending
    assert session.rtcp_destination == (NAT_ADDR[0], NAT_ADDR[1] + 1)


# -- latching ------------------------------------------------------------------------------------


def test_symmetric_latching() -> None:
    session = _session()
    phone = Phone()
    assert session.destination == SDP_ADDR
    assert session.receive(b"\x80garbage", NAT_ADDR, T0) == []  # garbage does not latch
    assert session.destination == SDP_ADDR and session.invalid_packets == 1
    assert session.receive(bytes(phone.audio(tone(1000, 0.02), T0)), NAT_ADDR, T0) == [
        RemoteLatched(NAT_ADDR, SDP_ADDR)
    ]
    assert session.destination == NAT_ADDR
    intruder = ("203.0.113.66", 5004)
    session.start_recording(10.0, None, T0)
    spoof = Phone(ssrc=0x666)
    for i in range(5):
        dtmf = spoof.sender.packet(101, 1234, bytes([1, 0x80, 0, 160]))
        assert session.receive(bytes(dtmf), intruder, T0 + 0.02 * i) == []
        assert session.receive(bytes(spoof.audio(tone(500, 0.02), T0)), intruder, T0) == []
    assert session.destination == NAT_ADDR and session.rtp_peer.dropped == 10
    assert session.stop_recording().seconds == 0.0
    # a re-INVITE moving the phone re-arms latching
    moved = ("192.0.2.20", 5000)
    session.update_remote(RemoteMedia(moved, None))
    assert session.destination == moved
    assert session.receive(bytes(phone.audio(tone(1000, 0.02), T0)), NAT_ADDR, T0 + 1) == [
        RemoteLatched(NAT_ADDR, moved)
    ]


# -- DTMF ------------------------------------------------------------------------------------


def _dtmf_packets(digits: str, start: float = T0) -> list[bytes]:
    """What a phone sends for ``digits`` (RFC 4733: updates, 3 end packets), in order."""
    stream = RtpSender(0xABCDEF01, 100, 0xFFFFFF00, T0)  # event timestamps wrap too
    sender = DtmfSender(stream, payload_type=101)
    for digit in digits:
        sender.send(digit, start, duration=0.12)
    out = []
    while (when := sender.next_deadline()) is not None:
        out += [bytes(p) for p in sender.packets_due(when)]
    return out


def _digits(session: MediaSession, datagrams: list[bytes], source=SDP_ADDR) -> str:
    digits = ""
    for i, data in enumerate(datagrams):
        for event in session.receive(data, source, T0 + 0.01 * i):
            if isinstance(event, DigitReceived):
                digits += event.digit
    return digits


def test_dtmf_one_digit_per_event_with_redundant_ends() -> None:
    packets = _dtmf_packets("12#")
    assert len(packets) == 3 * (3 + 2)  # 3 updates + 3 end packets (last update is the first)
    session = _session()
    assert _digits(session, packets) == "12#"
    assert _digits(session, packets) == ""  # retransmitted/duplicated: nothing new


def test_dtmf_lost_start_and_reordered_end() -> None:
    one, two = _dtmf_packets("7"), _dtmf_packets("9", start=T0 + 1)
    session = _session()
    assert _digits(session, one[2:]) == "7"  # marker packet and first update lost
    assert _digits(session, [two[-1], *two[:-1]]) == "9"  # an end packet first


def test_dtmf_not_counted_for_jitter_but_for_loss() -> None:
    session = _session()
    phone = Phone()
    for i in range(10):
        session.receive(bytes(phone.audio(tone(500, 0.02), T0 + 0.02 * i)), SDP_ADDR, T0 + 0.02 * i)
    for i in range(6):  # event packets 50 ms apart, same timestamp
        event = phone.sender.packet(101, phone.sender.timestamp_at(T0 + 0.2), bytes([5, 10, 0, 80]))
        session.receive(bytes(event), SDP_ADDR, T0 + 0.2 + 0.05 * i)
    assert session.stats.jitter == 0.0 and session.stats.received == 16
    block = session.stats.report_block(T0 + 1)
    assert block is not None and block.packets_lost == 0


# -- recording -------------------------------------------------------------------------------


def test_recording_stops_on_silence_and_gives_wav() -> None:
    session = _session()
    phone = Phone()
    speech = tone(440, 1.0, level=-12)
    audio = np.concatenate([speech, np.zeros(8000 * 3, dtype=np.int16)])
    session.start_recording(30.0, 2.0, T0)
    stopped: list[object] = []
    for at, data in phone.frames(audio, T0):
        stopped += [
            e for e in session.receive(data, SDP_ADDR, at) if isinstance(e, RecordingStopped)
        ]
    assert stopped == [RecordingStopped(StopReason.SILENCE)]
    assert not session.recording
    recorded = session.stop_recording()
    assert recorded.reason is StopReason.SILENCE and recorded.seconds == pytest.approx(1.0)
    samples = read_wav(recorded.wav)
    assert np.array_equal(samples, PCMU.decode(PCMU.encode(speech)))


def test_recording_fills_lost_packets_and_hits_max_length() -> None:
    session = _session()
    phone = Phone()
    session.start_recording(0.5, None, T0)
    frames = phone.frames(tone(440, 1.0), T0)
    events = []
    for at, data in frames[:5] + frames[6:]:  # one packet lost
        events += session.receive(data, SDP_ADDR, at)
    assert events == [RecordingStopped(StopReason.MAX_LENGTH)]
    recorded = session.stop_recording()
    assert recorded.seconds == pytest.approx(0.5)
    samples = read_wav(recorded.wav)
    assert not samples[800:960].any() and samples[960:1120].any()  # the gap is silence


def test_starved_recording_ends_by_the_clock() -> None:
    """A phone with silence suppression stops sending: the missing time is silence."""
    session = _session(comfort_silence=False)
    phone = Phone()
    session.start_recording(60.0, 3.0, T0)
    for at, data in phone.frames(tone(440, 0.5), T0):
        assert session.receive(data, SDP_ADDR, at) == []
    last = T0 + 0.48
    assert session.next_deadline() == pytest.approx(min(last + 3.0, session._rtcp_at))
    assert session.handle_timer(last + 2.9) == []
    assert session.handle_timer(last + 3.0) == [RecordingStopped(StopReason.SILENCE)]
    recorded = session.stop_recording()
    assert recorded.seconds == pytest.approx(0.5)
    session.start_recording(1.0, None, T0 + 10)  # no packets at all, no silence limit
    assert session.handle_timer(T0 + 11.49) == []
    assert session.handle_timer(T0 + 11.5) == [RecordingStopped(StopReason.MAX_LENGTH)]
    assert session.stop_recording().seconds == 0.0  # all silence, trimmed


def test_stop_recording_without_start() -> None:
    with pytest.raises(RuntimeError, match="no recording"):
        _session().stop_recording()


# -- RTCP ------------------------------------------------------------------------------------


def _report(session: MediaSession, now: float) -> tuple[SenderReport | ReceiverReport, str]:
    data = session.rtcp_due(now)
    assert data is not None
    report, sdes = parse_rtcp(data)
    assert isinstance(report, SenderReport | ReceiverReport)
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].ssrc == OUR_SSRC and sdes.chunks[0].items[0][0] == SDES_CNAME
    return report, sdes.chunks[0].items[0][1]


def test_rtcp_loss_and_jitter_per_rfc3550() -> None:
    """100 packets, 10 lost, arrival delay alternating 0 and 5 ms: each transit difference
    is 40 timestamp units, so J_n = 40 (1 - (15/16)^n) (RFC 3550 A.8)."""
    session = _session(comfort_silence=False)
    phone = Phone(seq=65500)  # sequence numbers wrap inside the stream
    lost = set(range(20, 30))
    received = 0
    for i in range(100):
        packet = phone.audio(tone(440, 0.02), T0 + 0.02 * i)
        if i in lost:
            continue
        arrival = T0 + 0.02 * i + (0.005 if received % 2 else 0.0)
        session.receive(bytes(packet), SDP_ADDR, arrival)
        received += 1
    assert session.rtcp_due(T0 + 1.0) is None  # not due yet: first at 2.5 s x [0.5, 1.5]
    due = session.next_deadline()
    assert due is not None and T0 + 1.25 <= due <= T0 + 3.75
    report, cname = _report(session, due)
    assert isinstance(report, ReceiverReport) and cname == "pbx@test"  # we sent nothing
    (block,) = report.reports
    assert block.ssrc == 0xABCDEF01
    assert block.packets_lost == 10 and block.fraction_lost == 10 * 256 // 100
    assert block.highest_sequence == 65500 + 99  # extended: cycle 1, sequence 63
    assert block.jitter == int(40 * (1 - (15 / 16) ** 89))
    assert block.last_sr == 0 and block.delay_since_last_sr == 0


def test_rtcp_sender_report_interval_and_lsr() -> None:
    session = _session()
    phone = Phone()
    session.receive(bytes(phone.audio(tone(440, 0.02), T0)), SDP_ADDR, T0)
    remote_ntp = ntp_timestamp(1_700_000_000.25)
    sr = SenderReport(0xABCDEF01, remote_ntp, 1234, 1, 160)
    session.receive(bytes(sr), (SDP_ADDR[0], SDP_ADDR[1] + 1), T0 + 0.5, rtcp=True)
    times = []
    for _ in range(20):
        deadline = session._rtcp_at
        _drive(session, deadline)
        times.append(deadline)
    gaps = np.diff(times)
    assert gaps.min() >= 2.5 and gaps.max() <= 7.5 and 4.0 < gaps.mean() < 6.0
    assert len(set(np.round(gaps, 6))) > 10  # randomised, not a fixed period
    now = session._rtcp_at
    _drive(session, now - 0.001)
    report, _ = _report(session, now)
    assert isinstance(report, SenderReport)  # comfort silence counts as sending
    assert report.packet_count == session.stream.packets_sent
    assert report.octet_count == 160 * report.packet_count
    assert report.rtp_timestamp == session.stream.timestamp_at(now)
    assert report.ntp_timestamp == ntp_timestamp(1_700_000_000.0 - T0 + now)
    (block,) = report.reports
    assert block.last_sr == ntp_middle(remote_ntp)
    assert block.delay_since_last_sr == round((now - T0 - 0.5) * 65536)


def test_rtcp_from_remote_gives_round_trip_and_remote_view() -> None:
    session = _session()
    sent_at = T0 + 2.0
    our_sr_ntp = ntp_middle(ntp_timestamp(sent_at + session.wall_offset))
    block = ReportBlock(OUR_SSRC, 12, 3, 70000, 55, our_sr_ntp, 65536 // 2)  # held 0.5 s
    other = ReportBlock(0x1234, 200)  # about somebody else: ignored
    future = ReportBlock(OUR_SSRC, last_sr=our_sr_ntp + 65536 * 10, delay_since_last_sr=1)
    session.receive(
        bytes(ReceiverReport(0xABCDEF01, (future,))), ("192.0.2.10", 4001), sent_at, rtcp=True
    )
    assert session.remote_report == future
    assert session.round_trip is None  # an LSR from the future: no negative round trip
    rr = bytes(ReceiverReport(0xABCDEF01, (other, block)))
    assert session.receive(rr, ("192.0.2.10", 4001), sent_at + 0.6, rtcp=True) == []
    assert session.remote_report == block
    assert session.round_trip == pytest.approx(0.1, abs=1e-4)
    bye = bytes(Bye((0xABCDEF01,), "hangup"))
    session.receive(bytes(Phone().audio(tone(1, 0.02), T0)), SDP_ADDR, sent_at)
    assert session.receive(bye, ("192.0.2.10", 4001), sent_at + 1, rtcp=True) == [
        RemoteBye(0xABCDEF01, "hangup")
    ]


def test_rtcp_muxed_on_the_rtp_socket_and_latching() -> None:
    session = _session()
    phone = Phone()
    session.receive(bytes(phone.audio(tone(440, 0.02), T0)), NAT_ADDR, T0)
    assert session.rtcp_destination == (NAT_ADDR[0], NAT_ADDR[1] + 1)  # NAT: guess port+1
    rr = bytes(ReceiverReport(0xABCDEF01, (ReportBlock(OUR_SSRC, 1),)))
    session.receive(rr, NAT_ADDR, T0 + 0.1)  # RFC 5761 demultiplexing on the RTP socket
    assert session.remote_report is not None and session.remote_report.fraction_lost == 1
    rtcp_nat = (NAT_ADDR[0], 61999)
    session.receive(bytes(ReceiverReport(0xABCDEF01)), rtcp_nat, T0 + 0.2, rtcp=True)
    assert session.rtcp_destination == rtcp_nat


def test_bye_is_a_valid_compound_packet() -> None:
    session = _session()
    _drive(session, T0 + 0.1)
    report, sdes, bye = parse_rtcp(session.bye(T0 + 0.1, "call ended"))
    assert isinstance(report, SenderReport) and report.packet_count == 6
    assert isinstance(sdes, SourceDescription)
    assert bye == Bye((OUR_SSRC,), "call ended")


def test_ssrc_change_restarts_statistics() -> None:
    session = _session()
    first, second = Phone(ssrc=1), Phone(ssrc=2, seq=7)
    for i in range(5):
        packet = first.audio(tone(440, 0.02), T0 + 0.02 * i)
        session.receive(bytes(packet), SDP_ADDR, T0 + 0.02 * i + 0.003 * (i % 2))
    assert session.stats.jitter > 0
    events = session.receive(bytes(second.audio(tone(440, 0.02), T0)), SDP_ADDR, T0 + 0.2)
    assert events == [SourceChanged(2, 1)]
    assert session.stats.received == 1 and session.stats.jitter == 0.0
    block = session.stats.report_block(T0 + 1)
    assert block is not None and block.ssrc == 2 and block.highest_sequence == 7


# -- garbage and codecs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x40" + bytes(20),  # RTP version 1
        bytes.fromhex("8f00000100000001000000aa"),  # 15 CSRCs announced, none there
        bytes.fromhex("a0000001000000010000000100"),  # padding count 0
        bytes.fromhex("8060000100000001000000aa") + b"\x01",  # PT 96: not negotiated
    ],
)
def test_garbage_is_counted_not_raised(data: bytes) -> None:
    session = _session()
    assert session.receive(data, SDP_ADDR, T0) == []
    assert session.invalid_packets + session.unknown_payload == 1
    assert session.rtp_peer.latched is None


def test_bad_rtcp_and_bad_event_payload() -> None:
    session = _session()
    assert session.receive(b"\x81\xc9\x00\x07abc", SDP_ADDR, T0, rtcp=True) == []
    assert session.invalid_rtcp == 1
    event = RtpPacket(101, 1, 1, 5, b"\x01\x02")  # 2-byte telephone-event
    assert session.receive(bytes(event), SDP_ADDR, T0) == []
    assert session.invalid_packets == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20), st.booleans())
def test_never_raises_on_arbitrary_input(datagrams: list[bytes], rtcp: bool) -> None:
    session = _session()
    for i, data in enumerate(datagrams):
        session.receive(data, SDP_ADDR, T0 + i * 0.01, rtcp=rtcp)
        session.receive(b"\x80\x65" + data, SDP_ADDR, T0 + i * 0.01)  # as telephone-events


def test_codec_for_negotiated() -> None:
    pcma = NegotiatedCodec(0, RtpMap(8, "PCMA", 8000), RtpMap(96, "telephone-event", 8000))
    assert codec_for(pcma) == (PCMA, 96)
    dynamic, event = codec_for(NegotiatedCodec(0, RtpMap(97, "pcmu", 8000)))
    assert (dynamic.name, dynamic.payload_type, event) == ("PCMU", 97, None)
    with pytest.raises(ValueError, match="PCMU/PCMA"):
        codec_for(NegotiatedCodec(0, RtpMap(9, "G722", 8000)))


def test_dynamic_payload_type_is_sent_and_recorded() -> None:
    law, _ = codec_for(NegotiatedCodec(0, RtpMap(97, "PCMU", 8000)))
    session = _session()
    session.update_remote(session.remote, law, 101)
    (_, packet), *_ = _drive(session, T0)
    assert packet.payload_type == 97
    session.start_recording(5.0, None, T0)
    audio = tone(440, 0.02)
    packet = RtpPacket(97, 1, 160, 9, PCMU.encode(audio))
    assert session.receive(bytes(packet), SDP_ADDR, T0) == []  # latched where the SDP said
    assert np.array_equal(read_wav(session.stop_recording().wav), PCMU.decode(PCMU.encode(audio)))


def test_codec_change_cuts_the_prompt() -> None:
    session = _session()
    session.play(tone(440, 1.0), T0)
    _drive(session, T0 + 0.1)
    session.update_remote(session.remote, PCMA, None)
    assert not session.playing and session.telephone_event is None
    (_, packet), *_ = _drive(session, T0 + 0.2)
    assert packet.payload_type == 8 and packet.payload == b"\xd5" * 160


# -- the remote's SDP ----------------------------------------------------------------------------


def _sdp(media: str, session: str = "c=IN IP4 192.0.2.10\r\n") -> SessionDescription:
    head = f"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\n{session}t=0 0\r\n"
    return SessionDescription.parse(head + media)


def test_remote_media_from_sdp() -> None:
    plain = _sdp("m=audio 4000 RTP/AVP 0\r\n")
    assert RemoteMedia.from_sdp(plain, 0) == RemoteMedia(
        ("192.0.2.10", 4000), ("192.0.2.10", 4001), Direction.SENDRECV
    )
    rtcp = _sdp("m=audio 4000 RTP/AVP 0\r\na=rtcp:5555 IN IP4 192.0.2.99\r\na=sendonly\r\n")
    assert RemoteMedia.from_sdp(rtcp, 0) == RemoteMedia(
        ("192.0.2.10", 4000), ("192.0.2.99", 5555), Direction.SENDONLY
    )
    assert not RemoteMedia.from_sdp(rtcp, 0).receives
    hold = _sdp("m=audio 4000 RTP/AVP 0\r\n", "c=IN IP4 0.0.0.0\r\n")
    assert RemoteMedia.from_sdp(hold, 0).rtp is None
    name = _sdp("m=audio 4000 RTP/AVP 0\r\n", "c=IN IP4 pbx.example.com\r\n")
    assert RemoteMedia.from_sdp(name, 0).rtp is None  # resolving would block the loop
    v6 = _sdp("m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:DB8::0:1\r\n")
    assert RemoteMedia.from_sdp(v6, 0).rtp == ("2001:db8::1", 4000)
    with pytest.raises(ValueError, match="no active stream at m-line 1"):
        RemoteMedia.from_sdp(plain, 1)
