"""Errors raised by the sans-IO STUN code.

Like :class:`minipbx.sip.errors.ParseError`, an error carries the reply it suggests: the
STUN error code to answer with (RFC 8489 14.8), or ``None`` when the datagram must be dropped
without an answer. When the 20-byte header was understood, ``header`` holds it so the layer
boundary (the Binding server) can address its error response to the right transaction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 20-byte STUN header (RFC 8489 5)."""

    message_type: int
    length: int
    cookie: int
    transaction_id: bytes


class StunError(ValueError):
    """A STUN message or attribute that does not follow RFC 8489.

    ``status`` is the error code to answer a request with (400 or 420), ``None`` when the
    datagram is to be dropped silently; ``header`` is the parsed header when there was one.
    """

    def __init__(self, reason: str, status: int | None = 400, header: Header | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.header = header

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status})"


class NotStunError(StunError):
    """The datagram is not a STUN message at all (RFC 8489 6.3: discard it silently).

    Raised for a wrong first two bits, a missing magic cookie, a length that does not match
    the datagram, or a FINGERPRINT that does not check out (RFC 8489 14.7).
    """

    def __init__(self, reason: str, header: Header | None = None) -> None:
        super().__init__(reason, None, header)
