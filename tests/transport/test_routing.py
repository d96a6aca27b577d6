"""Pure routing rules: Address, Via stamping, response destinations, log limiting."""

from __future__ import annotations

import logging

import pytest

from minipbx.sip import ParseError, Request, parse
from minipbx.transport import Address, TransportConfig
from minipbx.transport.logs import SourceLogLimiter
from minipbx.transport.routing import (
    error_response,
    is_response,
    reconnect_destination,
    response_destination,
    same_ip,
    short_reason,
    stamp_request,
    via_udp_to_tcp,
)

from .conftest import sip_request

SRC = Address("udp", "192.0.2.7", 40000)


def request(via: str) -> Request:
    msg = parse(sip_request(via=via))
    assert isinstance(msg, Request)
    return msg


def test_address_validation_and_text() -> None:
    assert str(Address("tcp", "::1", 5060, conn=3)) == "tcp:[::1]:5060#3"
    assert Address("tls", "10.0.0.1", 5061).hostport == "10.0.0.1:5061"
    assert Address("tcp", "1.2.3.4", 1, 9).without_conn() == Address("tcp", "1.2.3.4", 1)
    assert Address("udp", "fe80::1%eth0", 5060).is_ipv6
    assert {Address("udp", "1.2.3.4", 5060), Address("udp", "1.2.3.4", 5060)} == {
        Address("udp", "1.2.3.4", 5060)
    }
    for bad in (("sctp", "1.2.3.4", 1), ("udp", "pbx.example.com", 1), ("udp", "1.2.3.4", 70000)):
        with pytest.raises(ValueError):
            Address(*bad)
    with pytest.raises(ValueError):
        Address("udp", "1.2.3.4", 5060, conn=1)


def test_config_validation() -> None:
    assert TransportConfig(bind_hosts="::1").bind_hosts == ("::1",)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="together"):
        TransportConfig(tls_cert="cert.pem")
    with pytest.raises(ValueError):
        TransportConfig(bind_hosts=("localhost",))
    with pytest.raises(ValueError):
        TransportConfig(idle_timeout=0)
    assert not TransportConfig().tls_enabled
    assert TransportConfig(tls_cert="c", tls_key="k").tls_enabled


def test_same_ip() -> None:
    assert same_ip("192.0.2.7", "192.0.2.7")
    assert same_ip("[::1]", "::1")
    assert same_ip("[0:0::1]", "::1")
    assert not same_ip("phone.example.com", "192.0.2.7")
    assert not same_ip("192.0.2.8", "192.0.2.7")


def test_stamp_nothing_when_sent_by_is_source() -> None:
    req = request("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1")
    before = bytes(req)
    stamp_request(req, SRC)
    assert bytes(req) == before


def test_stamp_received_when_host_differs() -> None:
    # RFC 3261 18.2.1: a domain name or another IP gets received=<source IP>
    req = request("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1")
    stamp_request(req, SRC)
    assert req.via.received == "192.0.2.7"
    assert req.via.rport is None and not req.via.wants_rport
    assert [v.host for v in req.vias] == ["phone.example.com", "10.0.0.1"]
    # the stamp is in the header text, so the response carries it
    assert req.response(200).via.received == "192.0.2.7"


def test_stamp_rport_always_adds_received() -> None:
    # RFC 3581 4: rport filled with the source port, received added even if identical
    req = request("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport")
    stamp_request(req, SRC)
    assert req.via.rport == 40000
    assert req.via.received == "192.0.2.7"
    assert req.via.branch == "z9hG4bK1"


def test_stamp_overwrites_forged_received_and_rport() -> None:
    req = request("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1;received=198.51.100.1;rport=9")
    stamp_request(req, SRC)
    assert (req.via.received, req.via.rport) == ("192.0.2.7", 40000)


def test_response_destination_udp() -> None:
    stamped = request("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport")
    stamp_request(stamped, SRC)
    assert response_destination(stamped.via, SRC) == SRC  # RFC 3581 4
    no_rport = request("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1")
    stamp_request(no_rport, SRC)  # RFC 3261 18.2.2: received + sent-by port
    assert response_destination(no_rport.via, SRC) == Address("udp", "192.0.2.7", 5070)
    default_port = request("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1")
    assert response_destination(default_port.via, SRC) == Address("udp", "192.0.2.7", 5060)


def test_response_destination_stream() -> None:
    source = Address("tcp", "192.0.2.7", 40000, conn=4)
    req = request("SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK1")
    stamp_request(req, source)
    assert response_destination(req.via, source) == source
    assert reconnect_destination(req.via, source) == Address("tcp", "192.0.2.7", 5070)
    tls = Address("tls", "192.0.2.7", 40000, conn=5)
    bare = request("SIP/2.0/TLS 192.0.2.7;branch=z9hG4bK1")
    assert reconnect_destination(bare.via, tls) == Address("tls", "192.0.2.7", 5061)


def test_error_response_answerable_and_not() -> None:
    bad_cseq = sip_request(cseq_method="INVITE")
    with pytest.raises(ParseError) as info:
        parse(bad_cseq)
    resp = error_response(info.value, SRC)
    assert resp is not None and resp.status == 400
    assert resp.reason.startswith("Bad Request (")
    assert "Warning" not in resp.headers
    assert resp.via.received == "192.0.2.7"
    no_call_id = sip_request().replace(b"Call-ID: call-1@test\r\n", b"")
    with pytest.raises(ParseError) as info:
        parse(no_call_id)
    assert error_response(info.value, SRC) is None
    bad_ack = sip_request("ACK", cseq_method="INVITE")
    with pytest.raises(ParseError) as info:
        parse(bad_ack)
    assert error_response(info.value, SRC) is None  # RFC 3261 17: never answer an ACK


def test_short_reason_echoes_nothing_from_the_peer() -> None:
    exc = ParseError("malformed request line 'EVIL\r\nX: y'", status=400)
    assert short_reason(exc) == "Bad Request (malformed request line)"
    assert short_reason(ParseError("unsupported SIP version SIP/3.0", status=505)) == (
        "Version Not Supported (unsupported SIP version SIP/3.0)"
    )


def test_via_udp_to_tcp_and_is_response() -> None:
    data = sip_request(via="SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1")
    changed = via_udp_to_tcp(data)
    assert parse(changed).via.transport == "TCP"
    assert changed.replace(b"TCP", b"UDP", 1) == data
    assert is_response(b"SIP/2.0 200 OK\r\n") and not is_response(data)


def test_log_limiter_per_source(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("minipbx.transport.test")
    limiter = SourceLogLimiter(logger, burst=2, window=10.0)
    now = 0.0
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        results = [limiter.log(logging.DEBUG, now, "1.1.1.1", f"event=x n={i}") for i in range(5)]
        assert results == [True, True, False, False, False]
        assert limiter.log(logging.DEBUG, now, "2.2.2.2", "event=x src=2.2.2.2")
        now += 10.0
        assert limiter.log(logging.DEBUG, now, "1.1.1.1", "event=x again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "event=x n=0",
        "event=x n=1",
        "event=x src=2.2.2.2",
        "event=x again suppressed=3",
    ]


def test_log_limiter_many_sources_share_a_budget() -> None:
    logger = logging.getLogger("minipbx.transport.test2")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    limiter = SourceLogLimiter(logger, burst=1, window=10.0, max_sources=3)
    logged = [limiter.log(logging.DEBUG, 0.0, f"10.0.0.{i}", "event=x") for i in range(10)]
    assert logged == [True, True, True, True] + [False] * 6


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.1",
        "SIP/2.0/UDP [2001:db8::1]:5070;rport;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1;received=198.51.100.1",
        'SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1;x="a;b"',
        "SIP/2.0/UDP 10.0.0.9;\r\n  branch=z9hG4bK1",
    ],
)
def test_stamp_in_place_keeps_position_and_parsed_views(via: str) -> None:
    data = sip_request(via=via).replace(b"\nVia:", b"\nX-Before: 1\r\nVia:")
    req = parse(data)
    assert isinstance(req, Request)
    from_ = req.from_
    names = [name for name, _ in req.headers]
    stamp_request(req, SRC)
    assert [name for name, _ in req.headers] == names  # the Via line stays where it was
    assert req.from_ is from_  # the other parsed views are kept
    again = parse(bytes(req))  # the stamp is in the text, the view matches it
    assert isinstance(again, Request)
    assert again.vias == req.vias
    stamped = "rport" in via or "received" in via or not via.startswith("SIP/2.0/UDP 192.0.2.7")
    assert req.via.received == ("192.0.2.7" if stamped else None)
    assert req.via.rport == (40000 if req.via.wants_rport else None)
    assert len(req.vias) == (2 if "10.0.0.1" in via else 1)


def test_stamp_compact_via() -> None:
    compact = sip_request(via="SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1").replace(b"\nVia:", b"\nv :")
    req = parse(compact)
    assert isinstance(req, Request)
    stamp_request(req, SRC)
    assert parse(bytes(req)).via.received == "192.0.2.7"
