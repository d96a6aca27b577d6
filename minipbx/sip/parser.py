"""Parsing SIP messages from datagrams and byte streams (RFC 3261 7, 18.3, 25; RFC 5626 4.4.1).

``parse`` takes one datagram; :class:`StreamFramer` cuts a TCP/TLS byte stream into
messages by Content-Length. Nothing but :class:`ParseError` ever escapes either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minipbx.sip.errors import ParseError
from minipbx.sip.headers import CANONICAL, METHOD_NAMES, SINGLE_HEADERS, is_token
from minipbx.sip.message import (
    CALL_ID,
    CONTACTS,
    CONTENT_LENGTH,
    CSEQ,
    EXPIRES,
    FROM,
    MAX_FORWARDS,
    RECORD_ROUTES,
    ROUTES,
    TO,
    VIAS,
    Headers,
    Index,
    Lines,
    Request,
    Response,
    View,
)
from minipbx.sip.uri import AbsoluteUri, SipUri, parse_uri

_REQUEST_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) ([^ \t]+) ([Ss][Ii][Pp]/[0-9]+\.[0-9]+)\Z")
_STATUS_LINE = re.compile(r"([Ss][Ii][Pp]/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?\Z", re.DOTALL)
_FOLD = re.compile(r"\r?\n[ \t]+")
_FOLD_BYTES = re.compile(rb"\r?\n[ \t]+")
_BARE_LF = re.compile(r"(?<!\r)\n")
_STREAM_CL = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)

MAX_HEADER_BYTES = 32 * 1024
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A CRLF keep-alive on a stream (RFC 5626 4.4.1): a ping (CRLFCRLF) or a pong (CRLF)."""

    ping: bool


def parse(data: bytes) -> Request | Response:
    """Parse one SIP message from a datagram.

    Octets past Content-Length are ignored (RFC 3261 18.3); a Content-Length larger
    than what arrived is an error. Raises :class:`ParseError` and nothing else.
    """
    try:
        return _parse(data, stream=False)
    except ParseError:
        raise
    except Exception as exc:  # a bug must not let hostile input crash the server
        raise ParseError(f"unparseable message ({type(exc).__name__}: {exc})") from exc


def _split_head(data: bytes) -> tuple[str, bytes]:
    if data[:2] == b"\r\n":  # RFC 3261 7.5: ignore CRLFs before the start line
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        lf = data.find(b"\n\n")  # be liberal: bare LF line ends
        if lf >= 0:
            head, body = data[:lf], data[lf + 2 :]
        else:
            head, body = data.rstrip(b"\r\n"), b""
    if not head:
        raise ParseError("empty message")
    return head.decode("utf-8", "surrogateescape"), body


def _lines(text: str) -> list[str]:
    """Header block -> lines, unfolded (RFC 3261 7.3.1), bare LF line ends tolerated."""
    if "\n " in text or "\n\t" in text:
        text = _FOLD.sub(" ", text)
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:
        text = _BARE_LF.sub("\r\n", text)
        lines = text.split("\r\n")
    if text.count("\r") != len(lines) - 1:
        raise ParseError("stray CR in the message header")  # it could split a line elsewhere
    return lines


# lower-cased name or compact form -> (canonical name, lookup key)
_NAMES = {alias: (canon, canon.lower()) for alias, canon in CANONICAL.items()}
_NAMES.update({canon.lower(): (canon, canon.lower()) for canon in CANONICAL.values()})
_NAMES.update({canon: (canon, canon.lower()) for canon in CANONICAL.values()})


def _header_items(lines: list[str]) -> tuple[Headers, str | None]:
    """Split header lines into (canonical name, value); report a repeated single header."""
    items: list[tuple[str, str]] = []
    index: Index = {}
    repeated: str | None = None
    names = _NAMES
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"header line without a colon: {line[:60]!r}")
        known = names.get(name)
        if known is None:
            name = name.rstrip(" \t")
            lower = name.lower()
            known = names.get(lower)
            if known is None:
                if not is_token(name):
                    raise ParseError(f"bad header name {name[:60]!r}")
                known = (name, lower)
        canon, key = known
        value = value.strip(" \t")
        items.append((canon, value))
        same = index.get(key)
        if same is None:
            index[key] = value  # the usual case: one line (see message.Index)
        else:
            if type(same) is str:
                index[key] = [same, value]
            else:
                same.append(value)  # type: ignore[union-attr]
            if repeated is None and key in SINGLE_HEADERS:
                repeated = canon
    return Headers._trusted(items, index), repeated


def _parse(data: bytes, stream: bool) -> Request | Response:
    text, body = _split_head(data)
    lines = _lines(text)
    start = lines[0]
    headers, repeated = _header_items(lines[1:])
    if start.startswith(("SIP/", "sip/", "Sip/")):
        return _response(start, headers, body, repeated, stream)
    return _request(start, headers, body, repeated, stream)


def _check_rest(msg: Request | Response, repeated: str | None, body: bytes, stream: bool) -> None:
    if repeated is not None:
        raise ParseError(f"more than one {repeated} header")
    headers = msg.headers
    index = headers._lookup()
    cache = headers._cache
    for name, key, build in _ALSO_CHECKED:
        lines = index.get(key)
        if lines is not None:
            cache[name] = build(lines)
    length = cache.get("content-length")
    if length is not None:
        if length > len(body):
            raise ParseError(f"Content-Length {length} exceeds the {len(body)} body octets")
        if length < len(body):
            msg.body = body[:length]  # RFC 3261 18.3: extra datagram octets are discarded
    else:
        cache["content-length"] = None


def _views(*views: View[Any]) -> tuple[tuple[str, str, Callable[[Lines], Any]], ...]:
    """(cache name, index key, builder) of each view: what View.fill does, unrolled."""
    return tuple((view.name, view.key, view.build) for view in views)


# Parsed at once when present, so their errors surface here and not deep in the PBX.
_ALSO_CHECKED = _views(EXPIRES, CONTENT_LENGTH, CONTACTS, ROUTES, RECORD_ROUTES)
_COMMON = _views(VIAS, FROM, TO, CALL_ID, CSEQ)
_ANSWER_NEEDS = (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
# Needed intact to answer: the top Via routes the response, the rest is copied into it.
_WELL_FORMED = _views(VIAS, FROM, TO, CALL_ID)
_build_cseq = CSEQ.build
_build_max_forwards = MAX_FORWARDS.build


def _request(
    start: str, headers: Headers, body: bytes, repeated: str | None, stream: bool
) -> Request:
    m = _REQUEST_LINE.match(start)
    method = m.group(1) if m else ""
    req = Request(METHOD_NAMES.get(method, method), _PLACEHOLDER, headers, body)
    index = headers._lookup()
    cache = headers._cache
    # A response can be built when Via, From, To, Call-ID and CSeq are there once each and
    # well-formed (RFC 3261 8.2.6.2); a scalar out of range is answered (RFC 4475 3.1.2.4).
    try:
        for key, name in _ANSWER_NEEDS:
            values = index.get(key)
            if type(values) is not str:  # absent, or a list of several lines
                raise ParseError(f"{'missing' if not values else 'more than one'} {name} header")
        for name, key, build in _WELL_FORMED:
            cache[name] = build(index.get(key))
        cseq_line: str = index["cseq"]  # type: ignore[assignment]
        cseq = cseq_line.split()
        if len(cseq) != 2 or not (cseq[0].isdigit() and cseq[0].isascii()):
            raise ParseError(f"malformed CSeq {cseq_line!r}")
    except ParseError as exc:
        exc.answerable = False
        raise
    try:
        parsed_cseq = cache["cseq"] = _build_cseq(cseq_line)  # in range, a token for the method
        if m is None:
            raise ParseError(f"malformed request line {start[:80]!r}")
        _, uri_text, version = m.groups()
        method = req.method
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            raise ParseError(f"unsupported SIP version {version}", status=505)
        uri = parse_uri(uri_text)
        if isinstance(uri, AbsoluteUri):
            raise ParseError(f"unsupported Request-URI scheme {uri.scheme!r}", status=416)
        if isinstance(uri, SipUri) and uri.headers:
            raise ParseError("headers are not allowed in a Request-URI")  # RFC 3261 19.1.1
        req.uri = uri
        if parsed_cseq.method != method:
            raise ParseError(f"CSeq method {parsed_cseq.method} does not match {method}")
        cache["max-forwards"] = _build_max_forwards(index.get("max-forwards"))
        _check_rest(req, repeated, body, stream)
    except ParseError as exc:
        exc.answerable = True
        exc.request = req
        raise
    return req


def _response(
    start: str, headers: Headers, body: bytes, repeated: str | None, stream: bool
) -> Response:
    m = _STATUS_LINE.match(start)
    if m is None:
        raise ParseError(f"malformed status line {start[:80]!r}")
    version, code, reason = m.groups()
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        raise ParseError(f"unsupported SIP version {version}", status=505)
    status = int(code)
    if not 100 <= status <= 699:
        raise ParseError(f"status code {status} out of range")
    resp = Response(status, reason or "", headers, body)
    index = headers._lookup()
    cache = headers._cache
    for name, key, build in _COMMON:
        cache[name] = build(index.get(key))
    _check_rest(resp, repeated, body, stream)
    return resp


_PLACEHOLDER = SipUri(host="invalid")


class StreamError(ParseError):
    """The byte stream lost its framing (bad or huge Content-Length): close the connection."""


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages (RFC 3261 18.3, RFC 5626 4.4.1).

    :meth:`feed` returns, in order, parsed messages, :class:`Keepalive` markers, and
    :class:`ParseError` objects for single messages that were framed correctly but are
    malformed (the stream stays usable). A :class:`StreamError` is raised when the
    framing itself is lost; the caller then closes the connection.
    """

    def __init__(
        self,
        max_header: int = MAX_HEADER_BYTES,
        max_body: int = MAX_BODY_BYTES,
        *,
        client: bool = False,
    ) -> None:
        self._buf = bytearray()
        self._max_header = max_header
        self._max_body = max_body
        # RFC 5626 4.4.1: the side that opened the connection sends pings (CRLFCRLF) and
        # receives pongs (CRLF); the side that accepted it receives pings.
        self._client = client

    @property
    def buffered(self) -> int:
        """Octets received but not yet framed."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response | Keepalive | ParseError]:
        """Add received octets; return every complete item now available."""
        self._buf += data
        out: list[Request | Response | Keepalive | ParseError] = []
        while self._buf:
            item = self._next()
            if item is None:
                break
            out.append(item)
        return out

    def _next(self) -> Request | Response | Keepalive | ParseError | None:
        buf = self._buf
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            return self._keepalive(buf)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._max_header:
                raise StreamError("message header too large", status=413)
            return None
        if end > self._max_header:
            raise StreamError("message header too large", status=413)
        head = bytes(buf[:end])
        if b"\n " in head or b"\n\t" in head:  # RFC 3261 7.3.1 folding, also of Content-Length
            head = _FOLD_BYTES.sub(b" ", head)
        length = self._content_length(head)
        total = end + 4 + length
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        try:
            return _parse(raw, stream=True)
        except ParseError as exc:
            return exc
        except Exception as exc:  # same guarantee as parse()
            return ParseError(f"unparseable message ({type(exc).__name__}: {exc})")

    def _keepalive(self, buf: bytearray) -> Request | Response | Keepalive | ParseError | None:
        if buf[:4] == b"\r\n\r\n":
            del buf[:4]
            return Keepalive(ping=True)
        if self._client and buf[:2] == b"\r\n":
            del buf[:2]
            return Keepalive(ping=False)
        if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
            return None  # perhaps the first half of a ping; wait for more
        # a stray line end before a message: ignore it (RFC 3261 7.5)
        del buf[: 2 if buf[:2] == b"\r\n" else 1]
        return self._next() if buf else None

    def _content_length(self, head: bytes) -> int:
        values = {v.strip() for v in _STREAM_CL.findall(head)}
        if not values:
            return 0  # RFC 3261 18.3 requires it on streams; absent means no body
        if len(values) > 1:
            raise StreamError("conflicting Content-Length headers on a stream")
        value = values.pop()
        if not value.isdigit() or len(value) > 9:
            raise StreamError(f"bad Content-Length {value!r} on a stream")
        length = int(value)
        if length > self._max_body:
            raise StreamError(f"body of {length} octets is too large", status=413)
        return length
