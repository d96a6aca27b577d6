"""MediaEndpoint on real loopback sockets: a plain UDP "phone" in the test talks to it."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from minipbx.media.dtmf import CollectEnd, DtmfSender
from minipbx.media.g711 import PCMA, PCMU
from minipbx.media.player import read_wav, tone, wav_bytes
from minipbx.media.rtcp import Bye, SenderReport, parse_rtcp
from minipbx.media.rtp import RtpPacket, RtpSender
from minipbx.sip.sdp import SessionDescription
from minipbx.transport.media_endpoint import MediaClosedError, MediaEndpoint, OfferError
from minipbx.transport.rtp import PortPair, RtpPortPool
from tests.entropy import fake_entropy

WAIT = 2.0  # seconds: generous, the machine is shared


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class Phone:
    """A remote party: an RTP and an RTCP socket, its own RTP stream, what it received."""

    def __init__(self, pair: PortPair) -> None:
        self.pair = pair
        self.port = pair.port
        self.rtp: list[tuple[float, RtpPacket]] = []
        self.rtcp: list[bytes] = []
        self.stream = RtpSender(0xC0FFEE, 500, 12345, time.monotonic())
        self._transports: list[asyncio.DatagramTransport] = []
        self.endpoint_addr: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock, sink in ((self.pair.rtp, self._on_rtp), (self.pair.rtcp, self._on_rtcp)):
            transport, _ = await loop.create_datagram_endpoint(lambda s=sink: _Sink(s), sock=sock)
            self._transports.append(transport)

    def _on_rtp(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.rtp.append((time.monotonic(), RtpPacket.parse(data)))

    def _on_rtcp(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.rtcp.append(data)

    def offer(
        self, port: int | None = None, direction: str = "sendrecv", codecs: str = "0 8 101"
    ) -> bytes:
        return (
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port or self.port} RTP/AVP {codecs}\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
            f"a={direction}\r\n"
        ).encode()

    def send(self, packet: RtpPacket | bytes) -> None:
        assert self.endpoint_addr is not None
        self._transports[0].sendto(bytes(packet), self.endpoint_addr)

    def send_audio(self, samples: np.ndarray, codec=PCMU) -> None:  # type: ignore[no-untyped-def]
        """``samples`` as 20 ms packets, all at once (the recorder goes by timestamps)."""
        start = self.stream.timestamp_origin + 160 * self.stream.packets_sent
        for i in range(0, len(samples), 160):
            self.send(
                self.stream.packet(
                    codec.payload_type, start + i, codec.encode(samples[i : i + 160])
                )
            )

    def send_digits(self, digits: str) -> None:
        """RFC 4733 events on the same stream, every packet at once (updates, 3 ends)."""
        sender = DtmfSender(self.stream, payload_type=101)
        now = self.stream.clock_origin + 10 + 0.02 * self.stream.packets_sent
        for digit in digits:
            sender.send(digit, now, duration=0.1)
        while (when := sender.next_deadline()) is not None:
            for packet in sender.packets_due(when):
                self.send(packet)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, sink: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.sink(data, addr)


@pytest.fixture
def pool() -> RtpPortPool:
    return RtpPortPool("127.0.0.1", 46000, 46999)


@pytest.fixture
async def phone() -> AsyncIterator[Callable[[], Any]]:
    phones: list[Phone] = []
    peer_pool = RtpPortPool("127.0.0.1", 47000, 47999)

    async def factory() -> Phone:
        p = Phone(peer_pool.allocate())
        await p.start()
        phones.append(p)
        return p

    yield factory
    for p in phones:
        p.close()
    await asyncio.sleep(0)


async def _answer(pool: RtpPortPool, phone: Phone, **kwargs: Any) -> tuple[MediaEndpoint, bytes]:
    offer = kwargs.pop("offer", None) or phone.offer()
    endpoint, answer = await MediaEndpoint.answer(
        offer, address="127.0.0.1", ports=pool, session_id=42, entropy=fake_entropy(), **kwargs
    )
    phone.endpoint_addr = ("127.0.0.1", endpoint.port)
    return endpoint, answer


# -- answering ---------------------------------------------------------------------------------


async def test_answer_takes_the_first_g711_and_telephone_event(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    offer = p.offer(codecs="9 8 0 101")  # G722 first: not ours; PCMA preferred over PCMU
    endpoint, answer = await _answer(pool, p, offer=offer)
    try:
        sdp = SessionDescription.parse(answer)
        (media,) = sdp.media
        assert media.port == endpoint.port and endpoint.port % 2 == 0
        assert media.formats == ("8", "101") and media.fmtp(101) == "0-15"
        assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
        assert sdp.origin.sess_id == "42" and sdp.origin.sess_version == 0
        assert endpoint.session.codec is PCMA and pool.in_use == 1
    finally:
        endpoint.close()
    await endpoint.wait_closed()
    assert pool.in_use == 0


async def test_answer_now_is_synchronous_and_close_before_attach_leaks_nothing(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, answer = MediaEndpoint.answer_now(
        p.offer(), address="127.0.0.1", ports=pool, session_id=7
    )
    assert SessionDescription.parse(answer).media[0].port == endpoint.port
    endpoint.close()  # before the sockets were attached
    await endpoint.ready()
    await endpoint.wait_closed()
    assert pool.in_use == 0 and p.rtp == []
    endpoint, _ = MediaEndpoint.answer_now(p.offer(), address="127.0.0.1", ports=pool, session_id=8)
    try:
        await until(lambda: len(p.rtp) >= 2)  # comfort silence flows without any await on it
    finally:
        endpoint.close()
    await endpoint.wait_closed()
    assert pool.in_use == 0


@pytest.mark.parametrize(
    ("offer", "status", "message"),
    [
        (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n",
            488,
            "no PCMU/PCMA audio",
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 0\r\n",
            488,
            "no PCMU/PCMA audio",
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n",
            488,
            "RTP/SAVP",
        ),
        (b"this is not SDP", 400, "SDP offer"),
    ],
)
async def test_unanswerable_offers(
    pool: RtpPortPool, offer: bytes, status: int, message: str
) -> None:
    with pytest.raises(OfferError, match=message) as info:
        await MediaEndpoint.answer(offer, address="127.0.0.1", ports=pool, session_id=1)
    assert info.value.status == status and pool.in_use == 0


async def test_our_offer_waits_for_an_answer_then_sends_there(pool, phone) -> None:  # type: ignore[no-untyped-def]
    """A late offer (RFC 3264 5): nothing is sent before the answer; a bad answer leaves
    the offer waiting; the answer's codec and address are used from then on."""
    p = await phone()
    endpoint, body = MediaEndpoint.negotiate(
        b"", address="127.0.0.1", ports=pool, session_id=9, entropy=fake_entropy()
    )
    try:
        (media,) = SessionDescription.parse(body).media
        assert media.port == endpoint.port and media.formats == ("0", "8", "101")
        assert endpoint.awaiting_answer and endpoint.session.destination is None
        waiting = asyncio.ensure_future(endpoint.answered())
        await asyncio.sleep(0.1)
        assert not waiting.done() and not p.rtp
        for bad, status in (
            (b"v=0\r\nbroken", 400),
            (p.offer() + b"m=video 0 RTP/AVP 96\r\n", 488),  # more m-lines than offered
            (p.offer(codecs="9"), 488),  # a codec we did not offer
        ):
            with pytest.raises(OfferError) as info:
                endpoint.take_answer(bad)
            assert info.value.status == status and endpoint.awaiting_answer
        endpoint.take_answer(p.offer(codecs="8 101"))
        await asyncio.wait_for(waiting, WAIT)
        assert endpoint.session.codec is PCMA and not endpoint.awaiting_answer
        await until(lambda: len(p.rtp) >= 3)  # comfort silence, in PCMA, to the answer
        assert {packet.payload_type for _, packet in p.rtp} == {8}
        with pytest.raises(OfferError) as info:  # nothing waits for an answer any more
            endpoint.take_answer(p.offer())
        assert info.value.status == 400
    finally:
        endpoint.close()
    await endpoint.wait_closed()
    assert pool.in_use == 0


async def test_closing_wakes_a_wait_for_the_answer(pool: RtpPortPool) -> None:
    endpoint, _ = MediaEndpoint.offer_now(address="127.0.0.1", ports=pool, session_id=9)
    waiting = asyncio.ensure_future(endpoint.answered())
    await asyncio.sleep(0.01)
    endpoint.close()
    with pytest.raises(MediaClosedError):
        await asyncio.wait_for(waiting, WAIT)
    await endpoint.wait_closed()
    assert pool.in_use == 0


# -- playing ---------------------------------------------------------------------------------


async def test_prompt_reaches_the_peer_paced_and_continuous(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    try:
        prompt = tone(440, 0.4)
        started = time.monotonic()
        assert await endpoint.play(wav_bytes(prompt)) is None
        assert 0.38 <= time.monotonic() - started <= 0.5
        await until(lambda: len(p.rtp) >= 30)
    finally:
        endpoint.close()
    packets = [packet for _, packet in p.rtp]
    assert {packet.payload_type for packet in packets} == {0}
    assert len({packet.ssrc for packet in packets}) == 1
    first = packets[0]
    for n, packet in enumerate(packets):  # comfort silence and prompt on one stream
        assert packet.sequence_number == (first.sequence_number + n) & 0xFFFF
        assert packet.timestamp == (first.timestamp + 160 * n) & 0xFFFFFFFF
    start = next(n for n, packet in enumerate(packets) if packet.marker)
    assert [packet.marker for packet in packets].count(True) == 1
    assert b"".join(packet.payload for packet in packets[start : start + 20]) == PCMU.encode(prompt)
    assert {packet.payload for packet in packets[:start]} <= {b"\xff" * 160}
    arrivals = [when for when, _ in p.rtp]
    gaps = np.diff(arrivals)
    assert 0.018 <= statistics.median(gaps) <= 0.022
    span = arrivals[-1] - arrivals[0]
    assert abs(span - 0.02 * (len(arrivals) - 1)) < 0.015  # no drift, no bursts


# -- DTMF ------------------------------------------------------------------------------------


async def test_rfc4733_digit_barges_in_and_stays_queued(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    try:
        play = asyncio.create_task(endpoint.play(tone(440, 5.0)))
        await until(lambda: endpoint.playing)
        p.send_digits("5")
        assert await asyncio.wait_for(play, WAIT) == "5"
        assert not endpoint.playing and endpoint.pending_digits == "5"
        assert await endpoint.play(tone(440, 5.0)) == "5"  # type-ahead: at once
        p.send_digits("12#")
        collected = await asyncio.wait_for(endpoint.collect(max_digits=6), WAIT)
        assert (collected.digits, collected.reason) == ("512", CollectEnd.TERMINATOR)
        p.send_digits("12#")  # new events (new timestamps), not duplicates
        await until(lambda: endpoint.pending_digits == "12#")
        assert await endpoint.next_digit(WAIT) == "1"
        endpoint.flush_digits()
        assert await endpoint.next_digit(0.05) is None
        no_input = await endpoint.collect(first_digit_timeout=0.05)
        assert no_input.reason is CollectEnd.NO_INPUT
    finally:
        endpoint.close()


async def test_info_digits_and_bad_keys(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    try:
        waiter = asyncio.create_task(endpoint.next_digit())
        await asyncio.sleep(0)
        endpoint.inject_digit("*")
        assert await asyncio.wait_for(waiter, WAIT) == "*"
        with pytest.raises(ValueError, match="not a DTMF key"):
            endpoint.inject_digit("x")
    finally:
        endpoint.close()


# -- recording -------------------------------------------------------------------------------


async def test_record_a_tone_until_hash(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    try:
        record = asyncio.create_task(endpoint.record(max_seconds=30, silence_seconds=5))
        await until(lambda: endpoint.session.recording)
        speech = tone(600, 1.0, level=-15)
        p.send_audio(speech)
        p.send_digits("#")
        wav, seconds, reason = await asyncio.wait_for(record, WAIT)
        assert reason == "terminator" and seconds == pytest.approx(1.0)
        assert np.array_equal(read_wav(wav), PCMU.decode(PCMU.encode(speech)))
        assert endpoint.pending_digits == ""  # the terminator is consumed
    finally:
        endpoint.close()


async def test_record_stops_on_silence(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    try:
        record = asyncio.create_task(endpoint.record(max_seconds=30, silence_seconds=0.3))
        await until(lambda: endpoint.session.recording)
        p.send_audio(np.concatenate([tone(600, 0.5), np.zeros(4000, dtype=np.int16)]))
        result = await asyncio.wait_for(record, WAIT)
        assert result.reason == "silence" and result.seconds == pytest.approx(0.5)
    finally:
        endpoint.close()


# -- latching, re-INVITEs, closing ---------------------------------------------------------------


async def test_latches_to_where_the_phone_sends_from(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p, decoy = await phone(), await phone()
    endpoint, _ = await _answer(pool, p, offer=p.offer(port=decoy.port))  # a private address
    try:
        await until(lambda: len(decoy.rtp) >= 1)  # the SDP address gets media at first
        assert p.rtp == []
        p.send_audio(tone(440, 0.02))
        await until(lambda: len(p.rtp) >= 3)
        count = len(decoy.rtp)
        await until(lambda: len(p.rtp) >= 8)
        assert len(decoy.rtp) <= count + 1  # at most one in flight when it latched
    finally:
        endpoint.close()


async def test_reinvite_hold_resume_and_versions(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, first = await _answer(pool, p)
    try:
        same = endpoint.update_remote(p.offer())
        assert same == first  # nothing changed: same o= version (RFC 3264 8)
        held = SessionDescription.parse(endpoint.update_remote(p.offer(direction="sendonly")))
        assert held.origin.sess_version == 1 and held.media[0].has_attribute("recvonly")
        assert not endpoint.session.sending
        await asyncio.sleep(0.05)  # the frame in flight, if any
        count = len(p.rtp)
        await asyncio.sleep(0.1)
        assert len(p.rtp) == count  # nothing while held
        resumed = SessionDescription.parse(endpoint.update_remote(p.offer()))
        assert resumed.origin.sess_version == 2
        await until(lambda: len(p.rtp) >= count + 3)
        with pytest.raises(OfferError) as info:
            endpoint.update_remote(p.offer(codecs="9"))
        assert info.value.status == 488 and endpoint.session.sending  # unchanged
        play = asyncio.create_task(endpoint.play(tone(440, 5.0)))
        await until(lambda: endpoint.playing)
        endpoint.update_remote(p.offer(codecs="8 101"))  # PCMA now: the prompt is cut
        assert await asyncio.wait_for(play, WAIT) is None
        count = len(p.rtp)
        await until(lambda: len(p.rtp) >= count + 3)
        assert p.rtp[-1][1].payload_type == 8 and p.rtp[-1][1].payload == b"\xd5" * 160
        play = asyncio.create_task(endpoint.play(tone(440, 5.0)))
        await until(lambda: endpoint.playing)
        endpoint.stop_playing()
        assert await asyncio.wait_for(play, WAIT) is None
    finally:
        endpoint.close()


async def test_close_wakes_every_waiter_and_sends_bye(pool, phone) -> None:  # type: ignore[no-untyped-def]
    p = await phone()
    endpoint, _ = await _answer(pool, p)
    digit = asyncio.create_task(endpoint.next_digit())
    play = asyncio.create_task(endpoint.play(tone(440, 10.0)))
    record = asyncio.create_task(endpoint.record(60))
    await until(lambda: endpoint.playing and endpoint.session.recording)
    p.send_audio(tone(700, 0.2))
    await until(lambda: endpoint.session.stats.received >= 10 and len(p.rtp) >= 2)
    endpoint.close("call ended")
    endpoint.close()  # idempotent
    assert endpoint.closed
    with pytest.raises(MediaClosedError):
        await asyncio.wait_for(digit, WAIT)
    with pytest.raises(MediaClosedError):
        await asyncio.wait_for(play, WAIT)
    recording = await asyncio.wait_for(record, WAIT)
    assert recording.reason == "hangup" and recording.seconds == pytest.approx(0.2)
    for wait in (endpoint.play(tone(440, 0.1)), endpoint.next_digit(), endpoint.collect()):
        with pytest.raises(MediaClosedError):
            await wait
    await endpoint.wait_closed()
    assert pool.in_use == 0
    await until(lambda: len(p.rtcp) >= 1)
    packets = parse_rtcp(p.rtcp[-1])
    assert isinstance(packets[0], SenderReport) and packets[-1] == Bye(
        (packets[0].ssrc,), "call ended"
    )
