"""Asyncio glue of the STUN Binding server: one UDP socket around :class:`StunServer`.

The protocol hands each datagram and its source to the sans-IO server and sends back what
it returns (DESIGN.md: the glue owns the socket, the server owns the rules).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from minipbx.stun.binding import StunServer
from minipbx.transport.config import TransportError
from minipbx.transport.udp import bind_udp_socket

log = logging.getLogger("minipbx.stun")


class StunProtocol(asyncio.DatagramProtocol):
    """Answers each datagram with :meth:`StunServer.handle`."""

    def __init__(self, server: StunServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called by the loop once the socket is ready."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Called by the loop for each datagram."""
        reply = self.server.handle(data, addr)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for answers we sent (the client went away): nothing to do."""
        log.debug("event=stun_socket_error error=%s", exc)


class StunListener:
    """The STUN server on ``host:port`` (UDP); ``port`` 0 binds an ephemeral port."""

    def __init__(self, host: str, port: int, server: StunServer | None = None) -> None:
        self.host = host
        self.port = port
        self.server = server or StunServer()
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Bind the socket; :class:`TransportError` (one line) when that fails."""
        try:
            sock = bind_udp_socket(self.host, self.port)
        except OSError as exc:
            raise TransportError(
                f"cannot listen for STUN on udp {self.hostport}: {exc.strerror or exc}"
            ) from exc
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: StunProtocol(self.server), sock=sock
        )
        self._transport = transport
        self.port = sock.getsockname()[1]
        log.info("event=listening transport=stun local=%s", self.hostport)

    @property
    def hostport(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def listening(self) -> bool:
        """True while the socket is bound."""
        return self._transport is not None

    async def stop(self) -> None:
        """Close the socket (idempotent)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)  # let the loop run the socket's close callback
