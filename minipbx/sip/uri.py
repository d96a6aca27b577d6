"""SIP, SIPS and tel URIs (RFC 3261 19.1 and 25.1, RFC 3966, RFC 5118).

Escapes are decoded exactly once, when a URI is parsed, and re-applied when it is
serialized, so a value is never unescaped twice (RFC 3261 19.1.2).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from minipbx.sip.errors import ParseError

# RFC 3261 25.1 character classes, as strings for the ``not text.strip(CHARS)`` test
# (true when every character of ``text`` is in CHARS), much cheaper than a regex match.
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UNRESERVED = ALNUM + "-_.!~*'()"
USER_CHARS = UNRESERVED + "&=+$,;?/%"
PASSWORD_CHARS = UNRESERVED + "&=+$,%"
PARAM_CHARS = UNRESERVED + "[]/:&+$%"
HEADER_CHARS = UNRESERVED + "[]/?:+$%"
HOST_CHARS = ALNUM + "-_."
IPV4_CHARS = "0123456789."
IPV6_CHARS = "0123456789abcdefABCDEF:."
SCHEME_CHARS = ALNUM + "+-."
TEL_CHARS = "0123456789abcdefABCDEF*#+-.()pPwW"

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# Characters that must be escaped when written back into each component.
_USER_SAFE = frozenset(USER_CHARS) - {"%"}
_PASSWORD_SAFE = frozenset(PASSWORD_CHARS) - {"%"}
_SAFE_TEXT: dict[frozenset[str], str] = {}  # a safe set as the text str.strip takes

Params = dict[str, "str | None"]


def unescape(text: str) -> str:
    """Decode %HH escapes once (RFC 3261 19.1.2); the octets are read as UTF-8."""
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise ParseError(f"bad %-escape in {text!r}")
    raw = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw += ch.encode("utf-8", "surrogateescape")
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def escape(text: str, safe: frozenset[str]) -> str:
    """Escape every character of ``text`` not in ``safe`` as %HH of its UTF-8 octets."""
    chars = _SAFE_TEXT.get(safe)
    if chars is None:
        chars = _SAFE_TEXT[safe] = "".join(sorted(safe))
    if not text.strip(chars):  # every character is safe (one C call, no loop)
        return text
    out = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def parse_params(text: str, what: str) -> Params:
    """Parse ``;name[=value]`` URI parameters (names are case-insensitive, RFC 3261 19.1.4)."""
    params: Params = {}
    for item in text.split(";")[1:]:
        name, eq, value = item.partition("=")
        key = name.lower()
        if not key or key.strip(PARAM_CHARS) or value.strip(PARAM_CHARS) or (eq and not value):
            raise ParseError(f"bad parameter {item!r} in {what}")
        if key in params:
            raise ParseError(f"duplicate parameter {name!r} in {what}")
        params[key] = value if eq else None
    return params


def format_params(params: Params) -> str:
    """Serialize parameters as ``;name=value`` / ``;flag``."""
    if not params:
        return ""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


_GOOD_HOSTS: dict[str, str] = {}


def check_host(host: str) -> str:
    """Validate a host: hostname, IPv4 address or bracketed IPv6 reference (RFC 5118).

    The same few hosts (the PBX's own, its phones') appear in almost every message, so
    hosts found valid are remembered in a small bounded table. Returns the remembered
    copy of the text: messages and transactions then share one string per host.
    """
    known = _GOOD_HOSTS.get(host)
    if known is not None:
        return known
    _check_host(host)
    if len(_GOOD_HOSTS) >= 4096:
        _GOOD_HOSTS.clear()
    _GOOD_HOSTS[host] = host
    return host


def _check_host(host: str) -> None:
    if not host.strip(IPV4_CHARS):
        parts = host.split(".")
        if len(parts) != 4 or not all(p and len(p) < 4 and int(p) < 256 for p in parts):
            raise ParseError(f"bad IPv4 address {host!r}")
    elif host[0] == "[":
        if host[-1] != "]" or host.strip("[]").strip(IPV6_CHARS):
            raise ParseError(f"bad IPv6 reference {host!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"bad IPv6 reference {host!r}") from None
    elif (
        host.strip(HOST_CHARS)
        or host[0] in "-."
        or host.rstrip(".")[-1:] in ("-", ".", "")
        or ".." in host
        or not host.rstrip(".").rpartition(".")[2].strip("0123456789")
    ):
        # RFC 3261 25.1 hostname; the top label may not be all digits
        raise ParseError(f"bad host {host!r}")


@dataclass(slots=True, init=False)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. ``user`` and ``password`` are unescaped.

    Treat as immutable (use ``dataclasses.replace``): parsed values are cached by the
    message they came from and shared by every parse of the same text (``parse_uri``).
    Not frozen only because frozen dataclasses are slow to build.
    """

    host: str
    user: str | None
    password: str | None
    port: int | None
    scheme: str
    params: Params
    headers: tuple[tuple[str, str], ...]

    # Written out rather than generated: compiled (setup.py), the dataclass-made __init__
    # would stay interpreted, and the parser builds many URIs.
    def __init__(
        self,
        host: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        scheme: str = "sip",
        params: Params | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.host = host
        self.user = user
        self.password = password
        self.port = port
        self.scheme = scheme
        self.params = {} if params is None else params
        self.headers = headers

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(escape(self.user, _USER_SAFE))
            if self.password is not None:
                out += [":", escape(self.password, _PASSWORD_SAFE)]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, if any."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        """``host[:port]`` as written in a Via sent-by or a Host header."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def secure(self) -> bool:
        """True for ``sips:``."""
        return self.scheme == "sips"

    def matches(self, other: Uri) -> bool:
        """URI equivalence of RFC 3261 19.1.4 (user and password case-sensitive, host not)."""
        if not isinstance(other, SipUri):
            return False
        if (self.scheme, self.user, self.password, self.port) != (
            other.scheme,
            other.user,
            other.password,
            other.port,
        ) or self.host.lower() != other.host.lower():
            return False
        for key in ("user", "ttl", "method", "maddr", "transport"):
            mine, theirs = self.params.get(key), other.params.get(key)
            if (mine is not None or theirs is not None) and (mine or "").lower() != (
                theirs or ""
            ).lower():
                return False
        for key in self.params.keys() & other.params.keys():
            if (self.params[key] or "").lower() != (other.params[key] or "").lower():
                return False
        return sorted(self.headers) == sorted(other.headers)


@dataclass(slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): a number and its parameters."""

    number: str
    params: Params = field(default_factory=dict)
    scheme: str = "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    @property
    def global_number(self) -> bool:
        """True for a ``+``-prefixed global number (RFC 3966 5.1.4)."""
        return self.number.startswith("+")

    def matches(self, other: Uri) -> bool:
        """Equivalence of RFC 3966 4: visual separators ignored."""
        if not isinstance(other, TelUri):
            return False
        strip = str.maketrans("", "", "-.()")
        return self.number.translate(strip) == other.number.translate(strip) and {
            k: (v or "").lower() for k, v in self.params.items()
        } == {k: (v or "").lower() for k, v in other.params.items()}


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of another scheme (``im:``, ``urn:``, ``http:``...), kept verbatim."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def matches(self, other: Uri) -> bool:
        """Exact comparison, scheme case-insensitive."""
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme.lower() == other.scheme.lower()
            and self.rest == other.rest
        )


Uri = SipUri | TelUri | AbsoluteUri


def parse_sip_uri(text: str, scheme: str) -> SipUri:
    """Parse the part of a SIP/SIPS URI after ``scheme:`` (RFC 3261 19.1.1, 25.1)."""
    user = password = None
    at = text.find("@")  # '@' cannot appear unescaped after the userinfo
    if at >= 0:
        user, colon, pw = text[:at].partition(":")
        if (
            not user
            or (not (user.isalnum() and user.isascii()) and user.strip(USER_CHARS))
            or (colon and pw.strip(PASSWORD_CHARS))
        ):
            raise ParseError(f"bad user part in {scheme}:{text!r}")
        if colon:
            password = unescape(pw) if "%" in pw else pw
        if "%" in user:
            user = unescape(user)
        text = text[at + 1 :]
    text, qmark, headers = text.partition("?")
    hostport, semi, params = text.partition(";")
    if hostport[:1] == "[":  # RFC 5118 4.3: the port comes after the brackets
        end = hostport.find("]") + 1
        if end == 0:
            raise ParseError(f"unterminated IPv6 reference in {scheme} URI")
        host, rest = hostport[:end], hostport[end:]
        colon, port = rest[:1], rest[1:]
        if rest and colon != ":":
            raise ParseError(f"junk after IPv6 reference in {scheme} URI: {rest!r}")
    else:
        host, colon, port = hostport.partition(":")
    if not host:
        raise ParseError(f"missing host in {scheme} URI")
    host = check_host(host)
    port_no = None
    if colon:
        if not (port.isdigit() and port.isascii()) or len(port) > 5 or int(port) > 65535:
            raise ParseError(f"bad port {port!r} in {scheme} URI")
        port_no = int(port)
    hdrs: tuple[tuple[str, str], ...] = ()
    if qmark:
        pairs = []
        for item in headers.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or name.strip(HEADER_CHARS) or value.strip(HEADER_CHARS):
                raise ParseError(f"bad header {item!r} in {scheme} URI")
            pairs.append((name, value))
        hdrs = tuple(pairs)
    return SipUri(
        host,
        user,
        password,
        port_no,
        scheme,
        parse_params(semi + params, scheme) if semi else {},
        hdrs,
    )


def _tel_params(text: str) -> Params:
    """tel URI parameters (RFC 3966 3): values may hold characters SIP params may not."""
    params: Params = {}
    for item in text.split(";")[1:]:
        name, eq, value = item.partition("=")
        key = name.lower()
        if not key or key.strip(ALNUM + "-") or key in params or (eq and not value):
            raise ParseError(f"bad tel URI parameter {item!r}")
        params[key] = value if eq else None
    return params


# Parsed URIs by text. The same few URIs (the PBX's own, each phone's contact, each
# extension's address) fill almost every message, so their parses are shared: a URI is
# treated as immutable everywhere (see SipUri). Bounded: emptied when full.
_URI_CACHE: dict[str, Uri] = {}
_URI_CACHE_SIZE = 2048


def clear_uri_caches() -> None:
    """Forget the shared parses of URIs and the hosts known to be valid."""
    _URI_CACHE.clear()
    _GOOD_HOSTS.clear()


def parse_uri(text: str) -> Uri:
    """Parse any URI found in a SIP message; raise :class:`ParseError` (400) if malformed.

    The result may be shared with other callers that parsed the same text: never modify
    it (``dataclasses.replace`` makes a changed copy).
    """
    uri = _URI_CACHE.get(text)
    if uri is None:
        uri = _parse_uri(text)
        if len(_URI_CACHE) >= _URI_CACHE_SIZE:
            _URI_CACHE.clear()
        _URI_CACHE[text] = uri
    return uri


def _parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if scheme == "sip" or scheme == "sips":
        return parse_sip_uri(rest, scheme)
    if not colon or not scheme or scheme.strip(SCHEME_CHARS) or not scheme[0].isalpha():
        raise ParseError(f"not a URI: {text!r}")
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return parse_sip_uri(rest, lower)
    if lower == "tel":
        number, semi, params = rest.partition(";")
        if not number or number.strip(TEL_CHARS):
            raise ParseError(f"malformed tel URI {text!r}")
        return TelUri(number, _tel_params(semi + params) if semi else {})
    if not rest or any(ch in rest for ch in ' \t\r\n<>"'):
        raise ParseError(f"malformed {scheme} URI {text!r}")
    return AbsoluteUri(scheme, rest)
