"""Sans-IO SDP (RFC 4566): the data model and parser; offer/answer is in offer_answer.py.

``SessionDescription.parse(bytes | str)`` gives frozen dataclasses, ``bytes(sdp)`` the wire form
(CRLF), and ``SessionDescription.parse(bytes(sdp)) == sdp``. Input may use CRLF or bare LF.
Attributes are kept in order as ``(name, value | None)``, so unknown ones (ICE, crypto ...) come
back verbatim; so do lines not modelled here (``i= u= e= p= z= k=``, unknown types), kept in
place as :class:`OtherLine` (RFC 4566 5 says to ignore unknown types). Accessors of rtpmap, fmtp,
ptime and rtcp treat a malformed value as absent (RFC 4566 5.13) and never reject the body.

Failures are :class:`ParseError` naming the line, ``answerable=True`` (the SIP message is fine):
400 when the grammar is broken (no ``v=`` first, ``o=``/``s=`` missing or repeated, wrong field
count, a number not decimal or out of range such as port > 65535, ``c=`` without address, invalid
UTF-8, CR or NUL in a line); 488 when it is well formed but unusable (an active ``m=`` with no
``c=`` at either level, RFC 4566 5.7; no acceptable audio in an offer; an answer not matching).
"""

from __future__ import annotations

import enum
import ipaddress
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, TypeVar

from minipbx.sip.errors import ParseError

Attribute = tuple[str, str | None]
"""An ``a=`` line: ``a=name:value`` -> ``(name, value)``; ``a=flag`` -> ``(flag, None)``."""

DTMF_PAYLOAD_TYPE = 101  # telephone-event payload type in offers the PBX originates

_T = TypeVar("_T")
_LETTERS = frozenset(string.ascii_letters)
NON_CODECS = frozenset({"TELEPHONE-EVENT", "CN", "RED"})
ICE_CANDIDATE_ATTRIBUTES = frozenset(
    {"candidate", "remote-candidates", "end-of-candidates"}
)  # and ice-*


# --- helpers ---------------------------------------------------------------------------------


def sdp_error(reason: str, status: int = 400) -> ParseError:
    return ParseError(reason, status=status, answerable=True)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _number(text: str, what: str, maximum: int | None = None, minimum: int = 0) -> int:
    """A decimal number as RFC 4566 writes them (at most 20 digits)."""
    if not 0 < len(text) <= 20 or not (text.isascii() and text.isdigit()):
        raise sdp_error(f"{what} {_short(text)} is not a decimal number")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise sdp_error(f"{what} {value} is out of range")
    return value


def _make(factory: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    """Build a value while parsing: a validation ValueError becomes a ParseError."""
    try:
        return factory(*args, **kwargs)
    except ParseError:
        raise
    except ValueError as exc:
        raise sdp_error(str(exc)) from exc


def _check_token(what: str, value: str) -> None:
    if not value or "\0" in value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a token without whitespace, got {_short(value)}")


def _check_text(what: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL, got {_short(value)}")


def _check_fields(obj: Any, *text: str) -> None:
    """Validate a dataclass when built: str fields are tokens (or, if named in ``text``, free
    text without CR/LF/NUL), int fields are not negative and ports at most 65535."""
    for f in fields(obj):
        value, where = getattr(obj, f.name), f"{type(obj).__name__}.{f.name}"
        if isinstance(value, str):
            (_check_text if f.name in text else _check_token)(where, value)
        elif isinstance(value, int) and not 0 <= value <= (65535 if "port" in f.name else value):
            raise ValueError(f"{where} {value} is out of range")


def _check_attributes(attributes: Sequence[Attribute]) -> None:
    for name, value in attributes:
        _check_text("attribute name", name)
        if ":" in name:
            raise ValueError(f"attribute name {name!r} must not contain ':'")
        if value is not None:
            _check_text(f"a={name} value", value)


def _addrtype_of(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:  # a host name (RFC 4566 5.7 allows an FQDN)
        return "IP6" if ":" in address else "IP4"


def is_unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


# --- line values -----------------------------------------------------------------------------


class Direction(enum.Enum):
    """Media direction attributes (RFC 3264 5.1); absent means SENDRECV."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reverse(self) -> Direction:
        """The direction an answer takes for this offered direction (RFC 3264 6.1)."""
        swap = {Direction.SENDONLY: Direction.RECVONLY, Direction.RECVONLY: Direction.SENDONLY}
        return swap.get(self, self)


_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (RFC 4566 5.2)."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def parse(cls, data: str) -> Origin:
        """Parse the value of an ``o=`` line."""
        parts = data.split()
        if len(parts) != 6:
            raise sdp_error(f"o= needs 6 fields, got {len(parts)}")
        version = _number(parts[2], "o= sess-version")
        return _make(cls, parts[0], parts[1], version, *parts[3:])

    def __str__(self) -> str:
        return " ".join(map(str, astuple(self)))


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/<ttl>][/<number>]`` (RFC 4566 5.7).

    For IP4 the first suffix is the multicast TTL and the second the number of addresses; for
    IP6 the only suffix is the number of addresses; other address types are kept verbatim.
    """

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    number: int | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.addrtype.upper() in ("IP4", "IP6") and "/" in self.address:
            raise ValueError(f"c= address {self.address!r} must not contain '/'")
        if (self.ttl or 0) > 255 or self.number == 0:
            raise ValueError(f"c= ttl {self.ttl} or number {self.number} out of range")

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4`` or ``IN IP6`` connection data for a unicast address or host name."""
        return cls("IN", _addrtype_of(address), address)

    @classmethod
    def parse(cls, data: str) -> Connection:
        """Parse the value of a ``c=`` line."""
        parts = data.split()
        if len(parts) != 3:
            raise sdp_error(
                "c= address missing (RFC 4566 5.7)" if len(parts) < 3 else "c= has 4+ fields"
            )
        nettype, addrtype, address = parts
        ttl: int | None = None
        number: int | None = None
        if addrtype.upper() in ("IP4", "IP6") and "/" in address:
            address, *suffixes = address.split("/")
            if addrtype.upper() == "IP4" and len(suffixes) <= 2:
                ttl, suffixes = _number(suffixes[0], "c= ttl", 255), suffixes[1:]
            if len(suffixes) > 1:
                raise sdp_error(f"c= address {_short(parts[2])} has too many '/'")
            if suffixes:
                number = _number(suffixes[0], "c= number of addresses", minimum=1)
        if not address:
            raise sdp_error("c= address missing (RFC 4566 5.7)")
        return _make(cls, nettype, addrtype, address, ttl, number)

    def __str__(self) -> str:
        suffix = "".join(f"/{n}" for n in (self.ttl, self.number) if n is not None)
        return f"{self.nettype} {self.addrtype} {self.address}{suffix}"


@dataclass(frozen=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>``, kilobits per second for AS and CT (RFC 4566 5.8)."""

    bwtype: str
    bandwidth: int

    def __post_init__(self) -> None:
        _check_fields(self)
        if ":" in self.bwtype:
            raise ValueError(f"b= bwtype {self.bwtype!r} must not contain ':'")

    @classmethod
    def parse(cls, data: str) -> Bandwidth:
        """Parse the value of a ``b=`` line."""
        bwtype, colon, value = data.partition(":")
        if not colon:
            raise sdp_error("b= needs <bwtype>:<bandwidth>")
        return _make(cls, bwtype, _number(value, "b= bandwidth"))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True)
class Timing:
    """``t=<start> <stop>`` and its ``r=`` lines, kept verbatim (RFC 4566 5.9, 5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self)
        for repeat in self.repeats:
            _check_text("r= value", repeat)

    @classmethod
    def parse(cls, data: str) -> Timing:
        """Parse the value of a ``t=`` line."""
        parts = data.split()
        if len(parts) != 2:
            raise sdp_error(f"t= needs 2 fields, got {len(parts)}")
        return cls(_number(parts[0], "t= start"), _number(parts[1], "t= stop"))

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 4566 6, RFC 3551 6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.payload_type > 127 or "/" in self.encoding or 0 in (self.clock_rate, self.channels):
            raise ValueError(f"invalid rtpmap {self!r}")

    @classmethod
    def parse(cls, data: str) -> RtpMap:
        """Parse the value of an ``a=rtpmap`` attribute."""
        parts = data.split()
        encoding = parts[1].split("/") if len(parts) == 2 else []
        if len(encoding) not in (2, 3):
            raise sdp_error(f"rtpmap {_short(data)} is not '<pt> <name>/<rate>[/<channels>]'")
        pt = _number(parts[0], "rtpmap payload type", 127)
        rate = _number(encoding[1], "rtpmap clock rate", minimum=1)
        channels = _number(encoding[2], "rtpmap channels", minimum=1) if encoding[2:] else None
        return _make(cls, pt, encoding[0], rate, channels)

    @property
    def channel_count(self) -> int:
        """Number of channels; one when not given (RFC 4566 6)."""
        return self.channels or 1

    def same_codec(self, other: RtpMap) -> bool:
        """Same encoding (case-insensitive, RFC 4855 3), clock rate and channels; any pt."""
        mine = (self.encoding.upper(), self.clock_rate, self.channel_count)
        return mine == (other.encoding.upper(), other.clock_rate, other.channel_count)

    def __str__(self) -> str:
        channels = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{channels}"


# RFC 3551 6, tables 4 and 5: static payload types, used when no rtpmap is given.
_STATIC = """0 PCMU/8000, 3 GSM/8000, 4 G723/8000, 5 DVI4/8000, 6 DVI4/16000, 7 LPC/8000,
    8 PCMA/8000, 9 G722/8000, 10 L16/44100/2, 11 L16/44100, 12 QCELP/8000, 13 CN/8000,
    14 MPA/90000, 15 G728/8000, 16 DVI4/11025, 17 DVI4/22050, 18 G729/8000, 25 CelB/90000,
    26 JPEG/90000, 28 nv/90000, 31 H261/90000, 32 MPV/90000, 33 MP2T/90000, 34 H263/90000"""
STATIC_PAYLOAD_TYPES: Mapping[int, RtpMap] = MappingProxyType(
    {m.payload_type: m for m in map(RtpMap.parse, _STATIC.split(","))}
)
_AUDIO = [m for m in STATIC_PAYLOAD_TYPES.values() if m.payload_type < 24]  # RFC 3551 6
STATIC_AUDIO = {m.encoding.upper(): m for m in reversed(_AUDIO)}  # first pt of each name


@dataclass(frozen=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605 2.1)."""

    port: int
    connection: Connection | None = None

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def parse(cls, data: str) -> RtcpAttribute:
        """Parse the value of an ``a=rtcp`` attribute."""
        port, *rest = data.split(None, 1) or [""]
        connection = Connection.parse(rest[0]) if rest else None
        return _make(cls, _number(port, "rtcp port", 65535), connection)

    def __str__(self) -> str:
        return f"{self.port} {self.connection}" if self.connection else str(self.port)


@dataclass(frozen=True)
class OtherLine:
    """A line kept verbatim, ``<kind>=<value>``.

    ``position`` is how many modelled lines of its section (the ``v=`` or ``m=`` line included)
    are serialized before it, so it comes back where it was.
    """

    kind: str
    value: str
    position: int

    def __post_init__(self) -> None:
        _check_fields(self, "value")
        if len(self.kind) != 1 or self.kind not in _LETTERS:
            raise ValueError(f"line type {self.kind!r} must be one ASCII letter")

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


# --- sections --------------------------------------------------------------------------------


class _HasAttributes:
    """Attribute look-ups shared by the session and media levels."""

    attributes: tuple[Attribute, ...]

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` (``""`` for a flag), None when absent."""
        return next((value or "" for key, value in self.attributes if key == name), None)

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=name``, in order (``""`` for flags)."""
        return [value or "" for key, value in self.attributes if key == name]

    def has_attribute(self, name: str) -> bool:
        """Whether an ``a=name`` is present."""
        return any(key == name for key, _ in self.attributes)

    def direction_attribute(self) -> Direction | None:
        """The first direction attribute at this level only (RFC 3264 5.1)."""
        return next((_DIRECTIONS[k] for k, _ in self.attributes if k in _DIRECTIONS), None)


def _serialize(known: list[str], others: Sequence[OtherLine]) -> str:
    """Modelled lines with the verbatim ones put back at their positions, CRLF-terminated."""
    pending = sorted(others, key=lambda line: line.position)  # stable: keeps their order
    out: list[str] = []
    for index, line in enumerate(known):
        while pending and pending[0].position <= index:
            out.append(str(pending.pop(0)))
        out.append(line)
    return "".join(line + "\r\n" for line in out + [str(line) for line in pending])


def _attribute_lines(attributes: Sequence[Attribute]) -> list[str]:
    return [f"a={name}" if value is None else f"a={name}:{value}" for name, value in attributes]


@dataclass(frozen=True, kw_only=True)
class MediaDescription(_HasAttributes):
    """One media section, ``m=<media> <port>[/<count>] <proto> <fmt> ...`` (RFC 4566 5.14)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    other_lines: tuple[OtherLine, ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self)
        for fmt in self.formats:
            _check_token("m= format", fmt)
        if self.port_count == 0:
            raise ValueError("m= number of ports must be at least 1")
        _check_attributes(self.attributes)

    def rtpmap(self, payload_type: int | str) -> RtpMap | None:
        """The ``a=rtpmap`` of a payload type, else its RFC 3551 static default, else None."""
        pt = str(payload_type)
        for value in self.attribute_values("rtpmap"):
            if value.split(None, 1)[:1] == [pt]:
                try:
                    return RtpMap.parse(value)
                except ParseError:
                    return None  # RFC 4566 5.13: ignored like an unknown attribute
        return (
            STATIC_PAYLOAD_TYPES.get(int(pt))
            if pt.isascii() and pt.isdigit() and len(pt) < 4
            else None
        )

    def rtpmaps(self) -> dict[str, RtpMap]:
        """Known rtpmaps of the listed formats, in the order of ``formats`` (preference)."""
        maps = ((fmt, self.rtpmap(fmt)) for fmt in self.formats)
        return {fmt: rtpmap for fmt, rtpmap in maps if rtpmap is not None}

    def fmtp(self, payload_type: int | str) -> str | None:
        """Format parameters of a payload type: ``a=fmtp:101 0-16`` gives ``"0-16"``."""
        for value in self.attribute_values("fmtp"):
            parts = value.split(None, 1)
            if parts[:1] == [str(payload_type)]:
                return parts[1].strip() if len(parts) == 2 else ""
        return None

    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 4566 6); None if absent or malformed."""
        value = (self.attribute("ptime") or "").strip()
        return int(value) if value.isascii() and value.isdigit() and len(value) < 6 else None

    def rtcp(self) -> RtcpAttribute | None:
        """The ``a=rtcp`` attribute (RFC 3605 2.1); None if absent or malformed."""
        value = self.attribute("rtcp")
        try:
            return None if value is None else RtcpAttribute.parse(value)
        except ParseError:
            return None

    def _known_lines(self) -> list[str]:
        port = str(self.port) + ("" if self.port_count is None else f"/{self.port_count}")
        lines = [" ".join((f"m={self.media}", port, self.proto, *self.formats))]
        lines += [f"c={self.connection}"] if self.connection else []
        lines += [f"b={bw}" for bw in self.bandwidths]
        return lines + _attribute_lines(self.attributes)

    def __str__(self) -> str:
        return _serialize(self._known_lines(), self.other_lines)


@dataclass(frozen=True, kw_only=True)
class SessionDescription(_HasAttributes):
    """A whole SDP body (RFC 4566 5)."""

    origin: Origin
    name: str = "-"
    version: int = 0
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    other_lines: tuple[OtherLine, ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self, "name")
        _check_attributes(self.attributes)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raise ParseError (400 or 488, see the module doc) naming the line."""
        return _parse(_split_lines(data))

    def direction(self, media: MediaDescription) -> Direction:
        """Effective direction of a stream: media level, else session level, else sendrecv."""
        return media.direction_attribute() or self.direction_attribute() or Direction.SENDRECV

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """Effective connection of a stream: a media-level ``c=`` overrides the session's."""
        return media.connection or self.connection

    def bump_version(self) -> SessionDescription:
        """A copy with the ``o=`` sess-version incremented, for a changed offer (RFC 3264 8)."""
        return replace(self, origin=replace(self.origin, sess_version=self.origin.sess_version + 1))

    def _known_lines(self) -> list[str]:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        lines += [f"c={self.connection}"] if self.connection else []
        lines += [f"b={bw}" for bw in self.bandwidths]
        for timing in self.timings:
            lines += [f"t={timing}", *(f"r={repeat}" for repeat in timing.repeats)]
        return lines + _attribute_lines(self.attributes)

    def __str__(self) -> str:
        return _serialize(self._known_lines(), self.other_lines) + "".join(map(str, self.media))

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


# --- parser ----------------------------------------------------------------------------------

_Line = tuple[int, str, str]  # line number, type, value


def _split_lines(data: bytes | str) -> list[_Line]:
    """``(lineno, type, value)`` for each line, ending in CRLF or bare LF (RFC 4566 5)."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        text.encode("utf-8")  # a str may hold lone surrogates
    except UnicodeError as exc:
        raise sdp_error(f"SDP is not valid UTF-8: {exc}") from exc
    lines: list[_Line] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if "\r" in line or "\0" in line:
            raise sdp_error(f"SDP line {lineno} {_short(line)}: CR or NUL inside a line")
        if len(line) < 2 or line[1] != "=" or line[0] not in _LETTERS:
            raise sdp_error(f"SDP line {lineno} {_short(line)}: not <type>=<value> (RFC 4566 5)")
        lines.append((lineno, line[0], line[2:]))
    return lines


def _parse_media_line(value: str) -> dict[str, Any]:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` (RFC 4566 5.14)."""
    parts = value.split()
    if len(parts) < 3:
        raise sdp_error(f"m= needs at least 3 fields, got {len(parts)}")
    port, slash, count = parts[1].partition("/")
    return {
        "media": parts[0],
        "port": _number(port, "m= port", 65535),
        "port_count": _number(count, "m= number of ports", 65535, 1) if slash else None,
        "proto": parts[2],
        "formats": tuple(parts[3:]),
    }


@dataclass
class _Section:
    """What the parser gathers for one section."""

    lineno: int
    m: dict[str, Any] = field(default_factory=dict)  # m= line fields
    known: int = 1  # modelled lines so far, the v= or m= line included
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    others: list[OtherLine] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    origin: Origin | None = None
    name: str | None = None

    def common(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "bandwidths": tuple(self.bandwidths),
            "attributes": tuple(self.attributes),
            "other_lines": tuple(self.others),
        }


def _parse(lines: list[_Line]) -> SessionDescription:
    if not lines or lines[0][1] != "v":
        raise sdp_error("SDP must start with a v= line (RFC 4566 5)")
    sections = [_Section(lines[0][0])]
    version = 0
    for index, (lineno, kind, value) in enumerate(lines):
        try:
            if index == 0:
                version = _number(value.strip(), "v= version")
            elif kind == "m":
                sections.append(_Section(lineno, _parse_media_line(value)))
            else:
                _feed(sections[-1], len(sections) == 1, kind, value)
        except ParseError as exc:
            reason = f"SDP line {lineno} {_short(kind + '=' + value)}: {exc.reason}"
            raise sdp_error(reason, exc.status) from exc
    return _finish(version, sections[0], sections[1:])


def _feed(section: _Section, in_session: bool, kind: str, value: str) -> None:
    if kind in "vos" and (kind == "v" or not in_session):
        raise sdp_error(f"{kind}= belongs once at the start of the session (RFC 4566 5)")
    if kind == "o":
        if section.origin is not None:
            raise sdp_error("duplicate o= line (RFC 4566 5.2)")
        section.origin = Origin.parse(value)
    elif kind == "s":
        if section.name is not None:
            raise sdp_error("duplicate s= line (RFC 4566 5.3)")
        section.name = value
    elif kind == "c" and section.connection is None:
        section.connection = Connection.parse(value)
    elif kind == "c" and in_session:
        raise sdp_error("duplicate session-level c= line (RFC 4566 5.7)")
    elif kind == "b":
        section.bandwidths.append(Bandwidth.parse(value))
    elif kind == "t" and in_session:
        section.timings.append(Timing.parse(value))
    elif kind == "r" and in_session:
        if not section.timings:
            raise sdp_error("r= line before any t= line (RFC 4566 5.10)")
        last = section.timings[-1]
        section.timings[-1] = _make(replace, last, repeats=(*last.repeats, value))
    elif kind == "a":
        name, colon, attribute_value = value.partition(":")
        section.attributes.append((name, attribute_value if colon else None))
    else:
        # RFC 4566 5: unknown types are ignored, here kept verbatim; so is a second media-level
        # c= (layered multicast, RFC 4566 5.7), which nothing here would use.
        section.others.append(OtherLine(kind, value, section.known))
        return
    section.known += 1


def _finish(version: int, session: _Section, sections: list[_Section]) -> SessionDescription:
    if session.origin is None:
        raise sdp_error("SDP has no o= line (RFC 4566 5.2)")
    if session.name is None:
        raise sdp_error("SDP has no s= line (RFC 4566 5.3)")
    media = []
    for section in sections:
        kind, port = section.m["media"], section.m["port"]
        if port and section.connection is None and session.connection is None:
            where = f"SDP line {section.lineno}: m={kind} with port {port}"
            raise sdp_error(f"{where} has no c= at session or media level (RFC 4566 5.7)", 488)
        media.append(_make(MediaDescription, **section.m, **section.common()))
    return _make(
        SessionDescription,
        version=version,
        origin=session.origin,
        name=session.name,
        timings=tuple(session.timings),
        media=tuple(media),
        **session.common(),
    )
