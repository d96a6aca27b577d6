"""Life cycle of the TransportManager: start errors, clean stop, IPv6, uvloop, filters."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from minipbx.sip import Request, Response
from minipbx.transport import Address, Inbound, TransportConfig, TransportError, TransportManager

from .conftest import Collector, ManagerFactory, StreamPeer, UdpPeer, sip_request, until

UdpFactory = Callable[..., Awaitable[UdpPeer]]
StreamFactory = Callable[..., Awaitable[StreamPeer]]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_clean_stop_leaves_nothing_behind(
    make_manager: ManagerFactory, stream_peer: StreamFactory
) -> None:
    before = asyncio.all_tasks()
    manager, inbox = await make_manager()
    tcp = manager.local_address("tcp")
    phone = await stream_peer(tcp)
    await phone.send(sip_request(via="SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-x"))
    await inbox.next()
    # an outgoing connect not yet done when stopping (its task has not run yet)
    manager.send(sip_request(), Address("tcp", "127.0.0.1", 9))
    assert manager.connection_count == 2
    await manager.stop()
    assert await phone.closed_by_peer()
    assert manager.connection_count == 0 and manager.listeners == ()
    assert asyncio.all_tasks() == before
    with pytest.raises(OSError):
        await asyncio.open_connection(tcp.host, tcp.port)
    await manager.stop()  # idempotent


async def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        config = TransportConfig(bind_hosts=("127.0.0.1",), udp_port=port, tcp_port=None)
        manager = TransportManager(config, Collector())
        with pytest.raises(TransportError, match=rf"cannot listen on udp 127\.0\.0\.1:{port}: "):
            await manager.start()
    assert manager.listeners == ()


async def test_partial_start_is_undone() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = TransportConfig(bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=port)
        manager = TransportManager(config, Collector())
        with pytest.raises(TransportError, match="cannot listen on tcp"):
            await manager.start()
    assert manager.listeners == ()


async def test_local_address(make_manager: ManagerFactory) -> None:
    manager, _ = await make_manager(tcp_port=None)
    udp = manager.local_address("udp", Address("udp", "127.0.0.9", 5060))
    assert udp.transport == "udp" and udp.host == "127.0.0.1" and udp.port > 0
    assert manager.listeners == (udp,)
    with pytest.raises(LookupError):
        manager.local_address("tcp")
    with pytest.raises(LookupError):
        manager.local_address("udp", Address("udp", "::1", 5060))


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_udp_and_tcp(
    make_manager: ManagerFactory, udp_peer: UdpFactory, stream_peer: StreamFactory
) -> None:
    manager, inbox = await make_manager(bind_hosts=("127.0.0.1", "::1"))
    v6 = manager.local_address("udp", Address("udp", "::1", 5060))
    assert v6.host == "::1"
    phone = await udp_peer("::1")
    phone.send(sip_request(via="SIP/2.0/UDP [::1]:5999;branch=z9hG4bK-6;rport"), v6)
    inbound = await inbox.next()
    assert inbound.source == Address("udp", "::1", phone.port)
    assert inbound.message.via.received == "::1"
    manager.send_response(inbound.message.response(200), inbound.source)  # type: ignore[union-attr]
    assert isinstance(await phone.receive(), Response)
    tcp = await stream_peer(manager.local_address("tcp", Address("tcp", "::1", 5060)))
    await tcp.send(sip_request(via="SIP/2.0/TCP [::1];branch=z9hG4bK-7"))
    assert (await inbox.next()).source.host == "::1"


async def test_source_filter_drops_before_parsing(udp_peer: UdpFactory) -> None:
    seen: list[str] = []
    inbox = Collector()

    def allowed(ip: str) -> bool:
        seen.append(ip)
        return False

    config = TransportConfig(bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=0)
    manager = TransportManager(config, inbox, source_filter=allowed)
    await manager.start()
    try:
        phone = await udp_peer()
        phone.send(sip_request(), manager.local_address("udp"))
        reader, writer = await asyncio.open_connection(*_hostport(manager, "tcp"))
        assert await asyncio.wait_for(reader.read(), 1.0) == b""  # refused
        writer.close()
        assert seen == ["127.0.0.1", "127.0.0.1"]
        assert inbox.queue.empty() and manager.stats.connections_refused == 1
    finally:
        await manager.stop()


def _hostport(manager: TransportManager, transport: str) -> tuple[str, int]:
    local = manager.local_address(transport)
    return local.host, local.port


async def test_handler_exception_is_logged_not_fatal(
    udp_peer: UdpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[Inbound] = []

    def handler(inbound: Inbound) -> None:
        received.append(inbound)
        if len(received) == 1:
            raise RuntimeError("bug in the PBX")

    config = TransportConfig(bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=None)
    manager = TransportManager(config, handler)
    await manager.start()
    try:
        phone = await udp_peer()
        with caplog.at_level("ERROR", logger="minipbx.transport"):
            phone.send(sip_request(call_id="a"), manager.local_address("udp"))
            phone.send(sip_request(call_id="b"), manager.local_address("udp"))
            await until(lambda: len(received) == 2)
        assert "event=handler_error" in caplog.text
    finally:
        await manager.stop()


def test_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        inbox = Collector()
        config = TransportConfig(bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=0)
        manager = TransportManager(config, inbox)
        await manager.start()
        try:
            loop = asyncio.get_running_loop()
            _, phone = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
            phone.send(sip_request(), manager.local_address("udp"))
            inbound = await inbox.next()
            assert isinstance(inbound.message, Request)
            manager.send_response(inbound.message.response(200), inbound.source)
            assert isinstance(await phone.receive(), Response)
            assert phone.transport is not None
            phone.transport.close()
            reader, writer = await asyncio.open_connection(*_hostport(manager, "tcp"))
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 1.0) == b"\r\n"
            writer.close()
        finally:
            await manager.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
