"""Asyncio sockets for SIP: UDP, TCP and TLS listeners, connection reuse, keepalive.

The :class:`TransportManager` owns every socket; parsed messages go up to one
``on_message(Inbound)`` callback, already stamped with their source (RFC 3261 18.2.1,
RFC 3581). Routing rules live in :mod:`minipbx.transport.routing` as pure functions.
"""

from minipbx.transport.address import DEFAULT_PORTS, TRANSPORTS, Address
from minipbx.transport.config import TransportConfig, TransportError
from minipbx.transport.events import Inbound, TransportStats
from minipbx.transport.manager import OnMessage, OnSendError, SourceFilter, TransportManager
from minipbx.transport.routing import response_destination, stamp_request

__all__ = [
    "DEFAULT_PORTS",
    "TRANSPORTS",
    "Address",
    "Inbound",
    "OnMessage",
    "OnSendError",
    "SourceFilter",
    "TransportConfig",
    "TransportError",
    "TransportManager",
    "TransportStats",
    "response_destination",
    "stamp_request",
]
