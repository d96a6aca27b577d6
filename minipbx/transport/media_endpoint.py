"""Asyncio glue of a stream the PBX terminates: an RTP and an RTCP socket around one
:class:`~minipbx.media.session.MediaSession`.

The session decides everything (pacing, latching, DTMF, recording, RTCP); this module owns
the sockets, the loop's monotonic clock and one timer, armed with ``call_at`` at the
session's next deadline (DESIGN.md: aioquic's ``asyncio/protocol.py`` shape). Datagrams are
handled in the protocol callbacks: no task per packet, no polling.

Pacing does not drift: frame ``n`` is due at an absolute time computed by the session from
its start, and the timer is re-armed at that absolute time (``call_at``, never a relative
sleep), so a late wake-up delays one frame and not the ones after it. Frames due within
:data:`EARLY` of the wake-up are sent at once: uvloop's clock and timers have millisecond
resolution, and a timer that fires a fraction of a millisecond early must not spin.

Ports come from an :class:`RtpPorts` allocator, which
:class:`minipbx.transport.rtp.RtpPortPool` is (an even RTP port, RTCP on the next one,
RFC 3550 11). The service-facing calls map onto :class:`minipbx.pbx.channel.Channel`:
:meth:`MediaEndpoint.play`, :meth:`~MediaEndpoint.collect`, :meth:`~MediaEndpoint.record`,
:meth:`~MediaEndpoint.flush_digits`; every wait ends with :class:`MediaClosedError` once the
endpoint is closed (the call ended), except :meth:`~MediaEndpoint.record`, which returns what
it has with the reason ``"hangup"``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple, Protocol, cast

from minipbx.media.dtmf import Collected, DtmfCollector, digit_to_event
from minipbx.media.g711 import Pcm
from minipbx.media.player import PTIME, StopReason, read_wav
from minipbx.media.session import (
    DigitReceived,
    MediaEvent,
    MediaSession,
    RecordingStopped,
    RemoteMedia,
    codec_for,
)
from minipbx.sip.errors import ParseError
from minipbx.sip.offer_answer import NegotiatedCodec, build_answer, build_offer, negotiated_codec
from minipbx.sip.sdp import MediaDescription, SessionDescription
from minipbx.transport.rtp import PortPair

log = logging.getLogger("minipbx.media")

EARLY = 0.001
"""Seconds: work due this soon after a timer fires is done at once (uvloop's ms clock)."""
MAX_QUEUED_DIGITS = 64
"""Keys kept for later :meth:`MediaEndpoint.collect` calls; older ones are dropped."""
_DISCARD_PORT = 9  # a placeholder port while checking an offer (RFC 863 discard)
_REASONS = {
    StopReason.MAX_LENGTH: "max_length",
    StopReason.SILENCE: "silence",
    StopReason.STOPPED: "stopped",
}


class OfferError(Exception):
    """The remote's SDP cannot be answered; ``status`` is the SIP response to send
    (488 Not Acceptable Here, RFC 3261 21.4.26, or 400 for a malformed body)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MediaClosedError(Exception):
    """The endpoint was closed (the call ended) while a caller waited on it."""


class RtpPorts(Protocol):
    """Where an endpoint's sockets come from (:class:`~minipbx.transport.rtp.RtpPortPool`)."""

    def allocate(self) -> PortPair:
        """Two bound non-blocking UDP sockets: RTP on an even port, RTCP on the next."""
        ...

    def release(self, port: int) -> None:
        """The pair at ``port`` is being closed and may be handed out again."""
        ...


class RecordResult(NamedTuple):
    """What :meth:`MediaEndpoint.record` captured (the fields of ``pbx.channel.Recording``)."""

    wav: bytes
    seconds: float
    reason: str  # "terminator", "silence", "max_length", "hangup" (or "stopped")


class _MediaSocket(asyncio.DatagramProtocol):
    """One of the two sockets; hands every datagram to the endpoint."""

    __slots__ = ("_rtcp", "endpoint", "lost", "transport")

    def __init__(self, rtcp: bool) -> None:
        self._rtcp = rtcp
        self.endpoint: MediaEndpoint | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The loop attached the socket."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """The per-packet path: straight into the session."""
        endpoint = self.endpoint
        if endpoint is not None:
            endpoint._datagram(data, addr, self._rtcp)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for what we sent (nobody listens there yet, or any more)."""
        name = "-" if self.endpoint is None else self.endpoint.name
        log.debug("event=media_socket_error session=%s reason=%r", name, str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed."""
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class MediaEndpoint:
    """A PBX-terminated audio stream on its own RTP/RTCP ports (see the module docstring).

    Made by :meth:`answer_now` / :meth:`answer` (the usual way) or :meth:`open` (your own
    session and sockets). ``address`` is the IP our SDP announces; ``index`` the offer's
    m-line we took.
    """

    def __init__(
        self,
        session: MediaSession,
        pair: PortPair,
        sockets: tuple[_MediaSocket, _MediaSocket],
        *,
        address: str,
        session_id: int | str,
        index: int = 0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.port = pair.port
        self.name = session.name
        self._pair = pair
        self._address = address
        self._session_id = session_id
        self._index = index
        self._version = 0
        self._answer: bytes | None = None  # our SDP as last sent (answer or offer)
        self._offered: SessionDescription | None = None  # our offer awaiting its answer
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._rtp, self._rtcp = sockets
        self._attaching: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False
        self._digits: deque[str] = deque(maxlen=MAX_QUEUED_DIGITS)
        self._waiters: list[asyncio.Future[None]] = []
        self._playback = 0  # number of the newest play() call
        self._recording = False  # a record() is running
        self._terminators = ""  # keys that end it
        self._record_end: str | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def answer_now(
        cls,
        offer_sdp: bytes,
        *,
        address: str,
        ports: RtpPorts,
        session_id: int | str,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        comfort_silence: bool = True,
        name: str = "",
    ) -> tuple[MediaEndpoint, bytes]:
        """Answer an SDP offer (RFC 3264 6) with our own stream: the offer's first audio
        m-line with PCMU or PCMA (its preference order) and telephone-event if offered.

        Synchronous, for a caller that must answer at once (the B2BUA): the ports are
        bound now and attached to the loop by a task right after (packets wait in the
        kernel meanwhile; :meth:`ready` waits for it). The frame grid starts one frame
        from now so that its first frame is not late. Returns the endpoint and the
        answer's bytes. Raises :class:`OfferError` (488, or 400 for a malformed body)
        before any port is taken, and the pool's ``MediaError`` when no pair is free.
        """
        offer = _parse(offer_sdp)
        index = _acceptable_stream(offer, address, session_id)

        def answer(port: int) -> _Described:
            ours = _build(offer, index, address, port, session_id, 0)
            negotiated = negotiated_codec(offer, ours)
            assert negotiated is not None  # build_answer accepted exactly this stream
            return ours, negotiated, RemoteMedia.from_sdp(offer, index), index

        endpoint, _, body = cls._start(
            answer, address, ports, session_id, entropy, comfort_silence, name
        )
        return endpoint, body

    @classmethod
    def _start(
        cls,
        describe: Callable[[int], _Described],
        address: str,
        ports: RtpPorts,
        session_id: int | str,
        entropy: Callable[[int], bytes],
        comfort_silence: bool,
        name: str,
    ) -> tuple[MediaEndpoint, SessionDescription, bytes]:
        """An endpoint on a fresh port pair whose SDP ``describe(port)`` gives (our SDP, the
        codec, where the remote is, our m-line), with that SDP and its bytes; the pair goes
        back to the pool on any failure."""
        pair = ports.allocate()
        try:
            ours, negotiated, remote, index = describe(pair.port)
            session = _new_session(
                negotiated, remote, entropy, comfort_silence, name or str(session_id)
            )
        except BaseException:
            pair.close()
            ports.release(pair.port)
            raise
        endpoint = cls.open(
            session,
            pair,
            address=address,
            session_id=session_id,
            index=index,
            on_close=lambda: ports.release(pair.port),
        )
        endpoint._answer = body = bytes(ours)
        return endpoint, ours, body

    @classmethod
    def negotiate(
        cls,
        offer_sdp: bytes,
        *,
        address: str,
        ports: RtpPorts,
        session_id: int | str,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        comfort_silence: bool = True,
        name: str = "",
    ) -> tuple[MediaEndpoint, bytes]:
        """:meth:`answer_now` the caller's offer, or :meth:`offer_now` when it sent none
        (an empty body): the endpoint and the SDP for our 2xx."""
        if offer_sdp:
            return cls.answer_now(
                offer_sdp,
                address=address,
                ports=ports,
                session_id=session_id,
                entropy=entropy,
                comfort_silence=comfort_silence,
                name=name,
            )
        return cls.offer_now(
            address=address,
            ports=ports,
            session_id=session_id,
            entropy=entropy,
            comfort_silence=comfort_silence,
            name=name,
        )

    @classmethod
    def offer_now(
        cls,
        *,
        address: str,
        ports: RtpPorts,
        session_id: int | str,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        comfort_silence: bool = True,
        name: str = "",
    ) -> tuple[MediaEndpoint, bytes]:
        """Our own stream offered to a caller that sent no offer (an INVITE without SDP:
        the 2xx carries the offer, the ACK the answer, RFC 3261 13.2.1 and RFC 3264 5):
        PCMU, PCMA and telephone-event. Synchronous like :meth:`answer_now`. Nothing is
        sent before :meth:`take_answer` says where to (or latching learns it);
        :meth:`answered` waits for that. Returns the endpoint and the offer's bytes."""

        def offer(port: int) -> _Described:
            ours = build_offer(address=address, port=port, session_id=session_id)
            negotiated = negotiated_codec(ours, ours)  # our first choice until answered
            assert negotiated is not None
            return ours, negotiated, RemoteMedia(None, None), 0

        endpoint, ours, body = cls._start(
            offer, address, ports, session_id, entropy, comfort_silence, name
        )
        endpoint._offered = ours
        return endpoint, body

    @classmethod
    async def answer(
        cls,
        offer_sdp: bytes,
        *,
        address: str,
        ports: RtpPorts,
        session_id: int | str,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        comfort_silence: bool = True,
        name: str = "",
    ) -> tuple[MediaEndpoint, bytes]:
        """:meth:`answer_now`, returning once the sockets are attached."""
        endpoint, body = cls.answer_now(
            offer_sdp,
            address=address,
            ports=ports,
            session_id=session_id,
            entropy=entropy,
            comfort_silence=comfort_silence,
            name=name,
        )
        await endpoint.ready()
        return endpoint, body

    @classmethod
    def open(
        cls,
        session: MediaSession,
        pair: PortPair,
        *,
        address: str,
        session_id: int | str = 0,
        index: int = 0,
        on_close: Callable[[], None] | None = None,
    ) -> MediaEndpoint:
        """An endpoint for a session and a socket pair you made (the sockets are attached
        by a task; see :meth:`ready`)."""
        sockets = (_MediaSocket(rtcp=False), _MediaSocket(rtcp=True))
        endpoint = cls(
            session,
            pair,
            sockets,
            address=address,
            session_id=session_id,
            index=index,
            on_close=on_close,
        )
        for protocol in sockets:
            protocol.endpoint = endpoint
        loop = endpoint._loop
        endpoint._attaching = loop.create_task(endpoint._attach(), name=f"media-{endpoint.name}")
        log.info(
            "event=media_open session=%s local=%s:%d remote=%s codec=%s/%d dtmf=%s",
            endpoint.name,
            address,
            endpoint.port,
            session.destination,
            session.codec.name,
            session.codec.payload_type,
            session.telephone_event,
        )
        endpoint._arm()
        return endpoint

    async def _attach(self) -> None:
        """Hand the bound sockets to the loop (those of an endpoint closed meanwhile are
        just closed)."""
        for protocol, sock in ((self._rtp, self._pair.rtp), (self._rtcp, self._pair.rtcp)):
            if self._closed:
                _closed_unattached(protocol, sock)
                continue
            try:
                await self._loop.create_datagram_endpoint(lambda p=protocol: p, sock=sock)  # type: ignore[misc]
            except OSError as exc:  # not expected for a bound socket; never leak it
                log.error("event=media_attach_failed session=%s reason=%r", self.name, str(exc))
                _closed_unattached(protocol, sock)
                self.close()
                continue
            if self._closed and protocol.transport is not None:
                protocol.transport.close()

    async def ready(self) -> None:
        """Until both sockets are attached to the loop (media flows both ways from then)."""
        if self._attaching is not None:
            await asyncio.shield(self._attaching)

    # -- the clock ---------------------------------------------------------------------------

    def _arm(self) -> None:
        """Keep one timer at the session's next deadline (an earlier one just re-arms)."""
        if self._closed:
            return
        when = self.session.next_deadline()
        timer = self._timer
        if timer is not None:
            if when is None or self._timer_at <= when:
                return
            timer.cancel()
        if when is None:
            self._timer = None
            return
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        session = self.session
        now = self._loop.time() + EARLY
        was_playing = session.playing
        events = session.handle_timer(now)
        packets = session.packets_due(now)
        transport = self._rtp.transport
        if packets and transport is not None:
            destination = session.destination
            for data in packets:
                transport.sendto(data, destination)
        report = session.rtcp_due(now)
        if report is not None and self._rtcp.transport is not None:
            self._rtcp.transport.sendto(report, session.rtcp_destination)
        if events:
            self._handle(events)
        if was_playing and not session.playing:
            self._signal()
        self._arm()

    def _datagram(self, data: bytes, addr: tuple[Any, ...], rtcp: bool) -> None:
        if self._closed:
            return
        source = addr if len(addr) == 2 else addr[:2]
        events = self.session.receive(data, source, self._loop.time(), rtcp=rtcp)
        if events:
            self._handle(events)
            self._arm()

    def _handle(self, events: list[MediaEvent]) -> None:
        for event in events:
            if isinstance(event, DigitReceived):
                self._digit(event.digit)
            elif isinstance(event, RecordingStopped):
                self._signal()

    # -- waiting -----------------------------------------------------------------------------

    def _signal(self) -> None:
        """Wake every waiter: something changed (a key, a prompt or recording ended, close)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, deadline: float | None = None) -> None:
        """Until the next change or ``deadline`` (loop time); :class:`MediaClosedError` once
        closed."""
        self._check_open()
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout_at(deadline):
                    await waiter
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise MediaClosedError(f"media session {self.name} is closed")

    # -- DTMF --------------------------------------------------------------------------------

    def _digit(self, digit: str) -> None:
        if digit in self._terminators:
            self._record_end = "terminator"
        else:
            self._digits.append(digit)
        self._signal()

    def inject_digit(self, digit: str) -> None:
        """A key that came another way (SIP INFO, ``minipbx.media.dtmf.parse_dtmf_info``)."""
        digit_to_event(digit)
        log.info("event=dtmf session=%s digit=%s via=info", self.name, digit.upper())
        if not self._closed:
            self._digit(digit.upper())

    @property
    def pending_digits(self) -> str:
        """Keys pressed and not yet collected."""
        return "".join(self._digits)

    def flush_digits(self) -> None:
        """Forget keys pressed but not collected."""
        self._digits.clear()

    async def next_digit(self, timeout: float | None = None) -> str | None:
        """The next key (queued ones first); None after ``timeout`` seconds."""
        self._check_open()
        deadline = None if timeout is None else self._loop.time() + timeout
        while not self._digits:
            if deadline is not None and self._loop.time() >= deadline:
                return None
            await self._wait(deadline)
        return self._digits.popleft()

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
        overall_timeout: float | None = None,
    ) -> Collected:
        """Gather keys (queued ones first) with a :class:`~minipbx.media.dtmf.DtmfCollector`
        until a limit ends it (``Channel.collect``)."""
        self._check_open()
        clock = self._loop.time
        collector = DtmfCollector(
            clock(),
            max_digits=max_digits,
            terminators=terminators,
            first_digit_timeout=first_digit_timeout,
            inter_digit_timeout=inter_digit_timeout,
            overall_timeout=overall_timeout,
        )
        while True:
            while self._digits:
                result = collector.digit(self._digits.popleft(), clock())
                if result is not None:
                    return result
            result = collector.handle_timer(clock())
            if result is not None:
                return result
            await self._wait(collector.next_deadline())

    # -- prompts and recordings -----------------------------------------------------------------

    async def play(self, audio: Pcm | bytes, *, barge_in: bool = True) -> str | None:
        """Play 8 kHz PCM samples or a WAV file's bytes; returns when the last frame is sent.

        With ``barge_in`` a key stops playback and is returned; it stays queued for
        :meth:`collect`, and a key queued before the call returns at once (type-ahead).
        A newer ``play`` cuts this one (it returns None). :class:`MediaClosedError` when closed.
        """
        self._check_open()
        if barge_in and self._digits:
            return self._digits[0]
        samples = read_wav(bytes(audio)) if isinstance(audio, bytes | bytearray) else audio
        session = self.session
        self._playback += 1
        mine = self._playback
        session.stop_playing()
        self._signal()  # a play() waiting on the prompt just cut returns
        session.play(samples, self._loop.time())
        self._arm()
        try:
            while True:
                if barge_in and self._digits:
                    return self._digits[0]
                if mine != self._playback or not session.playing:
                    return None
                await self._wait()
        finally:
            if mine == self._playback and session.playing:
                session.stop_playing()

    @property
    def playing(self) -> bool:
        """True while a prompt is playing."""
        return self.session.playing

    def stop_playing(self) -> None:
        """Cut the prompt playing (its :meth:`play` returns None); silence follows."""
        if self.session.playing:
            self.session.stop_playing()
            self._signal()

    async def record(
        self,
        max_seconds: float,
        silence_seconds: float | None = 5.0,
        terminators: str = "#",
    ) -> RecordResult:
        """Record the remote until a terminator key (consumed; other keys stay queued),
        ``silence_seconds`` of silence, ``max_seconds``, or hang-up (the recording is
        returned then, reason ``"hangup"``)."""
        self._check_open()
        for key in terminators:
            digit_to_event(key)
        if self._recording:
            raise RuntimeError(f"media session {self.name} is recording already")
        session = self.session
        session.start_recording(max_seconds, silence_seconds, self._loop.time())
        self._recording, self._terminators, self._record_end = True, terminators.upper(), None
        self._arm()
        try:
            while self._record_end is None and session.recording:
                await self._wait()
        except MediaClosedError:
            self._record_end = "hangup"
        finally:
            self._recording, self._terminators = False, ""
            recorded = session.stop_recording()
        return RecordResult(
            recorded.wav, recorded.seconds, self._record_end or _REASONS[recorded.reason]
        )

    # -- SDP updates and the end -----------------------------------------------------------------

    def update_remote(self, offer_sdp: bytes) -> bytes:
        """A new offer from the remote (re-INVITE or UPDATE, RFC 3264 8): move, hold,
        resume, change codec. Returns our answer: same ports, the ``o=`` version bumped
        when it changed. :class:`OfferError` leaves the stream as it was."""
        self._check_open()
        offer = _parse(offer_sdp)
        build = (offer, self._index, self._address, self.port, self._session_id)
        answer = _build(*build, self._version)
        if self._answer is not None and bytes(answer) != self._answer:
            self._version += 1
            answer = _build(*build, self._version)
        body = bytes(answer)
        negotiated = negotiated_codec(offer, answer)
        assert negotiated is not None
        codec, event = codec_for(negotiated)
        was_playing = self.session.playing
        self.session.update_remote(RemoteMedia.from_sdp(offer, self._index), codec, event)
        self._answer = body
        if was_playing and not self.session.playing:  # a new codec cut the prompt
            self._signal()
        self._arm()
        return body

    @property
    def awaiting_answer(self) -> bool:
        """True while an offer of ours waits for the remote's answer."""
        return self._offered is not None

    async def answered(self) -> None:
        """Until the answer to our offer arrived (at once when none is awaited);
        :class:`MediaClosedError` once closed."""
        while self._offered is not None:
            await self._wait()

    def take_answer(self, answer_sdp: bytes) -> None:
        """The remote's answer to our offer (RFC 3264 6): its first codec we offered, its
        payload types (those are what it receives), its address. :class:`OfferError` (488,
        400 for a malformed body) leaves the offer waiting."""
        self._check_open()
        offer = self._offered
        if offer is None:
            raise OfferError("no offer of ours is waiting for an answer", 400)
        answer = _parse(answer_sdp)
        try:
            negotiated = negotiated_codec(offer, answer)
            if negotiated is None:
                raise OfferError("the SDP answer accepts no audio stream we offered")
            remote = RemoteMedia.from_sdp(answer, negotiated.index)
        except ParseError as exc:
            raise OfferError(f"SDP answer: {exc.reason}", exc.status) from None
        except ValueError as exc:
            raise OfferError(f"SDP answer: {exc}") from None
        codec, event = codec_for(negotiated)
        session = self.session
        session.update_remote(remote, codec, event)
        self._index = negotiated.index
        self._offered = None
        log.info(
            "event=media_answered session=%s remote=%s codec=%s/%d dtmf=%s",
            self.name,
            session.destination,
            codec.name,
            codec.payload_type,
            session.telephone_event,
        )
        self._signal()  # wakes answered()
        self._arm()

    def offer_again(self) -> bytes:
        """Our offer for a re-INVITE or UPDATE that came without one (RFC 3264 5, 8): the
        same port, the ``o=`` version bumped, as many m-lines as our SDP before (the ones
        we do not use disabled); the answer comes to :meth:`take_answer`."""
        self._check_open()
        self._version += 1
        fresh = build_offer(
            address=self._address,
            port=self.port,
            session_id=self._session_id,
            session_version=self._version,
        )
        before = _parse(self._answer) if self._answer is not None else fresh
        if len(before.media) > 1:  # RFC 3264 8: never fewer m-lines than before
            media = [_disabled(m) for m in before.media]
            media[self._index] = fresh.media[0]
            fresh = replace(fresh, media=tuple(media))
        self._offered = fresh
        self._answer = body = bytes(fresh)
        return body

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self, reason: str = "") -> None:
        """Stop: an RTCP BYE (RFC 3550 6.6), sockets closed, ports given back, every waiter
        woken with :class:`MediaClosedError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session = self.session
        destination = session.rtcp_destination
        if destination is not None and self._rtcp.transport is not None:
            self._rtcp.transport.sendto(session.bye(self._loop.time(), reason), destination)
        session.stop_playing()
        attaching = self._attaching is not None and not self._attaching.done()
        for protocol, sock in ((self._rtp, self._pair.rtp), (self._rtcp, self._pair.rtcp)):
            if protocol.transport is not None:
                protocol.transport.close()
            elif not attaching:  # else _attach closes it
                _closed_unattached(protocol, sock)
        if self._on_close is not None:
            self._on_close()
        self._signal()
        self._log_close()

    async def wait_closed(self) -> None:
        """After :meth:`close`: until both sockets are really closed (the ports free)."""
        await asyncio.gather(self._rtp.lost, self._rtcp.lost)

    def _log_close(self) -> None:
        session = self.session
        stats = session.stats
        log.info(
            "event=media_closed session=%s sent=%d received=%d lost=%d jitter_ms=%.1f"
            " invalid=%d dropped=%d rtt_ms=%s",
            self.name,
            session.stream.packets_sent,
            stats.received,
            stats.expected - stats.received,
            stats.jitter / 8,
            session.invalid_packets + session.invalid_rtcp + session.unknown_payload,
            session.rtp_peer.dropped,
            "-" if session.round_trip is None else f"{session.round_trip * 1000:.0f}",
        )


_Described = tuple[SessionDescription, NegotiatedCodec, RemoteMedia, int]
"""Our SDP, the codec it settles on, where the remote is, the m-line we use."""


def _new_session(
    negotiated: NegotiatedCodec,
    remote: RemoteMedia,
    entropy: Callable[[int], bytes],
    comfort_silence: bool,
    name: str,
) -> MediaSession:
    """A session for a negotiated codec, its frame grid starting one frame from now (so
    that its first frame is not late), its random values drawn from ``entropy``."""
    codec, event = codec_for(negotiated)
    now = asyncio.get_running_loop().time() + PTIME
    return MediaSession(
        codec,
        telephone_event=event,
        ssrc=int.from_bytes(entropy(4), "big"),
        sequence=int.from_bytes(entropy(2), "big"),
        timestamp=int.from_bytes(entropy(4), "big"),
        now=now,
        remote=remote,
        cname=entropy(8).hex(),  # RFC 7022: a random CNAME per session
        wall_offset=time.time() - now,
        comfort_silence=comfort_silence,
        name=name,
    )


def _disabled(media: MediaDescription) -> MediaDescription:
    """An m-line kept in place but refused (port 0, its formats, RFC 3264 8.2)."""
    return MediaDescription(media=media.media, port=0, proto=media.proto, formats=media.formats)


def _closed_unattached(protocol: _MediaSocket, sock: socket.socket) -> None:
    """Close a socket no transport owns (yet) and mark its protocol as lost."""
    sock.close()
    if not protocol.lost.done():
        protocol.lost.set_result(None)


# -- SDP helpers -----------------------------------------------------------------------------------


def _parse(data: bytes) -> SessionDescription:
    try:
        return SessionDescription.parse(data)
    except ParseError as exc:
        raise OfferError(f"SDP offer: {exc.reason}", exc.status) from None


def _build(
    offer: SessionDescription,
    index: int,
    address: str,
    port: int,
    session_id: int | str,
    version: int,
) -> SessionDescription:
    """Our answer taking only m-line ``index`` (RFC 3264 6: the others get port 0)."""
    if index >= len(offer.media):
        raise OfferError(f"SDP offer has {len(offer.media)} m-lines, ours is {index + 1}")
    ports = [port if i == index else 0 for i in range(len(offer.media))]
    try:
        return build_answer(
            offer,
            address=address,
            ports=ports,
            session_id=session_id,
            session_version=version,
        )
    except ParseError as exc:
        raise OfferError(exc.reason, exc.status) from None


def _acceptable_stream(offer: SessionDescription, address: str, session_id: int | str) -> int:
    """The first m-line we can answer with PCMU/PCMA (:class:`OfferError` if none)."""
    reasons = []
    for index, media in enumerate(offer.media):
        if media.media == "audio" and media.port != 0:
            try:
                _build(offer, index, address, _DISCARD_PORT, session_id, 0)
            except OfferError as exc:
                reasons.append(exc.reason)
            else:
                return index
    why = "; ".join(reasons) or "it has no active audio stream"
    raise OfferError(f"no PCMU/PCMA audio to answer: {why}", 488)
