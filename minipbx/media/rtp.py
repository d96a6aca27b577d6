"""RTP packets (RFC 3550 5), sequence-number and timestamp arithmetic, and the send side.

Sans-IO: bytes in, packets out; no clock, no randomness. Whoever creates an
:class:`RtpSender` chooses its random SSRC, first sequence number and first timestamp
(RFC 3550 5.1) and passes them in, with the monotonic ``now`` of the media clock's origin.

Packets are slotted, mutable dataclasses (like the SIP typed values, see
docs/architecture.md): the relay and the player build tens of thousands per second.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Self

RTP_VERSION = 2
CLOCK_RATE = 8000
"""The clock of every codec the PBX speaks (PCMU, PCMA, telephone-event)."""

_FIXED = struct.Struct("!BBHII")  # V P X CC | M PT | sequence | timestamp | SSRC
_EXTENSION = struct.Struct("!HH")
_SEQ_BITS = 16
_TIMESTAMP_BITS = 32


class PacketError(ValueError):
    """An RTP, RTCP or payload packet that does not follow its RFC; the message says where."""


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 4: on a shared port, RTCP packet types 192-223 tell RTCP from RTP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def wrap_diff(a: int, b: int, bits: int) -> int:
    """``a - b`` for ``bits``-bit counters that wrap: in ``[-2**(bits-1), 2**(bits-1))``."""
    half = 1 << (bits - 1)
    return ((a - b + half) & ((1 << bits) - 1)) - half


def seq_diff(a: int, b: int) -> int:
    """How far sequence number ``a`` is ahead of ``b`` (negative: behind)."""
    return wrap_diff(a, b, _SEQ_BITS)


def timestamp_diff(a: int, b: int) -> int:
    """How far RTP timestamp ``a`` is ahead of ``b`` (negative: behind)."""
    return wrap_diff(a, b, _TIMESTAMP_BITS)


@dataclass(slots=True)
class Unwrapper:
    """Turns wrapping counters into ever-growing ones (RFC 3550 A.1 "extended" numbers).

    Each value is placed nearest to the highest one seen so far, so late (reordered)
    packets from before a wrap get the old cycle and early ones the new cycle.
    """

    bits: int
    highest: int | None = None

    def unwrap(self, value: int) -> int:
        """The extended form of ``value``; remembers the highest."""
        highest = self.highest
        if highest is None:
            self.highest = value
            return value
        extended = highest + wrap_diff(value, highest, self.bits)
        if extended > highest:
            self.highest = extended
        return extended

    def reset(self) -> None:
        """Forget the past (a new source)."""
        self.highest = None


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The header extension (RFC 3550 5.3.1): a 16-bit profile value and whole words."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError(f"RTP extension profile must be 0-0xFFFF, not {self.profile}")
        if len(self.data) % 4 or len(self.data) > 4 * 0xFFFF:
            raise ValueError(f"RTP extension data must be whole 32-bit words, not {len(self.data)}")


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 5.1). ``padding`` is the number of padding bytes (0-255)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type must be 0-127, not {self.payload_type}")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"RTP sequence number must be 0-65535, not {self.sequence_number}")
        for name in ("timestamp", "ssrc"):
            if not 0 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"RTP {name} must be a 32-bit number, not {getattr(self, name)}")
        if len(self.csrc) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrc):
            raise ValueError("RTP CSRC list: at most 15 32-bit identifiers")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"RTP padding must be 0-255 bytes, not {self.padding}")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse one RTP packet; :class:`PacketError` says what is wrong."""
        if len(data) < 12:
            raise PacketError(f"RTP packet of {len(data)} bytes: shorter than the 12-byte header")
        first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise PacketError(f"RTP version {first >> 6}, expected 2")
        offset = 12 + 4 * (first & 0x0F)
        if offset > len(data):
            raise PacketError(f"RTP CSRC count {first & 0x0F} runs past the end")
        csrc = struct.unpack_from(f"!{first & 0x0F}I", data, 12)
        extension = None
        if first & 0x10:
            extension, offset = _parse_extension(data, offset)
        end, padding = len(data), 0
        if first & 0x20:  # RFC 3550 5.1: the last byte counts the padding, itself included
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise PacketError(f"RTP padding count {padding} does not fit the packet")
            end -= padding
        return cls(
            second & 0x7F,
            seq,
            timestamp,
            ssrc,
            data[offset:end],
            bool(second & 0x80),
            csrc,
            extension,
            padding,
        )

    def __bytes__(self) -> bytes:
        """The packet on the wire (padding as zeros ending with the count)."""
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [
            _FIXED.pack(
                first,
                self.marker << 7 | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts += (_EXTENSION.pack(ext.profile, len(ext.data) // 4), ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def _parse_extension(data: bytes, offset: int) -> tuple[RtpExtension, int]:
    if offset + 4 > len(data):
        raise PacketError("RTP extension header runs past the end")
    profile, words = _EXTENSION.unpack_from(data, offset)
    start, end = offset + 4, offset + 4 + 4 * words
    if end > len(data):
        raise PacketError(f"RTP extension of {words} words runs past the end")
    return RtpExtension(profile, data[start:end]), end


# -- receive side: who is sending --------------------------------------------------------------


@dataclass(slots=True)
class RtpSource:
    """The remote sender of a stream: its SSRC and unwrapped sequence numbers/timestamps.

    :meth:`accept` reports an SSRC change (RFC 3550 8.2: a new source, e.g. after a
    re-INVITE, a transfer or a restarted phone) and then starts over from that packet.
    """

    ssrc: int | None = None
    sequence: Unwrapper = field(default_factory=lambda: Unwrapper(_SEQ_BITS))
    timestamp: Unwrapper = field(default_factory=lambda: Unwrapper(_TIMESTAMP_BITS))
    changes: int = 0

    def accept(self, packet: RtpPacket) -> bool:
        """Note ``packet``; True when it comes from another SSRC than the ones before."""
        changed = self.ssrc is not None and packet.ssrc != self.ssrc
        if changed:
            self.changes += 1
            self.sequence.reset()
            self.timestamp.reset()
        self.ssrc = packet.ssrc
        return changed

    def extended_sequence(self, packet: RtpPacket) -> int:
        """The packet's sequence number without wrapping (call after :meth:`accept`)."""
        return self.sequence.unwrap(packet.sequence_number)

    def extended_timestamp(self, packet: RtpPacket) -> int:
        """The packet's timestamp without wrapping (call after :meth:`accept`)."""
        return self.timestamp.unwrap(packet.timestamp)


# -- send side -------------------------------------------------------------------------------


@dataclass(slots=True)
class RtpSender:
    """One outgoing RTP stream: SSRC, next sequence number, media clock and counters.

    The media clock maps the monotonic clock onto RTP timestamps: ``timestamp_origin`` is
    the timestamp at monotonic time ``clock_origin``. Every producer on the stream (prompt
    player, DTMF sender) takes sequence numbers and timestamps from here, so they never
    collide (RFC 4733 2.5.1.1: events share the audio stream's SSRC and numbering).
    """

    ssrc: int
    sequence: int
    timestamp_origin: int
    clock_origin: float
    clock_rate: int = CLOCK_RATE
    packets_sent: int = 0
    octets_sent: int = 0
    last_timestamp: int | None = None

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp of monotonic time ``now`` (RFC 3550 5.1: sampling instant)."""
        ticks = round((now - self.clock_origin) * self.clock_rate)
        return (self.timestamp_origin + ticks) & 0xFFFFFFFF

    def packet(
        self, payload_type: int, timestamp: int, payload: bytes, marker: bool = False
    ) -> RtpPacket:
        """The next packet of the stream (takes the next sequence number; counts it for
        the sender report, RFC 3550 6.4.1)."""
        packet = RtpPacket(
            payload_type, self.sequence, timestamp & 0xFFFFFFFF, self.ssrc, payload, marker
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        self.last_timestamp = packet.timestamp
        return packet
