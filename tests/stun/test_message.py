"""STUN message and attribute parsing, serializing and their precise errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.stun import (
    ATTRIBUTES,
    BINDING,
    MAGIC_COOKIE,
    ChangeRequest,
    ErrorCode,
    Fingerprint,
    Message,
    MessageClass,
    MessageIntegrity,
    NotStunError,
    Software,
    StunError,
    StunServer,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
    message_type,
    saslprep,
    split_type,
)
from tests.stun import rfc5769 as v

TID = bytes(range(12))


def _message(*attrs: bytes, kind: int = 0x0001, cookie: int = MAGIC_COOKIE) -> bytes:
    """A message from raw attribute TLVs, with a correct length field."""
    body = b"".join(attrs)
    return struct.pack("!HHI12s", kind, len(body), cookie, TID) + body


def _tlv(kind: int, value: bytes, pad: bool = True) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + (bytes(-len(value) % 4) if pad else b"")


# -- message types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "klass", "value"),
    [
        (BINDING, MessageClass.REQUEST, 0x0001),
        (BINDING, MessageClass.INDICATION, 0x0011),
        (BINDING, MessageClass.SUCCESS, 0x0101),
        (BINDING, MessageClass.ERROR, 0x0111),
        (0x003, MessageClass.REQUEST, 0x0003),  # TURN Allocate
        (0xFFF, MessageClass.ERROR, 0x3FFF),
    ],
)
def test_message_type_bits(method: int, klass: MessageClass, value: int) -> None:
    assert message_type(method, klass) == value
    assert split_type(value) == (method, klass)


def test_every_type_round_trips() -> None:
    for value in range(0x4000):
        assert message_type(*split_type(value)) == value


# -- round trips -----------------------------------------------------------------------------


def test_encode_then_parse_keeps_every_known_attribute() -> None:
    attrs = (
        XorMappedAddress("2001:db8::1", 1),
        Username("alice"),
        ErrorCode(420),
        UnknownAttributes((0x0031, 0x0032, 0x0033)),
        ChangeRequest(ChangeRequest.CHANGE_PORT),
        UseCandidate(),
        UnknownAttribute(0xC001, b"\x01\x02\x03"),
        Software("minipbx"),
    )
    msg = Message(BINDING, MessageClass.ERROR, TID, attrs)
    wire = msg.encode(integrity_key=b"secret", fingerprint=True)
    parsed = Message.parse(wire)
    assert parsed.attributes[:-2] == attrs
    assert isinstance(parsed.attributes[-2], MessageIntegrity)
    assert isinstance(parsed.attributes[-1], Fingerprint)
    assert parsed.check_integrity(b"secret") and not parsed.check_integrity(b"Secret")
    assert Message.parse(bytes(parsed)) == parsed  # verbatim re-serialization
    assert parsed.get(ErrorCode) == ErrorCode(420, "Unknown Attribute")


def test_encode_replaces_old_integrity_and_fingerprint() -> None:
    old = Message.parse(v.REQUEST)
    fresh = Message.parse(old.encode(integrity_key=b"other", fingerprint=True))
    assert fresh.check_integrity(b"other")
    assert sum(isinstance(a, MessageIntegrity) for a in fresh.attributes) == 1


def test_no_integrity_attribute_means_no_integrity() -> None:
    assert not Message(BINDING, MessageClass.REQUEST, TID).check_integrity(b"k")
    assert not Message.parse(bytes(Message(BINDING, MessageClass.REQUEST, TID))).check_integrity(
        b""
    )


def test_attributes_after_message_integrity_are_ignored_except_fingerprint() -> None:
    msg = Message(BINDING, MessageClass.REQUEST, TID, (Username("a"),))
    signed = msg.encode(integrity_key=b"k")
    extra = _tlv(Software.TYPE, b"late")
    wire = bytearray(signed + extra)
    wire[2:4] = (len(wire) - 20).to_bytes(2, "big")
    parsed = Message.parse(bytes(wire))
    assert parsed.get(Software) is None
    assert parsed.check_integrity(b"k")


def test_unknown_attributes_are_kept_and_the_required_ones_listed() -> None:
    wire = _message(_tlv(0x7FFF, b"x"), _tlv(0x8FFF, b"y"), _tlv(0x0031, b""))
    msg = Message.parse(wire)
    assert msg.unknown_required == (0x7FFF, 0x0031)
    assert bytes(msg) == wire


def test_classic_rfc3489_binding_request_is_accepted() -> None:
    wire = _message(_tlv(ChangeRequest.TYPE, bytes(4)), cookie=0x01020304)
    msg = Message.parse(wire)
    assert msg.classic and msg.cookie == 0x01020304
    assert msg.get(ChangeRequest) == ChangeRequest(0)
    assert bytes(msg) == wire


def test_registry_is_consistent() -> None:
    for code, cls in ATTRIBUTES.items():
        assert code == cls.TYPE and cls.NAME.isupper()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes: shorter than the 20-byte STUN header"),
        (b"\x00\x01" + bytes(17), "19 bytes: shorter"),
        (b"\x80" + _message()[1:], "first two bits of a STUN message must be zero"),
        (_message()[:2] + b"\x00\x02" + _message()[4:] + b"\x00\x00", "not a multiple of 4"),
        (_message() + b"\x00" * 4, "message length 0 does not match the 4 bytes after"),
        (_message(kind=0x0101, cookie=0x01020304), "no magic cookie (0x01020304)"),
        (_message(kind=0x0001, cookie=MAGIC_COOKIE)[:-1], "shorter than the 20-byte"),
    ],
)
def test_not_stun(data: bytes, message: str) -> None:
    with pytest.raises(NotStunError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        Message.parse(data)
    assert e.value.status is None


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ((b"\x80\x22\x00\x09abcd",), "SOFTWARE at offset 20: length 9 runs past the end"),
        ((_tlv(0x0006, b"a"), b"\x00\x99\x00\x05abcd"), "0x0099 at offset 28: length 5"),
        ((b"\x00\x20\x00\x08\x00\x03\x00\x01\x01\x02\x03\x04",), "unknown address family 0x03"),
        ((_tlv(0x0020, b"\x00\x01\x00\x01\x01\x02"),), "IPv4 address is 2 bytes"),
        ((_tlv(0x0020, b"\x00\x01"),), "XOR-MAPPED-ADDRESS: value is 2 bytes, need at least 4"),
        ((_tlv(0x0006, b"\xff\xfe"),), "USERNAME: not UTF-8"),
        ((_tlv(0x0009, b"\x00\x00\x02\x00"),), "ERROR-CODE: invalid code class 2"),
        ((_tlv(0x0009, b"\x00\x00\x04\x64"),), "invalid code class 4 number 100"),
        ((_tlv(0x000A, b"\x00\x01\x00"),), "UNKNOWN-ATTRIBUTES: odd length 3"),
        ((_tlv(0x0008, bytes(16)),), "MESSAGE-INTEGRITY: value is 16 bytes, must be 20"),
        ((_tlv(0x0024, bytes(8)),), "PRIORITY: value is 8 bytes, must be 4"),
        ((_tlv(0x0025, b"x"),), "USE-CANDIDATE: value is 1 bytes, must be empty"),
        ((_tlv(0x8028, bytes(4)), _tlv(0x8022, b"x")), "FINGERPRINT must be the last"),
        ((_tlv(0x8028, bytes(8)),), "FINGERPRINT: value is 8 bytes, must be 4"),
        ((_tlv(0x8022, b"x" * 764),), "SOFTWARE: 764 bytes, at most 763"),
        ((_tlv(0x0006, b"x" * 513),), "USERNAME: 513 bytes, at most 512"),
        ((_tlv(0x0014, "é".encode() * 128),), "REALM: must be fewer than 128 characters"),
    ],
)
def test_malformed_but_still_stun(attrs: tuple[bytes, ...], message: str) -> None:
    data = _message(*attrs)
    with pytest.raises(StunError, match=message) as e:
        Message.parse(data)
    assert e.value.status == 400 and not isinstance(e.value, NotStunError)
    assert e.value.header is not None and e.value.header.transaction_id == TID


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Message(BINDING, MessageClass.REQUEST, b"short"), "12 bytes, not 5"),
        (lambda: Message(0x1000, MessageClass.REQUEST, TID), "method must be 0-0xFFF"),
        (lambda: XorMappedAddress("example.com", 1), "host must be an IP address"),
        (lambda: XorMappedAddress("::1", 65536), "port must be 0-65535, not 65536"),
        (lambda: ErrorCode(200), "code must be 300-699, not 200"),
        (lambda: ErrorCode(400, "x" * 128), "fewer than 128 characters"),
        (lambda: Software("x" * 200), "SOFTWARE: must be fewer than 128 characters"),
        (lambda: UnknownAttributes((0x10000,)), "attribute types must be 0-0xFFFF"),
        (lambda: UnknownAttribute(-1, b""), "attribute type must be 0-0xFFFF"),
        (lambda: ChangeRequest(1 << 32), "CHANGE-REQUEST: 4294967296 does not fit in 4 bytes"),
        (lambda: MessageIntegrity(b"x"), "MESSAGE-INTEGRITY: value is 1 bytes, must be 20"),
    ],
)
def test_building_invalid_values_fails_precisely(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_every_prefix_of_a_vector_is_rejected_as_not_stun() -> None:
    """A datagram cut short never parses: the length field no longer matches."""
    for end in range(len(v.REQUEST)):
        with pytest.raises(NotStunError):
            Message.parse(v.REQUEST[:end])


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"  # RFC 4013 3: soft hyphen mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space becomes SPACE
    with pytest.raises(ValueError, match="ASCII control character U\\+0007"):
        saslprep("\u0007")
    with pytest.raises(ValueError, match="mixes right-to-left"):
        saslprep("\u0627\u0031a")
    with pytest.raises(ValueError, match="must start and end"):
        saslprep("\u0627\u0031")
    assert saslprep("\u0627\u0031\u0628") == "\u0627\u0031\u0628"


# -- fuzzing -------------------------------------------------------------------------------------

_SEEDS = [v.REQUEST, v.IPV4_RESPONSE, v.IPV6_RESPONSE, v.LONG_TERM_REQUEST]


def _probe(data: bytes) -> None:
    try:
        msg = Message.parse(data)
    except StunError:
        pass
    else:
        msg.check_integrity(b"key")
        bytes(msg)
        msg.encode(integrity_key=b"k", fingerprint=True)
    StunServer().handle(data, ("192.0.2.1", 1000))


@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _probe(data)


@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
)
def test_fuzz_mutated_vectors(seed: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for offset, value in edits:
        data[offset % len(data)] = value
    _probe(bytes(data))


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=8))
def test_fuzz_attribute_soup(attrs: list[tuple[int, bytes]]) -> None:
    """A valid header with random attributes: only StunError may come out."""
    _probe(_message(*(_tlv(kind, value) for kind, value in attrs)))
