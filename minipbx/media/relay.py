"""The sans-IO half of the RTP/RTCP media relay: symmetric latching and statistics.

The PBX relays media when a party cannot reach the other directly (a phone behind NAT): it
puts its own address and ports in the SDP each party sees, and forwards every packet that
arrives from one party to the other. Where to send a party's packets is learned from where
that party's packets come from (symmetric RTP, RFC 4961; "latching"), because the address in
the SDP of a phone behind NAT is its private one.

A :class:`LatchingPeer` decides, packet by packet, whether a datagram comes from its party:

- after each :meth:`LatchingPeer.expect` (the party's SDP: RFC 4566 ``c=``/``m=``, for RTCP
  the port after the RTP one or the RFC 3605 ``a=rtcp`` port) the first packet latches the
  peer to its source address, whatever it is (the NAT's public mapping);
- from then on only that source is accepted: packets from anywhere else are dropped and
  counted. This is the guard against RTP injection and "RTP bleed" (a third party spraying
  the port range to have the relay send it the call's audio);
- the latched source may change only when it has been silent for ``relatch_after`` seconds:
  a NAT that rebinds (a new public port after a mapping timed out, a phone moving between
  networks) moves the party's packets to a new source, and the old one stops at once;
- a packet from exactly the address the SDP named is always accepted and latches: that is
  where a relay-less call would send the media anyway, so a hijacker that won the race for
  the first packet loses the latch as soon as a party that is not behind NAT speaks.

Before the first ``expect`` the first packet latches too: the party's media can arrive a
moment before the PBX has processed the SDP that announced it (a callee sends RTP right after
its 200 OK). The ``expect`` that follows re-arms latching, so nothing is committed early.

An :class:`Injection` replaces the audio of the packets relayed to one party with audio of
the PBX's own (the warning before a prepaid call is cut): each G.711 packet (payload type 0
or 8, RFC 3551) keeps its header, SSRC, sequence number, timestamp, padding and size, and
only its payload becomes the next samples, encoded in the packet's own law, so the phone's
jitter buffer sees an ordinary stream (RFC 3550). Packets of other payload types (another
codec, RFC 4733 events, comfort noise) pass untouched: a call in another codec hears nothing.

No clock, sockets or randomness here (DESIGN.md): the glue passes the loop's monotonic
``now`` with each packet. The glue is ``minipbx.transport.rtp``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass

import numpy as np

from minipbx.media.g711 import CODECS, Pcm, as_pcm

log = logging.getLogger("minipbx.media")

Source = tuple[str, int] | tuple[str, int, int, int]
"""An IP address and port, as the socket layer gives them (IPv6 adds flow info and scope id:
only the first two items are compared with the address from the SDP)."""

_UNSPECIFIED = frozenset(("0.0.0.0", "::"))

RELATCH_AFTER = 1.0
"""Seconds of silence from the latched source after which another source may take over."""

INJECT_GRACE = 1.0
"""Seconds an injection may wait for packets beyond its own length before it is dropped
(the party sends nothing, or not in G.711): late audio would make no sense."""

_SAMPLE_RATE = 8000


class MediaError(Exception):
    """A media resource cannot be had or used (no free RTP port, an address that is not
    local...); the message is one line for the administrator."""


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What a :class:`LatchingPeer` has seen so far."""

    packets: int
    """Packets accepted from the party."""
    bytes: int
    """Bytes (UDP payload) of those packets."""
    dropped: int
    """Packets refused: from a source other than the latched one."""
    relatches: int
    """Times the latch moved from one source to another (not counting the first latch)."""
    latched: Source | None
    """The source packets are accepted from (and sent to), once latched."""
    expected: tuple[str, int] | None
    """The address from the party's SDP."""


class LatchingPeer:
    """One party of a relayed stream (RTP or RTCP): where its packets come from and go to.

    :meth:`accept` is called for every packet, so the common case (the packet comes from the
    latched source) is one tuple comparison and three counter updates; everything else is in
    :meth:`_new_source`.
    """

    __slots__ = (
        "_logged_drop",
        "bytes",
        "dropped",
        "expected",
        "last_seen",
        "latched",
        "name",
        "packets",
        "relatch_after",
        "relatches",
        "unroutable",
        "unroutable_bytes",
    )

    def __init__(self, relatch_after: float = RELATCH_AFTER, *, name: str = "") -> None:
        if relatch_after < 0:
            raise ValueError(f"relatch_after must be >= 0 seconds, not {relatch_after}")
        self.relatch_after = relatch_after
        self.name = name
        """A label for log lines (e.g. ``call-id/a/rtp``)."""
        self.expected: tuple[str, int] | None = None
        self.latched: Source | None = None
        self.last_seen: float | None = None
        """When the latched source last sent a packet (None: never)."""
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.relatches = 0
        self.unroutable = 0
        """Accepted packets that had nowhere to go (counted by the glue: :meth:`no_route`)."""
        self.unroutable_bytes = 0
        self._logged_drop = False

    def expect(self, ip: str, port: int) -> None:
        """The party's SDP names ``ip:port``: send there until a packet latches (re-armed).

        An unspecified address (``0.0.0.0``, ``::``: hold, RFC 3264 8.4) leaves no
        destination until the party sends.

        Raises ``ValueError`` for a port outside 1..65535 (a port 0 stream is disabled,
        RFC 3264 5.1: there is nothing to expect).
        """
        if not 0 < port <= 65535:
            raise ValueError(f"expected port must be 1..65535, not {port}")
        if ":" in ip:  # the spelling the kernel reports sources in (RFC 5952)
            with contextlib.suppress(ValueError):
                ip = str(ipaddress.ip_address(ip))
        # RFC 3264 8.4: 0.0.0.0 (or ::) means "send me nothing"; until the party sends, there
        # is no destination (sending to 0.0.0.0 would reach this host).
        self.expected = None if ip in _UNSPECIFIED else (ip, port)
        self.latched = None
        self._logged_drop = False

    @property
    def destination(self) -> Source | None:
        """Where to send this party's packets: the latched source, else the SDP address,
        else None (nowhere yet)."""
        latched = self.latched
        return latched if latched is not None else self.expected

    def accept(self, source: Source, now: float, size: int = 0) -> bool:
        """True when a packet of ``size`` bytes from ``source`` at ``now`` is this party's
        (and latch to ``source`` when it may); False (counted as dropped) otherwise."""
        if source == self.latched:
            self.last_seen = now
            self.packets += 1
            self.bytes += size
            return True
        return self._new_source(source, now, size)

    def _new_source(self, source: Source, now: float, size: int) -> bool:
        """A packet from a source that is not the latched one: latch to it, or drop it."""
        previous = self.latched
        last = self.last_seen
        if previous is None:
            reason = "first"
        elif self.expected is not None and source[:2] == self.expected:
            reason = "sdp"
        elif last is None or now - last >= self.relatch_after:
            reason = "silence"
        else:
            self.dropped += 1
            if not self._logged_drop:  # one line per latch, the count is in the stats
                self._logged_drop = True
                log.warning(
                    "event=rtp_source_rejected peer=%s src=%s:%s latched=%s:%s",
                    self.name,
                    source[0],
                    source[1],
                    previous[0],
                    previous[1],
                )
            return False
        if previous is not None:
            self.relatches += 1
            log.info(
                "event=rtp_relatched peer=%s src=%s:%s old=%s:%s reason=%s",
                self.name,
                source[0],
                source[1],
                previous[0],
                previous[1],
                reason,
            )
        else:
            log.debug("event=rtp_latched peer=%s src=%s:%s", self.name, source[0], source[1])
        self.latched = source
        self._logged_drop = False
        self.last_seen = now
        self.packets += 1
        self.bytes += size
        return True

    def no_route(self, size: int) -> None:
        """An accepted packet of ``size`` bytes could not be forwarded: the other party's
        address is not known yet."""
        self.unroutable += 1
        self.unroutable_bytes += size

    def stats(self) -> PeerStats:
        """A snapshot of the counters and addresses."""
        return PeerStats(
            packets=self.packets,
            bytes=self.bytes,
            dropped=self.dropped,
            relatches=self.relatches,
            latched=self.latched,
            expected=self.expected,
        )


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """Packets relayed one way (from one party to the other)."""

    rtp_packets: int = 0
    rtp_bytes: int = 0
    rtcp_packets: int = 0
    rtcp_bytes: int = 0
    unroutable: int = 0
    """Packets accepted from the sender while there was nowhere to send them (the other
    party's address not known yet); not included in the counts above."""

    @property
    def packets(self) -> int:
        """RTP and RTCP packets relayed."""
        return self.rtp_packets + self.rtcp_packets

    @property
    def bytes(self) -> int:
        """RTP and RTCP bytes relayed."""
        return self.rtp_bytes + self.rtcp_bytes


def direction_stats(rtp: LatchingPeer, rtcp: LatchingPeer) -> DirectionStats:
    """What was relayed from the party of ``rtp`` and ``rtcp`` to the other party."""
    return DirectionStats(
        rtp_packets=rtp.packets - rtp.unroutable,
        rtp_bytes=rtp.bytes - rtp.unroutable_bytes,
        rtcp_packets=rtcp.packets - rtcp.unroutable,
        rtcp_bytes=rtcp.bytes - rtcp.unroutable_bytes,
        unroutable=rtp.unroutable + rtcp.unroutable,
    )


@dataclass(frozen=True, slots=True)
class RelayStats:
    """The counters of one relayed call."""

    a_to_b: DirectionStats
    b_to_a: DirectionStats
    dropped: int
    """Packets refused on either side (not from the latched source)."""
    relatches: int
    """Times a latch moved to a new source, either side."""

    @property
    def packets(self) -> int:
        """Packets relayed both ways."""
        return self.a_to_b.packets + self.b_to_a.packets


def last_activity(peers: tuple[LatchingPeer, ...]) -> float | None:
    """When the most recent accepted packet of any of ``peers`` arrived (None: never)."""
    seen = [p.last_seen for p in peers if p.last_seen is not None]
    return max(seen) if seen else None


def is_idle(peers: tuple[LatchingPeer, ...], now: float, timeout: float) -> bool:
    """True when packets flowed once but none was accepted for ``timeout`` seconds."""
    last = last_activity(peers)
    return last is not None and now - last >= timeout


def rtp_payload(packet: bytes) -> tuple[int, int] | None:
    """Where the payload of an RTP packet starts and ends (RFC 3550 5.1: after the CSRC list
    and the header extension, before the padding); None when ``packet`` is not RTP version 2
    or its lengths do not add up."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    first = packet[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(packet) < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet)
    if first & 0x20:  # padding: its count is the last byte
        end -= packet[-1]
    return (start, end) if start <= end else None


class Injection:
    """8 kHz PCM waiting to replace the payload of the next G.711 packets sent to a party.

    :meth:`apply` takes a packet about to be sent and returns it with its payload replaced
    by the next samples (one byte per sample in G.711, so a packet of 160 bytes takes
    20 ms of audio; the last packet is completed with silence). It gives up (:attr:`done`,
    the rest dropped) once ``now`` passes the audio's length plus ``grace`` from when it was
    queued, so audio never comes out late.
    """

    __slots__ = ("_samples", "expires", "grace", "packets", "position", "skipped")

    def __init__(self, samples: Pcm | bytes, now: float, grace: float = INJECT_GRACE) -> None:
        self._samples: Pcm = as_pcm(samples)
        self.position = 0
        """Samples used so far."""
        self.grace = grace
        self.expires = now + len(self._samples) / _SAMPLE_RATE + grace
        self.packets = 0
        """Packets whose payload was replaced."""
        self.skipped = 0
        """Packets passed untouched meanwhile (not G.711, or not RTP)."""

    @property
    def done(self) -> bool:
        """Every sample was sent (or the injection expired)."""
        return self.position >= len(self._samples)

    @property
    def remaining(self) -> int:
        """Samples not sent yet."""
        return max(len(self._samples) - self.position, 0)

    def extend(self, samples: Pcm | bytes, now: float) -> None:
        """Queue more audio after what is left."""
        rest = self._samples[self.position :]
        self._samples = np.concatenate((rest, as_pcm(samples)))
        self.position = 0
        self.expires = now + len(self._samples) / _SAMPLE_RATE + self.grace

    def apply(self, packet: bytes, now: float) -> bytes:
        """``packet`` with its payload replaced by the next samples, or unchanged (a payload
        type other than PCMU/PCMA, not RTP, nothing left, expired)."""
        if now > self.expires:
            self.position = len(self._samples)
            return packet
        codec = CODECS.get(packet[1] & 0x7F) if len(packet) > 1 else None
        where = rtp_payload(packet) if codec is not None else None
        if codec is None or where is None or self.done:
            self.skipped += 1
            return packet
        start, end = where
        size = end - start
        chunk = self._samples[self.position : self.position + size]
        self.position += size
        if len(chunk) < size:
            chunk = np.concatenate((chunk, np.zeros(size - len(chunk), dtype=np.int16)))
        self.packets += 1
        return packet[:start] + codec.encode(chunk) + packet[end:]
