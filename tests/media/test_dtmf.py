"""RFC 4733 telephone-events, SIP INFO DTMF bodies and the digit collector."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.media.dtmf import (
    Collected,
    CollectEnd,
    DtmfCollector,
    DtmfDigit,
    DtmfReceiver,
    DtmfRelay,
    DtmfSender,
    TelephoneEvent,
    digit_to_event,
    parse_dtmf_info,
)
from minipbx.media.rtp import PacketError, RtpPacket, RtpSender

TS0 = 0xFFFFF000  # close to the wrap on purpose


def _stream() -> RtpSender:
    return RtpSender(ssrc=0x1234, sequence=65530, timestamp_origin=TS0, clock_origin=0.0)


def _run(sender: DtmfSender, until: float) -> list[tuple[float, RtpPacket]]:
    """Drive ``sender`` like the glue would: wake at each deadline until ``until``."""
    sent = []
    while (when := sender.next_deadline()) is not None and when <= until:
        sent += [(when, p) for p in sender.packets_due(when)]
    return sent


def _events(sent: list[tuple[float, RtpPacket]]) -> list[tuple[float, bool, int, bool, int]]:
    """(time, marker, event, end, duration) of each packet."""
    out = []
    for when, packet in sent:
        event = TelephoneEvent.parse(packet.payload)
        out.append((round(when, 6), packet.marker, event.event, event.end, event.duration))
    return out


# -- payload ---------------------------------------------------------------------------------


def test_payload_bytes() -> None:
    event = TelephoneEvent(5, end=True, volume=10, duration=800)
    assert bytes(event) == b"\x05\x8a\x03\x20"
    assert TelephoneEvent.parse(b"\x05\x8a\x03\x20") == event
    assert TelephoneEvent.parse(b"\x0b\x4a\x00\xa0") == TelephoneEvent(11, False, 10, 160)  # R bit
    assert event.digit == "5" and TelephoneEvent(16).digit is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TelephoneEvent.parse(b"\x05\x8a\x03"), "payload of 3 bytes, need 4"),
        (lambda: TelephoneEvent(256), "code must be 0-255, not 256"),
        (lambda: TelephoneEvent(1, volume=64), "volume must be 0-63"),
        (lambda: TelephoneEvent(1, duration=65536), "duration must be 0-65535"),
        (lambda: digit_to_event("E"), "not a DTMF key: 'E'"),
        (lambda: digit_to_event("12"), "not a DTMF key: '12'"),
    ],
)
def test_payload_errors(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_digits() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCDabcd"] == [*range(16), 12, 13, 14, 15]


# -- sending ---------------------------------------------------------------------------------


def test_one_digit_packet_sequence() -> None:
    sender = DtmfSender(_stream(), payload_type=101)
    sender.send("5", now=1.0, duration=0.1)
    sent = _run(sender, 10.0)
    assert _events(sent) == [
        (1.0, True, 5, False, 400),
        (1.05, False, 5, True, 800),
        (1.1, False, 5, True, 800),  # the end packet three times (RFC 4733 2.5.1.4)
        (1.15, False, 5, True, 800),
    ]
    packets = [p for _, p in sent]
    assert {p.timestamp for p in packets} == {(TS0 + 8000) & 0xFFFFFFFF}
    assert [p.sequence_number for p in packets] == [65530, 65531, 65532, 65533]
    assert {(p.payload_type, p.ssrc) for p in packets} == {(101, 0x1234)}
    assert not sender.busy and sender.next_deadline() is None


def test_durations_grow_and_queued_digits_follow() -> None:
    sender = DtmfSender(_stream(), interval=0.05)
    sender.send("1", now=0.0, duration=0.23)
    sender.send("#", now=0.0, duration=0.05, volume=20)
    sent = _run(sender, 10.0)
    first = [e for e in _events(sent) if e[2] == 1]
    assert [e[4] for e in first] == [400, 800, 1200, 1600, 1840, 1840, 1840]
    assert [e[3] for e in first] == [False] * 4 + [True] * 3
    second = [(w, p) for w, p in sent if p.payload[0] == 11]
    assert second[0][0] == pytest.approx(0.35)  # one interval after the last end packet
    assert second[0][1].marker and second[0][1].timestamp == (TS0 + 2800) & 0xFFFFFFFF
    assert [TelephoneEvent.parse(p.payload).volume for _, p in second] == [20] * 3


def test_packets_due_catches_up_when_the_timer_is_late() -> None:
    sender = DtmfSender(_stream())
    sender.send("9", now=0.0, duration=0.1)
    assert len(sender.packets_due(0.12)) == 3
    assert sender.next_deadline() == pytest.approx(0.15)


def test_sender_rejects_bad_input() -> None:
    sender = DtmfSender(_stream())
    with pytest.raises(ValueError, match="duration must be over 0 and at most 8 s"):
        sender.send("1", 0.0, duration=9.0)
    with pytest.raises(ValueError, match="volume must be 0-63"):
        sender.send("1", 0.0, volume=99)
    with pytest.raises(ValueError, match="not a DTMF key"):
        sender.send("x", 0.0)
    with pytest.raises(ValueError, match="interval must be positive"):
        DtmfSender(_stream(), interval=0)
    assert not sender.busy


# -- receiving -------------------------------------------------------------------------------


def _sent_digits(digits: str) -> list[list[RtpPacket]]:
    """The packets of each digit, as our sender makes them."""
    sender = DtmfSender(_stream())
    for d in digits:
        sender.send(d, 0.0, duration=0.12)
    per_event: dict[int, list[RtpPacket]] = {}
    for _, packet in _run(sender, 100.0):
        per_event.setdefault(packet.timestamp, []).append(packet)
    return list(per_event.values())


def _received(packets: list[RtpPacket]) -> str:
    receiver = DtmfReceiver()
    return "".join(d.digit for p in packets if (d := receiver.receive(p)) is not None)


def test_each_event_is_one_digit() -> None:
    events = _sent_digits("1223#")
    assert _received([p for event in events for p in event]) == "1223#"


def test_lost_start_duplicates_and_reordered_ends() -> None:
    events = _sent_digits("55")
    stream = events[0][1:] + events[0][-1:]  # marker packet lost, end duplicated
    stream += [events[1][0], events[1][-1], events[1][2], events[1][1], events[1][3]]
    stream += [events[0][-1]]  # a late end packet of the first event
    assert _received(stream) == "55"


def test_an_event_first_seen_after_a_later_one_still_counts() -> None:
    first, second = _sent_digits("12")
    assert _received([second[0], first[-1], *second[1:], *first]) == "21"


def test_events_older_than_memory_are_ignored() -> None:
    receiver = DtmfReceiver(memory=2)
    payload = bytes(TelephoneEvent(1, duration=400))
    for timestamp in (8000, 16000):
        assert receiver.receive(RtpPacket(101, 1, timestamp, 1, payload)) is not None
    assert receiver.receive(RtpPacket(101, 1, 4000, 1, payload)) is None  # may be forgotten


@given(st.text("0123456789*#ABCD", min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_any_loss_duplication_or_local_reordering(digits: str, seed: int) -> None:
    """Each event keeps at least one packet; packets may repeat and swap with neighbours."""
    rng = random.Random(seed)
    stream: list[RtpPacket] = []
    for event in _sent_digits(digits):
        kept = [p for p in event if rng.random() < 0.6] or [rng.choice(event)]
        kept += [rng.choice(kept) for _ in range(rng.randrange(3))]
        rng.shuffle(kept)
        stream += kept
    for i in range(len(stream) - 1):  # swap some neighbours across events too
        if rng.random() < 0.2:
            stream[i], stream[i + 1] = stream[i + 1], stream[i]
    received = _received(stream)
    assert sorted(received) == sorted(digits)
    assert len(received) == len(digits)


def test_digit_reports() -> None:
    receiver = DtmfReceiver()
    packet = RtpPacket(101, 1, 5000, 9, bytes(TelephoneEvent(10, False, 10, 160)), marker=True)
    assert receiver.receive(packet) == DtmfDigit("*", 5000, False, 160)
    flash = RtpPacket(101, 2, 9000, 9, bytes(TelephoneEvent(16)), marker=True)
    assert receiver.receive(flash) is None
    with pytest.raises(PacketError, match="payload of 2 bytes"):
        receiver.receive(RtpPacket(101, 3, 9000, 9, b"\x00\x00"))


def test_new_ssrc_starts_over() -> None:
    receiver = DtmfReceiver()
    payload = bytes(TelephoneEvent(1, duration=400))
    assert receiver.receive(RtpPacket(101, 1, 1000, ssrc=1, payload=payload)) is not None
    assert receiver.receive(RtpPacket(101, 2, 1000, ssrc=1, payload=payload)) is None
    assert receiver.receive(RtpPacket(101, 7, 1000, ssrc=2, payload=payload)) is not None


def test_long_event_segments_are_one_digit() -> None:
    """RFC 4733 2.5.2.3: a new segment (new timestamp, no marker) continues the event."""
    receiver = DtmfReceiver()
    first = RtpPacket(101, 1, 0, 1, bytes(TelephoneEvent(7, False, 10, 0xFFFF)), marker=True)
    follow = RtpPacket(101, 2, 0xFFFF, 1, bytes(TelephoneEvent(7, True, 10, 800)))
    assert receiver.receive(first) is not None
    assert receiver.receive(follow) is None
    again = RtpPacket(101, 3, 0xFFFF + 4000, 1, bytes(TelephoneEvent(7, True, 10, 800)))
    assert receiver.receive(again) is not None  # a new press of the same key


# -- SIP INFO ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", DtmfRelay("5", 160)),
        ("Application/DTMF-Relay; x=y", "signal= * \nduration = 250", DtmfRelay("*", 250)),
        ("application/dtmf-relay", "Signal=11\r\n", DtmfRelay("#")),
        ("application/dtmf-relay", "Signal=d\r\nDuration=\r\n", DtmfRelay("D")),
        ("application/dtmf", "7\r\n", DtmfRelay("7")),
    ],
)
def test_info_bodies(content_type: str, body: str, expected: DtmfRelay) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/dtmf-relay", "Duration=160", "dtmf-relay body has no Signal line"),
        ("application/dtmf-relay", "Signal=X", "not a DTMF key: 'X'"),
        ("application/dtmf-relay", "Signal=1\r\nDuration=abc", "Duration must be milliseconds"),
        ("application/dtmf-relay", "Signal 1", "dtmf-relay line without '='"),
        ("application/dtmf-relay", "Signal=1\r\nDuration=0", "duration must be 1-60000 ms"),
        ("application/sdp", "v=0", "not a DTMF body: 'application/sdp'"),
    ],
)
def test_info_errors(content_type: str, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dtmf_info(content_type, body)


def test_info_body_text() -> None:
    assert str(DtmfRelay("5", 160)) == "Signal=5\r\nDuration=160\r\n"
    assert str(DtmfRelay("#")) == "Signal=#\r\n"


# -- collecting ----------------------------------------------------------------------------------


def test_collect_until_max_digits() -> None:
    collector = DtmfCollector(0.0, max_digits=3)
    assert collector.next_deadline() == 5.0  # first-digit timeout
    assert collector.digit("1", 1.0) is None
    assert collector.next_deadline() == 4.0  # inter-digit timeout
    assert collector.digit("2", 2.0) is None
    assert collector.digit("3", 3.0) == Collected("123", CollectEnd.MAX_DIGITS)
    assert collector.next_deadline() is None
    assert collector.digit("4", 3.5) is None and collector.digits == "123"


def test_terminator_ends_and_is_not_kept() -> None:
    collector = DtmfCollector(0.0, max_digits=10, terminators="#*")
    collector.digit("4", 0.5)
    assert collector.digit("*", 1.0) == Collected("4", CollectEnd.TERMINATOR)


@pytest.mark.parametrize(
    ("presses", "timer", "expected"),
    [
        ((), 5.0, Collected("", CollectEnd.NO_INPUT)),
        ((("1", 1.0), ("2", 2.5)), 5.5, Collected("12", CollectEnd.INTER_DIGIT_TIMEOUT)),
        (
            (("1", 1.0), ("2", 3.0), ("3", 5.0), ("4", 7.0)),
            8.0,
            Collected("1234", CollectEnd.OVERALL_TIMEOUT),
        ),
    ],
)
def test_timeouts(
    presses: tuple[tuple[str, float], ...], timer: float, expected: Collected
) -> None:
    collector = DtmfCollector(0.0, overall_timeout=8.0)
    for key, when in presses:
        assert collector.digit(key, when) is None
    deadline = collector.next_deadline()
    assert deadline == timer
    assert collector.handle_timer(timer - 0.001) is None
    assert collector.handle_timer(timer) == expected
    assert collector.handle_timer(timer + 1) is None


def test_a_key_after_an_unhandled_timeout_reports_the_timeout() -> None:
    collector = DtmfCollector(0.0, inter_digit_timeout=2.0)
    collector.digit("1", 1.0)
    assert collector.digit("2", 3.5) == Collected("1", CollectEnd.INTER_DIGIT_TIMEOUT)


def test_no_timeouts_means_no_deadline() -> None:
    collector = DtmfCollector(0.0, first_digit_timeout=None, inter_digit_timeout=None)
    assert collector.next_deadline() is None
    assert collector.digit("#", 100.0) == Collected("", CollectEnd.TERMINATOR)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_digits": 0}, "max_digits must be at least 1"),
        ({"inter_digit_timeout": 0}, "inter_digit_timeout must be positive"),
        ({"overall_timeout": -1.0}, "overall_timeout must be positive"),
        ({"terminators": "#x"}, "not a DTMF key: 'x'"),
    ],
)
def test_collector_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DtmfCollector(0.0, **kwargs)  # type: ignore[arg-type]
