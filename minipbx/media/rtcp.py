"""RTCP (RFC 3550 6): SR, RR, SDES, BYE in compound packets, and the receiver statistics
that fill report blocks (RFC 3550 A.3, A.8).

Sans-IO: :func:`parse_rtcp` takes one datagram and returns its packets or raises
:class:`~minipbx.media.rtp.PacketError`; wall-clock (NTP) and monotonic times come in as
arguments.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from minipbx.media.rtp import CLOCK_RATE, RTP_VERSION, PacketError, RtpPacket, RtpSource

SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204  # RFC 3550 12.1 packet types
_HEADER = struct.Struct("!BBH")  # V P count | PT | length in words minus one
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_REPORT = struct.Struct("!IB3sIIII")
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

SDES_CNAME, SDES_NAME, SDES_EMAIL, SDES_PHONE, SDES_LOC, SDES_TOOL, SDES_NOTE, SDES_PRIV = range(
    1, 9
)  # RFC 3550 6.5.1-6.5.8


def ntp_timestamp(unix_time: float) -> int:
    """RFC 3550 4: the 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    return round((unix_time + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (RFC 3550 6.4.1: "LSR")."""
    return (ntp >> 16) & 0xFFFFFFFF


# -- packets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    last_sr: int = 0
    delay_since_last_sr: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"fraction lost must be 0-255, not {self.fraction_lost}")
        if not -(1 << 23) <= self.packets_lost < 1 << 23:
            raise ValueError(f"packets lost must fit 24 signed bits, not {self.packets_lost}")

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        """The block at ``offset``."""
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT.unpack_from(data, offset)
        return cls(
            ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr
        )

    def __bytes__(self) -> bytes:
        """24 bytes."""
        lost = self.packets_lost.to_bytes(3, "big", signed=True)
        return _REPORT.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 6.4.1). ``extension`` keeps any profile-specific bytes after the blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __bytes__(self) -> bytes:
        """The packet, header included."""
        info = _SENDER_INFO.pack(
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        return _packet(SR, len(self.reports), info + _blocks(self.reports) + self.extension)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __bytes__(self) -> bytes:
        """The packet, header included."""
        body = struct.pack("!I", self.ssrc) + _blocks(self.reports) + self.extension
        return _packet(RR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The items describing one source (RFC 3550 6.5): ``(type, text)`` pairs."""

    ssrc: int
    items: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        for kind, text in self.items:
            if not 1 <= kind <= 255 or len(text.encode()) > 255:
                raise ValueError(f"SDES item {kind}: type 1-255 and at most 255 bytes of text")

    def __bytes__(self) -> bytes:
        """SSRC, items, a null item, padding to a word boundary."""
        out = struct.pack("!I", self.ssrc)
        for kind, text in self.items:
            raw = text.encode()
            out += bytes((kind, len(raw))) + raw
        return out + bytes(4 - len(out) % 4)  # at least one zero byte ends the list


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 6.5)."""

    chunks: tuple[SdesChunk, ...] = ()

    def __bytes__(self) -> bytes:
        """The packet, header included."""
        return _packet(SDES, len(self.chunks), b"".join(bytes(c) for c in self.chunks))


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 6.6): the sources leaving, with an optional reason."""

    ssrcs: tuple[int, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.reason.encode()) > 255:
            raise ValueError("BYE reason: at most 255 bytes")

    def __bytes__(self) -> bytes:
        """The packet, header included."""
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            raw = self.reason.encode()
            body += bytes((len(raw),)) + raw
            body += bytes(-len(body) % 4)
        return _packet(BYE, len(self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """Any other packet type (APP, RTPFB, PSFB, XR...), kept as it came."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        """The packet, header included."""
        return _packet(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError(f"RTCP packet type {packet_type}: at most 31 items, not {count}")
    if len(body) % 4:
        raise ValueError(f"RTCP packet type {packet_type}: body must be whole 32-bit words")
    return _HEADER.pack(RTP_VERSION << 6 | count, packet_type, len(body) // 4) + body


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    return b"".join(bytes(r) for r in reports)


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """A compound packet (RFC 3550 6.1): the packets one after the other."""
    return b"".join(bytes(p) for p in packets)


# -- parsing ---------------------------------------------------------------------------------


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """The packets of one compound RTCP datagram (RFC 3550 6.1, A.2 validity checks)."""
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise PacketError(f"RTCP header truncated at offset {offset}")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise PacketError(f"RTCP version {first >> 6} at offset {offset}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise PacketError(
                f"RTCP packet type {packet_type} at offset {offset} runs past the end"
            )
        body = data[offset + 4 : end]
        if first & 0x20:  # padding, normally only on the last packet
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise PacketError(
                    f"RTCP padding count {pad} does not fit packet type {packet_type}"
                )
            body = body[:-pad]
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        offset = end
    if not packets:
        raise PacketError("empty RTCP datagram")
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    parser = _PARSERS.get(packet_type)
    if parser is None:
        return RtcpUnknown(packet_type, count, body)
    try:
        return parser(count, body)
    except PacketError:
        raise
    except ValueError as exc:  # a value the dataclass refuses (e.g. text too long)
        raise PacketError(f"RTCP packet type {packet_type}: {exc}") from None


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise PacketError(f"{what}: {len(body)} bytes, need {size}")


def _parse_sr(count: int, body: bytes) -> SenderReport:
    size = _SENDER_INFO.size + 24 * count
    _need(body, size, f"SR with {count} report blocks")
    ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
    reports = tuple(ReportBlock.parse(body, _SENDER_INFO.size + 24 * i) for i in range(count))
    return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports, body[size:])


def _parse_rr(count: int, body: bytes) -> ReceiverReport:
    size = 4 + 24 * count
    _need(body, size, f"RR with {count} report blocks")
    reports = tuple(ReportBlock.parse(body, 4 + 24 * i) for i in range(count))
    return ReceiverReport(struct.unpack_from("!I", body)[0], reports, body[size:])


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks, offset = [], 0
    for _ in range(count):
        _need(body, offset + 4, "SDES chunk")
        ssrc, items = struct.unpack_from("!I", body, offset)[0], []
        offset += 4
        while True:
            _need(body, offset + 1, "SDES item list without its end")
            kind = body[offset]
            if kind == 0:  # end of list, then padding to the next word
                offset += 4 - offset % 4
                _need(body, offset, "SDES chunk padding")
                break
            _need(body, offset + 2, "SDES item header")
            size = body[offset + 1]
            _need(body, offset + 2 + size, f"SDES item {kind} of {size} bytes")
            items.append((kind, body[offset + 2 : offset + 2 + size].decode("utf-8", "replace")))
            offset += 2 + size
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, body: bytes) -> Bye:
    _need(body, 4 * count, f"BYE with {count} sources")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = ""
    if len(body) > 4 * count:
        size = body[4 * count]
        _need(body, 4 * count + 1 + size, f"BYE reason of {size} bytes")
        reason = body[4 * count + 1 : 4 * count + 1 + size].decode("utf-8", "replace")
    return Bye(ssrcs, reason)


_PARSERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    SR: _parse_sr,
    RR: _parse_rr,
    SDES: _parse_sdes,
    BYE: _parse_bye,
}


# -- reception statistics ----------------------------------------------------------------------


@dataclass(slots=True)
class ReceptionStats:
    """What one receiver knows about one sender, for its report blocks (RFC 3550 A.3, A.8).

    Feed every RTP packet with its arrival time (monotonic seconds) and every SR with its
    arrival time; :meth:`report_block` then reports loss, jitter and the SR round trip.
    An SSRC change starts the statistics over.
    """

    clock_rate: int = CLOCK_RATE
    source: RtpSource = field(default_factory=RtpSource)
    base: int = 0
    highest: int = 0
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0
    _transit: float | None = field(default=None, init=False)
    _last_sr: int = field(default=0, init=False)
    _last_sr_arrival: float = field(default=0.0, init=False)

    def receive(self, packet: RtpPacket, arrival: float) -> bool:
        """Count ``packet``; True when it came from a new SSRC (statistics restarted)."""
        changed = self.source.accept(packet)
        if changed:
            self._restart()
        seq = self.source.extended_sequence(packet)
        if self.received == 0:
            self.base = self.highest = seq
        self.highest = max(self.highest, seq)
        self.received += 1
        # RFC 3550 A.8: interarrival jitter, in timestamp units
        transit = arrival * self.clock_rate - self.source.extended_timestamp(packet)
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit
        return changed

    def _restart(self) -> None:
        self.base = self.highest = self.received = 0
        self.expected_prior = self.received_prior = 0
        self.jitter, self._transit = 0.0, None
        self._last_sr, self._last_sr_arrival = 0, 0.0

    def sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember an SR of this source for LSR/DLSR (RFC 3550 6.4.1)."""
        if report.ssrc == self.source.ssrc:
            self._last_sr, self._last_sr_arrival = ntp_middle(report.ntp_timestamp), arrival

    @property
    def expected(self) -> int:
        """Packets expected so far (RFC 3550 A.3)."""
        return self.highest - self.base + 1 if self.received else 0

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for the next RR/SR, or None before the first packet (RFC 3550 A.3)."""
        ssrc = self.source.ssrc
        if ssrc is None or not self.received:
            return None
        expected = self.expected
        lost = max(min(expected - self.received, (1 << 23) - 1), -(1 << 23))
        expected_interval = expected - self.expected_prior
        lost_interval = expected_interval - (self.received - self.received_prior)
        self.expected_prior, self.received_prior = expected, self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        dlsr = round((now - self._last_sr_arrival) * 65536) if self._last_sr else 0
        return ReportBlock(
            ssrc,
            fraction,
            lost,
            self.highest & 0xFFFFFFFF,
            int(self.jitter),
            self._last_sr,
            dlsr & 0xFFFFFFFF,
        )
