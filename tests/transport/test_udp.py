"""UDP end to end on 127.0.0.1: stamping, response routing, parse errors, fallback to TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from minipbx.sip import Request, Response
from minipbx.transport import Address

from .conftest import ManagerFactory, StreamPeer, UdpPeer, sip_request

PeerFactory = Callable[..., Awaitable[UdpPeer]]


async def test_request_in_stamped_and_response_back_to_rport(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await udp_peer()
    pbx = manager.local_address("udp")
    data = sip_request(via="SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-a;rport")
    phone.send(data, pbx)
    inbound = await inbox.next()
    req = inbound.message
    assert isinstance(req, Request) and req.method == "OPTIONS"
    assert inbound.source == Address("udp", "127.0.0.1", phone.port)
    assert inbound.local == pbx
    assert inbound.size == len(data)
    assert inbound.arrived <= asyncio.get_running_loop().time()
    assert req.via.received == "127.0.0.1" and req.via.rport == phone.port  # RFC 3581 4
    assert inbound.reply_to == inbound.source
    manager.send_response(req.response(200), inbound.source)
    resp = await phone.receive()  # to the source port, not the Via's 5999
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.via.rport == phone.port and resp.via.received == "127.0.0.1"


async def test_response_to_via_port_without_rport(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    sender, listener = await udp_peer(), await udp_peer()
    # the sent-by host is a name, so received= is added (RFC 3261 18.2.1); no rport:
    # the response goes to received and the sent-by port (RFC 3261 18.2.2)
    via = f"SIP/2.0/UDP phone.invalid:{listener.port};branch=z9hG4bK-b"
    sender.send(sip_request(via=via), manager.local_address("udp"))
    inbound = await inbox.next()
    req = inbound.message
    assert isinstance(req, Request)
    assert req.via.received == "127.0.0.1" and not req.via.wants_rport
    assert inbound.reply_to == Address("udp", "127.0.0.1", listener.port)
    manager.send_response(req.response(486), inbound.source)
    resp = await listener.receive()
    assert isinstance(resp, Response) and resp.status == 486
    assert resp.via.received == "127.0.0.1"
    assert sender.queue.empty()


async def test_malformed_answerable_gets_400_unanswerable_nothing(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    phone = await udp_peer()
    pbx = manager.local_address("udp")
    rport = "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-c;rport"
    phone.send(sip_request(via=rport, cseq_method="INVITE"), pbx)  # CSeq method mismatch
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.reason.startswith("Bad Request")
    assert "Warning" not in resp.headers
    phone.send(sip_request(via=rport).replace(b"Call-ID: call-1@test\r\n", b""), pbx)
    phone.send(b"\r\n\r\n", pbx)  # a CRLF keep-alive: ignored, not an error
    phone.send(sip_request(via=rport, call_id="after"), pbx)
    inbound = await inbox.next()
    manager.send_response(inbound.message.response(200), inbound.source)  # type: ignore[union-attr]
    # the first thing back is the 200: nothing was sent for the unanswerable message
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 200 and resp.call_id == "after"
    stats = manager.stats
    assert (stats.parse_errors_answered, stats.parse_errors_dropped) == (1, 1)
    assert stats.keepalives == 1 and inbox.queue.empty()


async def test_version_and_scheme_errors(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, _ = await make_manager()
    phone = await udp_peer()
    pbx = manager.local_address("udp")
    via = "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-d;rport"
    phone.send(sip_request(via=via).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), pbx)
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 505
    phone.send(sip_request(via=via).replace(b"sip:100@127.0.0.1 SIP", b"http://x SIP", 1), pbx)
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 416


async def test_oversized_datagram_gets_513(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager(max_message_size=2048)
    phone = await udp_peer()
    via = "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-e;rport"
    phone.send(sip_request("MESSAGE", via=via, body=b"x" * 4000), manager.local_address("udp"))
    resp = await phone.receive()
    assert isinstance(resp, Response) and resp.status == 513
    assert manager.stats.oversized_dropped == 1 and inbox.queue.empty()


async def test_send_request(make_manager: ManagerFactory, udp_peer: PeerFactory) -> None:
    manager, _ = await make_manager()
    phone = await udp_peer()
    phone_addr = Address("udp", "127.0.0.1", phone.port)
    manager.send(sip_request(), phone_addr)
    req = await phone.receive()
    assert isinstance(req, Request) and req.method == "OPTIONS"
    assert manager.stats.messages_out == 1


def _udp_port_free_for_tcp() -> tuple[socket.socket, socket.socket]:
    """A listening TCP socket and a UDP socket on the same 127.0.0.1 port."""
    for _ in range(20):
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(tcp.getsockname())
        except OSError:
            tcp.close()
            udp.close()
            continue
        return tcp, udp
    raise RuntimeError("no port free for both TCP and UDP")


async def test_large_request_goes_over_tcp_when_allowed(make_manager: ManagerFactory) -> None:
    manager, _ = await make_manager()
    tcp, udp = _udp_port_free_for_tcp()
    udp.close()
    tcp.listen()
    tcp.setblocking(False)
    accepted: asyncio.Future[StreamPeer] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(StreamPeer(reader, writer))

    server = await asyncio.start_server(on_connect, sock=tcp)
    port = tcp.getsockname()[1]
    big = sip_request(
        "MESSAGE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-f", body=b"y" * 1500
    )
    try:
        manager.send(big, Address("udp", "127.0.0.1", port), allow_tcp_fallback=True)
        peer = await asyncio.wait_for(accepted, 1.0)
        req = await peer.receive()
        assert isinstance(req, Request) and req.via.transport == "TCP"  # RFC 3261 18.1.1
        assert req.body == b"y" * 1500
        assert manager.stats.tcp_fallbacks == 1 and manager.connection_count == 1
        await peer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_large_request_falls_back_to_udp_when_tcp_refused(
    make_manager: ManagerFactory, udp_peer: PeerFactory
) -> None:
    manager, inbox = await make_manager()
    tcp, udp = _udp_port_free_for_tcp()
    port = udp.getsockname()[1]
    tcp.close()  # nothing listens on TCP: the connect is refused at once
    udp.close()
    phone = await udp_peer(port=port)
    big = sip_request(
        "MESSAGE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-g", body=b"z" * 1500
    )
    manager.send(big, Address("udp", "127.0.0.1", port), allow_tcp_fallback=True)
    req = await phone.receive()
    assert isinstance(req, Request) and req.via.transport == "UDP"
    assert manager.connection_count == 0 and inbox.send_errors.empty()
    # TCP failed there a moment ago: the next oversized request goes straight over UDP
    manager.send(big, Address("udp", "127.0.0.1", port), allow_tcp_fallback=True)
    assert manager.connection_count == 0
    assert isinstance(await phone.receive(), Request)
    assert manager.stats.tcp_fallbacks == 1
    # not allowed: straight over UDP
    manager.send(big, Address("udp", "127.0.0.1", port))
    assert isinstance(await phone.receive(), Request)
