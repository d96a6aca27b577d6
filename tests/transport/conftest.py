"""Helpers for the transport tests: a manager on 127.0.0.1 port 0, UDP and TCP "phones"."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from minipbx.sip import Keepalive, ParseError, Request, Response, StreamFramer, parse
from minipbx.transport import Address, Inbound, TransportConfig, TransportManager
from tests.tls_certs import write_self_signed

WAIT = 1.0  # seconds: an upper bound for things that happen at once on loopback


def sip_request(
    method: str = "OPTIONS",
    *,
    via: str = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport",
    call_id: str = "call-1@test",
    body: bytes = b"",
    extra: str = "",
    cseq_method: str | None = None,
) -> bytes:
    """A small request as octets."""
    head = (
        f"{method} sip:100@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:200@127.0.0.1>;tag=abc\r\n"
        "To: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (at most WAIT seconds)."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.001)


class Collector:
    """The ``on_message`` callback: queues every Inbound."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self.send_errors: asyncio.Queue[tuple[Address, Exception]] = asyncio.Queue()

    def __call__(self, inbound: Inbound) -> None:
        self.queue.put_nowait(inbound)

    def on_send_error(self, destination: Address, exc: Exception) -> None:
        self.send_errors.put_nowait((destination, exc))

    async def next(self) -> Inbound:
        return await asyncio.wait_for(self.queue.get(), WAIT)


ManagerFactory = Callable[..., Awaitable[tuple[TransportManager, Collector]]]


@pytest.fixture
async def make_manager() -> AsyncIterator[ManagerFactory]:
    """Start managers on 127.0.0.1 with ephemeral ports; all are stopped afterwards."""
    started: list[TransportManager] = []

    async def factory(**overrides: Any) -> tuple[TransportManager, Collector]:
        settings: dict[str, Any] = {
            "bind_hosts": ("127.0.0.1",),
            "udp_port": 0,
            "tcp_port": 0,
            "tls_port": 0,
        }
        settings.update(overrides)
        collector = Collector()
        manager = TransportManager(
            TransportConfig(**settings), collector, on_send_error=collector.on_send_error
        )
        await manager.start()
        started.append(manager)
        return manager, collector

    yield factory
    for manager in started:
        await manager.stop()


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP socket playing a phone."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (to.host, to.port))

    async def receive(self) -> Request | Response:
        return parse(await asyncio.wait_for(self.queue.get(), WAIT))


@pytest.fixture
async def udp_peer() -> AsyncIterator[Callable[..., Awaitable[UdpPeer]]]:
    """Factory of UDP peers bound to 127.0.0.1 (or the given host/port)."""
    peers: list[UdpPeer] = []

    async def factory(host: str = "127.0.0.1", port: int = 0) -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=(host, port))
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        if peer.transport is not None:
            peer.transport.close()
    await asyncio.sleep(0)


class StreamPeer:
    """A TCP/TLS client playing a phone."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = StreamFramer(client=True)
        self.items: list[Request | Response | Keepalive | ParseError] = []

    @property
    def port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> Request | Response | Keepalive:
        """The next framed item (a message or a pong)."""
        while not self.items:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise EOFError("connection closed")
            self.items += self.framer.feed(data)
        item = self.items.pop(0)
        assert not isinstance(item, ParseError), item
        return item

    async def closed_by_peer(self) -> bool:
        """Wait for EOF (or a reset) from the server."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.fixture
async def stream_peer() -> AsyncIterator[Callable[..., Awaitable[StreamPeer]]]:
    """Factory of TCP (or TLS, with ``ssl=``) clients connected to an Address."""
    peers: list[StreamPeer] = []

    async def factory(to: Address, ssl_context: ssl.SSLContext | None = None) -> StreamPeer:
        reader, writer = await asyncio.open_connection(to.host, to.port, ssl=ssl_context)
        peer = StreamPeer(reader, writer)
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        await peer.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    return write_self_signed(tmp_path_factory.mktemp("tls"), "127.0.0.1")


@pytest.fixture
def tls_client_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate."""
    return ssl.create_default_context(cafile=str(tls_files[0]))
