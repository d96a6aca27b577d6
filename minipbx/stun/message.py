"""STUN messages (RFC 8489 5, 6, 14): parse, serialize, FINGERPRINT and MESSAGE-INTEGRITY.

:meth:`Message.parse` takes one whole datagram and either returns a :class:`Message` or
raises :class:`~minipbx.stun.errors.StunError` saying precisely what is wrong:
:class:`~minipbx.stun.errors.NotStunError` when the bytes are not STUN at all (drop them),
otherwise an error with the code to answer (400) and the header to answer to.

RFC 3489 ("classic STUN") Binding requests, which have no magic cookie, are accepted so the
server can answer old clients as RFC 8489 12 asks; :attr:`Message.classic` tells them apart.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from minipbx.stun.attributes import (
    ATTRIBUTES,
    MAGIC_COOKIE,
    Attribute,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    UnknownAttribute,
    attribute_name,
)
from minipbx.stun.errors import Header, NotStunError, StunError
from minipbx.stun.saslprep import saslprep

HEADER_SIZE = 20
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 14.7: "STUN" in ASCII
_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")
_INTEGRITY_SIZE = 4 + 20  # a MESSAGE-INTEGRITY attribute with its header
_FINGERPRINT_SIZE = 4 + 4
_FINGERPRINT_TLV = _TLV.pack(Fingerprint.TYPE, 4)
_AFTER_INTEGRITY = (MessageIntegritySha256.TYPE, Fingerprint.TYPE)

BINDING = 0x001
"""RFC 8489 18.2: the Binding method, the only one this package serves."""
_CLASSIC_BINDING_REQUEST = 0x0001

A = TypeVar("A", bound=Attribute)


class MessageClass(enum.IntEnum):
    """RFC 8489 5: the two class bits C1 C0."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


def message_type(method: int, message_class: MessageClass) -> int:
    """RFC 8489 5: interleave the 12 method bits M11-M0 with the class bits C1 C0."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def split_type(value: int) -> tuple[int, MessageClass]:
    """The method and class of a 14-bit message type (the inverse of :func:`message_type`)."""
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    return method, MessageClass(((value & 0x0010) >> 4) | ((value & 0x0100) >> 7))


@dataclass(frozen=True, slots=True)
class Message:
    """One STUN message. ``raw`` keeps the parsed bytes for the integrity checks."""

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    cookie: int = MAGIC_COOKIE
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.method <= 0xFFF:
            raise ValueError(f"STUN method must be 0-0xFFF, not {self.method}")
        if len(self.transaction_id) != 12:
            raise ValueError(f"transaction id must be 12 bytes, not {len(self.transaction_id)}")
        if not 0 <= self.cookie <= 0xFFFFFFFF:
            raise ValueError(f"cookie must be a 32-bit number, not {self.cookie}")

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (no magic cookie)."""
        return self.cookie != MAGIC_COOKIE

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of class ``kind``, or None."""
        for attribute in self.attributes:
            if isinstance(attribute, kind):
                return attribute
        return None

    @property
    def unknown_required(self) -> tuple[int, ...]:
        """Types of comprehension-required attributes not understood (RFC 8489 6.3.1)."""
        return tuple(
            a.type for a in self.attributes if isinstance(a, UnknownAttribute) and a.type < 0x8000
        )

    # -- parsing -------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Parse one datagram holding exactly one message (RFC 8489 6.3)."""
        header = parse_header(data)
        method, message_class = split_type(header.message_type)
        attributes = tuple(_decode_attributes(data, header))
        return cls(
            method, message_class, header.transaction_id, attributes, header.cookie, bytes(data)
        )

    # -- serializing ----------------------------------------------------------------------

    def __bytes__(self) -> bytes:
        """The message with its attributes exactly as they are (no integrity added)."""
        return self._build(self._body(self.attributes))

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = False) -> bytes:
        """The message with fresh MESSAGE-INTEGRITY and FINGERPRINT as asked (RFC 8489 14.5,
        14.7); any such attributes already in :attr:`attributes` are left out."""
        kept = [a for a in self.attributes if type(a) not in (MessageIntegrity, Fingerprint)]
        body = self._body(kept)
        if integrity_key is not None:
            mac = _hmac(integrity_key, self._build(body, len(body) + _INTEGRITY_SIZE))
            body += _tlv(MessageIntegrity.TYPE, mac)
        if fingerprint:
            crc = _crc(self._build(body, len(body) + _FINGERPRINT_SIZE))
            body += _tlv(Fingerprint.TYPE, crc.to_bytes(4, "big"))
        return self._build(body)

    def _body(self, attributes: list[Attribute] | tuple[Attribute, ...]) -> bytes:
        return b"".join(_tlv(_type_of(a), a.encode(self.transaction_id)) for a in attributes)

    def _build(self, body: bytes, length: int | None = None) -> bytes:
        kind = message_type(self.method, self.message_class)
        size = len(body) if length is None else length
        return _HEADER.pack(kind, size, self.cookie, self.transaction_id) + body

    # -- integrity ------------------------------------------------------------------------

    def check_integrity(self, key: bytes) -> bool:
        """True when the parsed message has a MESSAGE-INTEGRITY that ``key`` produced.

        RFC 8489 14.5: the HMAC-SHA1 covers the message up to the attribute, with the
        length field counting up to and including it. Short-term credentials use the
        password as ``key`` (9.1.1), long-term ones :func:`long_term_key` (9.2.2).
        """
        if not self.raw:
            return False
        for kind, offset, value in _walk(self.raw, HEADER_SIZE):
            if kind == MessageIntegrity.TYPE:
                signed = _with_length(self.raw[:offset], offset - HEADER_SIZE + _INTEGRITY_SIZE)
                return len(value) == 20 and hmac.compare_digest(_hmac(key, signed), value)
        return False


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 5389 15.4: MD5(username ":" realm ":" SASLprep(password))."""
    text = f"{username}:{realm}:{saslprep(password)}"
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()


def parse_header(data: bytes) -> Header:
    """The 20-byte header, checked as RFC 8489 6.3 (and 12 for RFC 3489 clients) asks.

    Raises :class:`NotStunError` when these bytes cannot be a STUN message.
    """
    if len(data) < HEADER_SIZE:
        raise NotStunError(f"{len(data)} bytes: shorter than the 20-byte STUN header")
    kind, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if kind & 0xC000:
        raise NotStunError("the first two bits of a STUN message must be zero")
    if length % 4:
        raise NotStunError(f"message length {length} is not a multiple of 4")
    if HEADER_SIZE + length != len(data):
        raise NotStunError(
            f"message length {length} does not match the {len(data) - HEADER_SIZE} bytes"
            " after the header"
        )
    if cookie != MAGIC_COOKIE and kind != _CLASSIC_BINDING_REQUEST:
        raise NotStunError(f"no magic cookie (0x{cookie:08x})")
    return Header(kind, length, cookie, transaction_id)


def _walk(data: bytes, offset: int) -> Iterator[tuple[int, int, bytes]]:
    """(type, offset, value) of each attribute; ``ValueError`` when one overruns the end.

    The header check guarantees a length that is a multiple of 4, so every attribute
    header is whole and padding never runs past the end.
    """
    end = len(data)
    while offset < end:
        kind, size = _TLV.unpack_from(data, offset)
        start = offset + 4
        if start + size > end:
            raise ValueError(
                f"{attribute_name(kind)} at offset {offset}: length {size} runs past the end"
            )
        value = data[start : start + size]
        yield kind, offset, value
        offset = _next(offset, value)


def _next(offset: int, value: bytes) -> int:
    """Where the attribute after the one at ``offset`` starts (RFC 8489 14: padded to 4)."""
    return offset + 4 + len(value) + (-len(value) % 4)


def _decode_attributes(data: bytes, header: Header) -> Iterator[Attribute]:
    """RFC 8489 14.5, 14.7: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT count; FINGERPRINT must come last and match (checked before anything else,
    so a damaged datagram is dropped as not STUN rather than answered)."""
    claims_fingerprint = len(data) >= 28 and data[-_FINGERPRINT_SIZE:-4] == _FINGERPRINT_TLV
    if claims_fingerprint and _crc(data[:-_FINGERPRINT_SIZE]) != int.from_bytes(data[-4:], "big"):
        raise NotStunError("FINGERPRINT does not match the message", header)
    after_integrity = False
    try:
        for kind, offset, value in _walk(data, HEADER_SIZE):
            if kind == Fingerprint.TYPE and _next(offset, value) != len(data):
                raise StunError("FINGERPRINT must be the last attribute", 400, header)
            if after_integrity and kind not in _AFTER_INTEGRITY:
                continue
            after_integrity = after_integrity or kind == MessageIntegrity.TYPE
            yield _decode_one(kind, value, header)
    except StunError:
        raise
    except ValueError as exc:
        raise StunError(str(exc), 400, header) from None


def _decode_one(kind: int, value: bytes, header: Header) -> Attribute:
    known = ATTRIBUTES.get(kind)
    if known is None:
        return UnknownAttribute(kind, value)
    try:
        return known.decode(value, header.transaction_id)
    except ValueError as exc:
        raise StunError(str(exc), 400, header) from None


def _type_of(attribute: Attribute) -> int:
    return attribute.type if isinstance(attribute, UnknownAttribute) else attribute.TYPE


def _tlv(kind: int, value: bytes) -> bytes:
    return _TLV.pack(kind, len(value)) + value + bytes(-len(value) % 4)


def _with_length(prefix: bytes, length: int) -> bytes:
    """``prefix`` (header and attributes) with the header's length field replaced."""
    return prefix[:2] + length.to_bytes(2, "big") + prefix[4:]


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def _crc(data: bytes) -> int:
    return zlib.crc32(data) ^ FINGERPRINT_XOR
