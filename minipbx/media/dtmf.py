"""DTMF: RFC 4733 telephone-events (send and receive), SIP INFO bodies, and digit collection.

All sans-IO: packets and ``now`` (monotonic seconds) in, packets, digits and deadlines out.

- :class:`TelephoneEvent` is the 4-byte payload (RFC 4733 2.3).
- :class:`DtmfSender` turns a digit into its packets: the first with the marker bit, updates
  every ``interval`` with a growing duration, and the end packet sent three times with the
  same timestamp and duration (RFC 4733 2.5.1).
- :class:`DtmfReceiver` turns event packets, with their duplicates, losses and reordered
  end packets, into exactly one :class:`DtmfDigit` per event (an event is its timestamp,
  RFC 4733 2.5.2.1).
- :func:`parse_dtmf_info` reads the bodies of SIP INFO (application/dtmf-relay and
  application/dtmf).
- :class:`DtmfCollector` gathers digits for an IVR prompt: maximum count, terminator key,
  first-digit, inter-digit and overall timeouts.
"""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Self

from minipbx.media.rtp import PacketError, RtpPacket, RtpSender, RtpSource

EVENT_DIGITS = "0123456789*#ABCD"
"""RFC 4733 3.2: events 0-15 are the DTMF keys, in this order (16 is flash)."""
_PAYLOAD = struct.Struct("!BBH")
MAX_DURATION = 0xFFFF  # RFC 4733 2.5.1.3: longer events need segments, not supported here


def digit_to_event(digit: str) -> int:
    """The event code of a key (``ValueError`` for anything but 0-9 * # A-D)."""
    code = EVENT_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF key: {digit!r} (0-9, *, #, A-D)")
    return code


# -- the payload ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The telephone-event payload (RFC 4733 2.3): event, E bit, volume, duration."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code must be 0-255, not {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume must be 0-63 (-dBm0), not {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"telephone-event duration must be 0-65535, not {self.duration}")

    @property
    def digit(self) -> str | None:
        """The key of a DTMF event, None for other events (flash, tones)."""
        return EVENT_DIGITS[self.event] if self.event < len(EVENT_DIGITS) else None

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        """The first event of a payload (RFC 4733 2.3: 4 bytes; the R bit is ignored)."""
        if len(payload) < 4 or len(payload) % 4:
            raise PacketError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        """4 bytes."""
        return _PAYLOAD.pack(self.event, self.end << 7 | self.volume, self.duration)


# -- sending ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outgoing:
    """One queued event and how far its packets have gone."""

    event: int
    volume: int
    duration: int  # samples
    start: float = 0.0  # monotonic time of its first packet, set when it begins
    timestamp: int = 0
    sent: int = 0  # packets sent so far


class DtmfSender:
    """Produces the RTP packets of DTMF events on an audio stream (RFC 4733 2.5.1).

    Packet ``k`` of an event is due at ``start + k * interval``; it carries the duration up
    to the end of its interval. The packet that reaches the full duration sets the E bit and
    is sent ``end_packets`` times (2.5.1.4: three, at the update interval). The next queued
    event starts one interval after the last end packet.
    """

    def __init__(
        self,
        stream: RtpSender,
        payload_type: int = 101,
        interval: float = 0.05,
        end_packets: int = 3,
    ) -> None:
        if interval <= 0 or end_packets < 1:
            raise ValueError("DTMF interval must be positive and end_packets at least 1")
        self.stream = stream
        self.payload_type = payload_type
        self.interval = interval
        self.end_packets = end_packets
        self._queue: deque[_Outgoing] = deque()
        self._free_at = -math.inf  # when the next event may start

    def send(self, digit: str, now: float, duration: float = 0.1, volume: int = 10) -> None:
        """Queue ``digit`` for ``duration`` seconds, starting at ``now`` or after the
        events already queued."""
        samples = round(duration * self.stream.clock_rate)
        if not 0 < samples <= MAX_DURATION:
            raise ValueError(f"DTMF duration must be over 0 and at most 8 s, not {duration}")
        TelephoneEvent(digit_to_event(digit), volume=volume)  # validates the volume too
        self._queue.append(_Outgoing(digit_to_event(digit), volume, samples))
        if len(self._queue) == 1:
            self._begin(now)

    @property
    def busy(self) -> bool:
        """True while an event is being sent (audio should pause, RFC 4733 2.5.1.2)."""
        return bool(self._queue)

    def next_deadline(self) -> float | None:
        """When :meth:`packets_due` has the next packet."""
        if not self._queue:
            return None
        current = self._queue[0]
        return current.start + current.sent * self.interval

    def packets_due(self, now: float) -> list[RtpPacket]:
        """Every packet due at or before ``now``."""
        out: list[RtpPacket] = []
        while (due := self.next_deadline()) is not None and due <= now:
            out.append(self._next_packet())
        return out

    def _begin(self, now: float) -> None:
        current = self._queue[0]
        current.start = max(now, self._free_at)
        current.timestamp = self.stream.timestamp_at(current.start)

    def _next_packet(self) -> RtpPacket:
        current = self._queue[0]
        step = round(self.interval * self.stream.clock_rate)
        duration = min((current.sent + 1) * step, current.duration)
        end = duration == current.duration
        payload = TelephoneEvent(current.event, end, current.volume, duration)
        packet = self.stream.packet(
            self.payload_type, current.timestamp, bytes(payload), marker=current.sent == 0
        )
        current.sent += 1
        if current.sent == math.ceil(current.duration / step) + self.end_packets - 1:
            self._free_at = current.start + current.sent * self.interval
            self._queue.popleft()
            if self._queue:
                self._begin(self._free_at)
        return packet


# -- receiving -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key pressed, reported once per event. ``timestamp`` is the event's RTP timestamp."""

    digit: str
    timestamp: int
    end: bool = False
    duration: int = 0


@dataclass(slots=True)
class DtmfReceiver:
    """One digit per RFC 4733 event, from packets as they arrive (RFC 4733 2.5.2).

    Events are told apart by their RTP timestamp (unwrapped): updates and the redundant end
    packets of an event share it. The first packet seen of an event reports the digit, even
    when the packet with the marker bit was lost, and even when it arrives after packets of
    a later event. Packets of events already reported are ignored, as are packets older
    than all of the last ``memory`` events (they may have been forgotten). A new SSRC
    starts over.
    """

    memory: int = 32  # events remembered for duplicate suppression
    source: RtpSource = field(default_factory=RtpSource)
    _seen: deque[int] = field(default_factory=deque, init=False)
    _last: tuple[int, int, int, bool] | None = field(default=None, init=False)
    # _last: the newest event's (timestamp, event code, duration, ended)

    def receive(self, packet: RtpPacket) -> DtmfDigit | None:
        """The digit ``packet`` starts, or None (:class:`PacketError` for a bad payload)."""
        payload = TelephoneEvent.parse(packet.payload)
        if self.source.accept(packet):
            self._seen.clear()
            self._last = None
        key = self.source.extended_timestamp(packet)
        forgotten = len(self._seen) >= self.memory and key < min(self._seen)
        if key in self._seen or forgotten:
            self._update(key, payload)
            return None
        continued = self._continues(key, payload)
        self._seen.append(key)
        if len(self._seen) > self.memory:
            self._seen.popleft()
        self._last = (key, payload.event, payload.duration, payload.end)
        if continued or payload.digit is None:
            return None
        return DtmfDigit(payload.digit, packet.timestamp, payload.end, payload.duration)

    def _update(self, key: int, payload: TelephoneEvent) -> None:
        last = self._last
        if last is not None and last[0] == key:
            self._last = (key, last[1], max(last[2], payload.duration), last[3] or payload.end)

    def _continues(self, key: int, payload: TelephoneEvent) -> bool:
        """RFC 4733 2.5.2.3: a long event goes on in a new segment (new timestamp, no
        marker) right where the unfinished previous segment of the same event ended."""
        last = self._last
        return (
            last is not None
            and not last[3]
            and last[1] == payload.event
            and key == last[0] + last[2]
        )


# -- SIP INFO ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfRelay:
    """The body of an INFO with ``application/dtmf-relay``: ``Signal=5\\r\\nDuration=160``."""

    digit: str
    duration: int | None = None  # milliseconds

    def __post_init__(self) -> None:
        digit_to_event(self.digit)
        if self.duration is not None and not 0 < self.duration <= 60_000:
            raise ValueError(f"DTMF duration must be 1-60000 ms, not {self.duration}")

    def __str__(self) -> str:
        lines = [f"Signal={self.digit}"]
        if self.duration is not None:
            lines.append(f"Duration={self.duration}")
        return "\r\n".join(lines) + "\r\n"


def _signal(value: str) -> str:
    """A Signal value: the key itself, or its event number ("10" for *, "11" for #)."""
    value = value.strip()
    if value.isdigit() and len(value) == 2 and int(value) < len(EVENT_DIGITS):
        value = EVENT_DIGITS[int(value)]
    digit_to_event(value)
    return value.upper()


def parse_dtmf_info(content_type: str, body: str) -> DtmfRelay:
    """The key in an INFO body: ``application/dtmf-relay`` (Signal/Duration lines) or
    ``application/dtmf`` (the key alone). ``ValueError`` says what is wrong."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/dtmf":
        return DtmfRelay(_signal(body))
    if kind != "application/dtmf-relay":
        raise ValueError(f"not a DTMF body: {content_type!r}")
    fields: dict[str, str] = {}
    for line in body.splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"dtmf-relay line without '=': {line.strip()!r}")
            fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise ValueError("dtmf-relay body has no Signal line")
    duration = fields.get("duration") or None  # "Duration=" alone: not given
    if duration is not None and not duration.isdigit():
        raise ValueError(f"dtmf-relay Duration must be milliseconds, not {duration!r}")
    return DtmfRelay(_signal(fields["signal"]), int(duration) if duration else None)


# -- collecting digits --------------------------------------------------------------------------


class CollectEnd(enum.Enum):
    """Why a :class:`DtmfCollector` finished."""

    MAX_DIGITS = "max_digits"
    TERMINATOR = "terminator"
    NO_INPUT = "no_input"  # nothing pressed before the first-digit timeout
    INTER_DIGIT_TIMEOUT = "inter_digit_timeout"
    OVERALL_TIMEOUT = "overall_timeout"


@dataclass(frozen=True, slots=True)
class Collected:
    """The result: the digits (terminator excluded) and why collection ended."""

    digits: str
    reason: CollectEnd


class DtmfCollector:
    """Gathers digits for one prompt (sans-IO: feed digits and timer expiries with ``now``).

    Ends at ``max_digits``, at a terminator key (``#`` by default, not included), when no
    key comes within ``first_digit_timeout`` of the start, when the next key does not come
    within ``inter_digit_timeout`` of the previous one, or at ``overall_timeout`` after the
    start. Timeouts of ``None`` do not apply. Digits after the end are ignored.
    """

    def __init__(
        self,
        now: float,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
        overall_timeout: float | None = None,
    ) -> None:
        if max_digits is not None and max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, not {max_digits}")
        for name, value in (
            ("first_digit_timeout", first_digit_timeout),
            ("inter_digit_timeout", inter_digit_timeout),
            ("overall_timeout", overall_timeout),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        for key in terminators:
            digit_to_event(key)
        self.max_digits = max_digits
        self.terminators = terminators.upper()
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.overall_end = None if overall_timeout is None else now + overall_timeout
        self.started = now
        self.digits = ""
        self.last_digit: float | None = None
        self.result: Collected | None = None

    def _key_deadline(self) -> float | None:
        if self.last_digit is None:
            timeout, since = self.first_digit_timeout, self.started
        else:
            timeout, since = self.inter_digit_timeout, self.last_digit
        return None if timeout is None else since + timeout

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must run next (None when finished or no timeout)."""
        if self.result is not None:
            return None
        times = [t for t in (self._key_deadline(), self.overall_end) if t is not None]
        return min(times, default=None)

    def digit(self, key: str, now: float) -> Collected | None:
        """A key pressed at ``now``; the result when the collection ends (by this key, or by
        a timeout that passed before it)."""
        if self.result is not None:
            return None
        expired = self.handle_timer(now)  # the timer may not have run yet
        if expired is not None:
            return expired
        key = key.upper()
        digit_to_event(key)
        self.last_digit = now
        if key in self.terminators:
            return self._finish(CollectEnd.TERMINATOR)
        self.digits += key
        if self.max_digits is not None and len(self.digits) >= self.max_digits:
            return self._finish(CollectEnd.MAX_DIGITS)
        return None

    def handle_timer(self, now: float) -> Collected | None:
        """The result when a timeout has passed at ``now``, else None."""
        if self.result is not None:
            return None
        if self.overall_end is not None and now >= self.overall_end:
            return self._finish(CollectEnd.OVERALL_TIMEOUT)
        deadline = self._key_deadline()
        if deadline is not None and now >= deadline:
            first = self.last_digit is None
            return self._finish(CollectEnd.NO_INPUT if first else CollectEnd.INTER_DIGIT_TIMEOUT)
        return None

    def _finish(self, reason: CollectEnd) -> Collected:
        self.result = Collected(self.digits, reason)
        return self.result
