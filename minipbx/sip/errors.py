"""Errors raised by the sans-IO SIP core.

Modelled on h11's ``error_status_hint``: an error carries the reply it suggests, is raised
where the problem is detected and turned into a protocol action at the layer boundary.
"""

from __future__ import annotations

from typing import Any


class SipError(Exception):
    """Base class for every error the SIP core raises."""


class ParseError(SipError, ValueError):
    """A message, header or body that does not follow the grammar.

    ``status`` is the SIP status code to answer with (400, 505, 501, 416, 413...).
    ``answerable`` tells whether enough of the message was understood to build a
    response (RFC 3261 8.2.6: Via, From, To, Call-ID and CSeq of a request); when
    false the message must be dropped silently (RFC 3261 16.3, 18.1.2).
    """

    def __init__(self, reason: str, status: int = 400, answerable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.answerable = answerable
        # When answerable, the parser attaches the partly validated request here so the
        # caller can build the error response from it (``exc.request.response(exc.status)``).
        self.request: Any = None

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, status={self.status}, answerable={self.answerable})"


class TransactionError(SipError):
    """An illegal transition or use of a transaction or dialog (a programming error)."""
