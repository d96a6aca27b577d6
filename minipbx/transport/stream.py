"""TCP and TLS connections: framing, CRLF keepalive, idle timeout, and the connection table.

Each connection is an ``asyncio.Protocol`` whose ``data_received`` feeds a sans-IO
:class:`~minipbx.sip.StreamFramer` (the loop calls it; no reader task per connection,
as in aioquic's asyncio glue). What to do with the framed messages is the host's
business (:class:`StreamHost`, implemented by the TransportManager).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Protocol, cast

from minipbx.sip import Keepalive, ParseError, Request, Response, StreamError, StreamFramer
from minipbx.sip.parser import MAX_HEADER_BYTES
from minipbx.transport.address import Address

Framed = Request | Response | ParseError
#: What to do instead when an outgoing connection cannot be opened: send these octets
#: over UDP to this address (RFC 3261 18.1.1 fallback of an oversized request).
Fallback = tuple[bytes, Address]

_PONG = b"\r\n"  # RFC 5626 4.4.1: a CRLF answers a double-CRLF ping


class StreamHost(Protocol):
    """What a connection reports to its owner."""

    def _stream_opened(self, conn: StreamConnection) -> bool:
        """The socket is up; False refuses it (it is then aborted)."""
        ...

    def _stream_items(self, conn: StreamConnection, items: list[Framed], size: int) -> None:
        """Messages and per-message parse errors framed from one read of ``size`` octets."""
        ...

    def _stream_error(self, conn: StreamConnection, exc: StreamError) -> None:
        """The framing was lost; the connection is aborted right after."""
        ...

    def _stream_idle(self, conn: StreamConnection) -> None:
        """No traffic for the idle timeout; the connection is closed right after."""
        ...

    def _stream_slow(self, conn: StreamConnection) -> None:
        """The peer does not read; the connection is aborted right after."""
        ...

    def _stream_closed(self, conn: StreamConnection) -> None:
        """The connection is gone (closed by either side, refused or failed)."""
        ...


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound (accepted) or outbound (opened by the PBX)."""

    def __init__(
        self,
        host: StreamHost,
        conn_id: int,
        local: Address,
        *,
        remote: Address | None = None,
        max_message: int,
        idle_timeout: float,
        max_write_buffer: int,
    ) -> None:
        self.id = conn_id
        self.kind = local.transport
        self.local = local
        #: The peer, with ``conn`` set to this connection's id (None until accepted).
        self.remote = remote
        self.outbound = remote is not None
        self._host = host
        self._loop = asyncio.get_running_loop()
        # RFC 5626 4.4.1: the side that opened the connection receives pongs.
        self._framer = StreamFramer(
            min(MAX_HEADER_BYTES, max_message), max_message, client=self.outbound
        )
        self._idle = idle_timeout
        self._max_write = max_write_buffer
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last = self._loop.time()
        #: Octets to send once connected, each with its :data:`Fallback` or None.
        self.pending: list[tuple[bytes, Fallback | None]] = []
        self.closing = False
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def __repr__(self) -> str:
        return f"<StreamConnection #{self.id} {self.remote}>"

    @property
    def has_socket(self) -> bool:
        """True once the loop handed over the socket (False while connecting)."""
        return self._transport is not None

    @property
    def connected(self) -> bool:
        """True once the socket (and TLS handshake) is up and until it closes."""
        return self._transport is not None and not self.closing

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called by the loop when the socket is up (after the TLS handshake)."""
        self._transport = cast(asyncio.Transport, transport)
        if self.remote is None:
            peer = transport.get_extra_info("peername")
            self.remote = Address(self.kind, peer[0], peer[1], self.id)
        if self.closing or not self._host._stream_opened(self):  # closed while connecting
            self.closing = True
            self._transport.abort()
            return
        self._arm()
        pending, self.pending = self.pending, []
        for data, _ in pending:
            self.write(data)

    def data_received(self, data: bytes) -> None:
        """Frame received octets; answer pings; hand messages to the host."""
        self._last = self._loop.time()
        framer = self._framer
        before = framer.buffered
        try:
            items = framer.feed(data)
        except StreamError as exc:  # RFC 3261 18.3: framing lost, the stream is unusable
            self._host._stream_error(self, exc)
            self.abort()
            return
        if not items:
            return
        size = before + len(data) - framer.buffered
        framed: list[Framed] = []
        for item in items:
            if isinstance(item, Keepalive):
                if item.ping and self._transport is not None:
                    self._transport.write(_PONG)  # RFC 5626 4.4.1
            else:
                framed.append(item)
        if framed:
            self._host._stream_items(self, framed, size)

    def eof_received(self) -> bool:
        """The peer closed its side: close ours too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Called by the loop once the socket is closed."""
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._host._stream_closed(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- used by the host ------------------------------------------------------------------

    def write(self, data: bytes, fallback: Fallback | None = None) -> bool:
        """Send octets (queued while connecting). False when the connection is closing.

        ``fallback`` is used only while connecting, should the connect fail.
        """
        transport = self._transport
        if self.closing:
            return False
        if transport is None:
            # a retransmission while connecting is redundant: TCP delivers the first copy
            if all(queued != data for queued, _ in self.pending):
                self.pending.append((data, fallback))
            return True
        transport.write(data)
        self._last = self._loop.time()
        if transport.get_write_buffer_size() > self._max_write:
            self._host._stream_slow(self)
            self.abort()
        return True

    def close(self) -> None:
        """Close gracefully (flushing what is queued; TLS close_notify)."""
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def failed(self) -> None:
        """The outgoing connect failed: mark closed (the socket never existed)."""
        self.closing = True
        if not self.closed.done():
            self.closed.set_result(None)

    # -- idle timeout ----------------------------------------------------------------------

    def _arm(self) -> None:
        # One timer per connection, re-armed lazily: traffic only moves ``_last``.
        self._timer = self._loop.call_at(self._last + self._idle, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closing:
            return
        if self._loop.time() >= self._last + self._idle:
            self._host._stream_idle(self)
            self.close()
        else:
            self._arm()


class ConnectionTable:
    """Open connections by id and by remote ``(transport, host, port)``, with limits."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.by_id: dict[int, StreamConnection] = {}
        self._by_remote: dict[tuple[str, str, int], StreamConnection] = {}
        self._per_ip: dict[str, int] = {}
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self.by_id)

    def next_id(self) -> int:
        """A fresh connection id."""
        return next(self._ids)

    def refusal(self, ip: str, inbound: bool) -> str | None:
        """Why a new connection with ``ip`` must be refused, or None to accept it."""
        if len(self.by_id) >= self._max_total:
            return "max_connections"
        if inbound and self._per_ip.get(ip, 0) >= self._max_per_ip:
            return "per_ip_limit"
        return None

    def add(self, conn: StreamConnection) -> None:
        """Register a connection whose remote address is known."""
        remote = cast(Address, conn.remote)
        self.by_id[conn.id] = conn
        self._by_remote[remote.remote] = conn
        if not conn.outbound:
            self._per_ip[remote.host] = self._per_ip.get(remote.host, 0) + 1

    def remove(self, conn: StreamConnection) -> None:
        """Forget a connection (idempotent)."""
        if self.by_id.pop(conn.id, None) is None:
            return
        remote = cast(Address, conn.remote)
        if self._by_remote.get(remote.remote) is conn:
            del self._by_remote[remote.remote]
        if not conn.outbound:
            left = self._per_ip[remote.host] - 1
            if left:
                self._per_ip[remote.host] = left
            else:
                del self._per_ip[remote.host]

    def find(self, destination: Address) -> StreamConnection | None:
        """The open connection to use for ``destination``, or None.

        Its own connection when ``destination.conn`` names a live one; else any open
        connection of that transport to the same host and port (connection reuse,
        RFC 3261 18.1.1 / 18.2.2; RFC 5626 flows to registered contacts).
        """
        if destination.conn is not None:
            conn = self.by_id.get(destination.conn)
            if conn is not None and not conn.closing and conn.kind == destination.transport:
                return conn
        conn = self._by_remote.get(destination.remote)
        return conn if conn is not None and not conn.closing else None

    def from_ip(self, ip: str) -> list[StreamConnection]:
        """Every connection with peer ``ip``."""
        return [c for c in self.by_id.values() if c.remote is not None and c.remote.host == ip]
