"""STUN (RFC 8489/5389): messages, attributes and a Binding server.

The packet code (``attributes``, ``message``, ``binding``, ``saslprep``) is sans-IO;
``server`` is the asyncio glue that puts :class:`StunServer` on a UDP socket.
"""

from minipbx.stun.attributes import (
    ATTRIBUTES,
    MAGIC_COOKIE,
    AlternateServer,
    Attribute,
    ChangeRequest,
    ErrorCode,
    Fingerprint,
    IceControlled,
    IceControlling,
    MappedAddress,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    OtherAddress,
    Priority,
    Realm,
    ResponseOrigin,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
)
from minipbx.stun.binding import StunServer, StunStats
from minipbx.stun.errors import Header, NotStunError, StunError
from minipbx.stun.message import (
    BINDING,
    FINGERPRINT_XOR,
    Message,
    MessageClass,
    long_term_key,
    message_type,
    parse_header,
    split_type,
)
from minipbx.stun.saslprep import saslprep

__all__ = [
    "ATTRIBUTES",
    "BINDING",
    "FINGERPRINT_XOR",
    "MAGIC_COOKIE",
    "AlternateServer",
    "Attribute",
    "ChangeRequest",
    "ErrorCode",
    "Fingerprint",
    "Header",
    "IceControlled",
    "IceControlling",
    "MappedAddress",
    "Message",
    "MessageClass",
    "MessageIntegrity",
    "MessageIntegritySha256",
    "Nonce",
    "NotStunError",
    "OtherAddress",
    "Priority",
    "Realm",
    "ResponseOrigin",
    "Software",
    "StunError",
    "StunServer",
    "StunStats",
    "UnknownAttribute",
    "UnknownAttributes",
    "UseCandidate",
    "Username",
    "XorMappedAddress",
    "long_term_key",
    "message_type",
    "parse_header",
    "saslprep",
    "split_type",
]
