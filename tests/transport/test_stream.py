"""TCP and TLS end to end on 127.0.0.1: framing, keepalive, reuse, limits, idle timeout."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from minipbx.sip import Keepalive, Request, Response
from minipbx.transport import Address, TransportConfig, TransportError, TransportManager

from .conftest import Collector, ManagerFactory, StreamPeer, sip_request, until

PeerFactory = Callable[..., Awaitable[StreamPeer]]
TCP_VIA = "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-t;rport"


async def test_two_messages_in_one_write(
    make_manager: ManagerFactory, stream_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await stream_peer(manager.local_address("tcp"))
    first, second = sip_request(via=TCP_VIA, call_id="one"), sip_request(via=TCP_VIA, call_id="two")
    await phone.send(first + second)
    a, b = await inbox.next(), await inbox.next()
    assert [a.message.call_id, b.message.call_id] == ["one", "two"]
    assert a.source == b.source and a.source.transport == "tcp" and a.source.conn is not None
    assert a.source.port == phone.port and a.local == manager.local_address("tcp")
    assert a.size + b.size == len(first + second)
    assert a.message.via.rport == phone.port and a.message.via.received == "127.0.0.1"


async def test_message_split_across_writes(
    make_manager: ManagerFactory, stream_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await stream_peer(manager.local_address("tcp"))
    data = sip_request("MESSAGE", via=TCP_VIA, body=b"hello")
    for chunk in (data[:10], data[10:-3], data[-3:]):
        await phone.send(chunk)
        await asyncio.sleep(0.005)  # separate reads on the server side
    inbound = await inbox.next()
    assert isinstance(inbound.message, Request) and inbound.message.body == b"hello"
    assert inbound.size == len(data)


async def test_ping_gets_pong(make_manager: ManagerFactory, stream_peer: PeerFactory) -> None:
    manager, inbox = await make_manager()
    phone = await stream_peer(manager.local_address("tcp"))
    await phone.send(b"\r\n\r\n")  # RFC 5626 4.4.1
    assert await phone.receive() == Keepalive(ping=False)
    await phone.send(b"\r\n\r\n" + sip_request(via=TCP_VIA))
    assert await phone.receive() == Keepalive(ping=False)
    assert isinstance((await inbox.next()).message, Request)


async def test_response_over_same_connection_and_reuse(
    make_manager: ManagerFactory, stream_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await stream_peer(manager.local_address("tcp"))
    await phone.send(sip_request("REGISTER", via=TCP_VIA))
    inbound = await inbox.next()
    req = inbound.message
    assert isinstance(req, Request)
    manager.send_response(req.response(200), inbound.source)
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 200
    # a request to the address the phone registered from reaches it over its connection,
    # whether or not the connection id is given
    for destination in (inbound.source, inbound.source.without_conn()):
        manager.send(
            sip_request("INVITE", via="SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-i"), destination
        )
        got = await phone.receive()
        assert isinstance(got, Request) and got.method == "INVITE"
    assert manager.connection_count == 1 and manager.stats.connections_opened == 0


async def test_response_after_connection_lost_opens_one_to_sent_by(
    make_manager: ManagerFactory,
) -> None:
    manager, inbox = await make_manager()
    # the phone listens on its own port and sends from another connection
    accepted: asyncio.Future[StreamPeer] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(StreamPeer(reader, writer))

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        pbx = manager.local_address("tcp")
        _, writer = await asyncio.open_connection(pbx.host, pbx.port)
        writer.write(sip_request(via=f"SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-l"))
        inbound = await inbox.next()
        writer.close()
        await writer.wait_closed()
        await until(lambda: manager.connection_count == 0)  # the server saw the close
        manager.send_response(inbound.message.response(200), inbound.source)  # type: ignore[union-attr]
        peer = await asyncio.wait_for(accepted, 1.0)
        resp = await peer.receive()
        assert isinstance(resp, Response) and resp.status == 200  # RFC 3261 18.2.2
        assert manager.stats.connections_opened == 1
        await peer.close()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_send_to_unreachable_reports_error(make_manager: ManagerFactory) -> None:
    manager, inbox = await make_manager()
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    destination = Address("tcp", "127.0.0.1", port)
    manager.send(sip_request(), destination)
    failed, exc = await asyncio.wait_for(inbox.send_errors.get(), 1.0)
    assert failed == destination and isinstance(exc, OSError)
    assert manager.connection_count == 0 and manager.stats.send_errors == 1


async def test_parse_error_on_stream_answered_and_connection_kept(
    make_manager: ManagerFactory, stream_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await stream_peer(manager.local_address("tcp"))
    await phone.send(sip_request(via=TCP_VIA, cseq_method="BYE") + sip_request(via=TCP_VIA))
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 400
    assert isinstance((await inbox.next()).message, Request)


async def test_stream_error_closes(make_manager: ManagerFactory, stream_peer: PeerFactory) -> None:
    manager, _ = await make_manager(max_message_size=2048)
    phone = await stream_peer(manager.local_address("tcp"))
    await phone.send(
        sip_request(via=TCP_VIA).replace(b"Content-Length: 0", b"Content-Length: 99999")
    )
    assert await phone.closed_by_peer()
    assert manager.stats.stream_errors == 1


async def test_idle_timeout_closes(make_manager: ManagerFactory, stream_peer: PeerFactory) -> None:
    manager, _ = await make_manager(idle_timeout=0.05)
    phone = await stream_peer(manager.local_address("tcp"))
    await phone.send(b"\r\n\r\n")
    assert await phone.receive() == Keepalive(ping=False)
    assert await phone.closed_by_peer()
    assert manager.stats.connections_closed_idle == 1


async def test_per_ip_limit_refuses_extra_connection(
    make_manager: ManagerFactory, stream_peer: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _ = await make_manager(max_connections_per_ip=2)
    pbx = manager.local_address("tcp")
    first, second = await stream_peer(pbx), await stream_peer(pbx)
    for phone in (first, second):  # both accepted: they are answered
        await phone.send(b"\r\n\r\n")
        assert await phone.receive() == Keepalive(ping=False)
    with caplog.at_level("WARNING", logger="minipbx.transport"):
        third = await stream_peer(pbx)
        assert await third.closed_by_peer()
    assert "event=conn_refused src=127.0.0.1" in caplog.text
    assert "reason=per_ip_limit" in caplog.text
    assert manager.connection_count == 2 and manager.stats.connections_refused == 1


async def test_total_limit_and_close_connections(
    make_manager: ManagerFactory, stream_peer: PeerFactory
) -> None:
    manager, _ = await make_manager(max_connections=1)
    pbx = manager.local_address("tcp")
    first = await stream_peer(pbx)
    await first.send(b"\r\n\r\n")
    assert await first.receive() == Keepalive(ping=False)
    assert await (await stream_peer(pbx)).closed_by_peer()
    assert manager.close_connections("127.0.0.1") == 1
    assert await first.closed_by_peer()


async def test_tls_request_and_response(
    tls_files: tuple[Path, Path],
    tls_client_context: ssl.SSLContext,
    make_manager: ManagerFactory,
    stream_peer: PeerFactory,
) -> None:
    cert, key = tls_files
    manager, inbox = await make_manager(tls_cert=cert, tls_key=key)
    pbx = manager.local_address("tls")
    phone = await stream_peer(pbx, tls_client_context)
    await phone.send(sip_request(via="SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-s;rport"))
    inbound = await inbox.next()
    assert inbound.source.transport == "tls" and inbound.local == pbx
    manager.send_response(inbound.message.response(200), inbound.source)  # type: ignore[union-attr]
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 200
    await phone.send(b"\r\n\r\n")
    assert await phone.receive() == Keepalive(ping=False)


async def test_tls_outbound_connection(
    tls_files: tuple[Path, Path], make_manager: ManagerFactory
) -> None:
    cert, key = tls_files
    server, inbox = await make_manager(tls_cert=cert, tls_key=key)
    client, _ = await make_manager(tls_cert=cert, tls_key=key, tls_ca_file=cert)
    client.send(
        sip_request(via="SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-o"), server.local_address("tls")
    )
    inbound = await inbox.next()
    assert inbound.source.transport == "tls" and client.stats.connections_opened == 1


async def test_unreadable_tls_files(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    missing = tmp_path / "missing.pem"
    config = TransportConfig(
        bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=0, tls_port=0,
        tls_cert=missing, tls_key=tls_files[1],
    )  # fmt: skip
    manager = TransportManager(config, Collector())
    with pytest.raises(TransportError, match=r"cannot read TLS certificate .*missing\.pem"):
        await manager.start()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    config = TransportConfig(
        bind_hosts=("127.0.0.1",), udp_port=0, tcp_port=0, tls_port=0,
        tls_cert=garbage, tls_key=tls_files[1],
    )  # fmt: skip
    with pytest.raises(TransportError, match="invalid TLS certificate"):
        await TransportManager(config, Collector()).start()
