"""The asyncio half of the media relay: RTP/RTCP port pairs, relay sessions, their manager.

- :class:`RtpPortPool` hands out pairs of bound UDP sockets from a port range: RTP on an
  even port, RTCP on the next (odd) one (RFC 3550 11). Ports in use by anyone are skipped;
  the pool goes round the range, so a port just released is the last to be reused (late
  packets of an ended call do not land in the next one).
- :class:`RelaySession` relays one call: side ``a`` faces party A, side ``b`` party B, each
  with an RTP and an RTCP socket. A packet that side a's :class:`LatchingPeer` accepts goes
  out of side b's socket of the same kind, to where party B's packets come from (symmetric
  RTP, RFC 4961), and the other way round.
- :meth:`RelaySession.inject` queues audio of the PBX's own (8 kHz PCM) to replace the
  payload of the next G.711 packets relayed to one party
  (:class:`~minipbx.media.relay.Injection`: headers and sizes unchanged); with nothing
  queued the per-packet cost is one attribute check.
- :class:`RelayManager` keeps the sessions of the running calls by key (e.g. the Call-ID)
  and says which went idle.

Opening is synchronous: the ports are bound at once (packets that arrive before the asyncio
transports are attached wait in the kernel), so a sans-IO caller can put them in the SDP
it is building. The deciding logic is sans-IO in :mod:`minipbx.media.relay`; the per-packet
path here is :meth:`_Endpoint.datagram_received`, kept to one ``accept`` call, one lookup of
the destination and one ``sendto``.

Times are the event loop's monotonic clock (``loop.time()``): pass the same to
:meth:`RelayManager.idle`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from minipbx.media.g711 import Pcm
from minipbx.media.relay import (
    RELATCH_AFTER,
    Injection,
    LatchingPeer,
    MediaError,
    RelayStats,
    direction_stats,
    last_activity,
)

__all__ = ["MediaError", "PortPair", "RelayManager", "RelaySession", "RtpPortPool", "Side"]

log = logging.getLogger("minipbx.media")

Side = Literal["a", "b"]
SIDES: tuple[Side, Side] = ("a", "b")
IDLE_TIMEOUT = 60.0
"""Seconds without a packet either way after which a session is reported idle."""
_MIN_PORT = 1024


@dataclass(frozen=True, slots=True)
class PortPair:
    """Two bound, non-blocking UDP sockets: RTP on ``port`` (even), RTCP on ``port + 1``."""

    port: int
    rtp: socket.socket
    rtcp: socket.socket

    def close(self) -> None:
        """Close both sockets (only while no transport owns them)."""
        self.rtp.close()
        self.rtcp.close()


class RtpPortPool:
    """RTP/RTCP port pairs on ``bind_ip`` between ``low`` and ``high`` (both included).

    ``low`` must be even (RTP takes even ports, RFC 3550 11); the last pair is the highest
    even port whose successor is still ``<= high``, so ``10000..20000`` gives 5000 pairs.
    Raises ``ValueError`` for a range or address that cannot work.
    """

    def __init__(self, bind_ip: str, low: int, high: int) -> None:
        try:
            family = ipaddress.ip_address(bind_ip).version
        except ValueError:
            raise ValueError(f"RTP bind address must be an IP address, not {bind_ip!r}") from None
        for name, value in (("low", low), ("high", high)):
            if not _MIN_PORT <= value <= 65535:
                raise ValueError(f"RTP port {name} must be {_MIN_PORT}..65535, not {value}")
        if low % 2:
            raise ValueError(f"RTP port range must start on an even port (RFC 3550 11), not {low}")
        if low >= high:
            raise ValueError(f"RTP port range {low}-{high} is empty: low must be below high")
        self.bind_ip = bind_ip
        self.low = low
        self.high = high
        self._family = socket.AF_INET6 if family == 6 else socket.AF_INET
        self._last = high if high % 2 else high - 1  # the highest RTCP port (odd)
        self._capacity = (self._last - low + 1) // 2
        self._used: set[int] = set()
        self._next = low

    @property
    def capacity(self) -> int:
        """How many pairs the range holds."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """How many pairs are allocated now."""
        return len(self._used)

    def allocate(self) -> PortPair:
        """Bind the next free pair; ``MediaError`` when none is left (or the address is not
        usable). Ports bound by other processes are skipped."""
        busy = 0
        for _ in range(self._capacity):
            port = self._next
            self._next = port + 2 if port + 3 <= self._last else self.low
            if port in self._used:
                continue
            pair = self._bind_pair(port)
            if pair is None:
                busy += 1
                continue
            self._used.add(port)
            return pair
        raise MediaError(
            f"no free RTP port pair in {self.low}-{self.high} on {self.bind_ip}:"
            f" {len(self._used)} pairs used by relayed calls, {busy} taken by other programs"
        )

    def release(self, port: int) -> None:
        """The pair at ``port`` may be handed out again (its sockets are being closed)."""
        self._used.discard(port)

    def _bind_pair(self, port: int) -> PortPair | None:
        rtp = self._bind(port)
        if rtp is None:
            return None
        rtcp = self._bind(port + 1)
        if rtcp is None:
            rtp.close()
            return None
        return PortPair(port, rtp, rtcp)

    def _bind(self, port: int) -> socket.socket | None:
        """A socket bound to ``port``; None when the port is taken. No SO_REUSEADDR: on
        Linux it would let two relays share a port silently."""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            if self._family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.bind_ip, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return None
            raise MediaError(
                f"cannot bind RTP port {self.bind_ip}:{port}: {exc.strerror or exc}"
            ) from None
        return sock


class _Endpoint(asyncio.DatagramProtocol):
    """One relay socket: takes its party's packets, sends them out of its twin's socket.

    Sending goes straight to the twin's socket (a non-blocking ``sendto``) rather than
    through the twin's transport: it works before the twin's transport is attached, and a
    datagram that cannot be sent at once is dropped, which is what a relay should do with
    late real-time media anyway (no queue builds up behind a slow party).
    """

    __slots__ = (
        "_clock",
        "_session",
        "injection",
        "lost",
        "out",
        "peer",
        "send_errors",
        "target",
        "transport",
    )

    def __init__(
        self,
        session: RelaySession,
        peer: LatchingPeer,
        target: LatchingPeer,
        out: socket.socket,
        clock: Callable[[], float],
    ) -> None:
        self._session = session
        self._clock = clock
        self.peer = peer
        """The party this socket faces."""
        self.target = target
        """The other party, of the same kind (RTP or RTCP)."""
        self.out = out
        """The other side's socket of the same kind: what the other party hears us from."""
        self.send_errors = 0
        self.injection: Injection | None = None
        """Audio replacing the payload of the packets sent out (None: relay them as is)."""
        self.transport: asyncio.DatagramTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The loop attached the socket."""
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self._session.closed:
            transport.close()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """The hot path: accept from the party, forward to the other one."""
        if self.peer.accept(addr, self._clock(), len(data)):
            target = self.target
            destination = target.latched or target.expected
            if destination is None:
                self.peer.no_route(len(data))
                return
            if self.injection is not None:
                data = self._inject(data)
            try:
                self.out.sendto(data, destination)
            except OSError as exc:  # buffer full (dropped), unreachable, closed
                self._send_failed(destination, exc)

    def inject(self, pcm: Pcm | bytes) -> None:
        """Replace the payload of the next packets sent out with ``pcm``."""
        now = self._clock()
        if self.injection is None:
            self.injection = Injection(pcm, now)
        else:
            self.injection.extend(pcm, now)

    def _inject(self, data: bytes) -> bytes:
        injection = self.injection
        assert injection is not None
        data = injection.apply(data, self._clock())
        if injection.done:
            self.injection = None
            log.debug(
                "event=relay_injected peer=%s packets=%d skipped=%d",
                self.target.name,
                injection.packets,
                injection.skipped,
            )
        return data

    def _send_failed(self, destination: tuple[Any, ...], exc: OSError) -> None:
        self.send_errors += 1
        if self.send_errors == 1 or self.send_errors % 1000 == 0:
            log.debug(
                "event=rtp_send_failed peer=%s dst=%s:%s errors=%d reason=%r",
                self.target.name,
                destination[0],
                destination[1],
                self.send_errors,
                exc.strerror or str(exc),
            )

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for what we sent (a party gone away): not ours to act on."""
        log.debug("event=rtp_socket_error peer=%s reason=%r", self.peer.name, str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed."""
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class RelaySession:
    """The relay of one call: two sides ``a`` and ``b``, each an RTP and an RTCP socket.

    Made by :meth:`RelayManager.open`; ``MediaError`` when the pool has no two free pairs.
    """

    def __init__(
        self,
        key: str,
        pool: RtpPortPool,
        *,
        relatch_after: float = RELATCH_AFTER,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.closed = False
        self._pool = pool
        first = pool.allocate()
        try:
            second = pool.allocate()
        except MediaError:
            pool.release(first.port)
            first.close()
            raise
        self._pairs: dict[Side, PortPair] = {"a": first, "b": second}
        self._peers = {
            (side, kind): LatchingPeer(relatch_after, name=f"{key}/{side}/{kind}")
            for side in SIDES
            for kind in ("rtp", "rtcp")
        }
        clock = loop.time
        self._endpoints: dict[tuple[Side, str], _Endpoint] = {}
        facing: tuple[tuple[Side, PortPair], ...] = (("a", second), ("b", first))
        for side, other in facing:
            for kind, out in (("rtp", other.rtp), ("rtcp", other.rtcp)):
                peer, target = self._peers[side, kind], self._peers[_other(side), kind]
                self._endpoints[side, kind] = _Endpoint(self, peer, target, out, clock)
        self._attached = loop.create_task(self._attach(loop), name=f"relay-{key}")
        log.debug("event=relay_opened key=%s port_a=%d port_b=%d", key, first.port, second.port)

    async def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the bound sockets to the loop (a socket of a session closed meanwhile is
        just closed)."""
        for (side, kind), endpoint in self._endpoints.items():
            pair = self._pairs[side]
            sock = pair.rtp if kind == "rtp" else pair.rtcp
            if self.closed:
                sock.close()
                endpoint.connection_lost(None)
                continue
            try:
                await loop.create_datagram_endpoint(lambda e=endpoint: e, sock=sock)  # type: ignore[misc]
            except OSError as exc:  # not expected for a bound socket; never leak it
                log.error("event=relay_attach_failed key=%s reason=%r", self.key, str(exc))
                sock.close()
                endpoint.connection_lost(None)

    async def ready(self) -> None:
        """Wait until every socket is attached to the loop (packets are relayed from then on;
        earlier ones wait in the kernel)."""
        await asyncio.shield(self._attached)

    def port(self, side: Side) -> int:
        """The RTP port to put in the SDP sent to ``side``'s party (RTCP: the next port)."""
        return self._pair(side).port

    def rtcp_port(self, side: Side) -> int:
        """The RTCP port facing ``side``'s party (RFC 3605 ``a=rtcp``)."""
        return self._pair(side).port + 1

    def expect(self, side: Side, ip: str, port: int, rtcp_port: int | None = None) -> None:
        """``side``'s party announced ``ip:port`` in its SDP (RFC 4566 ``c=``/``m=``): send
        there until its packets latch, and re-arm latching. RTCP is expected on
        ``rtcp_port`` (RFC 3605 ``a=rtcp``) or else on ``port + 1`` (RFC 3550 11)."""
        self._pair(side)
        self._peers[side, "rtp"].expect(ip, port)
        self._peers[side, "rtcp"].expect(ip, port + 1 if rtcp_port is None else rtcp_port)

    def inject(self, side: Side, pcm: Pcm | bytes) -> None:
        """Play ``pcm`` (8 kHz, 16-bit: an int16 array or little-endian bytes) to ``side``'s
        party: it replaces, frame by frame, the payload of the next G.711 RTP packets
        relayed to that party (PCMU/PCMA by each packet's payload type; header, SSRC,
        sequence number, timestamp and size kept, RFC 3550). Packets of other payload types
        pass untouched; audio not sent within its length plus a second is dropped. Queued
        after anything still pending."""
        self._pair(side)
        if self.closed or not len(pcm):
            return
        self._endpoints[_other(side), "rtp"].inject(pcm)

    def peer(self, side: Side, kind: Literal["rtp", "rtcp"] = "rtp") -> LatchingPeer:
        """The latching state of ``side``'s party for ``kind`` packets (read it, don't
        feed it)."""
        self._pair(side)
        return self._peers[side, kind]

    def stats(self) -> RelayStats:
        """Packets and bytes relayed each way, packets dropped, latch moves."""
        peers = self._peers
        return RelayStats(
            a_to_b=direction_stats(peers["a", "rtp"], peers["a", "rtcp"]),
            b_to_a=direction_stats(peers["b", "rtp"], peers["b", "rtcp"]),
            dropped=sum(p.dropped for p in peers.values()),
            relatches=sum(p.relatches for p in peers.values()),
        )

    @property
    def last_activity(self) -> float | None:
        """When a packet was last accepted from either party (loop time; None: never)."""
        return last_activity(tuple(self._peers.values()))

    def idle(self, now: float, timeout: float = IDLE_TIMEOUT) -> bool:
        """True when packets flowed once but none for ``timeout`` seconds up to ``now``."""
        last = self.last_activity
        return last is not None and now - last >= timeout

    def close(self) -> None:
        """Stop relaying and give the ports back (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for endpoint in self._endpoints.values():
            if endpoint.transport is not None:
                endpoint.transport.close()
        for pair in self._pairs.values():
            self._pool.release(pair.port)
        stats = self.stats()
        log.info(
            "event=relay_closed key=%s a_to_b=%d b_to_a=%d dropped=%d unroutable=%d relatches=%d",
            self.key,
            stats.a_to_b.packets,
            stats.b_to_a.packets,
            stats.dropped,
            stats.a_to_b.unroutable + stats.b_to_a.unroutable,
            stats.relatches,
        )

    async def wait_closed(self) -> None:
        """After :meth:`close`: wait until the sockets are really closed (ports free)."""
        await asyncio.shield(self._attached)
        for endpoint in self._endpoints.values():
            await endpoint.lost

    def _pair(self, side: Side) -> PortPair:
        try:
            return self._pairs[side]
        except KeyError:
            raise ValueError(f"relay side must be 'a' or 'b', not {side!r}") from None


def _other(side: Side) -> Side:
    return "b" if side == "a" else "a"


class RelayManager:
    """The relay sessions of the running calls, by key.

    ``address`` is the IP to put in SDP (``c=``) for the relay: the pool's bind address
    unless given (it must be given when the pool binds a wildcard address, or when the
    PBX is behind NAT itself and announces its public address).
    """

    def __init__(
        self,
        pool: RtpPortPool,
        address: str | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        relatch_after: float = RELATCH_AFTER,
    ) -> None:
        if address is None:
            if ipaddress.ip_address(pool.bind_ip).is_unspecified:
                raise ValueError(
                    f"relay address needed: the RTP pool binds {pool.bind_ip}, which a party"
                    " cannot send to"
                )
            address = pool.bind_ip
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, not {idle_timeout}")
        self.pool = pool
        self.address = address
        self.idle_timeout = idle_timeout
        self.relatch_after = relatch_after
        self._sessions: dict[str, RelaySession] = {}
        self._closing: list[RelaySession] = []

    @property
    def count(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    def open(self, key: str) -> RelaySession:
        """A new session for ``key`` (``MediaError``: no free ports; ``ValueError``: the key
        has one already). Call from the event loop's thread."""
        if key in self._sessions:
            raise ValueError(f"relay session {key!r} is open already")
        session = RelaySession(key, self.pool, relatch_after=self.relatch_after)
        self._sessions[key] = session
        return session

    def get(self, key: str) -> RelaySession | None:
        """The open session of ``key``, if any."""
        return self._sessions.get(key)

    def close(self, key: str) -> None:
        """Close the session of ``key`` (nothing if there is none)."""
        session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        """Close every session (shutdown); :meth:`wait_closed` waits for their sockets."""
        self._closing = list(self._sessions.values())
        for key in list(self._sessions):
            self.close(key)

    async def wait_closed(self) -> None:
        """After :meth:`close_all`: wait until the sockets of those sessions are closed."""
        closing, self._closing = self._closing, []
        for session in closing:
            await session.wait_closed()

    def idle(self, now: float) -> list[str]:
        """Keys of sessions that relayed packets once but none for ``idle_timeout`` seconds
        (``now``: the loop's clock). The caller decides what to do (hang the call up)."""
        timeout = self.idle_timeout
        return [key for key, s in self._sessions.items() if s.idle(now, timeout)]

    def sessions(self) -> list[RelaySession]:
        """The open sessions (a copy)."""
        return list(self._sessions.values())
