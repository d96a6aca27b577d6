"""Pure routing rules: stamping incoming requests and choosing where responses go.

- RFC 3261 18.2.1 and RFC 3581 4: the top Via of a received request gets ``received``
  (source IP) when its sent-by host is not that IP, and ``rport=<source port>`` when the
  client asked for it. The stamp is written into the header text, so a response built
  with ``Request.response`` carries it back.
- RFC 3261 18.2.2 and RFC 3581 4: a response goes back over the connection the request
  came on; over UDP to ``received`` (or the source IP) and ``rport`` when present, else
  to the sent-by port (default 5060).

Decisions: ``maddr`` in a Via is ignored (RFC 3261 18.2.2 would send the response to a
multicast or any address the client names, a reflection vector); a ``received`` or
``rport`` value already present in a request is overwritten with what the packet shows,
for the same reason.
"""

from __future__ import annotations

import ipaddress
import re

from minipbx.sip import ParseError, Request, Response, Via
from minipbx.sip.message import REASONS
from minipbx.transport.address import DEFAULT_PORTS, Address

_TOP_VIA_UDP = re.compile(rb"(\n(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*)UDP", re.I)
_REASON_CUT = re.compile(r"['\"]")
_MAX_DETAIL = 60


def same_ip(via_host: str, source_ip: str) -> bool:
    """True when a Via sent-by host is the IP address ``source_ip`` (RFC 3261 18.2.1)."""
    if via_host == source_ip:
        return True
    if ":" not in via_host and ":" not in source_ip:
        return False  # two different IPv4 texts, or a domain name
    try:  # IPv6 may be written many ways, and in brackets in a Via (RFC 5118 4.5)
        a = ipaddress.ip_address(via_host.strip("[]"))
        b = ipaddress.ip_address(source_ip.partition("%")[0])
    except ValueError:
        return False
    return a == b


def _stamped(via: Via, source: Address) -> Via | None:
    """The top Via with received/rport set for ``source``, or None when it is right as is.

    RFC 3261 18.2.1: ``received`` when the sent-by host differs from the source IP.
    RFC 3581 4: when ``rport`` is present, fill it with the source port and always add
    ``received``.
    """
    params = via.params
    source_ip = source.host.partition("%")[0]  # a zone id is not valid in received
    wants_rport = "rport" in params
    if not wants_rport and "received" not in params and same_ip(via.host, source_ip):
        return None  # the common case: nothing to add
    stamped = dict(params)
    if wants_rport:
        stamped["rport"] = str(source.port)
    stamped["received"] = source_ip
    if stamped == params:
        return None
    return Via(via.transport, via.host, via.port, stamped, via.protocol)


def stamp_request(request: Request, source: Address) -> None:
    """Add ``received``/``rport`` to the top Via of a request from ``source``, in place.

    See :func:`_stamped` for the rules. The Via value is replaced where it stands and the
    message's parsed views stay cached (nothing is parsed twice).
    """
    top = _stamped(request.via, source)
    if top is not None:
        request.replace_top_via(top)


def response_destination(via: Via, source: Address) -> Address:
    """Where a response whose top Via is ``via`` goes, for a request from ``source``.

    RFC 3261 18.2.2: over TCP/TLS the connection the request came on (``source``).
    Over UDP, RFC 3581 4: to received:rport when rport has a value; else RFC 3261
    18.2.2: to received (the source IP once stamped) and the sent-by port or 5060.
    """
    if source.transport != "udp":
        return source
    host = (via.received or source.host).strip("[]")
    if via.wants_rport:
        port = via.rport or source.port  # an empty rport: the request was not stamped
    else:
        port = via.port or DEFAULT_PORTS["udp"]
    if host == source.host and port == source.port:
        return source
    return Address("udp", host, port)


def reconnect_destination(via: Via, source: Address) -> Address:
    """Where to open a new connection for a response when the request's one is gone.

    RFC 3261 18.2.2: the IP in ``received`` (else the sent-by host, which then is the
    source IP) and the sent-by port, or the transport's default port.
    """
    host = (via.received or source.host).strip("[]")
    return Address(source.transport, host, via.port or DEFAULT_PORTS[source.transport])


def short_reason(exc: ParseError) -> str:
    """A one-line reason phrase for an error response: standard text plus a hint.

    The hint is cut before any quoted (peer supplied) text and kept printable ASCII,
    so nothing the peer sent is echoed back; no Warning header is used.
    """
    base = REASONS.get(exc.status, "Bad Request")
    detail = _REASON_CUT.split(exc.reason, 1)[0]
    detail = "".join(ch for ch in detail if " " <= ch <= "~").strip(" :,;")[:_MAX_DETAIL]
    return f"{base} ({detail})" if detail else base


def error_response(exc: ParseError, source: Address) -> Response | None:
    """The response to an unparseable request, or None when it must be dropped.

    RFC 3261 8.2.6 / 16.3: answerable errors (Via, From, To, Call-ID, CSeq intact) get
    ``exc.status`` (400, 505, 416...); others, and any ACK (RFC 3261 17), are dropped.
    The request's top Via is stamped first so the response routes like any other.
    """
    request = exc.request
    if not exc.answerable or not isinstance(request, Request) or request.method == "ACK":
        return None
    stamp_request(request, source)
    return request.response(exc.status, reason=short_reason(exc))


def is_response(data: bytes) -> bool:
    """True when serialized message ``data`` is a response (status line ``SIP/2.0 ...``)."""
    return data[:4] in (b"SIP/", b"sip/", b"Sip/")


def via_udp_to_tcp(data: bytes) -> bytes:
    """``data`` with the top Via's transport changed from UDP to TCP (RFC 3261 18.1.1)."""
    return _TOP_VIA_UDP.sub(rb"\1TCP", data, count=1)
