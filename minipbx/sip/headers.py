"""Header names and typed header values (RFC 3261 7.3, 20 and 25.1).

Every parser here takes the header value as text (already unfolded and stripped)
and raises :class:`ParseError` (400) when it does not follow the grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from minipbx.sip.errors import ParseError
from minipbx.sip.uri import (
    ALNUM,
    IPV4_CHARS,
    Params,
    SipUri,
    Uri,
    check_host,
    clear_uri_caches,
    format_params,
    parse_uri,
)

# RFC 3261 7.3.3 and the IANA registry: compact form -> full name.
COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
_KNOWN = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Organization",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Event",
    "Allow-Events",
    "Subscription-State",
    "Reason",
    "RAck",
    "RSeq",
    "Path",
    "Service-Route",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Privacy",
    "Session-Expires",
    "Min-SE",
    "Refer-To",
    "Referred-By",
    "Replaces",
    "Diversion",
    "History-Info",
    "Identity",
    "Identity-Info",
    "Accept-Contact",
    "Reject-Contact",
    "Request-Disposition",
    "SIP-ETag",
    "SIP-If-Match",
    "Flow-Timer",
    "P-Charging-Vector",
]
CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN}
CANONICAL.update(COMPACT)

# Headers whose value is a comma-separated list (RFC 3261 7.3.1): may be split and combined.
LIST_HEADERS = frozenset(
    [
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "path",
        "proxy-require",
        "record-route",
        "require",
        "route",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
        "p-asserted-identity",
        "p-preferred-identity",
        "privacy",
        "reason",
        "history-info",
        "diversion",
    ]
)
# Headers that may appear at most once (RFC 3261 20, table 2): duplicates are a 400.
SINGLE_HEADERS = frozenset(
    [
        "call-id",
        "content-length",
        "content-type",
        "cseq",
        "from",
        "to",
        "max-forwards",
        "expires",
        "min-expires",
        "content-disposition",
        "date",
        "mime-version",
        "session-expires",
        "min-se",
        "subscription-state",
        "event",
        "refer-to",
        "rack",
        "rseq",
    ]
)

# One shared string per well-known method name (kept by every transaction key and CSeq).
_METHODS = ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE"]
_METHODS += ["MESSAGE", "REFER", "NOTIFY", "SUBSCRIBE", "PUBLISH", "PRACK"]
METHOD_NAMES = {m: m for m in _METHODS}
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
VALUE_CHARS = TOKEN_CHARS + ":[]/"  # RFC 3261 25.1 gen-value: token / host
_DIGITS = re.compile(r"[0-9]+\Z")
_SIMPLE_PARAMS = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]/]+)?)+\Z")
_VIA_PROTOCOL = re.compile(  # RFC 3261 25.1 sent-protocol, LWS around the slashes
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
)
MAX_UINT32 = 2**32 - 1


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expand (RFC 3261 7.3.3)."""
    return CANONICAL.get(name.lower(), name)


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 3261 token."""
    if text.isalpha() and text.isascii():  # most tokens: methods, transports
        return True
    return bool(text) and not text.strip(TOKEN_CHARS)


def parse_uint(text: str, what: str, limit: int = MAX_UINT32) -> int:
    """A decimal integer between 0 and ``limit`` (RFC 3261 scalar fields)."""
    if not (text.isdigit() and text.isascii()):
        text = text.strip()
        if not _DIGITS.match(text):
            raise ParseError(f"{what} is not a number: {text!r}")
    if len(text) > 12 or (value := int(text)) > limit:
        raise ParseError(f"{what} {text} out of range (max {limit})")
    return value


def split_list(value: str) -> list[str]:
    """Split a list header on commas outside quoted strings and ``<>`` (RFC 3261 7.3.1)."""
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    items: list[str] = []
    start = 0
    quoted = angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise ParseError(f"unterminated quoted string in {value!r}")
    items.append(value[start:].strip())
    return [item for item in items if item]


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string whose opening quote is at ``start``; return (content, end index).

    Backslash escapes are decoded (RFC 3261 25.1 quoted-pair).
    """
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise ParseError(f"unterminated quoted string in {text!r}")


def quote(text: str) -> str:
    """Quote ``text`` as a quoted-string, escaping ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(value: str | None) -> str | None:
    """Strip the quotes of a parameter value that is a quoted-string."""
    if value is not None and value.startswith('"'):
        return read_quoted(value, 0)[0]
    return value


def parse_header_params(text: str, what: str) -> Params:
    """Parse ``*( SEMI generic-param )`` of a header value; values keep their quotes."""
    params: Params = {}
    if not text:
        return params
    if _SIMPLE_PARAMS.match(text):  # no quotes, no whitespace: one regex validates all
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            key = name.lower()
            if key in params:
                raise ParseError(f"duplicate parameter {key!r} in {what}")
            params[key] = value if eq else None
        return params
    if text[0] != ";":
        raise ParseError(f"unexpected {text[:60]!r} in {what}")
    parts = text[1:].split(";") if '"' not in text else _split_semicolons(text[1:])
    for part in parts:
        name, eq, value = part.partition("=")
        key = name.strip(" \t").lower()
        if not key or key.strip(TOKEN_CHARS):
            raise ParseError(f"bad parameter {part.strip()[:60]!r} in {what}")
        if key in params:
            raise ParseError(f"duplicate parameter {key!r} in {what}")
        if eq:
            value = value.strip(" \t")
            if value[:1] == '"':
                if read_quoted(value, 0)[1] != len(value):
                    raise ParseError(f"junk after quoted parameter {key!r} in {what}")
            elif not value or value.strip(VALUE_CHARS):
                raise ParseError(f"bad value for parameter {key!r} in {what}")
            params[key] = value
        else:
            params[key] = None
    return params


def _split_semicolons(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = read_quoted(text, i)[1]
            continue
        if ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


_NAME_ADDRS: dict[str, NameAddr] = {}  # parsed values by text, see NameAddr.parse
_NAME_ADDRS_SIZE = 2048


@dataclass(slots=True, init=False)
class NameAddr:
    """``[display-name] <URI> *(;param)`` as in From, To, Contact, Route (RFC 3261 20.10)."""

    uri: Uri
    display: str | None
    params: Params

    def __init__(self, uri: Uri, display: str | None = None, params: Params | None = None) -> None:
        # Not generated: see SipUri.__init__.
        self.uri = uri
        self.display = display
        self.params = {} if params is None else params

    @classmethod
    def parse(cls, value: str, what: str = "name-addr") -> NameAddr:
        """Parse a name-addr or addr-spec with header parameters (RFC 3261 20.10, 25.1).

        The same values come again and again (a dialog's From and To, a phone's Contact), so
        parses are shared by text: never modify the result (``with_tag`` makes a copy).
        """
        if cls is NameAddr:
            cached = _NAME_ADDRS.get(value)
            if cached is None:
                cached = cls._parse(value, what)
                if len(_NAME_ADDRS) >= _NAME_ADDRS_SIZE:
                    _NAME_ADDRS.clear()
                _NAME_ADDRS[value] = cached
            return cached
        return cls._parse(value, what)

    @classmethod
    def _parse(cls, value: str, what: str) -> NameAddr:
        display: str | None = None
        first = value[:1]
        if first == "<":
            rest = value
        elif first == '"':
            display, end = read_quoted(value, 0)
            rest = value[end:].lstrip(" \t")
            if rest[:1] != "<":
                raise ParseError(f"expected <URI> after display name in {what}")
        else:
            lt = value.find("<")
            if lt < 0:
                return cls._addr_spec(value.strip(" \t"), what)
            name = value[:lt].strip(" \t")
            if name:
                if name.replace(" ", "").replace("\t", "").strip(TOKEN_CHARS):
                    raise ParseError(f"bad display name {name[:60]!r} in {what}")
                display = name
            rest = value[lt:]
        gt = rest.find(">")
        if gt < 0:
            raise ParseError(f"missing '>' in {what}")
        uri_text = rest[1:gt]
        if " " in uri_text or "\t" in uri_text:
            raise ParseError(f"whitespace inside URI in {what}: {uri_text[:60]!r}")
        params = rest[gt + 1 :]
        if params[:1] in (" ", "\t"):
            params = params.lstrip(" \t")
        return cls(parse_uri(uri_text), display, parse_header_params(params, what))

    @classmethod
    def _addr_spec(cls, value: str, what: str) -> NameAddr:
        # addr-spec: the URI ends at the first ';' (RFC 3261 20.10), holds no '?' or ','.
        uri_text, semi, params = value.partition(";")
        uri_text = uri_text.rstrip(" \t")
        if any(ch in uri_text for ch in " \t?,"):
            raise ParseError(f"URI in {what} must be enclosed in <>: {value[:60]!r}")
        return cls(parse_uri(uri_text), None, parse_header_params(semi + params, what))

    def __str__(self) -> str:
        name = f"{quote(self.display)} " if self.display is not None else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 19.3)."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with the tag parameter set."""
        return NameAddr(self.uri, self.display, {**self.params, "tag": tag})

    @property
    def sip_uri(self) -> SipUri | None:
        """The URI when it is sip/sips, else None."""
        return self.uri if isinstance(self.uri, SipUri) else None


@dataclass(slots=True, init=False)
class Via:
    """One Via value: ``SIP/2.0/transport sent-by *(;param)`` (RFC 3261 20.42)."""

    transport: str
    host: str
    port: int | None
    params: Params
    protocol: str

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        # Not generated: see SipUri.__init__.
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value (not a comma-separated list), RFC 3261 20.42 and 25.1."""
        sp = value.find(" ", 8)
        if value[:8] == "SIP/2.0/" and sp > 0:
            protocol = "SIP/2.0"
            transport = value[8:sp]
            rest = value[sp + 1 :]
        else:  # LWS around the slashes, another protocol version (answered 505 later)
            m = _VIA_PROTOCOL.match(value)
            if m is None:
                raise ParseError(f"malformed Via {value[:80]!r}")
            protocol = f"{m.group(1)}/{m.group(2)}"
            transport, rest = m.group(3), value[m.end() :]
        if not is_token(transport):
            raise ParseError(f"bad Via transport {transport[:20]!r}")
        sent_by, semi, params = rest.partition(";")
        sent_by = sent_by.strip(" \t")
        if sent_by[:1] == "[":
            end = sent_by.find("]") + 1
            host, port = sent_by[:end], sent_by[end:].lstrip(" \t")
            colon = port[:1]
            port = port[1:]
        else:
            host, colon, port = sent_by.partition(":")
            host = host.rstrip(" \t")
        if not host:
            raise ParseError(f"missing host in Via {value[:80]!r}")
        host = check_host(host)
        port_no = _via_port(port) if colon else None
        parsed = parse_header_params(semi + params, "Via") if semi else {}
        received = parsed.get("received")
        if received is not None:  # RFC 3261 25.1 (and RFC 5118 4.5): an IP address, no name
            check_host(received if ":" not in received else f"[{received.strip('[]')}]")
            if ":" not in received and received.strip(IPV4_CHARS):
                raise ParseError(f"Via received is not an IP address: {received!r}")
        rport = parsed.get("rport")
        if rport is not None:
            parse_uint(rport, "Via rport", 65535)
        return cls(transport.upper(), host, port_no, parsed, protocol)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The branch parameter, or None (RFC 2543 peers)."""
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) the sender put in sent-by."""
        return self.host, self.port

    @property
    def received(self) -> str | None:
        """The received parameter (RFC 3261 18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value, or None when absent or empty (RFC 3581)."""
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581 4)."""
        return "rport" in self.params


@dataclass(slots=True)
class CSeq:
    """``CSeq: number method`` (RFC 3261 20.16)."""

    seq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        """Parse a CSeq value; the number must fit 32 bits."""
        parts = value.split()
        if len(parts) != 2 or not is_token(parts[1]):
            raise ParseError(f"malformed CSeq {value!r}")
        method = parts[1]
        return cls(parse_uint(parts[0], "CSeq number"), METHOD_NAMES.get(method, method))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(slots=True)
class Token:
    """A token with parameters: Event, Subscription-State, Reason, Content-Type, ..."""

    value: str
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, what: str) -> Token:
        """Parse ``token *(;param)``; a media type ``type/subtype`` counts as one token."""
        head, semi, rest = text.partition(";")
        head = head.strip()
        check = head.replace("/", "", 1) if "/" in head else head
        if not is_token(check):
            raise ParseError(f"malformed {what} {text!r}")
        return cls(head, parse_header_params(semi + rest, what))

    def __str__(self) -> str:
        return f"{self.value}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        """A parameter value without quotes."""
        return unquote(self.params.get(name))


_VIA_PORTS: dict[str, int] = {}  # one int per port text, see _via_port
_VIA_PORTS_SIZE = 4096


def _via_port(text: str) -> int:
    """The Via sent-by port; one shared int per port text (bounded table): each server
    transaction's key keeps one, and ints above 256 are otherwise a new object each."""
    port = _VIA_PORTS.get(text)
    if port is None:
        port = parse_uint(text, "Via port", 65535)
        if len(_VIA_PORTS) >= _VIA_PORTS_SIZE:
            _VIA_PORTS.clear()
        _VIA_PORTS[text] = port
    return port


def clear_parse_caches() -> None:
    """Forget the shared parses of URIs, name-addrs, hosts and ports (bounded tables)."""
    _NAME_ADDRS.clear()
    _VIA_PORTS.clear()
    clear_uri_caches()


def parse_tokens(value: str, what: str) -> list[str]:
    """A comma-separated token list: Supported, Require, Allow, Allow-Events..."""
    items = split_list(value)
    for item in items:
        if not is_token(item):
            raise ParseError(f"bad token {item!r} in {what}")
    return items


def parse_via_list(value: str) -> list[Via]:
    """All Via values in one header line."""
    if "," not in value:
        return [Via.parse(value)]
    return [Via.parse(v) for v in split_list(value)]


def parse_name_addr_list(value: str, what: str) -> list[NameAddr]:
    """Contact, Route, Record-Route, Path values in one header line."""
    if "," not in value:
        return [NameAddr.parse(value, what)]
    return [NameAddr.parse(v, what) for v in split_list(value)]
