"""What the transport layer hands up, and what it counts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from minipbx.sip import Request, Response
from minipbx.transport.address import Address
from minipbx.transport.routing import response_destination


@dataclass(frozen=True, slots=True)
class Inbound:
    """A SIP message that arrived: passed to the ``on_message`` callback.

    A request's top Via already carries ``received``/``rport`` (RFC 3261 18.2.1,
    RFC 3581 4), so a response built with ``Request.response`` routes correctly.
    """

    message: Request | Response
    #: The packet's real source; for TCP/TLS it names the connection (``conn``).
    source: Address
    #: The local listening address it arrived on (for an outgoing connection, the
    #: listener of that transport, else the socket's own address).
    local: Address
    #: ``loop.time()`` when the octets were read.
    arrived: float
    #: Octets of the message on the wire (see TransportManager for streams).
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("negative message size")
        if self.source.transport != self.local.transport:
            raise ValueError(f"source {self.source} and local {self.local} differ in transport")

    @property
    def reply_to(self) -> Address:
        """Where responses to this request go (RFC 3261 18.2.2, RFC 3581 4).

        Over TCP/TLS the arrival connection; over UDP received:rport, or the Via's
        sent-by port when the client did not ask for rport. For a response, the source.
        Hand this to the transaction layer as the peer when responses must follow the
        RFC exactly; ``source`` stays the packet's real origin (NAT detection).
        """
        if isinstance(self.message, Response):
            return self.source
        return response_destination(self.message.via, self.source)


@dataclass(slots=True)
class TransportStats:
    """Counters of the transport layer (read them, do not write them)."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    parse_errors_answered: int = 0
    parse_errors_dropped: int = 0
    oversized_dropped: int = 0
    keepalives: int = 0
    send_errors: int = 0
    connections_accepted: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    connections_closed_idle: int = 0
    stream_errors: int = 0
    tcp_fallbacks: int = 0

    def as_dict(self) -> dict[str, int]:
        """Every counter by name (for the web console and metrics)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
