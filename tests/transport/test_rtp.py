"""The RTP relay's asyncio glue on real UDP sockets (127.0.0.1): port pool, relaying, latching.

Pools take ranges below the kernel's ephemeral ports (which start at 32768), checked free
first, so the kernel never hands one of them to another test meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from minipbx.media.g711 import PCMA, PCMU
from minipbx.media.player import tone
from minipbx.media.relay import Injection, MediaError, rtp_payload
from minipbx.transport.rtp import RelayManager, RelaySession, RtpPortPool

HOST = "127.0.0.1"
WAIT = 1.0  # seconds: an upper bound for what happens at once on loopback
QUIET = 0.05  # seconds to wait to be sure a packet does not arrive


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_range(pairs: int) -> tuple[int, int]:
    """``low, high`` of ``pairs`` free RTP/RTCP pairs between 20000 and 30000."""
    for _ in range(200):
        low = random.randrange(20000, 30000 - 2 * pairs, 2)
        high = low + 2 * pairs - 1
        if all(_free(port) for port in range(low, high + 1)):
            return low, high
    raise RuntimeError("no free port range found")


def rtp(seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    """A PCMU RTP packet (RFC 3550 5.1)."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


class Phone(asyncio.DatagramProtocol):
    """A UDP socket playing one party's RTP or RTCP port."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.put_nowait((data, (addr[0], addr[1])))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def next(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.received.get(), WAIT)

    async def nothing(self) -> bool:
        """True when nothing arrives within QUIET seconds."""
        await asyncio.sleep(QUIET)
        return self.received.empty()


PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def phone() -> AsyncIterator[PhoneFactory]:
    made: list[Phone] = []

    async def factory(port: int = 0) -> Phone:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(Phone, local_addr=(HOST, port))
        made.append(protocol)
        return protocol

    yield factory
    for p in made:
        if p.transport is not None:
            p.transport.close()
    await asyncio.sleep(0)


@pytest.fixture
async def manager() -> AsyncIterator[RelayManager]:
    low, high = free_range(8)
    relays = RelayManager(RtpPortPool(HOST, low, high))
    yield relays
    relays.close_all()
    await relays.wait_closed()


async def call(manager: RelayManager, phone: PhoneFactory) -> tuple[RelaySession, Phone, Phone]:
    """A relayed call between two phones whose SDP tells their real addresses."""
    session = manager.open("call-1")
    await session.ready()
    a, b = await phone(), await phone()
    session.expect("a", HOST, a.port)
    session.expect("b", HOST, b.port)
    return session, a, b


# -- the pool ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (10001, 10100, "even port"),
        (10000, 10000, "empty"),
        (10100, 10000, "empty"),
        (1000, 2000, "1024..65535"),
        (10000, 65536, "1024..65535"),
    ],
)
def test_pool_rejects_bad_ranges(low: int, high: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpPortPool(HOST, low, high)


def test_pool_rejects_a_name_for_an_address() -> None:
    with pytest.raises(ValueError, match="must be an IP address"):
        RtpPortPool("localhost", 10000, 10099)


@pytest.mark.parametrize(("high", "pairs"), [(10099, 50), (10100, 50), (10001, 1)])
def test_pool_capacity(high: int, pairs: int) -> None:
    assert RtpPortPool(HOST, 10000, high).capacity == pairs


def test_pool_binds_even_rtp_and_next_rtcp_port() -> None:
    low, high = free_range(2)
    pool = RtpPortPool(HOST, low, high)
    pair = pool.allocate()
    try:
        assert pair.port == low
        assert pair.rtp.getsockname() == (HOST, low)
        assert pair.rtcp.getsockname() == (HOST, low + 1)
        assert pool.in_use == 1
    finally:
        pair.close()


def test_pool_exhaustion_release_and_reuse() -> None:
    low, high = free_range(2)
    pool = RtpPortPool(HOST, low, high)
    first, second = pool.allocate(), pool.allocate()
    assert {first.port, second.port} == {low, low + 2}
    with pytest.raises(MediaError, match=f"no free RTP port pair in {low}-{high} on {HOST}"):
        pool.allocate()
    first.close()
    pool.release(first.port)
    again = pool.allocate()
    assert again.port == first.port
    again.close()
    second.close()


def test_pool_skips_ports_other_programs_hold() -> None:
    low, high = free_range(3)
    squatters = []
    for port in (low, low + 3):  # an RTP port, and the RTCP port of the second pair
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, port))
        squatters.append(sock)
    pool = RtpPortPool(HOST, low, high)
    try:
        pair = pool.allocate()
        assert pair.port == low + 4
        with pytest.raises(MediaError, match="1 pairs used by relayed calls, 2 taken by other"):
            pool.allocate()
        pair.close()
    finally:
        for sock in squatters:
            sock.close()


def test_pool_on_an_address_not_of_this_host() -> None:
    pool = RtpPortPool("192.0.2.1", 20000, 20099)  # TEST-NET-1: never local
    with pytest.raises(MediaError, match=re.escape("cannot bind RTP port 192.0.2.1:20000")):
        pool.allocate()


# -- relaying ---------------------------------------------------------------------------------


async def test_relays_rtp_both_ways_from_the_facing_ports(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session, a, b = await call(manager, phone)
    assert session.port("a") != session.port("b")
    a.send(rtp(1), session.port("a"))
    assert await b.next() == (rtp(1), (HOST, session.port("b")))  # symmetric: from b's port
    b.send(rtp(7), session.port("b"))
    assert await a.next() == (rtp(7), (HOST, session.port("a")))
    stats = session.stats()
    assert (stats.a_to_b.rtp_packets, stats.a_to_b.rtp_bytes) == (1, 172)
    assert (stats.b_to_a.rtp_packets, stats.b_to_a.rtp_bytes) == (1, 172)
    assert stats.dropped == 0


async def test_relays_rtcp_between_the_rtcp_ports(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session = manager.open("call-1")
    a_rtp, b_rtp = await phone(), await phone()
    a_rtcp, b_rtcp = await phone(), await phone()
    session.expect("a", HOST, a_rtp.port, rtcp_port=a_rtcp.port)  # RFC 3605 a=rtcp
    session.expect("b", HOST, b_rtp.port, rtcp_port=b_rtcp.port)
    report = b"\x80\xc8\x00\x06" + b"\x00" * 24  # an RTCP sender report header
    a_rtcp.send(report, session.rtcp_port("a"))
    assert await b_rtcp.next() == (report, (HOST, session.rtcp_port("b")))
    b_rtcp.send(report, session.rtcp_port("b"))
    assert await a_rtcp.next() == (report, (HOST, session.rtcp_port("a")))
    assert session.rtcp_port("a") == session.port("a") + 1
    assert await a_rtp.nothing() and await b_rtp.nothing()
    stats = session.stats()
    assert (stats.a_to_b.rtcp_packets, stats.b_to_a.rtcp_packets) == (1, 1)
    assert (stats.a_to_b.rtp_packets, stats.b_to_a.rtp_packets) == (0, 0)


async def test_rtcp_defaults_to_the_port_after_rtp(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session = manager.open("call-1")
    low, _ = free_range(1)
    a_rtp, a_rtcp = await phone(low), await phone(low + 1)
    b_rtcp = await phone()
    session.expect("a", HOST, a_rtp.port)
    session.expect("b", HOST, 9, rtcp_port=b_rtcp.port)
    b_rtcp.send(b"\x80\xc9\x00\x01\x00\x00\x00\x01", session.rtcp_port("b"))
    assert (await a_rtcp.next())[1] == (HOST, session.rtcp_port("a"))


async def test_latches_to_where_a_natted_party_sends_from(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    """Party A's SDP names its private address; its packets come from elsewhere (its NAT).
    B's packets go to the SDP address until A's first packet, then to A's real source."""
    session = manager.open("call-1")
    sdp_target, a, b = await phone(), await phone(), await phone()
    session.expect("a", HOST, sdp_target.port)  # as if 192.168.x in the SDP
    session.expect("b", HOST, b.port)
    b.send(rtp(1), session.port("b"))
    assert (await sdp_target.next())[0] == rtp(1)
    a.send(rtp(100), session.port("a"))
    assert (await b.next())[0] == rtp(100)
    b.send(rtp(2), session.port("b"))
    assert (await a.next())[0] == rtp(2)
    assert await sdp_target.nothing()
    assert session.peer("a").latched == a.address


async def test_hostile_third_source_is_dropped(manager: RelayManager, phone: PhoneFactory) -> None:
    """RTP injection / bleed: a stranger sending to latched relay ports reaches nobody and
    hears nothing."""
    session, a, b = await call(manager, phone)
    attacker = await phone()
    a.send(rtp(1), session.port("a"))
    await b.next()
    b.send(rtp(2), session.port("b"))
    await a.next()
    for seq in range(5):
        attacker.send(rtp(seq, b"evil" * 40), session.port("a"))
        attacker.send(rtp(seq, b"evil" * 40), session.port("b"))
    b.send(rtp(3), session.port("b"))
    assert (await a.next())[0] == rtp(3)
    assert await a.nothing() and await b.nothing() and await attacker.nothing()
    stats = session.stats()
    assert stats.dropped == 10
    assert (stats.a_to_b.rtp_packets, stats.b_to_a.rtp_packets) == (1, 2)


async def test_party_takes_the_latch_back_from_a_faster_stranger(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    """The stranger's packet came first after the SDP (it latched, as a NAT's would); the
    party sending from its SDP address takes over at once and the stranger is shut out."""
    session, a, b = await call(manager, phone)
    attacker = await phone()
    attacker.send(rtp(66), session.port("b"))
    assert (await a.next())[0] == rtp(66)  # indistinguishable from B behind a NAT
    b.send(rtp(1), session.port("b"))
    assert (await a.next())[0] == rtp(1)
    attacker.send(rtp(67), session.port("b"))
    a.send(rtp(2), session.port("a"))
    assert await b.next() == (rtp(2), (HOST, session.port("b")))
    assert await attacker.nothing() and await a.nothing()
    assert session.peer("b").latched == b.address
    assert session.stats().relatches == 1


async def test_packets_with_nowhere_to_go_are_counted(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session = manager.open("call-1")
    a = await phone()
    session.expect("a", HOST, a.port)
    a.send(rtp(1), session.port("a"))  # B's SDP is not known yet
    a.send(rtp(2), session.port("a"))
    await _until(lambda: session.stats().a_to_b.unroutable == 2)
    assert session.stats().a_to_b.packets == 0


async def test_packets_sent_before_the_loop_attached_are_relayed(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    """open() is synchronous: the ports are bound, early packets wait in the kernel."""
    a, b = await phone(), await phone()
    session = manager.open("call-1")
    session.expect("a", HOST, a.port)
    session.expect("b", HOST, b.port)
    a.send(rtp(1), session.port("a"))  # no await between open() and this
    assert (await b.next())[0] == rtp(1)


async def test_expect_checks_the_side(manager: RelayManager) -> None:
    session = manager.open("call-1")
    with pytest.raises(ValueError, match="side must be 'a' or 'b'"):
        session.expect("c", HOST, 4000)  # type: ignore[arg-type]


# -- the manager ------------------------------------------------------------------------------


async def test_manager_open_get_close(manager: RelayManager) -> None:
    assert manager.address == HOST
    first = manager.open("call-1")
    assert manager.get("call-1") is first and manager.count == 1
    with pytest.raises(ValueError, match="'call-1' is open already"):
        manager.open("call-1")
    manager.close("call-1")
    manager.close("call-1")  # idempotent
    manager.close("unknown")
    assert manager.get("call-1") is None and manager.count == 0
    assert first.closed
    first.close()  # idempotent too


async def test_closed_session_relays_nothing_and_frees_its_ports(phone: PhoneFactory) -> None:
    low, high = free_range(2)
    relays = RelayManager(RtpPortPool(HOST, low, high))
    session = relays.open("call-1")
    with pytest.raises(MediaError, match="no free RTP port pair"):
        relays.open("call-2")  # one session takes both pairs
    await session.ready()
    a, b = await phone(), await phone()
    session.expect("a", HOST, a.port)
    session.expect("b", HOST, b.port)
    ports = (session.port("a"), session.port("b"))
    relays.close("call-1")
    await session.wait_closed()
    a.send(rtp(1), ports[0])
    assert await b.nothing()
    again = relays.open("call-2")
    assert {again.port("a"), again.port("b")} == set(ports)
    relays.close_all()
    await relays.wait_closed()
    assert relays.count == 0 and relays.pool.in_use == 0


async def test_session_closed_before_its_sockets_attached() -> None:
    low, high = free_range(2)
    relays = RelayManager(RtpPortPool(HOST, low, high))
    session = relays.open("call-1")
    relays.close("call-1")  # before the attach task ran
    await session.wait_closed()
    assert all(_free(port) for port in range(low, high + 1))


async def test_idle_sessions_are_reported(manager: RelayManager, phone: PhoneFactory) -> None:
    loop = asyncio.get_running_loop()
    silent = manager.open("silent")
    session = manager.open("talking")
    a, b = await phone(), await phone()
    session.expect("a", HOST, a.port)
    session.expect("b", HOST, b.port)
    a.send(rtp(1), session.port("a"))
    await b.next()
    sent_at = session.last_activity
    assert sent_at is not None and sent_at <= loop.time()
    assert manager.idle(sent_at + 59.9) == []
    assert manager.idle(sent_at + 60.01) == ["talking"]  # "silent" never started
    assert silent.last_activity is None


async def test_manager_needs_an_address_for_a_wildcard_pool() -> None:
    pool = RtpPortPool("0.0.0.0", 20000, 20099)
    with pytest.raises(ValueError, match="relay address needed"):
        RelayManager(pool)
    assert RelayManager(pool, "198.18.0.1").address == "198.18.0.1"


# -- injected audio (the warning before a prepaid call is cut) ------------------------------


def rtp_pt(seq: int, pt: int, payload: bytes, *, marker: bool = False) -> bytes:
    """An RTP packet of payload type ``pt`` (SSRC 0x1234, timestamp 160 per packet)."""
    return (
        struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, seq * 160, 0x1234) + payload
    )


BEEP = tone(440, 0.05, -15)  # 400 samples: two full 20 ms frames and half of a third


async def test_injected_audio_replaces_the_payloads_sent_to_one_side(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session, a, b = await call(manager, phone)
    session.inject("a", BEEP)
    sent = [rtp_pt(n, 0, bytes([n]) * 160, marker=n == 1) for n in range(1, 5)]
    for n, packet in enumerate(sent, 1):
        b.send(packet, session.port("b"))
        a.send(rtp(n), session.port("a"))
        assert (await b.next())[0] == rtp(n)  # the other way is untouched
    heard = [(await a.next())[0] for _ in sent]
    for original, packet in zip(sent, heard, strict=True):
        assert len(packet) == len(original) and packet[:12] == original[:12]  # RFC 3550 header
    expected = PCMU.decode(PCMU.encode(BEEP))
    assert (PCMU.decode(heard[0][12:]) == expected[:160]).all()
    assert (PCMU.decode(heard[1][12:]) == expected[160:320]).all()
    assert (PCMU.decode(heard[2][12:92]) == expected[320:]).all()
    assert heard[2][92:] == bytes([PCMU.silence]) * 80  # the last frame completed with silence
    assert heard[3] == sent[3]  # done: relayed as is again
    stats = session.stats()
    assert (stats.b_to_a.rtp_packets, stats.b_to_a.rtp_bytes) == (4, 4 * 172)


async def test_injection_follows_each_packets_law_and_skips_other_payload_types(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session, a, b = await call(manager, phone)
    session.inject("b", BEEP[:240].tobytes())  # little-endian 16-bit bytes work too
    event = rtp_pt(1, 101, b"\x05\x0a\x00\xa0")  # RFC 4733 telephone-event: untouched
    pcma = rtp_pt(2, 8, b"\xd5" * 160)
    short = rtp_pt(3, 0, b"\xff" * 80)  # 10 ms packet: 80 samples
    for packet in (event, pcma, short):
        a.send(packet, session.port("a"))
    heard = [(await b.next())[0] for _ in range(3)]
    assert heard[0] == event
    assert heard[1][:12] == pcma[:12] and len(heard[1]) == len(pcma)
    assert (PCMA.decode(heard[1][12:]) == PCMA.decode(PCMA.encode(BEEP[:160]))).all()
    assert heard[2][:12] == short[:12] and len(heard[2]) == len(short)
    assert (PCMU.decode(heard[2][12:]) == PCMU.decode(PCMU.encode(BEEP[160:240]))).all()
    a.send(pcma, session.port("a"))
    assert (await b.next())[0] == pcma  # all 240 samples sent


async def test_injection_keeps_csrc_extension_and_padding(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session, a, b = await call(manager, phone)
    session.inject("a", BEEP[:160])
    # V=2 P=1 X=1 CC=1, CSRC, a one-word extension, 160 payload bytes, 4 bytes of padding
    header = struct.pack("!BBHII", 0xB1, 0, 9, 1440, 0x1234) + b"CSRC"
    extension = b"\xbe\xde\x00\x01" + b"EXT!"
    packet = header + extension + b"\xff" * 160 + b"\x00\x00\x00\x04"
    assert rtp_payload(packet) == (24, 184)
    b.send(packet, session.port("b"))
    heard = (await a.next())[0]
    assert heard[:24] == packet[:24] and heard[184:] == packet[184:]
    assert heard[24:184] == PCMU.encode(BEEP[:160])


async def test_inject_checks_the_side_and_ignores_a_closed_session(
    manager: RelayManager, phone: PhoneFactory
) -> None:
    session, a, b = await call(manager, phone)
    with pytest.raises(ValueError, match="'a' or 'b'"):
        session.inject("c", BEEP)  # type: ignore[arg-type]
    session.inject("a", BEEP[:0])  # nothing to play: the hot path stays clear
    b.send(rtp(1), session.port("b"))
    assert (await a.next())[0] == rtp(1)
    session.close()
    session.inject("a", BEEP)


def test_injection_gives_up_when_no_packet_comes_in_time() -> None:
    injection = Injection(BEEP, now=100.0, grace=1.0)  # 0.05 s of audio: until 101.05
    assert rtp_payload(b"\x80") is None and rtp_payload(rtp(1)[:11]) is None
    assert injection.apply(b"\x00" * 20, 100.0) == b"\x00" * 20  # not RTP: skipped
    assert injection.skipped == 1 and not injection.done
    assert injection.apply(rtp(1), 101.1) == rtp(1)
    assert injection.done and injection.packets == 0
    injection.extend(BEEP, 102.0)
    assert injection.remaining == 400 and injection.expires == pytest.approx(103.05)
    assert injection.apply(rtp(2), 102.0) != rtp(2) and injection.remaining == 240


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.001)


def test_relays_under_uvloop() -> None:
    """The app runs on uvloop: same relay, latching and drop there."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[bytes, bytes, int]:
        loop = asyncio.get_running_loop()
        low, high = free_range(2)
        relays = RelayManager(RtpPortPool(HOST, low, high))
        session = relays.open("call-1")
        phones = [
            (await loop.create_datagram_endpoint(Phone, local_addr=(HOST, 0)))[1] for _ in range(3)
        ]
        a, b, attacker = phones
        try:
            session.expect("a", HOST, 9)  # a NATed A: its packets come from elsewhere
            session.expect("b", HOST, b.port)
            a.send(rtp(1), session.port("a"))
            heard_b = (await b.next())[0]
            attacker.send(rtp(66), session.port("a"))
            b.send(rtp(2), session.port("b"))
            heard_a = (await a.next())[0]
            assert await b.nothing()
            return heard_b, heard_a, session.stats().dropped
        finally:
            relays.close_all()
            await relays.wait_closed()
            for p in phones:
                assert p.transport is not None
                p.transport.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == (rtp(1), rtp(2), 1)
