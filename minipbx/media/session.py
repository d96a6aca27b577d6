"""One RTP stream the PBX terminates itself: prompts out, DTMF and recordings in, RTCP both ways.

Sans-IO (DESIGN.md): datagrams, their source and a monotonic ``now`` come in; events,
datagrams to send and the next deadline go out. The asyncio glue
(:mod:`minipbx.transport.media_endpoint`) owns the two sockets, the clock and one timer:

- ``receive(data, source, now)`` for every datagram of the RTP socket (``rtcp=True`` for the
  RTCP socket) returns :data:`MediaEvent` s;
- at :meth:`MediaSession.next_deadline` it calls :meth:`~MediaSession.handle_timer`,
  :meth:`~MediaSession.packets_due` (send to :attr:`~MediaSession.destination`) and
  :meth:`~MediaSession.rtcp_due` (send to :attr:`~MediaSession.rtcp_destination`).

Decisions:

- **One 20 ms grid, comfort silence.** While the remote may receive (its SDP direction is
  sendrecv or recvonly and an address is known) a frame goes out every 20 ms for the whole
  call: the prompt's frames while playing, encoded silence otherwise. NAT bindings stay open,
  the far end's jitter buffer and media timeout stay happy, and every frame sits on one
  grid anchored at the session's creation: timestamps advance by exactly 160 per frame and a
  prompt starts on the next free slot (RFC 3550 5.1). The first frame of each prompt
  carries the marker bit (RFC 3551 4.1: start of a talkspurt). A late timer never causes a
  burst of silence: only the newest due slot is sent. ``comfort_silence=False`` sends nothing
  between prompts. On hold (remote sendonly/inactive, or ``c=0.0.0.0``) nothing is sent and
  a playing prompt still runs its course in time.
- **Latching** reuses the relay's :class:`~minipbx.media.relay.LatchingPeer` (symmetric RTP,
  RFC 4961): the SDP address is the destination until the first *valid* RTP packet (parsed,
  negotiated payload type) latches its source; then only that source is accepted, except
  the SDP address itself or a new source after a second of silence (NAT rebinding). RTCP
  latches the same way on its own socket; until it does, and when RTP latched to another
  host than the SDP's (NAT), RTCP goes to the latched RTP address's port + 1.
- **Reception statistics** (RFC 3550 A.3, A.8) count every valid packet of the remote
  source, but telephone-event packets do not enter the jitter estimate: their timestamp is
  the event's start and stays fixed while they arrive every 50 ms (RFC 4733 2.5.1.2). A new
  remote SSRC (RFC 3550 8.2) restarts the statistics and is reported.
- **RTCP** (RFC 3550 6): a compound SR (we sent RTP since the report before last) or RR,
  with a report block once the remote sent something, plus SDES CNAME; the first ~2.5 s
  after start, then every 5 s times a factor in [0.5, 1.5] (RFC 3550 6.2, 6.3.1; the
  2-party session's bandwidth share never exceeds the 5 s minimum, so no reconsideration).
  The factor comes from a generator seeded by our SSRC, which the caller drew at random.
  SR NTP times need wall-clock time: ``wall_offset`` is Unix time minus ``now`` at start.
- **Recording** feeds the remote's G.711 packets to a :class:`~minipbx.media.player.Recorder`.
  A stream that stops altogether (phone silence suppression, one-way audio) is silence:
  :meth:`~MediaSession.handle_timer` ends the recording ``silence_seconds`` after the last
  audio packet, or ``max_seconds`` (+0.5 s) after the start, filling the missing time.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from minipbx.media.dtmf import DtmfReceiver, digit_to_event
from minipbx.media.g711 import CODECS, G711, PCMA, PCMU, Pcm
from minipbx.media.player import PTIME, PromptPlayer, Recorder, StopReason, wav_bytes
from minipbx.media.relay import RELATCH_AFTER, LatchingPeer, Source
from minipbx.media.rtcp import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    serialize_rtcp,
)
from minipbx.media.rtp import CLOCK_RATE, PacketError, RtpPacket, RtpSender, is_rtcp
from minipbx.sip.offer_answer import NegotiatedCodec
from minipbx.sip.sdp import Direction, SessionDescription

log = logging.getLogger("minipbx.media")

COMFORT_NOISE = 13  # RFC 3389 / RFC 3551 table 4: accepted, counted, not recorded
RTCP_INTERVAL = 5.0  # RFC 3550 6.2: the minimum interval
_RECORD_GRACE = 0.5  # seconds past max_seconds before a starved recording is ended
_EPSILON = 1e-6  # seconds: slack when mapping a time onto the frame grid
_STATIC = {codec.name: codec.payload_type for codec in CODECS.values()}


# -- what the remote side announced ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    """Where the remote party wants our media, from its SDP (RFC 4566 ``c=``/``m=``).

    ``rtp``/``rtcp`` are None when unknown or on hold (``c=0.0.0.0``, RFC 3264 8.4) or a host
    name (resolving it would block); latching learns the address then. ``direction`` is the
    remote's own (its offer's ``a=sendrecv`` etc.).
    """

    rtp: Source | None
    rtcp: Source | None
    direction: Direction = Direction.SENDRECV

    @property
    def receives(self) -> bool:
        """The remote wants our media (it is not sendonly or inactive, RFC 3264 6.1)."""
        return self.direction in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_sdp(cls, sdp: SessionDescription, index: int) -> RemoteMedia:
        """The stream at m-line ``index`` of ``sdp``; RTCP on ``a=rtcp`` (RFC 3605) or on
        the RTP port + 1 (RFC 3550 11). ``ValueError`` for a missing or disabled stream."""
        if not 0 <= index < len(sdp.media) or sdp.media[index].port == 0:
            raise ValueError(f"SDP has no active stream at m-line {index}")
        media = sdp.media[index]
        connection = sdp.connection_for(media)
        host = _ip_literal(connection.address) if connection is not None else None
        rtcp_attr = media.rtcp()
        rtcp_host = host
        if rtcp_attr is not None and rtcp_attr.connection is not None:
            rtcp_host = _ip_literal(rtcp_attr.connection.address)
        rtcp_port = rtcp_attr.port if rtcp_attr is not None else media.port + 1
        return cls(
            None if host is None else (host, media.port),
            None if rtcp_host is None or not 0 < rtcp_port <= 65535 else (rtcp_host, rtcp_port),
            sdp.direction(media),
        )


def _ip_literal(address: str) -> str | None:
    """A unicast IP address as the kernel spells sources (RFC 5952); None otherwise."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if ip.is_unspecified or ip.is_multicast else str(ip)


def codec_for(negotiated: NegotiatedCodec) -> tuple[G711, int | None]:
    """The G.711 law and telephone-event payload type an offer/answer settled on
    (``ValueError`` for another codec). A dynamic payload type mapped to PCMU/PCMA keeps
    its number on the wire."""
    name = negotiated.codec.encoding.upper()
    law = {"PCMU": PCMU, "PCMA": PCMA}.get(name)
    if law is None or negotiated.codec.clock_rate != CLOCK_RATE:
        raise ValueError(f"the PBX speaks PCMU/PCMA at 8000 Hz, not {negotiated.codec}")
    if negotiated.codec.payload_type != law.payload_type:
        law = replace(law, payload_type=negotiated.codec.payload_type)
    event = negotiated.telephone_event
    return law, None if event is None else event.payload_type


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A key pressed (RFC 4733), reported once per event at its first packet seen."""

    digit: str
    timestamp: int  # the event's RTP timestamp (RFC 4733 2.5.2.1)

    def __post_init__(self) -> None:
        digit_to_event(self.digit)


@dataclass(frozen=True, slots=True)
class RemoteLatched:
    """Our media now goes to ``address``, where the remote's packets come from, instead of
    ``previous`` (the SDP address, an earlier latch, or nowhere)."""

    address: Source
    previous: Source | None


@dataclass(frozen=True, slots=True)
class SourceChanged:
    """The remote's SSRC changed (RFC 3550 8.2): reception statistics restarted."""

    ssrc: int
    previous: int


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    """The recorder ended by itself (MAX_LENGTH or SILENCE)."""

    reason: StopReason


@dataclass(frozen=True, slots=True)
class RemoteBye:
    """The remote's source left (RTCP BYE, RFC 3550 6.6)."""

    ssrc: int
    reason: str = ""


MediaEvent = DigitReceived | RemoteLatched | SourceChanged | RecordingStopped | RemoteBye


@dataclass(frozen=True, slots=True)
class Recorded:
    """A finished recording: 8 kHz 16-bit mono WAV (trailing silence trimmed)."""

    wav: bytes
    seconds: float
    reason: StopReason


class _AudioStats(ReceptionStats):
    """RFC 3550 A.3/A.8 statistics where some packets (events) do not count for jitter."""

    __slots__ = ()

    def receive_untimed(self, packet: RtpPacket, arrival: float) -> bool:
        """Count ``packet`` for loss only; True on an SSRC change (like ``receive``)."""
        jitter, transit = self.jitter, self._transit
        changed = self.receive(packet, arrival)
        self.jitter, self._transit = (0.0, None) if changed else (jitter, transit)
        return changed


def _spread(seed: int) -> int:
    """The next state of a 32-bit xorshift (Marsaglia 2003); never 0 for a non-zero seed."""
    seed ^= (seed << 13) & 0xFFFFFFFF
    seed ^= seed >> 17
    seed ^= (seed << 5) & 0xFFFFFFFF
    return seed


# -- the session -------------------------------------------------------------------------------


class MediaSession:
    """One PBX-terminated audio stream (see the module docstring).

    ``codec`` and ``telephone_event`` come from the offer/answer (:func:`codec_for`);
    ``ssrc``, ``sequence`` and ``timestamp`` must be random (RFC 3550 5.1, 8), drawn by the
    caller; ``now`` is the monotonic time the frame grid and the media clock start at.
    """

    def __init__(
        self,
        codec: G711,
        *,
        telephone_event: int | None,
        ssrc: int,
        sequence: int,
        timestamp: int,
        now: float,
        remote: RemoteMedia,
        cname: str = "minipbx",
        wall_offset: float = 0.0,
        comfort_silence: bool = True,
        rtcp_interval: float = RTCP_INTERVAL,
        relatch_after: float = RELATCH_AFTER,
        name: str = "",
    ) -> None:
        if rtcp_interval <= 0:
            raise ValueError(f"rtcp_interval must be positive, not {rtcp_interval}")
        self.name = name
        self.codec = codec
        self.telephone_event = telephone_event
        self.cname = cname
        self.wall_offset = wall_offset
        self.comfort_silence = comfort_silence
        self.rtcp_interval = rtcp_interval
        self.stream = RtpSender(ssrc, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, now)
        self.player = PromptPlayer(self.stream, codec)
        self.dtmf = DtmfReceiver()
        self.stats = _AudioStats()
        self.recorder: Recorder | None = None
        self.rtp_peer = LatchingPeer(relatch_after, name=f"{name}/rtp")
        self.rtcp_peer = LatchingPeer(relatch_after, name=f"{name}/rtcp")
        self.remote = RemoteMedia(None, None)
        self.remote_report: ReportBlock | None = None  # the remote's view of our stream
        self.round_trip: float | None = None  # seconds, from the last report block (6.4.1)
        self.last_received: float | None = None  # when the last valid RTP packet arrived
        self.invalid_packets = 0  # not RTP, or a bad telephone-event payload
        self.invalid_rtcp = 0
        self.unknown_payload = 0  # RTP with a payload type we did not negotiate
        self._silence = bytes((codec.silence,)) * self.player.frame_size
        self._origin = now
        self._slot = 0  # the next frame slot of the 20 ms grid
        self._seed = ssrc or 0x9E3779B9
        self._rtcp_at = now + self._interval(initial=True)
        self._sent_at_reports = (0, 0)  # packets_sent at the report before last, and last
        self._record_started = now
        self._last_audio = now
        self._expect(self.rtp_peer, remote.rtp)
        self._expect(self.rtcp_peer, remote.rtcp)
        self.remote = remote

    # -- where to send ----------------------------------------------------------------------

    @property
    def destination(self) -> Source | None:
        """Where RTP goes: the latched source, else the SDP address, else None."""
        return self.rtp_peer.destination

    @property
    def rtcp_destination(self) -> Source | None:
        """Where RTCP goes (see the module docstring)."""
        if self.rtcp_peer.latched is not None:
            return self.rtcp_peer.latched
        rtp, sdp = self.rtp_peer.latched, self.remote.rtp
        if rtp is not None and (sdp is None or rtp[0] != sdp[0]):
            return (rtp[0], rtp[1] + 1)
        return self.rtcp_peer.expected

    @property
    def sending(self) -> bool:
        """True when frames go out (the remote receives and its address is known)."""
        return self.remote.receives and self.destination is not None

    def update_remote(
        self, remote: RemoteMedia, codec: G711 | None = None, telephone_event: int | None = None
    ) -> None:
        """New SDP from the remote (re-INVITE, RFC 3264 8). A changed address re-arms
        latching; a changed ``codec`` cuts the prompt playing."""
        if remote.rtp != self.remote.rtp:
            self._expect(self.rtp_peer, remote.rtp)
        if remote.rtcp != self.remote.rtcp:
            self._expect(self.rtcp_peer, remote.rtcp)
        self.remote = remote
        if codec is not None:
            if (codec.name, codec.payload_type) != (self.codec.name, self.codec.payload_type):
                self.player.stop()
                self.player.codec = self.codec = codec
                self._silence = bytes((codec.silence,)) * self.player.frame_size
            self.telephone_event = telephone_event
        log.debug(
            "event=media_remote session=%s remote=%s direction=%s codec=%s",
            self.name,
            _hostport(remote.rtp),
            remote.direction.value,
            self.codec.name,
        )

    @staticmethod
    def _expect(peer: LatchingPeer, address: Source | None) -> None:
        if address is not None:
            peer.expect(*address)
        else:
            peer.expected = peer.latched = None

    # -- receiving ---------------------------------------------------------------------------

    def receive(
        self, data: bytes, source: Source, now: float, *, rtcp: bool = False
    ) -> list[MediaEvent]:
        """A datagram from ``source`` on the RTP socket (or the RTCP one with ``rtcp``).
        RTCP on the RTP socket is recognised (RFC 5761 4). Garbage is counted, never raised."""
        if rtcp or is_rtcp(data):
            return self._receive_rtcp(data, source, now, latch=rtcp)
        try:
            packet = RtpPacket.parse(data)
        except PacketError as exc:
            self.invalid_packets += 1
            log.debug("event=rtp_invalid session=%s src=%s reason=%r", self.name, source, str(exc))
            return []
        payload_type = packet.payload_type
        is_event = payload_type == self.telephone_event
        if payload_type == self.codec.payload_type and payload_type not in CODECS:
            packet.payload_type = _STATIC[self.codec.name]  # the number the recorder knows
        elif not is_event and payload_type not in CODECS and payload_type != COMFORT_NOISE:
            self.unknown_payload += 1
            return []
        events: list[MediaEvent] = []
        previous = self.rtp_peer.destination
        if not self.rtp_peer.accept(source, now, len(data)):
            return []
        if source != previous:  # our media goes somewhere else now
            events.append(RemoteLatched(source, previous))
            log.info(
                "event=rtp_latched session=%s remote=%s sdp=%s",
                self.name,
                _hostport(source),
                _hostport(self.remote.rtp),
            )
        self.last_received = now
        old_ssrc = self.stats.source.ssrc
        receive = self.stats.receive_untimed if is_event else self.stats.receive
        if receive(packet, now) and old_ssrc is not None:
            events.append(SourceChanged(packet.ssrc, old_ssrc))
            log.info(
                "event=rtp_ssrc_changed session=%s ssrc=%08x previous=%08x",
                self.name,
                packet.ssrc,
                old_ssrc,
            )
        if is_event:
            self._receive_event(packet, events)
        elif self.recorder is not None and self.recorder.stopped is None:
            self._last_audio = now
            reason = self.recorder.feed_packet(packet)
            if reason is not None:
                events.append(self._recording_stopped(reason))
        return events

    def _receive_event(self, packet: RtpPacket, events: list[MediaEvent]) -> None:
        """RFC 4733 2.5.2: one digit per event, duplicates and lost starts handled."""
        try:
            digit = self.dtmf.receive(packet)
        except PacketError as exc:
            self.invalid_packets += 1
            log.debug("event=dtmf_invalid session=%s reason=%r", self.name, str(exc))
            return
        if digit is not None:
            events.append(DigitReceived(digit.digit, digit.timestamp))
            log.info("event=dtmf session=%s digit=%s via=rfc4733", self.name, digit.digit)

    def _receive_rtcp(
        self, data: bytes, source: Source, now: float, *, latch: bool
    ) -> list[MediaEvent]:
        try:
            packets = parse_rtcp(data)
        except PacketError as exc:
            self.invalid_rtcp += 1
            log.debug("event=rtcp_invalid session=%s src=%s reason=%r", self.name, source, str(exc))
            return []
        if latch and not self.rtcp_peer.accept(source, now, len(data)):
            return []
        if not latch and source != self.rtp_peer.latched:  # muxed RTCP: from the RTP peer only
            return []
        events: list[MediaEvent] = []
        for packet in packets:
            self._rtcp_packet(packet, now, events)
        return events

    def _rtcp_packet(self, packet: RtcpPacket, now: float, events: list[MediaEvent]) -> None:
        blocks: tuple[ReportBlock, ...] = ()
        if isinstance(packet, SenderReport):
            self.stats.sender_report(packet, now)
            blocks = packet.reports
        elif isinstance(packet, ReceiverReport):
            blocks = packet.reports
        elif isinstance(packet, Bye) and self.stats.source.ssrc in packet.ssrcs:
            events.append(RemoteBye(self.stats.source.ssrc or 0, packet.reason))
            log.info("event=rtcp_bye session=%s reason=%r", self.name, packet.reason)
        for block in blocks:
            if block.ssrc == self.stream.ssrc:
                self.remote_report = block
                self._round_trip(block, now)

    def _round_trip(self, block: ReportBlock, now: float) -> None:
        """RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s of the NTP clock."""
        if not block.last_sr:
            return
        arrival = ntp_middle(ntp_timestamp(now + self.wall_offset))
        rtt = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
        if rtt < 0x80000000:  # a negative result: clocks or a bogus report
            self.round_trip = rtt / 65536

    # -- playing -----------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """True while a prompt has frames left."""
        return self.player.playing

    def play(self, samples: Pcm | bytes, now: float) -> None:
        """Queue 8 kHz PCM after whatever plays; an idle player starts on the first grid slot
        at or after ``now``."""
        if not self.player.playing:
            first = max(self._slot, math.ceil((now - self._origin) / PTIME - _EPSILON))
            self._slot = first
            self.player.play(samples, self._slot_time(first))
        else:
            self.player.play(samples, now)

    def stop_playing(self) -> None:
        """Drop the rest of the prompts (barge-in); silence follows on the same grid."""
        self.player.stop()

    def packets_due(self, now: float) -> list[bytes]:
        """The RTP datagrams due at or before ``now`` (prompt frames or comfort silence)."""
        out: list[bytes] = []
        sending = self.sending
        if self.player.playing:
            skipped = self.player.skipped
            packets = self.player.packets_due(now)
            self._slot += len(packets) + self.player.skipped - skipped
            if sending:
                out = [bytes(p) for p in packets]
            elif packets:
                self._unsend(packets)
        if self.player.playing or not (sending and self.comfort_silence):
            return out
        due = math.floor((now - self._origin) / PTIME + _EPSILON)  # the newest slot due
        if due >= self._slot:
            self._slot = due  # late: skip to the newest slot, no burst
            timestamp = self.stream.timestamp_origin + due * self.player.frame_size
            packet = self.stream.packet(self.codec.payload_type, timestamp, self._silence)
            out.append(bytes(packet))
            self._slot += 1
        return out

    def _unsend(self, packets: list[RtpPacket]) -> None:
        """Take back frames that were not sent (hold): no sequence gap, no count."""
        stream = self.stream
        stream.sequence = (stream.sequence - len(packets)) & 0xFFFF
        stream.packets_sent -= len(packets)
        stream.octets_sent -= sum(len(p.payload) for p in packets)

    def _slot_time(self, slot: int) -> float:
        return self._origin + slot * PTIME

    # -- recording ---------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """True while a recording is running (not stopped yet)."""
        return self.recorder is not None and self.recorder.stopped is None

    def start_recording(
        self, max_seconds: float, silence_seconds: float | None, now: float
    ) -> None:
        """Record the remote's audio from now on (a running recording is discarded)."""
        self.recorder = Recorder(max_seconds, silence_seconds)
        self._record_started = self._last_audio = now
        log.info(
            "event=record_start session=%s max=%s silence=%s",
            self.name,
            max_seconds,
            silence_seconds,
        )

    def stop_recording(self) -> Recorded:
        """End the recording (if it did not end itself) and return it."""
        recorder = self.recorder
        if recorder is None:
            raise RuntimeError("no recording was started")
        self.recorder = None
        recorder.stop()
        samples = recorder.samples(trim_silence=True)
        reason = recorder.stopped or StopReason.STOPPED
        seconds = len(samples) / CLOCK_RATE
        log.info("event=record_end session=%s seconds=%.2f reason=%s", self.name, seconds, reason)
        return Recorded(wav_bytes(samples), seconds, reason)

    def _recording_stopped(self, reason: StopReason) -> RecordingStopped:
        log.debug("event=record_stopped session=%s reason=%s", self.name, reason.value)
        return RecordingStopped(reason)

    def _record_deadline(self) -> float | None:
        recorder = self.recorder
        if recorder is None or recorder.stopped is not None:
            return None
        ends = self._record_started + recorder.max_samples / CLOCK_RATE + _RECORD_GRACE
        if recorder.silence_samples is not None:
            ends = min(ends, self._last_audio + recorder.silence_samples / CLOCK_RATE)
        return ends

    def handle_timer(self, now: float) -> list[MediaEvent]:
        """Time-driven events: a recording starved of packets ends (the missing time counts
        as silence)."""
        deadline = self._record_deadline()
        recorder = self.recorder
        if deadline is None or recorder is None or now < deadline:
            return []
        length = round(recorder.duration * CLOCK_RATE)
        need = recorder.max_samples - length
        if recorder.silence_samples is not None:
            need = min(need, recorder.silence_samples - recorder.trailing_silence)
        reason = recorder.feed(np.zeros(max(need, 0), dtype=np.int16))
        if reason is None:  # not expected: the fill reaches one of the limits
            recorder.stop()
            reason = StopReason.STOPPED
        return [self._recording_stopped(reason)]

    # -- RTCP --------------------------------------------------------------------------------

    def _interval(self, initial: bool = False) -> float:
        """RFC 3550 6.3.1: the interval times a factor in [0.5, 1.5]; halved at first (6.2)."""
        self._seed = _spread(self._seed)
        factor = 0.5 + self._seed / 0x1_0000_0000
        return self.rtcp_interval * factor * (0.5 if initial else 1.0)

    def rtcp_due(self, now: float) -> bytes | None:
        """A compound report (SR or RR, then SDES) when one is due, else None."""
        if now < self._rtcp_at or self.rtcp_destination is None:
            return None
        self._rtcp_at = now + self._interval()
        return serialize_rtcp(self._report(now))

    def bye(self, now: float, reason: str = "") -> bytes:
        """A final compound packet: report, SDES, BYE (RFC 3550 6.1, 6.6)."""
        return serialize_rtcp([*self._report(now), Bye((self.stream.ssrc,), reason[:255])])

    def _report(self, now: float) -> list[RtcpPacket]:
        """RFC 3550 6.4: SR if we sent RTP since the report before last, else RR."""
        stream = self.stream
        before_last, last = self._sent_at_reports
        self._sent_at_reports = (last, stream.packets_sent)
        block = self.stats.report_block(now)
        blocks = () if block is None else (block,)
        report: RtcpPacket
        if stream.packets_sent > before_last:
            report = SenderReport(
                stream.ssrc,
                ntp_timestamp(now + self.wall_offset),
                stream.timestamp_at(now),
                stream.packets_sent,
                stream.octets_sent,
                blocks,
            )
        else:
            report = ReceiverReport(stream.ssrc, blocks)
        cname = SdesChunk(stream.ssrc, ((SDES_CNAME, self.cname[:255]),))
        return [report, SourceDescription((cname,))]

    # -- timing ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer`, :meth:`packets_due` or :meth:`rtcp_due` next has work."""
        times: list[float] = []
        if self.player.playing:
            frame = self.player.next_deadline()
            if frame is not None:
                times.append(frame)
        elif self.comfort_silence and self.sending:
            times.append(self._slot_time(self._slot))
        if self.rtcp_destination is not None:
            times.append(self._rtcp_at)
        record = self._record_deadline()
        if record is not None:
            times.append(record)
        return min(times) if times else None


def _hostport(address: Source | None) -> str:
    return "-" if address is None else f"{address[0]}:{address[1]}"
