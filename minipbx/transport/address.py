"""Transport addresses: where a SIP message came from or goes to.

An :class:`Address` is what the transaction layer treats as an opaque, hashable peer
(see ``minipbx.sip.transaction``). For TCP and TLS it may name the exact connection a
message arrived on, so the answer goes back over it (RFC 3261 18.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# RFC 3261 18.2.2 / 19.1.2: default ports when a Via or URI names none.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
TRANSPORTS = tuple(DEFAULT_PORTS)
STREAM_TRANSPORTS = frozenset({"tcp", "tls"})

_IPV4_CHARS = "0123456789."
_IPV6_CHARS = "0123456789abcdefABCDEF:."


def is_ip_literal(host: str) -> bool:
    """A cheap check that ``host`` is IPv4 or IPv6 text (no brackets, no DNS name).

    Only characters are checked: the socket layer rejects what is still malformed,
    but a name can never reach it and trigger a blocking DNS lookup.
    """
    if not host:
        return False
    if ":" in host:
        address = host.partition("%")[0]  # an IPv6 zone id (fe80::1%eth0) may be any name
        return bool(address) and not address.strip(_IPV6_CHARS)
    return not host.strip(_IPV4_CHARS) and host.count(".") == 3


@dataclass(frozen=True, slots=True)
class Address:
    """A transport address: ``transport`` ("udp", "tcp", "tls"), IP ``host`` text, ``port``.

    ``conn`` is the id of the TCP/TLS connection a message arrived on (None for UDP and
    for a destination that may use any connection). Two addresses that differ only in
    ``conn`` are different keys; :attr:`remote` drops it.
    """

    transport: str
    host: str
    port: int
    conn: int | None = None

    def __post_init__(self) -> None:
        if self.transport not in DEFAULT_PORTS:
            raise ValueError(f"unknown transport {self.transport!r} (udp, tcp or tls)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        if not is_ip_literal(self.host):
            raise ValueError(f"host {self.host!r} is not an IP address literal")
        if self.conn is not None and self.transport == "udp":
            raise ValueError("a udp address has no connection id")

    @property
    def reliable(self) -> bool:
        """True for TCP and TLS (RFC 3261 17: no retransmissions needed)."""
        return self.transport != "udp"

    @property
    def is_ipv6(self) -> bool:
        """True when the host is an IPv6 address."""
        return ":" in self.host

    @property
    def remote(self) -> tuple[str, str, int]:
        """``(transport, host, port)``: the key of a connection, whatever its id."""
        return (self.transport, self.host, self.port)

    @property
    def hostport(self) -> str:
        """``host:port`` as written in a Via sent-by or a SIP URI (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def via_transport(self) -> str:
        """The transport as a Via names it: UDP, TCP or TLS (RFC 3261 20.42)."""
        return self.transport.upper()

    def without_conn(self) -> Address:
        """The same address, not tied to a connection."""
        return self if self.conn is None else replace(self, conn=None)

    def __str__(self) -> str:
        conn = "" if self.conn is None else f"#{self.conn}"
        return f"{self.transport}:{self.hostport}{conn}"
