"""The STUN Binding server, sans-IO (RFC 8489 6.3, 12; RFC 5780 7.2).

:meth:`StunServer.handle` takes a datagram and its source address and returns the datagram
to send back, or None. It keeps no per-client state, needs no clock and never raises:
everything the parser rejects becomes an error response or silence, as the RFC asks:

- not STUN at all (bits, cookie, length, FINGERPRINT) -> silence;
- responses and indications -> silence (this server sends no requests);
- a malformed request whose header parsed -> 400 Bad Request;
- unknown comprehension-required attributes -> 420 with UNKNOWN-ATTRIBUTES (6.3.1.1);
- a request for another method -> 400;
- a Binding request -> success with XOR-MAPPED-ADDRESS (MAPPED-ADDRESS for an RFC 3489
  client), SOFTWARE and FINGERPRINT.

No credentials are used: MESSAGE-INTEGRITY in a request is ignored (RFC 8489 9: the server
decides whether authentication applies; a public Binding server needs none).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from minipbx import __version__
from minipbx.stun.attributes import (
    Attribute,
    ChangeRequest,
    ErrorCode,
    MappedAddress,
    Software,
    UnknownAttributes,
    XorMappedAddress,
)
from minipbx.stun.errors import Header, StunError
from minipbx.stun.message import BINDING, Message, MessageClass, split_type

SOFTWARE = f"minipbx {__version__}"


@dataclass(slots=True)
class StunStats:
    """Counters of one server, for logs and the console."""

    requests: int = 0
    answered: int = 0
    errors: int = 0
    dropped: int = 0


class StunServer:
    """Answers Binding requests; see the module docstring for the rules."""

    def __init__(self, software: str | None = SOFTWARE) -> None:
        self.software = Software(software) if software else None
        self.stats = StunStats()

    def handle(self, data: bytes, source: Sequence[Any]) -> bytes | None:
        """The answer to ``data`` received from ``source`` ((host, port, ...)), or None."""
        try:
            request = Message.parse(data)
        except StunError as exc:
            return self._rejected(exc)
        if request.message_class is not MessageClass.REQUEST:
            self.stats.dropped += 1
            return None
        self.stats.requests += 1
        if request.method != BINDING:
            return self._error(request, 400, f"unsupported method 0x{request.method:03x}")
        unknown = request.unknown_required
        change = request.get(ChangeRequest)
        if change is not None and change.asks_change:
            # RFC 5780 7.2: a server without an alternate address answers 420.
            unknown += (ChangeRequest.TYPE,)
        if unknown:
            if request.classic and len(unknown) % 2:  # RFC 3489 11.2.10: an even count
                unknown += unknown[-1:]
            return self._error(request, 420, "", UnknownAttributes(unknown))
        self.stats.answered += 1
        return self._answer(request, _mapped(source, request.classic))

    def _rejected(self, exc: StunError) -> bytes | None:
        header = exc.header
        if exc.status is None or header is None:
            self.stats.dropped += 1
            return None
        method, message_class = split_type(header.message_type)
        if message_class is not MessageClass.REQUEST:
            self.stats.dropped += 1
            return None
        self.stats.requests += 1
        request = _request_of(header, method)
        return self._error(request, exc.status, exc.reason[:127])

    def _error(self, request: Message, code: int, reason: str, *extra: Attribute) -> bytes:
        self.stats.errors += 1
        return self._answer(request, ErrorCode(code, reason), *extra, error=True)

    def _answer(self, request: Message, *attributes: Attribute, error: bool = False) -> bytes:
        """RFC 8489 6.3.1: same method and transaction; SOFTWARE and FINGERPRINT added.

        RFC 3489 clients get neither: they would not know FINGERPRINT, and they expect the
        length of a SERVER (now SOFTWARE) string to be a multiple of 4 (RFC 3489 11.2.11).
        """
        classic = request.classic
        extra = (self.software,) if self.software is not None and not classic else ()
        response = Message(
            request.method,
            MessageClass.ERROR if error else MessageClass.SUCCESS,
            request.transaction_id,
            (*attributes, *extra),
            request.cookie,
        )
        return response.encode(fingerprint=not classic)


def _request_of(header: Header, method: int) -> Message:
    return Message(method, MessageClass.REQUEST, header.transaction_id, (), header.cookie)


def _mapped(source: Sequence[Any], classic: bool) -> Attribute:
    """The client's transport address as seen here (IPv4-mapped IPv6 shown as IPv4)."""
    host, port = str(source[0]).split("%", 1)[0], int(source[1])
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = str(ip.ipv4_mapped)
    return MappedAddress(host, port) if classic else XorMappedAddress(host, port)
