"""RFC 5769: every test vector parses, and its FINGERPRINT and MESSAGE-INTEGRITY check out."""

from __future__ import annotations

import hashlib

import pytest

from minipbx.stun import (
    BINDING,
    Fingerprint,
    IceControlled,
    Message,
    MessageClass,
    MessageIntegrity,
    Nonce,
    NotStunError,
    Priority,
    Realm,
    Software,
    Username,
    XorMappedAddress,
    long_term_key,
    saslprep,
)
from tests.stun import rfc5769 as v

SHORT_TERM_KEY = v.PASSWORD.encode()


def _zero_padding(data: bytes) -> bytes:
    """The vector with its space padding replaced by zeros (what our serializer writes)."""
    out, offset = bytearray(data), 20
    while offset < len(out):
        size = int.from_bytes(out[offset + 2 : offset + 4], "big")
        pad_start = offset + 4 + size
        pad_end = pad_start + (-size % 4)
        out[pad_start:pad_end] = bytes(pad_end - pad_start)
        offset = pad_end
    return bytes(out)


def test_2_1_sample_request() -> None:
    msg = Message.parse(v.REQUEST)  # raises if the FINGERPRINT did not match
    assert (msg.method, msg.message_class) == (BINDING, MessageClass.REQUEST)
    assert msg.transaction_id == v.TRANSACTION_ID and not msg.classic
    assert msg.get(Software) == Software("STUN test client")
    assert msg.get(Priority) == Priority(0x6E0001FF)
    assert msg.get(IceControlled) == IceControlled(0x932FF9B151263B36)
    assert msg.get(Username) == Username("evtj:h6vY")
    assert msg.get(Fingerprint) == Fingerprint(0xE57A3BCF)
    assert msg.check_integrity(SHORT_TERM_KEY)
    assert not msg.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBT")
    assert msg.unknown_required == ()


def test_2_2_ipv4_response() -> None:
    msg = Message.parse(v.IPV4_RESPONSE)
    assert (msg.method, msg.message_class) == (BINDING, MessageClass.SUCCESS)
    assert msg.get(Software) == Software("test vector")
    assert msg.get(XorMappedAddress) == XorMappedAddress("192.0.2.1", 32853)
    assert msg.check_integrity(SHORT_TERM_KEY)


def test_2_3_ipv6_response() -> None:
    msg = Message.parse(v.IPV6_RESPONSE)
    assert msg.get(XorMappedAddress) == XorMappedAddress(
        "2001:db8:1234:5678:11:2233:4455:6677", 32853
    )
    assert msg.check_integrity(SHORT_TERM_KEY)


def test_2_4_long_term_request() -> None:
    msg = Message.parse(v.LONG_TERM_REQUEST)
    assert msg.transaction_id == bytes.fromhex("78ad3433c6ad72c029da412e")
    assert msg.get(Username) == Username(v.LONG_TERM_USERNAME)
    assert msg.get(Nonce) == Nonce(v.LONG_TERM_NONCE)
    assert msg.get(Realm) == Realm(v.LONG_TERM_REALM)
    assert msg.get(Fingerprint) is None  # this vector has none
    assert saslprep(v.LONG_TERM_PASSWORD) == "TheMatrIX"
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    expected = f"{v.LONG_TERM_USERNAME}:{v.LONG_TERM_REALM}:TheMatrIX".encode()
    assert key == hashlib.md5(expected).digest()
    assert msg.check_integrity(key)
    assert not msg.check_integrity(long_term_key(v.LONG_TERM_USERNAME, "example.org", "x"))


def test_2_4_is_rebuilt_byte_for_byte() -> None:
    """Zero padding and no FINGERPRINT: our encoder reproduces the RFC's bytes exactly."""
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    msg = Message(
        BINDING,
        MessageClass.REQUEST,
        bytes.fromhex("78ad3433c6ad72c029da412e"),
        (Username(v.LONG_TERM_USERNAME), Nonce(v.LONG_TERM_NONCE), Realm(v.LONG_TERM_REALM)),
    )
    assert msg.encode(integrity_key=key) == v.LONG_TERM_REQUEST


@pytest.mark.parametrize("vector", [v.REQUEST, v.IPV4_RESPONSE, v.IPV6_RESPONSE])
def test_serializer_layout_matches_the_vectors(vector: bytes) -> None:
    """Re-serialized verbatim, the vectors differ only in their padding bytes."""
    assert bytes(Message.parse(vector)) == _zero_padding(vector)


@pytest.mark.parametrize("vector", [v.REQUEST, v.IPV4_RESPONSE, v.IPV6_RESPONSE])
def test_encoder_computes_integrity_and_fingerprint(vector: bytes) -> None:
    """Our MESSAGE-INTEGRITY and FINGERPRINT over the zero-padded vector verify."""
    msg = Message.parse(vector)
    again = Message.parse(msg.encode(integrity_key=SHORT_TERM_KEY, fingerprint=True))
    assert again == msg or again.attributes[:-2] == msg.attributes[:-2]
    assert again.check_integrity(SHORT_TERM_KEY)
    assert again.get(MessageIntegrity) is not None


@pytest.mark.parametrize("vector", [v.REQUEST, v.IPV4_RESPONSE, v.IPV6_RESPONSE])
def test_any_changed_byte_breaks_the_fingerprint(vector: bytes) -> None:
    for offset in range(20, len(vector) - 8):  # every attribute byte before FINGERPRINT
        changed = bytearray(vector)
        changed[offset] ^= 0x01
        with pytest.raises(NotStunError, match="FINGERPRINT does not match"):
            Message.parse(bytes(changed))


def test_any_changed_byte_breaks_the_integrity() -> None:
    key = long_term_key(v.LONG_TERM_USERNAME, v.LONG_TERM_REALM, v.LONG_TERM_PASSWORD)
    for offset in (0x17, 0x30, 0x50, len(v.LONG_TERM_REQUEST) - 1):
        changed = bytearray(v.LONG_TERM_REQUEST)
        changed[offset] ^= 0x20
        assert not Message.parse(bytes(changed)).check_integrity(key)
