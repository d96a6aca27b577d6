"""UDP sockets: a thin ``DatagramProtocol`` that hands datagrams to its host."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Protocol, cast

from minipbx.transport.address import Address

_RCVBUF = 4 * 1024 * 1024  # absorb bursts (REGISTER storms after a power cut)


class UdpHost(Protocol):
    """What a UDP endpoint reports to its owner."""

    def _udp_datagram(self, endpoint: UdpEndpoint, data: bytes, addr: tuple[Any, ...]) -> None:
        """A datagram arrived from ``addr`` (``(host, port, ...)``)."""
        ...

    def _udp_error(self, endpoint: UdpEndpoint, exc: Exception) -> None:
        """The socket reported an error (e.g. ICMP port unreachable for a send)."""
        ...


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket."""

    def __init__(self, host: UdpHost, local: Address) -> None:
        self.local = local
        self._host = host
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called by the loop once the endpoint exists."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Called by the loop for each datagram."""
        self._host._udp_datagram(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        """Called by the loop on a socket error."""
        self._host._udp_error(self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """Called by the loop once the socket is closed."""
        self.transport = None

    def sendto(self, data: bytes, host: str, port: int) -> bool:
        """Send one datagram; False when the socket is closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.sendto(data, (host, port))
        return True


def bind_udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (IPv6 sockets are IPv6-only).

    No SO_REUSEADDR: on Linux it would let a second server share the port silently.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):  # best effort: the kernel caps it at rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
