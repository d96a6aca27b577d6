"""SIP requests and responses (RFC 3261 7).

A message keeps its headers as an ordered list of ``(name, value)`` text pairs, which
is what it serializes; typed views of the headers (Via, From, To, CSeq...) are parsed
on first use and cached until the headers change. The parser touches the mandatory
ones, so a parsed message is known to have valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from minipbx.sip.errors import ParseError
from minipbx.sip.headers import (
    CANONICAL,
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Token,
    Via,
    canonical_name,
    parse_name_addr_list,
    parse_tokens,
    parse_uint,
    parse_via_list,
    split_list,
)
from minipbx.sip.uri import Uri

T = TypeVar("T")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    429: "Provide Referrer Identity", 430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip


def header_key(name: str) -> str:
    """The lookup key of a header name: its canonical spelling, lower-cased."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
    return key


_KEYS: dict[str, str] = {}
for _alias, _canon in CANONICAL.items():
    _KEYS[_alias] = _KEYS[_canon] = _KEYS[_canon.lower()] = _canon.lower()


# What the index of a Headers holds for one name: the value of its only line (most
# headers), or the values of its lines when it has several. A dict of strings is never
# tracked by the cyclic garbage collector and needs no list per header.
Lines = str | list[str] | None
Index = dict[str, str | list[str]]


def _as_list(lines: Lines) -> list[str]:
    if lines is None:
        return []
    return [lines] if type(lines) is str else lines  # type: ignore[return-value]


def _copy_views(source: dict[str, Any], target: dict[str, Any], tagged: bool) -> None:
    """A response copies Via, From, To, Call-ID and CSeq: so do their parsed views (not
    To when the response's To got a tag: parsed if someone asks)."""
    for name in _COPIED_VIEWS if tagged else _COPIED_VIEWS_TO:
        value = source.get(name)
        if value is not None:
            target[name] = value


_COPIED_VIEWS = ("vias", "from", "call-id", "cseq")
_COPIED_VIEWS_TO = (*_COPIED_VIEWS, "to")


def _first(lines: Lines) -> str:
    """The value of the first line ("" when there is none)."""
    if type(lines) is str:
        return lines
    return lines[0] if lines else ""


class Headers:
    """Ordered, case-insensitive multi-map of header lines with a cache of typed values."""

    __slots__ = ("_cache", "_index", "_items", "_plain")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]
        self._index: Index | None = None
        self._cache: dict[str, Any] = {}
        self._plain: Message | None = None  # essentials() made from these headers

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]], index: Index | None = None) -> Headers:
        """Wrap a list whose names are already canonical (used by the parser)."""
        obj = cls()  # (not cls.__new__: compiled classes have none; the empty init is cheap)
        obj._items = items
        obj._index = index
        return obj

    def _changed(self) -> None:
        self._index = None
        self._cache.clear()
        self._plain = None

    def _lookup(self) -> Index:
        index = self._index
        if index is None:
            index = self._index = {}
            for n, v in self._items:
                key = header_key(n)
                same = index.get(key)
                if same is None:
                    index[key] = v
                elif type(same) is str:
                    index[key] = [same, v]
                else:
                    same.append(v)  # type: ignore[union-attr]
        return index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._lookup()

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str) -> str | None:
        """The value of the first line called ``name``, or None."""
        values = self._lookup().get(header_key(name))
        if values is None or type(values) is str:
            return values
        return values[0]

    def get_all(self, name: str) -> list[str]:
        """The values of every line called ``name``, in order."""
        return _as_list(self._lookup().get(header_key(name)))

    def values(self, name: str) -> list[str]:
        """Every value of a list header, lines split on commas (RFC 3261 7.3.1)."""
        key = header_key(name)
        lines = _as_list(self._lookup().get(key))
        if key not in LIST_HEADERS:
            return list(lines)
        out: list[str] = []
        for line in lines:
            out.extend(split_list(line))
        return out

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append((canonical_name(name), value))
        self._changed()

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (used for Via, Record-Route)."""
        self._items.insert(0, (canonical_name(name), value))
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every line called ``name`` with one line, in place of the first."""
        name = canonical_name(name)
        key = header_key(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if header_key(n) == key:
                if not placed:
                    out.append((name, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((name, value))
        self._items = out
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every line called ``name``; return how many were removed."""
        key = header_key(name)
        before = len(self._items)
        self._items = [(n, v) for n, v in self._items if header_key(n) != key]
        self._changed()
        return before - len(self._items)

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first value of a list header (e.g. the top Via) and return it."""
        key = header_key(name)
        for i, (n, v) in enumerate(self._items):
            if header_key(n) == key:
                first, *rest = split_list(v)
                if rest:
                    self._items[i] = (n, ", ".join(rest))
                else:
                    del self._items[i]
                self._changed()
                return first
        return None

    def copy(self) -> Headers:
        """A shallow copy (values are immutable strings)."""
        return Headers._trusted(list(self._items))


_MISSING = object()
_ESSENTIAL = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))


def _one(lines: Lines, name: str) -> str:
    if type(lines) is str:
        return lines
    if not lines:
        raise ParseError(f"missing {name} header")
    if len(lines) > 1:
        raise ParseError(f"more than one {name} header")
    return lines[0]


def _vias(lines: Lines) -> list[Via]:
    if type(lines) is str:
        return parse_via_list(lines)
    if not lines:
        raise ParseError("missing Via header")
    return [via for line in lines for via in parse_via_list(line)]


def _from(lines: Lines) -> NameAddr:
    return NameAddr.parse(_one(lines, "From"), "From")


def _to(lines: Lines) -> NameAddr:
    return NameAddr.parse(_one(lines, "To"), "To")


def _call_id(lines: Lines) -> str:
    value = _one(lines, "Call-ID")
    if not value or " " in value or "\t" in value:
        raise ParseError(f"malformed Call-ID {value!r}")
    return value


def _cseq(lines: Lines) -> CSeq:
    return CSeq.parse(_one(lines, "CSeq"))


def _content_length(lines: Lines) -> int | None:
    if type(lines) is str:
        return parse_uint(lines, "Content-Length")
    if not lines:
        return None
    values = {parse_uint(v, "Content-Length") for v in lines}
    if len(values) > 1:
        raise ParseError("conflicting Content-Length headers")
    return values.pop()


def _expires(lines: Lines) -> int | None:
    return None if lines is None else parse_uint(_one(lines, "Expires"), "Expires")


def _max_forwards(lines: Lines) -> int | None:
    if lines is None:
        return None
    return parse_uint(_one(lines, "Max-Forwards"), "Max-Forwards", 255)


def _contacts(lines: Lines) -> list[NameAddr]:
    out: list[NameAddr] = []
    for line in _as_list(lines):
        if line.strip() != "*":
            out.extend(parse_name_addr_list(line, "Contact"))
    for contact in out:
        value = contact.params.get("expires")
        if value is not None:
            parse_uint(value, "Contact expires")
    return out


def _name_addr_lines(lines: Lines, name: str) -> list[NameAddr]:
    if type(lines) is str:
        return parse_name_addr_list(lines, name)
    return [na for line in lines or () for na in parse_name_addr_list(line, name)]


def _routes(lines: Lines) -> list[NameAddr]:
    return _name_addr_lines(lines, "Route")


def _record_routes(lines: Lines) -> list[NameAddr]:
    return _name_addr_lines(lines, "Record-Route")


class View(Generic[T]):
    """A typed view of one header, parsed on first use and cached until the headers change."""

    __slots__ = ("build", "key", "name")

    def __init__(self, name: str, key: str, build: Callable[[Lines], T]) -> None:
        self.name = name
        self.key = key
        self.build = build

    def get(self, msg: Message) -> T:
        """The parsed value for ``msg`` (from the cache when already parsed)."""
        headers = msg.headers
        cache = headers._cache
        value = cache.get(self.name, _MISSING)
        if value is _MISSING:
            value = cache[self.name] = self.build(headers._lookup().get(self.key))
        return value  # type: ignore[no-any-return]

    def fill(self, headers: Headers, index: Index) -> None:
        """Parse the header into the cache now (the parser validates this way)."""
        headers._cache[self.name] = self.build(index.get(self.key))


VIAS = View("vias", "via", _vias)
FROM = View("from", "from", _from)
TO = View("to", "to", _to)
CALL_ID = View("call-id", "call-id", _call_id)
CSEQ = View("cseq", "cseq", _cseq)
CONTENT_LENGTH = View("content-length", "content-length", _content_length)
EXPIRES = View("expires", "expires", _expires)
MAX_FORWARDS = View("max-forwards", "max-forwards", _max_forwards)
CONTACTS = View("contact", "contact", _contacts)
ROUTES = View("route", "route", _routes)
RECORD_ROUTES = View("record-route", "record-route", _record_routes)


class Message:
    """Common part of requests and responses."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Message)
            and type(other) is type(self)
            and self._start() == other._start()
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def _start(self) -> str:
        raise NotImplementedError

    def _essential_headers(self) -> Headers | None:
        """The identifying headers alone, or None when the message has nothing else."""
        keep = _ESSENTIAL
        items = self.headers._items
        kept = [item for item in items if item[0] in keep]
        if len(kept) == len(items) and not self.body:
            return None
        headers = Headers._trusted(kept)
        cache = self.headers._cache
        for name in ("call-id", "cseq"):  # cheap to keep, asked for often (not Via: big)
            value = cache.get(name)
            if value is not None:
                headers._cache[name] = value
        return headers

    def __bytes__(self) -> bytes:
        lines = [self._start()]
        lines += [f"{n}: {v}" for n, v in self.headers._items]
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    # Typed views of the headers (parsed once, cached until the headers change).

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (RFC 3261 20.42)."""
        value = self.headers._cache.get("vias")  # parsed already: the usual case
        return value if value is not None else VIAS.get(self)

    @property
    def from_(self) -> NameAddr:
        """The From header (RFC 3261 20.20)."""
        value = self.headers._cache.get("from")  # parsed already: the usual case
        return value if value is not None else FROM.get(self)

    @property
    def to(self) -> NameAddr:
        """The To header (RFC 3261 20.39)."""
        value = self.headers._cache.get("to")  # parsed already: the usual case
        return value if value is not None else TO.get(self)

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 20.8), no whitespace."""
        value = self.headers._cache.get("call-id")  # parsed already: the usual case
        return value if value is not None else CALL_ID.get(self)

    @property
    def cseq(self) -> CSeq:
        """The CSeq header (RFC 3261 20.16)."""
        value = self.headers._cache.get("cseq")  # parsed already: the usual case
        return value if value is not None else CSEQ.get(self)

    @property
    def content_length(self) -> int | None:
        """Content-Length, or None when absent."""
        return CONTENT_LENGTH.get(self)

    @property
    def expires(self) -> int | None:
        """The Expires delta-seconds, or None."""
        return EXPIRES.get(self)

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact value; ``Contact: *`` gives [] (see star_contact)."""
        return CONTACTS.get(self)

    @property
    def routes(self) -> list[NameAddr]:
        """Route values in order (RFC 3261 20.34)."""
        return ROUTES.get(self)

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values in order (RFC 3261 20.30)."""
        return RECORD_ROUTES.get(self)

    @property
    def via(self) -> Via:
        """The top Via."""
        vias = self.headers._cache.get("vias")
        return (vias if vias is not None else VIAS.get(self))[0]

    @property
    def star_contact(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing every binding, RFC 3261 10.2.2)."""
        lines = self.headers.get_all("Contact")
        return any(line.strip() == "*" for line in lines)

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the top Via value, in its own line and position.

        For the transport's ``received``/``rport`` stamp (RFC 3261 18.2.1, RFC 3581 4):
        unlike a header rewrite, the parsed views of the message stay cached.
        """
        headers = self.headers
        items = headers._items
        for i, item in enumerate(items):  # the top Via is nearly always the first line
            if item[0] == "Via":
                at, line = i, item[1]
                break
        else:
            raise ValueError("the message has no Via header")
        text = str(via)
        if "," in line:
            text = ", ".join([text, *split_list(line)[1:]])
        items[at] = ("Via", text)
        headers._plain = None
        index = headers._index
        if index is not None:
            lines = index["via"]
            index["via"] = text if type(lines) is str else [text, *lines[1:]]
        cache = headers._cache
        vias = cache.get("vias")
        if vias is not None:
            cache["vias"] = [via, *vias[1:]]

    def name_addrs(self, name: str) -> list[NameAddr]:
        """Path, Service-Route... values, in order (``routes``/``record_routes`` are cached)."""
        return _name_addr_lines(self.headers.get_all(name), name)

    def tokens(self, name: str) -> list[str]:
        """Token-list headers (Supported, Require, Allow, Allow-Events, Unsupported)."""
        out: list[str] = []
        for line in self.headers.get_all(name):
            out.extend(parse_tokens(line, name))
        return out

    def token(self, name: str) -> Token | None:
        """A ``token;params`` header (Event, Subscription-State, Content-Type), or None."""
        value = self.headers.get(name)
        return None if value is None else Token.parse(value, name)

    def reasons(self) -> list[Token]:
        """Reason header values (RFC 3326): protocol with cause and text parameters."""
        return [Token.parse(v, "Reason") for v in self.headers.values("Reason")]

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Set the body and its Content-Length (and Content-Type when given)."""
        self.body = body
        if content_type is not None:
            self.headers.set("Content-Type", content_type)
        elif not body:
            self.headers.remove("Content-Type")
        self.headers.set("Content-Length", str(len(body)))


class Request(Message):
    """A SIP request: method, Request-URI, headers, body."""

    __slots__ = ("method", "uri")

    def __init__(
        self, method: str, uri: Uri, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.method = method
        self.uri = uri

    def _start(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def essentials(self) -> Request:
        """A copy with only Via, From, To, Call-ID and CSeq and no body (small to keep).

        The message itself when it has nothing more (essentials of essentials); the same
        copy for every call until the headers change (a copy is never to be modified).
        """
        # One copy however many keep it (the INVITE's: its transaction and its call).
        plain = self.headers._plain
        if type(plain) is Request and plain.method == self.method and plain.uri is self.uri:
            return plain
        headers = self._essential_headers()
        if headers is None:
            return self
        plain = self.headers._plain = Request(self.method, self.uri, headers)
        return plain

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255), or None when absent."""
        return MAX_FORWARDS.get(self)

    def response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Build a response to this request (RFC 3261 8.2.6.2).

        Via, From, To, Call-ID and CSeq are copied; ``to_tag`` is added to To when the
        request's To has none (the UAS picks the tag; 100 Trying never gets one).
        """
        src = self.headers
        index = src._lookup()
        vias = index.get("via")
        items: list[tuple[str, str]] = (
            [("Via", vias)] if type(vias) is str else [("Via", v) for v in _as_list(vias)]
        )
        to = plain_to = _first(index.get("to"))
        if to_tag is not None and status > 100 and self.to.tag is None:
            to = f"{to};tag={to_tag}"
        items += [
            ("From", _first(index.get("from"))),
            ("To", to),
            ("Call-ID", _first(index.get("call-id"))),
            ("CSeq", _first(index.get("cseq"))),
        ]
        if status == 100 and (ts := src.get("Timestamp")) is not None:
            items.append(("Timestamp", ts))  # RFC 3261 8.2.6.1
        resp = Response(status, reason or REASONS.get(status, ""), Headers._trusted(items))
        if _finish(resp, items, headers, body, content_type):
            _copy_views(src._cache, resp.headers._cache, to is not plain_to)
        return resp


class Response(Message):
    """A SIP response: status code, reason phrase, headers, body."""

    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.status = status
        self.reason = reason

    def _start(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def essentials(self) -> Response:
        """A copy with only Via, From, To, Call-ID and CSeq and no body (small to keep).

        The message itself when it has nothing more (essentials of essentials); the same
        copy for every call until the headers change (a copy is never to be modified).
        """
        plain = self.headers._plain
        if type(plain) is Response and plain.status == self.status and plain.reason == self.reason:
            return plain
        headers = self._essential_headers()
        if headers is None:
            return self
        plain = self.headers._plain = Response(self.status, self.reason, headers)
        return plain

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    @property
    def provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


def build_request(
    method: str,
    uri: Uri,
    *,
    via: Via,
    from_: NameAddr,
    to: NameAddr,
    call_id: str,
    cseq: int,
    max_forwards: int = 70,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """Build a request from its parts in the order RFC 3261 8.1.1 lists them."""
    items = [
        ("Via", str(via)),
        ("Max-Forwards", str(max_forwards)),
        ("From", str(from_)),
        ("To", str(to)),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    req = Request(method, uri, Headers._trusted(items))
    if _finish(req, items, headers, body, content_type):
        # The views of what was just written are the values it was written from: no
        # parse of our own text (treated as immutable, like every parsed value).
        cache = req.headers._cache
        cache["vias"] = [via]
        cache["from"] = from_
        cache["to"] = to
        cache["call-id"] = call_id
        cache["cseq"] = CSeq(cseq, method)
        cache["max-forwards"] = max_forwards
    return req


_BODY_HEADERS = ("Content-Type", "Content-Length")
_BUILT = frozenset((*_ESSENTIAL, "Max-Forwards"))


def _finish(
    msg: Message,
    items: list[tuple[str, str]],
    extra: Iterable[tuple[str, str]],
    body: bytes,
    content_type: str | None,
) -> bool:
    """Append ``extra`` header lines to a message being built, then set its body.

    What ``items.extend(extra)`` and ``msg.set_body(body, content_type)`` do, without
    rewriting the header list when ``extra`` holds no Content-Type or Content-Length.
    True when ``extra`` adds none of the headers the builder wrote itself (Via, From, To,
    Call-ID, CSeq, Max-Forwards): their typed views may then be filled in directly.
    """
    start = len(items)
    items += [(canonical_name(n), v) for n, v in extra]
    own = True
    for item in items[start:]:
        name = item[0]
        if name in _BODY_HEADERS:
            msg.set_body(body, content_type)
            return False
        if name in _BUILT:
            own = False
    msg.body = body
    if content_type is not None:
        items.append(("Content-Type", content_type))
    items.append(("Content-Length", str(len(body))))
    return own
