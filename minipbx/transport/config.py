"""Settings of the SIP transport layer and the TLS contexts built from them."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from minipbx.transport.address import is_ip_literal

PathLike = str | os.PathLike[str]


class TransportError(Exception):
    """The transport layer cannot do what it was configured to (bind, read a certificate)."""


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Where and how to listen for SIP, passed explicitly to :class:`TransportManager`.

    A port of ``None`` disables that listener; ``0`` binds an ephemeral port (tests).
    """

    #: IP addresses to listen on, IPv4 and/or IPv6 ("0.0.0.0", "::" or specific ones).
    #: An IPv6 socket is IPv6-only: list both families to serve both.
    bind_hosts: tuple[str, ...] = ("0.0.0.0",)
    udp_port: int | None = 5060
    tcp_port: int | None = 5060
    #: TLS listens only when ``tls_cert`` and ``tls_key`` are set too.
    tls_port: int | None = 5061
    #: PEM certificate chain and private key of the TLS listener.
    tls_cert: PathLike | None = None
    tls_key: PathLike | None = None
    #: CA bundle used to verify peers of outgoing TLS connections (system default if None).
    tls_ca_file: PathLike | None = None
    #: Verify the certificate of a peer the PBX connects to over TLS.
    tls_verify_peer: bool = True
    #: Seconds without traffic after which a TCP/TLS connection is closed.
    idle_timeout: float = 300.0
    #: Open TCP/TLS connections at most (inbound and outbound together).
    max_connections: int = 2000
    #: Inbound TCP/TLS connections at most from one IP address.
    max_connections_per_ip: int = 100
    #: Largest SIP message accepted, octets (a stream exceeding it is closed).
    max_message_size: int = 65535
    #: Seconds allowed for an outgoing TCP connect or a TLS handshake.
    connect_timeout: float = 5.0
    #: A request larger than this goes over TCP when the caller allows it (RFC 3261 18.1.1).
    udp_size_threshold: int = 1300
    #: Unsent octets queued for one connection before it is dropped as a slow consumer.
    max_write_buffer: int = 1024 * 1024
    #: Log lines per source IP per ``log_window`` seconds for per-message events.
    log_burst: int = 5
    log_window: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.bind_hosts, str):  # a lone host is a common slip
            object.__setattr__(self, "bind_hosts", (self.bind_hosts,))
        if not self.bind_hosts:
            raise ValueError("bind_hosts is empty")
        for host in self.bind_hosts:
            if not is_ip_literal(host):
                raise ValueError(f"bind host {host!r} is not an IP address")
        for name in ("udp_port", "tcp_port", "tls_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} {port} out of range")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        for name in ("idle_timeout", "connect_timeout", "log_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("max_connections", "max_connections_per_ip", "log_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_message_size < 1024:
            raise ValueError("max_message_size must be at least 1024")

    @property
    def tls_enabled(self) -> bool:
        """True when a TLS listener is configured (port, certificate and key)."""
        return self.tls_port is not None and self.tls_cert is not None


def _check_readable(path: PathLike, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TransportError(
            f"cannot read TLS {what} {os.fspath(path)}: {exc.strerror or exc}"
        ) from exc


def server_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    """The TLS context of the listener, from the configured certificate and key.

    Raises :class:`TransportError` naming the file when one is unreadable or invalid.
    """
    if config.tls_cert is None or config.tls_key is None:
        raise TransportError("TLS needs tls_cert and tls_key")
    _check_readable(config.tls_cert, "certificate")
    _check_readable(config.tls_key, "key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (ssl.SSLError, ValueError) as exc:
        raise TransportError(
            f"invalid TLS certificate {os.fspath(config.tls_cert)} or key "
            f"{os.fspath(config.tls_key)}: {getattr(exc, 'reason', None) or exc}"
        ) from exc
    return ctx


def client_ssl_context(config: TransportConfig) -> ssl.SSLContext:
    """The TLS context for connections the PBX opens (RFC 3261 26.3.1: verify the peer)."""
    try:
        ctx = ssl.create_default_context(cafile=config.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load TLS CA file {config.tls_ca_file}: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.tls_verify_peer:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
