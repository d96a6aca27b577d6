"""Property tests: hostile input never escapes the parser as anything but ParseError.

Seeds are the RFC 4475 / RFC 5118 messages and a few ordinary ones; hypothesis
mutates them (byte flips, insertions, deletions, truncations, duplicated lines,
swapped header lines) and cuts streams into random reads. Deterministic and bounded
(``derandomize=True``, no example database) so CI stays fast and repeatable.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipbx.sip import ParseError, Request, Response, StreamError, StreamFramer, parse
from minipbx.sip.parser import Keepalive
from tests.sip import test_rfc5118 as v6
from tests.sip import torture as t
from tests.sip.framing import NEXT

SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS: list[bytes] = [
    *t.ALL.values(),
    v6.IPV6_GOOD,
    v6.PORT_AMBIGUOUS,
    v6.VIA_RECEIVED_DELIMITED,
    v6.MULTIPLE_IN_HEADERS,
    v6.IPV4_MAPPED,
    v6.THREE_COLONS,
    NEXT,
]
# Seeds that parse: the corpus for the stream invariance property.
GOOD: list[bytes] = []
for _seed in SEEDS:
    try:
        parse(_seed)
    except ParseError:
        continue
    GOOD.append(_seed)

# Octets that matter to a SIP parser, so mutations hit the grammar more often.
INTERESTING = b'\r\n \t:;,=<>"\\%@[]?&/.-0123456789\x00\x7f\x80\xff'
seeds = st.sampled_from(SEEDS)
octets = st.one_of(st.sampled_from(list(INTERESTING)), st.integers(0, 255))


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), sep + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with one to four mutations applied."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["flip", "insert", "delete", "truncate", "dup-line", "swap-lines", "splice"]
            )
        )
        n = len(data)
        if kind == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data[i] = draw(octets)
        elif kind == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = bytes(draw(st.lists(octets, min_size=1, max_size=8)))
        elif kind == "delete" and n:
            i = draw(st.integers(0, n - 1))
            data[i : i + draw(st.integers(1, 16))] = b""
        elif kind == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif kind in ("dup-line", "swap-lines"):
            lines, rest = _lines(bytes(data))
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 1))
                j = draw(st.integers(1, len(lines) - 1))
                if kind == "dup-line":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
                data = bytearray(b"\r\n".join(lines) + rest)
        elif kind == "splice":
            other = draw(seeds)
            i = draw(st.integers(0, n))
            j = draw(st.integers(0, len(other)))
            data = bytearray(data[:i] + other[j:])
    return bytes(data)


def check_datagram(data: bytes) -> None:
    try:
        msg = parse(data)
    except ParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 599
        assert isinstance(exc.answerable, bool)
        # parse() turns any other exception into ParseError as a safety net; input
        # must be rejected where it is checked, not by a crash (an internal bug).
        cause = exc.__cause__
        assert cause is None or isinstance(cause, ParseError), f"internal error: {cause!r}"
        return
    assert isinstance(msg, Request | Response)
    assert parse(bytes(msg)) == msg, "a parsed message must survive serialize/parse"


@SETTINGS
@given(mutated())
def test_mutated_datagrams_raise_only_parse_error(data: bytes) -> None:
    check_datagram(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    check_datagram(data)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                b"SIP/2.0 ",
                b"INVITE ",
                b"sip:",
                b"@",
                b"[",
                b"]",
                b":",
                b";",
                b",",
                b'"',
                b"\\",
                b"<",
                b">",
                b"%",
                b"\r\n",
                b" ",
                b"\t",
                b"Via: ",
                b"To: ",
                b"From: ",
                b"CSeq: ",
                b"Call-ID: ",
                b"Contact: ",
                b"l: ",
                b"0",
                b"9",
                b"x",
                b"=",
                b"?",
            ]
        ),
        max_size=60,
    )
)
def test_token_soup_raises_only_parse_error(parts: list[bytes]) -> None:
    check_datagram(b"".join(parts))


def chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed_all(chunks: list[bytes]) -> list[object]:
    framer = StreamFramer()
    items: list[object] = []
    for piece in chunks:
        items += framer.feed(piece)
    return items


@SETTINGS
@given(
    st.lists(
        st.one_of(mutated(), seeds, st.just(b"\r\n\r\n"), st.just(b"\r\n")), min_size=1, max_size=4
    ),
    st.lists(st.integers(0, 10_000), max_size=12),
)
def test_stream_of_mutated_messages_raises_only_stream_error(
    messages: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(messages)
    try:
        items = feed_all(chunk(data, cuts))
    except StreamError as exc:
        assert isinstance(exc.status, int)
        return
    for item in items:
        assert isinstance(item, Request | Response | Keepalive | ParseError), item
        if isinstance(item, Request | Response):
            assert parse(bytes(item)) == item


@SETTINGS
@given(
    st.lists(st.sampled_from(GOOD), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=12),
)
def test_stream_reads_do_not_change_the_messages(messages: list[bytes], cuts: list[int]) -> None:
    # Only seeds framed by Content-Length: a datagram without one (inv2543) or with
    # octets past it (dblreq) frames differently on a stream, by design.
    messages = [m for m in messages if m not in (t.INV2543, t.DBLREQ)] or [NEXT]
    data = b"".join(messages)
    whole = feed_all([data])
    assert feed_all(chunk(data, cuts)) == whole
    assert whole == [parse(m) for m in messages]
