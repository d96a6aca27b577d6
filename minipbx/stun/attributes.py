"""STUN attributes (RFC 8489 14, RFC 8445 16.1, RFC 5780 7): typed values and their registry.

Every attribute is a small frozen dataclass that validates itself when built and knows its
``TYPE`` code, its ``NAME`` and how to ``decode``/``encode`` its value (the bytes after the
4-byte type-length header, without padding). :data:`ATTRIBUTES` maps type codes to these
classes; the message parser keeps any other attribute as :class:`UnknownAttribute`.

Validation errors are plain ``ValueError``s naming the attribute; the message parser turns
them into :class:`~minipbx.stun.errors.StunError` (answered with 400).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

MAGIC_COOKIE = 0x2112A442
"""RFC 8489 5: the fixed value in bytes 4-7 of every (non-RFC 3489) message."""
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_FAMILIES = {4: 0x01, 6: 0x02}  # RFC 8489 14.1: address family codes
_ADDRESS_HEADER = struct.Struct("!xBH")


class Attribute:
    """Base of the typed attributes. Subclasses are frozen, slotted dataclasses."""

    __slots__ = ()
    TYPE: ClassVar[int] = -1
    NAME: ClassVar[str] = "?"

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """Build the attribute from its value bytes (``ValueError`` when malformed)."""
        raise NotImplementedError

    def encode(self, transaction_id: bytes) -> bytes:
        """The value bytes, without the type-length header and padding."""
        raise NotImplementedError

    @property
    def comprehension_required(self) -> bool:
        """RFC 8489 14: types 0x0000-0x7FFF must be understood by the receiver."""
        return self.TYPE < 0x8000


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute whose type is not in :data:`ATTRIBUTES`, kept as raw bytes."""

    type: int
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise ValueError(f"attribute type must be 0-0xFFFF, not {self.type}")
        if len(self.value) > 0xFFFF:
            raise ValueError(f"attribute 0x{self.type:04x}: value longer than 65535 bytes")

    @property
    def comprehension_required(self) -> bool:
        """RFC 8489 14: types 0x0000-0x7FFF must be understood by the receiver."""
        return self.type < 0x8000

    def encode(self, transaction_id: bytes) -> bytes:
        """The raw value bytes."""
        return self.value


# -- transport addresses (RFC 8489 14.1, 14.2) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Address(Attribute):
    """An IP address and port; subclasses choose plain or XOR'ed encoding."""

    host: str
    port: int
    XOR: ClassVar[bool] = False

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(
                f"{self.NAME}: host must be an IP address, not {self.host!r}"
            ) from None
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"{self.NAME}: port must be 0-65535, not {self.port}")
        object.__setattr__(self, "host", str(ip))

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """RFC 8489 14.1: a zero byte, family, port, then 4 or 16 address bytes."""
        if len(value) < 4:
            raise ValueError(f"{cls.NAME}: value is {len(value)} bytes, need at least 4")
        family, port = _ADDRESS_HEADER.unpack_from(value)
        raw = value[4:]
        size = {0x01: 4, 0x02: 16}.get(family)
        if size is None:
            raise ValueError(f"{cls.NAME}: unknown address family 0x{family:02x}")
        if len(raw) != size:
            raise ValueError(f"{cls.NAME}: IPv{4 if size == 4 else 6} address is {len(raw)} bytes")
        if cls.XOR:  # RFC 8489 14.2: port ^ top half of the cookie, address ^ cookie+id
            port ^= MAGIC_COOKIE >> 16
            raw = _xor(raw, _COOKIE_BYTES + transaction_id)
        return cls(str(ipaddress.ip_address(raw)), port)

    def encode(self, transaction_id: bytes) -> bytes:
        """Family, port and address, XOR'ed for the XOR- attributes."""
        ip = ipaddress.ip_address(self.host)
        port, raw = self.port, ip.packed
        if self.XOR:
            port ^= MAGIC_COOKIE >> 16
            raw = _xor(raw, _COOKIE_BYTES + transaction_id)
        return _ADDRESS_HEADER.pack(_FAMILIES[ip.version], port) + raw


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


@dataclass(frozen=True, slots=True)
class MappedAddress(_Address):
    """MAPPED-ADDRESS (RFC 8489 14.1): used in answers to RFC 3489 clients."""

    TYPE = 0x0001
    NAME = "MAPPED-ADDRESS"


@dataclass(frozen=True, slots=True)
class XorMappedAddress(_Address):
    """XOR-MAPPED-ADDRESS (RFC 8489 14.2): the client's reflexive transport address."""

    TYPE = 0x0020
    NAME = "XOR-MAPPED-ADDRESS"
    XOR = True


@dataclass(frozen=True, slots=True)
class AlternateServer(_Address):
    """ALTERNATE-SERVER (RFC 8489 14.15): where a 300 (Try Alternate) sends the client."""

    TYPE = 0x8023
    NAME = "ALTERNATE-SERVER"


@dataclass(frozen=True, slots=True)
class ResponseOrigin(_Address):
    """RESPONSE-ORIGIN (RFC 5780 7.3): the address the response was sent from."""

    TYPE = 0x802B
    NAME = "RESPONSE-ORIGIN"


@dataclass(frozen=True, slots=True)
class OtherAddress(_Address):
    """OTHER-ADDRESS (RFC 5780 7.4): the server's alternate address."""

    TYPE = 0x802C
    NAME = "OTHER-ADDRESS"


# -- text (RFC 8489 14.3, 14.9, 14.10, 14.14) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text(Attribute):
    """UTF-8 text with a byte limit (and a character limit for most)."""

    text: str
    MAX_BYTES: ClassVar[int] = 763
    MAX_CHARS: ClassVar[int | None] = 128

    def __post_init__(self) -> None:
        size = len(self.text.encode("utf-8", "surrogatepass"))
        if size > self.MAX_BYTES:
            raise ValueError(f"{self.NAME}: {size} bytes, at most {self.MAX_BYTES} allowed")
        if self.MAX_CHARS is not None and len(self.text) >= self.MAX_CHARS:
            raise ValueError(f"{self.NAME}: must be fewer than {self.MAX_CHARS} characters")

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """The UTF-8 text."""
        try:
            return cls(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{cls.NAME}: not UTF-8 (byte {exc.start})") from None

    def encode(self, transaction_id: bytes) -> bytes:
        """The UTF-8 bytes."""
        return self.text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Username(_Text):
    """USERNAME (RFC 8489 14.3): fewer than 509 bytes; RFC 5389 allowed up to 512."""

    TYPE = 0x0006
    NAME = "USERNAME"
    MAX_BYTES = 512
    MAX_CHARS = None


@dataclass(frozen=True, slots=True)
class Realm(_Text):
    """REALM (RFC 8489 14.9)."""

    TYPE = 0x0014
    NAME = "REALM"


@dataclass(frozen=True, slots=True)
class Nonce(_Text):
    """NONCE (RFC 8489 14.10)."""

    TYPE = 0x0015
    NAME = "NONCE"


@dataclass(frozen=True, slots=True)
class Software(_Text):
    """SOFTWARE (RFC 8489 14.14): the agent's name and version, informational."""

    TYPE = 0x8022
    NAME = "SOFTWARE"


# -- opaque bytes and numbers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opaque(Attribute):
    """Raw bytes whose length must be one of ``SIZES``."""

    value: bytes
    SIZES: ClassVar[tuple[int, ...]] = ()

    def __post_init__(self) -> None:
        if len(self.value) not in self.SIZES:
            sizes = " or ".join(map(str, self.SIZES)) or "0"
            raise ValueError(f"{self.NAME}: value is {len(self.value)} bytes, must be {sizes}")

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """The bytes as they are."""
        return cls(bytes(value))

    def encode(self, transaction_id: bytes) -> bytes:
        """The bytes as they are."""
        return self.value


@dataclass(frozen=True, slots=True)
class MessageIntegrity(_Opaque):
    """MESSAGE-INTEGRITY (RFC 8489 14.5): HMAC-SHA1 over the message before it."""

    TYPE = 0x0008
    NAME = "MESSAGE-INTEGRITY"
    SIZES = (20,)


@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(_Opaque):
    """MESSAGE-INTEGRITY-SHA256 (RFC 8489 14.6): 16 to 32 bytes, a multiple of 4."""

    TYPE = 0x001C
    NAME = "MESSAGE-INTEGRITY-SHA256"
    SIZES = (16, 20, 24, 28, 32)


@dataclass(frozen=True, slots=True)
class UseCandidate(Attribute):
    """USE-CANDIDATE (RFC 8445 16.1): a flag with no value."""

    TYPE = 0x0025
    NAME = "USE-CANDIDATE"

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """The flag; it carries no value."""
        if value:
            raise ValueError(f"{cls.NAME}: value is {len(value)} bytes, must be empty")
        return cls()

    def encode(self, transaction_id: bytes) -> bytes:
        """Nothing."""
        return b""


@dataclass(frozen=True, slots=True)
class _Number(Attribute):
    """An unsigned big-endian integer of ``SIZE`` bytes."""

    value: int
    SIZE: ClassVar[int] = 4

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << (8 * self.SIZE):
            raise ValueError(f"{self.NAME}: {self.value} does not fit in {self.SIZE} bytes")

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """The integer."""
        if len(value) != cls.SIZE:
            raise ValueError(f"{cls.NAME}: value is {len(value)} bytes, must be {cls.SIZE}")
        return cls(int.from_bytes(value, "big"))

    def encode(self, transaction_id: bytes) -> bytes:
        """``SIZE`` big-endian bytes."""
        return self.value.to_bytes(self.SIZE, "big")


@dataclass(frozen=True, slots=True)
class Fingerprint(_Number):
    """FINGERPRINT (RFC 8489 14.7): CRC-32 of the message before it, XOR 0x5354554E."""

    TYPE = 0x8028
    NAME = "FINGERPRINT"


@dataclass(frozen=True, slots=True)
class Priority(_Number):
    """PRIORITY (RFC 8445 16.1): the ICE candidate priority."""

    TYPE = 0x0024
    NAME = "PRIORITY"


@dataclass(frozen=True, slots=True)
class IceControlled(_Number):
    """ICE-CONTROLLED (RFC 8445 16.1): the agent's tie-breaker."""

    TYPE = 0x8029
    NAME = "ICE-CONTROLLED"
    SIZE = 8


@dataclass(frozen=True, slots=True)
class IceControlling(_Number):
    """ICE-CONTROLLING (RFC 8445 16.1): the agent's tie-breaker."""

    TYPE = 0x802A
    NAME = "ICE-CONTROLLING"
    SIZE = 8


@dataclass(frozen=True, slots=True)
class ChangeRequest(_Number):
    """CHANGE-REQUEST (RFC 5780 7.2; RFC 3489 11.2.4): flags 0x4 change IP, 0x2 change port."""

    TYPE = 0x0003
    NAME = "CHANGE-REQUEST"
    CHANGE_IP: ClassVar[int] = 0x4
    CHANGE_PORT: ClassVar[int] = 0x2

    @property
    def asks_change(self) -> bool:
        """True when the client wants the answer from another address or port."""
        return bool(self.value & (self.CHANGE_IP | self.CHANGE_PORT))


# -- errors (RFC 8489 14.8, 14.13) ----------------------------------------------------------

REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    500: "Server Error",
}
"""RFC 8489 14.8: the reason phrases of the error codes."""


@dataclass(frozen=True, slots=True)
class ErrorCode(Attribute):
    """ERROR-CODE (RFC 8489 14.8): a code 300-699 and a reason phrase."""

    TYPE = 0x0009
    NAME = "ERROR-CODE"

    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not 300 <= self.code <= 699:
            raise ValueError(f"{self.NAME}: code must be 300-699, not {self.code}")
        if not self.reason:
            object.__setattr__(self, "reason", REASONS.get(self.code, ""))
        if len(self.reason) >= 128 or len(self.reason.encode("utf-8", "surrogatepass")) > 763:
            raise ValueError(f"{self.NAME}: reason must be fewer than 128 characters")

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """Class (hundreds) in bits 8-10, number (0-99) in the low byte, then the reason."""
        if len(value) < 4:
            raise ValueError(f"{cls.NAME}: value is {len(value)} bytes, need at least 4")
        klass, number = value[2] & 0x07, value[3]
        if not 3 <= klass <= 6 or number > 99:
            raise ValueError(f"{cls.NAME}: invalid code class {klass} number {number}")
        try:
            reason = value[4:].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{cls.NAME}: reason is not UTF-8") from None
        return cls(klass * 100 + number, reason)

    def encode(self, transaction_id: bytes) -> bytes:
        """Two zero bytes, class, number, UTF-8 reason."""
        head = bytes((0, 0, self.code // 100, self.code % 100))
        return head + self.reason.encode("utf-8")


@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    """UNKNOWN-ATTRIBUTES (RFC 8489 14.13): the types a 420 answer did not understand."""

    TYPE = 0x000A
    NAME = "UNKNOWN-ATTRIBUTES"

    types: tuple[int, ...]

    def __post_init__(self) -> None:
        if any(not 0 <= t <= 0xFFFF for t in self.types):
            raise ValueError(f"{self.NAME}: attribute types must be 0-0xFFFF")

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        """A list of 16-bit types."""
        if len(value) % 2:
            raise ValueError(f"{cls.NAME}: odd length {len(value)}")
        return cls(struct.unpack(f"!{len(value) // 2}H", value))

    def encode(self, transaction_id: bytes) -> bytes:
        """The 16-bit types."""
        return struct.pack(f"!{len(self.types)}H", *self.types)


ATTRIBUTES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        ChangeRequest,
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        MessageIntegritySha256,
        XorMappedAddress,
        Priority,
        UseCandidate,
        Software,
        AlternateServer,
        Fingerprint,
        IceControlled,
        IceControlling,
        ResponseOrigin,
        OtherAddress,
    )
}
"""The attributes this package understands, by type code (RFC 8489 18.3 registry)."""


def attribute_name(attribute_type: int) -> str:
    """``NAME`` of a known type, ``0xNNNN`` otherwise (for error messages and logs)."""
    known = ATTRIBUTES.get(attribute_type)
    return known.NAME if known is not None else f"0x{attribute_type:04x}"
