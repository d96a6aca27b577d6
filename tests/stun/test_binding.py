"""The sans-IO Binding server: answers, errors and silence (RFC 8489 6.3, 12)."""

from __future__ import annotations

import struct

import pytest

from minipbx.stun import (
    BINDING,
    MAGIC_COOKIE,
    ChangeRequest,
    ErrorCode,
    Fingerprint,
    MappedAddress,
    Message,
    MessageClass,
    Software,
    StunServer,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
)
from tests.stun import rfc5769 as v

TID = b"0123456789ab"
SOURCE = ("203.0.113.9", 40000)


def _request(*attrs: object, method: int = BINDING, cookie: int = MAGIC_COOKIE) -> bytes:
    msg = Message(method, MessageClass.REQUEST, TID, tuple(attrs), cookie)  # type: ignore[arg-type]
    return bytes(msg)


def _answer(data: bytes, source: tuple[str, int] = SOURCE) -> Message:
    """The server's answer, parsed (which checks its FINGERPRINT). An answer to an RFC 3489
    client echoes the request's cookie, which our parser only takes in requests: swapped."""
    reply = StunServer().handle(data, source)
    assert reply is not None and reply[4:8] == data[4:8]
    return Message.parse(reply[:4] + MAGIC_COOKIE.to_bytes(4, "big") + reply[8:])


def test_binding_success() -> None:
    answer = _answer(_request())
    assert (answer.method, answer.message_class) == (BINDING, MessageClass.SUCCESS)
    assert answer.transaction_id == TID
    assert answer.get(XorMappedAddress) == XorMappedAddress(*SOURCE)
    assert answer.get(Software) is not None
    assert isinstance(answer.attributes[-1], Fingerprint)


@pytest.mark.parametrize(
    ("source", "mapped"),
    [
        (("2001:db8::7", 5060, 0, 0), ("2001:db8::7", 5060)),
        (("::ffff:198.51.100.4", 1), ("198.51.100.4", 1)),
        (("fe80::1%eth0", 3478, 0, 2), ("fe80::1", 3478)),
    ],
)
def test_mapped_address_of_other_families(
    source: tuple[object, ...], mapped: tuple[str, int]
) -> None:
    reply = StunServer().handle(_request(), source)
    assert reply is not None
    assert Message.parse(reply).get(XorMappedAddress) == XorMappedAddress(*mapped)


def test_answers_the_rfc5769_request() -> None:
    """ICE attributes (PRIORITY is comprehension-required) are understood; no credentials."""
    answer = _answer(v.REQUEST)
    assert answer.message_class is MessageClass.SUCCESS
    assert answer.transaction_id == v.TRANSACTION_ID


def test_unknown_comprehension_required_attributes_get_420() -> None:
    data = _request(UnknownAttribute(0x0031, b"x"), UnknownAttribute(0x7F00, b""))
    answer = _answer(data)
    assert answer.message_class is MessageClass.ERROR and answer.transaction_id == TID
    assert answer.get(ErrorCode) == ErrorCode(420, "Unknown Attribute")
    assert answer.get(UnknownAttributes) == UnknownAttributes((0x0031, 0x7F00))


def test_unknown_optional_attributes_are_ignored() -> None:
    answer = _answer(_request(UnknownAttribute(0x8FFF, b"whatever"), Username("x")))
    assert answer.message_class is MessageClass.SUCCESS


def test_malformed_request_gets_400_with_the_reason() -> None:
    bad = _request(Username("x"))[:-8] + struct.pack("!HH4s", 0x0020, 4, b"\x00\x07\x00\x01")
    answer = _answer(bad)
    error = answer.get(ErrorCode)
    assert error is not None and error.code == 400
    assert "XOR-MAPPED-ADDRESS: unknown address family 0x07" in error.reason
    assert answer.transaction_id == TID


def test_other_methods_get_400() -> None:
    answer = _answer(_request(method=0x003))
    assert answer.method == 0x003
    error = answer.get(ErrorCode)
    assert error is not None and (error.code, error.reason) == (400, "unsupported method 0x003")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00\x00" + bytes(16),  # RTP
        bytes(Message(BINDING, MessageClass.SUCCESS, TID, (XorMappedAddress(*SOURCE),))),
        bytes(Message(BINDING, MessageClass.INDICATION, TID)),
        bytes(Message(BINDING, MessageClass.ERROR, TID, (UnknownAttribute(0x0009, b"\x00"),))),
        v.IPV4_RESPONSE,
        v.REQUEST[:-1] + bytes([v.REQUEST[-1] ^ 1]),  # FINGERPRINT does not match
        b"REGISTER sip:example.com SIP/2.0\r\n\r\n",
    ],
)
def test_silence(data: bytes) -> None:
    server = StunServer()
    assert server.handle(data, SOURCE) is None
    assert server.stats.dropped == 1 and server.stats.requests == 0


def test_rfc3489_client_gets_mapped_address_without_fingerprint() -> None:
    answer = _answer(_request(ChangeRequest(0), cookie=0x0BADF00D))
    assert answer.message_class is MessageClass.SUCCESS and answer.transaction_id == TID
    assert answer.attributes == (MappedAddress(*SOURCE),)


@pytest.mark.parametrize(
    ("cookie", "listed"),
    [(MAGIC_COOKIE, (0x0003,)), (0x0BADF00D, (0x0003, 0x0003))],  # RFC 3489: even count
)
def test_change_request_cannot_be_honoured(cookie: int, listed: tuple[int, ...]) -> None:
    data = _request(ChangeRequest(ChangeRequest.CHANGE_IP), cookie=cookie)
    answer = _answer(data)
    assert answer.get(ErrorCode) == ErrorCode(420)
    assert answer.get(UnknownAttributes) == UnknownAttributes(listed)


def test_stats_and_no_software() -> None:
    server = StunServer(software=None)
    reply = server.handle(_request(), SOURCE)
    assert reply is not None and Message.parse(reply).get(Software) is None
    server.handle(_request(method=2), SOURCE)
    server.handle(b"junk", SOURCE)
    assert (server.stats.requests, server.stats.answered) == (2, 1)
    assert (server.stats.errors, server.stats.dropped) == (1, 1)
