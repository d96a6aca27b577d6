"""Shared checks for the SIP parser tests: one message through every way in.

DESIGN.md asks for parsers fed whole, byte by byte and with trailing data; these
helpers do that for a datagram (``parse``) and for a stream (``StreamFramer``).
"""

from __future__ import annotations

import pytest

from minipbx.sip import ParseError, Request, Response, StreamFramer, parse
from minipbx.sip.parser import Keepalive

Item = Request | Response | Keepalive | ParseError

# A small valid request used as "the next message" after the one under test.
NEXT = (
    b"OPTIONS sip:next@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bKnext\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:next@example.com>\r\n"
    b"From: <sip:caller@example.com>;tag=next\r\n"
    b"Call-ID: next.1@example.com\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def feed_chunks(chunks: list[bytes]) -> list[Item]:
    """Feed ``chunks`` to a new framer one by one; return every item it produced."""
    framer = StreamFramer()
    items: list[Item] = []
    for chunk in chunks:
        items += framer.feed(chunk)
    return items


def byte_by_byte(data: bytes) -> list[bytes]:
    """``data`` cut into one-octet reads."""
    return [data[i : i + 1] for i in range(len(data))]


def parse_everywhere(data: bytes, *, stream: bool = True) -> Request | Response:
    """Parse ``data`` as a datagram, with trailing octets and (when ``stream``) on a stream.

    Every way in must give an equal message, and the message must survive a
    serialize/parse round trip. ``stream=False`` for messages framed by the end of
    the datagram rather than by Content-Length (RFC 2543 style, no Content-Length).
    """
    msg = parse(data)
    assert parse(bytes(msg)) == msg, "serialize/parse round trip changed the message"
    if msg.content_length is not None:
        # RFC 3261 18.3: octets past Content-Length in a datagram are discarded.
        assert parse(data + b"trailing junk\r\n\r\n") == msg
    if stream:
        whole = feed_chunks([data])
        assert whole == [msg], f"stream fed whole gave {whole!r}"
        assert feed_chunks(byte_by_byte(data)) == [msg], "stream fed byte by byte differs"
        both = feed_chunks([data + NEXT])
        assert both == [msg, parse(NEXT)], f"stream with a following message gave {both!r}"
    return msg


def expect_error(data: bytes, status: int, answerable: bool) -> ParseError:
    """``parse(data)`` must raise ParseError(status) with the given ``answerable``."""
    with pytest.raises(ParseError) as info:
        parse(data)
    exc = info.value
    assert (exc.status, exc.answerable) == (status, answerable), repr(exc)
    return exc


def expect_stream_error_item(data: bytes, status: int, answerable: bool) -> None:
    """On a stream the same message is one ParseError item and the stream goes on."""
    items = feed_chunks([data + NEXT])
    assert len(items) == 2, items
    assert isinstance(items[0], ParseError), items
    assert (items[0].status, items[0].answerable) == (status, answerable), repr(items[0])
    assert items[1] == parse(NEXT)
