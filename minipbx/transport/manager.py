"""The TransportManager: every SIP socket of the process, and the rules for using them.

Thin asyncio glue in the style of aioquic's ``asyncio/protocol.py``: sockets in, parsed
messages up to one ``on_message`` callback, octets out. Decisions worth knowing:

- Inbound requests are stamped (``received``/``rport``, RFC 3261 18.2.1, RFC 3581 4)
  before they are handed up; ``Inbound.reply_to`` says where responses go.
- ``send`` never blocks and never raises for network trouble: failures (no socket for
  that family, connect refused or timed out, connection limit) are counted, logged and
  reported to ``on_send_error(destination, exc)``, where the PBX can fail the
  transaction (RFC 3261 17.1.4) or answer 430/480.
- A request to a TCP/TLS address reuses an open connection to the same host and port
  (by connection id first); otherwise a connection is opened. A response whose
  connection is gone goes over a new one to received/sent-by (RFC 3261 18.2.2).
- RFC 3261 18.1.1 (requests over 1300 octets must use TCP): only when the caller passes
  ``allow_tcp_fallback=True`` and a TCP listener exists, the request goes over TCP to the
  same host and port with its top Via changed to TCP; should the connect fail, it goes
  over UDP after all, and so do oversized requests to that host and port for 60 s.
  The caller knows whether the target takes TCP (not a NATed UDP phone, no
  ``transport=udp`` in its URI); it is off by default because a NAT usually drops the
  SYN, so the request waits ``connect_timeout`` before going over UDP.
- Per-message parse errors on a stream leave the connection open; lost framing
  (:class:`~minipbx.sip.StreamError`) closes it.
- ``Inbound.size`` of a message that shared one read with others is that read's
  octets divided evenly among them (exact for datagrams and single messages).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from minipbx.sip import Message, ParseError, Request, Response, StreamError, Via, parse
from minipbx.transport.address import Address
from minipbx.transport.config import (
    TransportConfig,
    TransportError,
    client_ssl_context,
    server_ssl_context,
)
from minipbx.transport.events import Inbound, TransportStats
from minipbx.transport.logs import SourceLogLimiter, log
from minipbx.transport.routing import (
    error_response,
    is_response,
    reconnect_destination,
    response_destination,
    stamp_request,
    via_udp_to_tcp,
)
from minipbx.transport.stream import ConnectionTable, Framed, StreamConnection
from minipbx.transport.udp import UdpEndpoint, bind_udp_socket

OnMessage = Callable[[Inbound], None]
OnSendError = Callable[[Address, Exception], None]
SourceFilter = Callable[[str], bool]

_STOP_GRACE = 1.0  # seconds allowed for graceful closes (TLS close_notify) in stop()
_MAX_LOGGED_REASON = 120
_MAX_CACHED_SOURCES = 16384
_NO_TCP_FOR = 60.0  # seconds: after a failed TCP connect, oversized requests there use UDP


class TransportManager:
    """Owns the UDP, TCP and TLS listeners and the connections of one process."""

    def __init__(
        self,
        config: TransportConfig,
        on_message: OnMessage,
        *,
        on_send_error: OnSendError | None = None,
        source_filter: SourceFilter | None = None,
    ) -> None:
        """``on_message`` gets every parsed message; ``on_send_error`` every failed send;
        ``source_filter(ip)`` returning False drops a datagram or refuses a connection
        before any parsing (for bans)."""
        self.config = config
        self.stats = TransportStats()
        self._on_message = on_message
        self._on_send_error = on_send_error
        self._source_filter = source_filter
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._udp: list[UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._listeners: list[Address] = []
        self._conns = ConnectionTable(config.max_connections, config.max_connections_per_ip)
        self._connecting: set[asyncio.Task[None]] = set()
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._limiter = SourceLogLimiter(log, config.log_burst, config.log_window)
        self._sources: dict[tuple[Any, ...], Address] = {}
        # (tcp, host, port) -> loop time until which the 18.1.1 fallback skips TCP there
        self._no_tcp: dict[tuple[str, str, int], float] = {}

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every configured listener.

        Raises :class:`TransportError` with one clear line (port in use, unreadable
        certificate); whatever was bound before the failure is closed again.
        """
        if self._loop is not None:
            raise RuntimeError("TransportManager already started")
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        try:
            if cfg.tls_enabled:
                self._server_ssl = server_ssl_context(cfg)
            for host in cfg.bind_hosts:
                if cfg.udp_port is not None:
                    await self._listen_udp(host, cfg.udp_port)
                if cfg.tcp_port is not None:
                    await self._listen_stream("tcp", host, cfg.tcp_port)
                if self._server_ssl is not None and cfg.tls_port is not None:
                    await self._listen_stream("tls", host, cfg.tls_port)
        except BaseException:
            await self.stop()
            raise
        for local in self._listeners:
            log.info("event=listening transport=%s local=%s", local.transport, local.hostport)

    async def stop(self) -> None:
        """Close every listener and connection; cancel pending connects. Idempotent."""
        self._stopping = True
        for server in self._servers:
            server.close()
        for endpoint in self._udp:
            if endpoint.transport is not None:
                endpoint.transport.close()
        tasks = list(self._connecting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._conns.by_id.values()):
            if not conn.has_socket:  # a connect task cancelled before it ever ran
                self._connect_failed(conn, ConnectionAbortedError("transport stopped"))
        conns = list(self._conns.by_id.values())
        for conn in conns:
            conn.close()
        waits = [conn.closed for conn in conns]
        if waits:
            await asyncio.wait(waits, timeout=_STOP_GRACE)
            late = [conn for conn in conns if not conn.closed.done()]
            for conn in late:
                conn.abort()
            if late:
                await asyncio.wait([c.closed for c in late], timeout=_STOP_GRACE)
        for server in self._servers:
            await server.wait_closed()
        if self._servers or self._udp:
            log.info("event=stopped")
        self._servers.clear()
        self._udp.clear()
        self._listeners.clear()
        await asyncio.sleep(0)  # let the loop run the sockets' close callbacks

    async def _listen_udp(self, host: str, port: int) -> None:
        loop = self._running_loop()
        try:
            sock = bind_udp_socket(host, port)
        except OSError as exc:
            raise _bind_error("udp", host, port, exc) from exc
        bound = sock.getsockname()
        endpoint = UdpEndpoint(self, Address("udp", bound[0], bound[1]))
        try:
            await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._udp.append(endpoint)
        self._listeners.append(endpoint.local)

    async def _listen_stream(self, kind: str, host: str, port: int) -> None:
        loop = self._running_loop()
        local: Address | None = None

        def accept() -> StreamConnection:
            assert local is not None  # set before the server starts serving
            return self._new_connection(local)

        tls = self._server_ssl if kind == "tls" else None
        try:
            server = await loop.create_server(
                accept,
                host,
                port,
                ssl=tls,
                reuse_address=True,
                backlog=1024,
                start_serving=False,
                ssl_handshake_timeout=self.config.connect_timeout if tls else None,
            )
        except OSError as exc:
            raise _bind_error(kind, host, port, exc) from exc
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        local = Address(kind, bound[0], bound[1])
        self._listeners.append(local)
        await server.start_serving()

    # -- queries ---------------------------------------------------------------------------

    @property
    def listeners(self) -> tuple[Address, ...]:
        """Every bound listening address (a wildcard bind shows as 0.0.0.0 or ::)."""
        return tuple(self._listeners)

    @property
    def connection_count(self) -> int:
        """Open (or opening) TCP/TLS connections."""
        return len(self._conns)

    def local_address(self, transport: str, destination: Address | None = None) -> Address:
        """The listening address of ``transport`` for a Via sent-by or a Contact.

        With ``destination``, one of the same IP family. A wildcard bind returns the
        wildcard: the PBX then puts its advertised address in Via/Contact instead.
        Raises LookupError when nothing listens on that transport (and family).
        """
        for local in self._listeners:
            if local.transport == transport and (
                destination is None or local.is_ipv6 == destination.is_ipv6
            ):
                return local
        wanted = f" for {destination}" if destination is not None else ""
        raise LookupError(f"no {transport} listener{wanted}")

    def close_connections(self, host: str) -> int:
        """Close every connection with peer IP ``host`` (after a ban); return how many."""
        conns = self._conns.from_ip(host)
        for conn in conns:
            conn.close()
        return len(conns)

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        message: Message | bytes,
        destination: Address,
        *,
        allow_tcp_fallback: bool = False,
    ) -> None:
        """Send a message (or serialized octets) to ``destination``. Never blocks.

        Over TCP/TLS, ``destination.conn`` picks the connection when it is still open,
        else any open connection to the same host and port, else a new one is opened
        (a response then goes to received/sent-by, RFC 3261 18.2.2). For responses to
        requests received here prefer :meth:`send_response`.
        ``allow_tcp_fallback``: see the module docstring (RFC 3261 18.1.1).
        """
        data = message if isinstance(message, bytes) else bytes(message)
        if destination.transport != "udp":
            self._send_stream(data, destination)
        elif (
            allow_tcp_fallback
            and len(data) > self.config.udp_size_threshold
            and not is_response(data)
            and any(local.transport == "tcp" for local in self._listeners)
        ):
            self._send_tcp_fallback(data, destination)
        else:
            self._send_udp(data, destination)

    def send_response(self, response: Response, source: Address) -> None:
        """Send ``response`` to a request that arrived from ``source`` (RFC 3261 18.2.2).

        Over TCP/TLS: the connection the request came on, or a new one to the Via's
        received/sent-by when it is gone. Over UDP: received:rport when the request had
        rport (RFC 3581 4), else received (or source IP) and the sent-by port or 5060.
        """
        via = response.via
        if source.transport == "udp":
            self._send_udp(bytes(response), response_destination(via, source))
        else:
            self._send_stream(bytes(response), source, via)

    def _send_udp(self, data: bytes, destination: Address) -> None:
        six = destination.is_ipv6
        for endpoint in self._udp:
            if endpoint.local.is_ipv6 == six:
                if endpoint.sendto(data, destination.host, destination.port):
                    self.stats.messages_out += 1
                    self.stats.bytes_out += len(data)
                    return
                break
        family = "IPv6" if six else "IPv4"
        self._send_failed(destination, TransportError(f"no open {family} udp socket"))

    def _send_stream(self, data: bytes, destination: Address, via: Via | None = None) -> None:
        conn = self._conns.find(destination)
        if conn is None and is_response(data):
            # RFC 3261 18.2.2: the request's connection is gone; open one to the IP in
            # received (else sent-by) and the sent-by port.
            if via is None:
                try:
                    via = parse(data).via
                except ParseError as exc:
                    self._send_failed(destination, exc)
                    return
            destination = reconnect_destination(via, destination)
            conn = self._conns.find(destination)
        if conn is None:
            try:
                conn = self._connect(destination)
            except TransportError as exc:
                self._send_failed(destination, exc)
                return
        if conn.write(data):
            self.stats.messages_out += 1
            self.stats.bytes_out += len(data)
        else:
            self._send_failed(destination, ConnectionError("connection is closing"))

    def _send_tcp_fallback(self, data: bytes, destination: Address) -> None:
        # RFC 3261 18.1.1: over 1300 octets a request goes over a congestion controlled
        # transport, and the top Via names the transport actually used.
        tcp = Address("tcp", destination.host, destination.port)
        conn = self._conns.find(tcp)
        if conn is None and self._tcp_failed_recently(tcp):
            self._send_udp(data, destination)
            return
        if conn is None:
            try:
                conn = self._connect(tcp)
            except TransportError:
                self._send_udp(data, destination)
                return
        self.stats.tcp_fallbacks += 1
        if conn.write(via_udp_to_tcp(data), fallback=(data, destination)):
            self.stats.messages_out += 1
            self.stats.bytes_out += len(data)
        else:
            self._send_udp(data, destination)

    def _tcp_failed_recently(self, tcp: Address) -> bool:
        until = self._no_tcp.get(tcp.remote)
        if until is None:
            return False
        if self._now() < until:
            return True
        del self._no_tcp[tcp.remote]
        return False

    def _send_failed(self, destination: Address, exc: Exception) -> None:
        self.stats.send_errors += 1
        self._limiter.log(
            logging.INFO,
            self._now(),
            destination.host,
            f"event=send_failed dst={destination} reason={_short(exc)!r}",
        )
        if self._on_send_error is not None:
            try:
                self._on_send_error(destination, exc)
            except Exception:
                log.exception("event=handler_error handler=on_send_error dst=%s", destination)

    # -- outgoing connections --------------------------------------------------------------

    def _connect(self, destination: Address) -> StreamConnection:
        """Start opening a connection to ``destination``; messages queue until it is up."""
        loop = self._loop
        if loop is None or self._stopping:
            raise TransportError("transport manager is not running")
        reason = self._conns.refusal(destination.host, inbound=False)
        if reason is not None:
            raise TransportError(f"cannot open a connection: {reason}")
        tls: ssl.SSLContext | None = None
        if destination.transport == "tls":
            if self._client_ssl is None:
                self._client_ssl = client_ssl_context(self.config)
            tls = self._client_ssl
        try:
            local = self.local_address(destination.transport, destination)
        except LookupError:  # not listening on it: describe the socket's family only
            local = Address(destination.transport, "::" if destination.is_ipv6 else "0.0.0.0", 0)
        conn = self._new_connection(local, destination.without_conn())
        self._conns.add(conn)
        task = loop.create_task(self._open(conn, tls))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return conn

    async def _open(self, conn: StreamConnection, tls: ssl.SSLContext | None) -> None:
        loop = self._running_loop()
        remote = conn.remote
        assert remote is not None
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    remote.host,
                    remote.port,
                    ssl=tls,
                    server_hostname=remote.host if tls is not None else None,
                )
        except asyncio.CancelledError:
            self._connect_failed(conn, ConnectionAbortedError("transport stopped"))
            raise
        except (OSError, TimeoutError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._connect_failed(conn, exc)

    def _connect_failed(self, conn: StreamConnection, exc: Exception) -> None:
        self._conns.remove(conn)
        conn.failed()
        remote = conn.remote
        assert remote is not None
        self._limiter.log(
            logging.INFO,
            self._now(),
            remote.host,
            f"event=connect_failed dst={remote.without_conn()} reason={_short(exc)!r}",
        )
        pending, conn.pending = conn.pending, []
        for _data, fallback in pending:
            if fallback is not None:
                # do not wait for this connect again for every oversized request
                if len(self._no_tcp) >= _MAX_CACHED_SOURCES:
                    self._no_tcp.clear()
                self._no_tcp[remote.remote] = self._now() + _NO_TCP_FOR
                self._send_udp(*fallback)
            else:
                self._send_failed(remote.without_conn(), exc)

    def _new_connection(self, local: Address, remote: Address | None = None) -> StreamConnection:
        conn_id = self._conns.next_id()
        cfg = self.config
        return StreamConnection(
            self,
            conn_id,
            local,
            remote=None if remote is None else replace(remote, conn=conn_id),
            max_message=cfg.max_message_size,
            idle_timeout=cfg.idle_timeout,
            max_write_buffer=cfg.max_write_buffer,
        )

    # -- StreamHost ------------------------------------------------------------------------

    def _stream_opened(self, conn: StreamConnection) -> bool:
        remote = conn.remote
        assert remote is not None
        if conn.outbound:
            self.stats.connections_opened += 1
            log.debug("event=conn_opened dst=%s local=%s", remote, conn.local)
            return True
        reason = "stopping" if self._stopping else None
        if reason is None and self._source_filter is not None:
            reason = None if self._source_filter(remote.host) else "filtered"
        if reason is None:
            reason = self._conns.refusal(remote.host, inbound=True)
        if reason is not None:
            self.stats.connections_refused += 1
            self._limiter.log(
                logging.WARNING,
                self._now(),
                remote.host,
                f"event=conn_refused src={remote.host} port={remote.port} "
                f"transport={remote.transport} reason={reason}",
            )
            return False
        self._conns.add(conn)
        self.stats.connections_accepted += 1
        log.debug("event=conn_accepted src=%s local=%s", remote, conn.local)
        return True

    def _stream_items(self, conn: StreamConnection, items: list[Framed], size: int) -> None:
        now = self._now()
        source = conn.remote
        assert source is not None
        self.stats.bytes_in += size
        share = size // len(items)
        for item in items:
            if isinstance(item, ParseError):
                self._parse_error(item, source, conn.local, now)
            else:
                self._deliver(item, source, conn.local, now, share)

    def _stream_error(self, conn: StreamConnection, exc: StreamError) -> None:
        self.stats.stream_errors += 1
        src = conn.remote.host if conn.remote is not None else "?"
        self._limiter.log(
            logging.INFO,
            self._now(),
            src,
            f"event=stream_error src={src} conn={conn.remote} status={exc.status} "
            f"reason={_short(exc)!r}",
        )

    def _stream_idle(self, conn: StreamConnection) -> None:
        self.stats.connections_closed_idle += 1
        log.debug("event=conn_idle src=%s", conn.remote)

    def _stream_slow(self, conn: StreamConnection) -> None:
        src = conn.remote.host if conn.remote is not None else "?"
        log.warning("event=conn_slow src=%s conn=%s reason=write_buffer_full", src, conn.remote)

    def _stream_closed(self, conn: StreamConnection) -> None:
        self._conns.remove(conn)
        log.debug("event=conn_closed peer=%s", conn.remote)
        pending, conn.pending = conn.pending, []
        if pending and conn.remote is not None:
            for _data, fallback in pending:
                if fallback is not None:
                    self._send_udp(*fallback)
                else:
                    self._send_failed(conn.remote, ConnectionError("connection closed"))

    # -- UdpHost ---------------------------------------------------------------------------

    def _udp_datagram(self, endpoint: UdpEndpoint, data: bytes, addr: tuple[Any, ...]) -> None:
        now = self._now()
        host: str = addr[0]
        if self._source_filter is not None and not self._source_filter(host):
            return
        self.stats.bytes_in += len(data)
        source = self._sources.get(addr)
        if source is None:  # the same phones send again and again: keep their Address
            if len(self._sources) >= _MAX_CACHED_SOURCES:
                self._sources.clear()
            source = self._sources[addr] = Address("udp", host, addr[1])
        if len(data) > self.config.max_message_size:
            self._oversized(data, source, now)
            return
        try:
            message = parse(data)
        except ParseError as exc:
            if not data.strip(b"\r\n\t \x00"):
                self.stats.keepalives += 1  # CRLF keep-alives some phones send over UDP
                return
            self._parse_error(exc, source, endpoint.local, now)
            return
        self._deliver(message, source, endpoint.local, now, len(data))

    def _udp_error(self, endpoint: UdpEndpoint, exc: Exception) -> None:
        log.debug("event=udp_error local=%s reason=%r", endpoint.local, _short(exc))

    # -- inbound ---------------------------------------------------------------------------

    def _deliver(
        self, message: Request | Response, source: Address, local: Address, now: float, size: int
    ) -> None:
        if isinstance(message, Request):
            stamp_request(message, source)  # RFC 3261 18.2.1, RFC 3581 4
        self.stats.messages_in += 1
        try:
            self._on_message(Inbound(message, source, local, now, size))
        except Exception:
            log.exception("event=handler_error handler=on_message src=%s", source)

    def _parse_error(self, exc: ParseError, source: Address, local: Address, now: float) -> None:
        response = error_response(exc, source)
        if response is None:
            self.stats.parse_errors_dropped += 1
        else:
            self.stats.parse_errors_answered += 1
        self._limiter.log(
            logging.DEBUG,
            now,
            source.host,
            f"event=parse_error src={source.host} port={source.port} "
            f"transport={source.transport} status={exc.status} "
            f"answered={'yes' if response is not None else 'no'} reason={_short(exc)!r}",
        )
        if response is not None:
            self.send_response(response, source)

    def _oversized(self, data: bytes, source: Address, now: float) -> None:
        """A datagram over max_message_size: 513 when it is a request (RFC 3261 21.5.11)."""
        self.stats.oversized_dropped += 1
        self._limiter.log(
            logging.INFO,
            now,
            source.host,
            f"event=oversized src={source.host} port={source.port} size={len(data)}",
        )
        try:
            message = parse(data)
        except ParseError:
            return
        if isinstance(message, Request) and message.method != "ACK":
            stamp_request(message, source)
            self.send_response(message.response(513), source)

    # -- helpers ---------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("TransportManager not started")
        return self._loop

    def _now(self) -> float:
        return self._running_loop().time()


def _bind_error(kind: str, host: str, port: int, exc: OSError) -> TransportError:
    where = Address(kind, host, port).hostport
    return TransportError(f"cannot listen on {kind} {where}: {exc.strerror or exc}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_MAX_LOGGED_REASON]
