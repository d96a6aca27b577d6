"""RFC 4475 SIP torture tests against the parser (messages in ``torture.py``).

For every message the test checks what the RFC calls out. Where RFC 4475 leaves a
choice ("may", "could", "is acceptable") the comment says which one minipbx makes
and why. Where the RFC's expectation belongs to the application layer (registrar,
B2BUA), the test checks what the parser must hand up and the comment says what the
layer above must do with it.

``answerable`` (ParseError) is asserted True when the headers a response copies
(Via, From, To, Call-ID, CSeq; RFC 3261 8.2.6.2) are each there once and well formed;
a CSeq whose only fault is a number out of range is still answered, as RFC 4475
3.1.2.4 asks. It is False when one of them is missing, repeated or malformed: such a
request is dropped, and so is every malformed response (RFC 3261 18.1.2). RFC 4475
would like a 400 for some of the dropped ones (badinv01, quotbal, badaspec, baddn,
insuf); the comments there say why minipbx does not answer.
"""

from __future__ import annotations

import ipaddress
import re

import pytest

from minipbx.sip import (
    AbsoluteUri,
    ParseError,
    Request,
    Response,
    SipUri,
    StreamError,
    StreamFramer,
    TelUri,
    parse,
)
from minipbx.sip.uri import unescape
from tests.sip import torture as t
from tests.sip.framing import (
    NEXT,
    byte_by_byte,
    expect_error,
    expect_stream_error_item,
    feed_chunks,
    parse_everywhere,
)


def request(data: bytes, *, stream: bool = True) -> Request:
    msg = parse_everywhere(data, stream=stream)
    assert isinstance(msg, Request)
    return msg


def response(data: bytes) -> Response:
    msg = parse_everywhere(data)
    assert isinstance(msg, Response)
    return msg


def sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri), uri
    return uri


# ---------------------------------------------------------------------------
# 3.1.1 Valid messages: "parsers must accept"
# ---------------------------------------------------------------------------


def test_wsinv_short_tortuous_invite() -> None:
    # RFC 4475 3.1.1.1: "All elements should treat this as a well-formed request."
    req = request(t.WSINV)
    assert req.method == "INVITE"
    uri = sip(req.uri)
    assert (uri.user, uri.host, uri.params) == (
        "vivekg",
        "chair-dnrc.example.com",
        {"unknownparam": None},
    )

    # To: folded, LWS around ';' and '=', addr-spec form.
    assert req.to.display is None
    assert sip(req.to.uri).user == "vivekg"
    assert req.to.tag == "1918181833n"
    # From: quoted display name with quoted-pairs \\ and \" (RFC 3261 25.1), folded params.
    assert req.from_.display == 'J Rosenberg \\"'
    assert sip(req.from_.uri).user == "jdrosen"
    assert req.from_.tag == "98asjd8"
    # Integer fields with leading zeros; CSeq folded over two lines.
    assert req.max_forwards == 68
    assert (req.cseq.seq, req.cseq.method) == (9, "INVITE")
    assert req.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert req.content_length == 150 and len(req.body) == 150
    # Via: one folded value, then a compact-form line holding two comma-separated values.
    assert [(v.transport, v.host, v.branch) for v in req.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "198.51.100.111", "z9hG4bK30239"),
    ]
    assert all(v.port is None for v in req.vias)
    # Empty Subject (compact "s"), unknown headers kept verbatim once unfolded.
    assert req.headers.get("Subject") == ""
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    # Unknown header: never split on ',' or ';' since its grammar is unknown.
    assert req.headers.get_all("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    assert req.headers.values("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    content_type = req.token("Content-Type")
    assert content_type is not None and content_type.value == "application/sdp"
    (route,) = req.name_addrs("Route")
    assert sip(route.uri).params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    # Contact (compact "m"): quoted display with escaped quotes, folded params, q value.
    (contact,) = req.contacts
    assert contact.display == 'Quoted string ""'
    assert sip(contact.uri).user == "jdrosen"
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


def test_intmeth_wide_range_of_valid_characters() -> None:
    # RFC 4475 3.1.1.2: unusual but legal characters everywhere; % is not an escape
    # in a method, token or word. The PBX (an endpoint for unknown methods) then
    # answers 501 with Allow (RFC 3261 8.2.1): that is the dispatcher's job.
    req = request(t.INTMETH)
    method = t.INTMETH_METHOD.decode()
    assert req.method == method
    assert (req.cseq.seq, req.cseq.method) == (139122385, method)
    uri = sip(req.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.port, uri.params, uri.headers) == ("example.com", None, {}, ())
    assert req.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert req.via.transport == "TCP"
    # quoted-pair may escape any octet but CR and LF, NUL included (RFC 3261 25.1).
    assert req.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert sip(req.to.uri).user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    # Display name made of several tokens; parameter names are case-insensitive.
    assert req.from_.display == "token1~` token2'+_ token3*%!.-"
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.from_.params["fromparam''~+*_!.-%"] == '"' + t.INTMETH_FROM_PARAM.decode() + '"'
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.max_forwards == 255
    assert req.headers.get("extensionHeader-!.%*+_`'~") == t.INTMETH_EXTENSION_VALUE.decode()
    assert req.body == b""


def test_esc01_percent_escapes_decoded_once() -> None:
    # RFC 4475 3.1.1.3: "The application using the message must treat the % HEX HEX
    # expansions as equivalent to the character being encoded." The uri-parameter
    # "name" is "value%41", NOT "valueA": unescaping is never recursive.
    req = request(t.ESC01)
    uri = sip(req.uri)
    assert (uri.user, uri.host) == ("sips:user@example.com", "example.net")
    assert sip(req.to.uri).user == "user"
    assert sip(req.from_.uri).user == "I have spaces"
    assert req.from_.tag == "938"
    assert req.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert req.max_forwards == 87
    content_type = req.token("C")  # compact "c"
    assert content_type is not None and content_type.value == "application/sdp"
    (contact,) = req.contacts
    curi = sip(contact.uri)
    assert (curi.user, curi.host) == ("caller", "host5.example.net")
    # Parameter names/values are kept raw (names lower-cased); decoding them once
    # gives "lr" and "value%41".
    assert curi.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert {unescape(k): v if v is None else unescape(v) for k, v in curi.params.items()} == {
        "lr": None,
        "name": "value%41",
    }
    # Serializing re-escapes what must be escaped: the user parts survive.
    assert sip(parse(bytes(req)).uri).user == "sips:user@example.com"


def test_escnull_users_keep_their_nuls() -> None:
    # RFC 4475 3.1.1.4: "take special care when unescaping the Address-of-Record (AOR)
    # in this request so as to not prematurely shorten the username. This request
    # registers two distinct contact URIs."
    req = request(t.ESCNULL)
    assert req.method == "REGISTER"
    assert sip(req.to.uri).user == "null-\x00-null"
    assert sip(req.from_.uri).user == "null-\x00-null"
    users = [sip(c.uri).user for c in req.contacts]
    assert users == ["\x00", "\x00\x00"]
    assert req.content_length == 0  # compact "L", upper case
    # Escaped again on the way out: a NUL never reaches the wire raw.
    assert b"\x00" not in bytes(req)
    assert b"%00" in bytes(req)


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    # RFC 4475 3.1.1.5: unknown method (NOT REGISTER), display name "%Z%45", and
    # two Contact values, not three (C%6Fntact is another header). The PBX answers
    # 501 to the unknown method (application layer).
    req = request(t.ESC02)
    assert req.method == "RE%47IST%45R" != "REGISTER"
    assert req.cseq.method == "RE%47IST%45R"
    assert req.to.display == "%Z%45"
    assert req.from_.display == "%Z%45"
    assert req.via.branch == "z9hG4bK209%fzsnel234"
    assert [sip(c.uri).user for c in req.contacts] == ["alias1", "alias3"]
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_lws_before_laquot() -> None:
    # RFC 4475 3.1.1.6: "Elements should accept this request as well formed."
    req = request(t.LWSDISP)
    assert req.from_.display == "caller"
    assert sip(req.from_.uri).user == "caller"
    assert req.from_.tag == "323"


def test_longreq_long_values() -> None:
    # RFC 4475 3.1.1.7: long display name, parameter names and values, tag, Call-ID,
    # many Via values in every spelling of the header name.
    req = request(t.LONGREQ)
    assert req.to.display == t.LONGREQ_TO_DISPLAY.decode()
    to_uri = sip(req.to.uri)
    assert (to_uri.user, to_uri.host, to_uri.port) == ("user", "example.com", 6000)
    assert to_uri.params == {
        "unknownparam1": t.LONGREQ_URI_PARAM1.decode(),
        t.LONGREQ_URI_PARAM2_NAME.decode().lower(): "shortvalue",
        t.LONGREQ_URI_PARAM3_NAME.decode().lower(): None,
    }
    assert sip(req.from_.uri).user == t.LONGREQ_CALLER.decode()  # compact "F"
    assert req.from_.params == {
        "tag": t.LONGREQ_TAG.decode(),
        t.LONGREQ_FROM_PARAM_NAME.decode(): t.LONGREQ_FROM_PARAM_VALUE.decode(),
        t.LONGREQ_FROM_FLAG.decode().lower(): None,
    }
    assert req.call_id == t.LONGREQ_CALL_ID.decode()
    assert req.headers.get(t.LONGREQ_HEADER_NAME.decode()) == t.LONGREQ_HEADER_VALUE.decode()
    assert len(req.vias) == 34
    assert [v.host for v in req.vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert all(v.transport == "TCP" and not v.params for v in req.vias[:33])
    last = req.vias[-1]
    assert last.received == "192.0.2.5"
    assert last.branch == t.LONGREQ_BRANCH.decode()
    (contact,) = req.contacts
    assert sip(contact.uri).user == t.LONGREQ_CALLER.decode()
    assert req.content_length == 150 and len(req.body) == 150


def test_dblreq_octets_past_content_length_are_ignored() -> None:
    # RFC 4475 3.1.1.8: the datagram holds a REGISTER with Content-Length 0 and then
    # octets that look like an INVITE: "just spurious noise that must be ignored".
    req = parse(t.DBLREQ)
    assert isinstance(req, Request)
    assert req.method == "REGISTER"
    assert req.content_length == 0
    assert req.body == b""
    assert b"INVITE" not in bytes(req)
    assert req.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact "I"
    (contact,) = req.contacts
    assert sip(contact.uri).host == "host.example.com"
    # The same octets without the noise are the same message.
    assert parse(t.DBLREQ[: -len(t.DBLREQ_TRAILER)]) == req
    # On a stream the trailer is simply the next message.
    items = feed_chunks([t.DBLREQ])
    assert items[0] == req
    assert isinstance(items[1], Request) and items[1].method == "INVITE"


def test_semiuri_semicolon_in_user_part() -> None:
    # RFC 4475 3.1.1.9: "The Request-URI will parse so that the user part is
    # 'user;par=u@example.net'."
    req = request(t.SEMIURI)
    uri = sip(req.uri)
    assert uri.user == "user;par=u@example.net"
    assert (uri.host, uri.params) == ("example.com", {})
    assert req.headers.values("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_known_and_unknown_via_transports() -> None:
    # RFC 4475 3.1.1.10: all known transports and an unknown one in Via.
    req = request(t.TRANSPORTS)
    assert [(v.transport, v.host) for v in req.vias] == [
        ("UDP", "t1.example.com"),
        ("SCTP", "t2.example.com"),
        ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"),
        ("TCP", "t5.example.com"),
    ]
    assert req.via.branch == "z9hG4bKkdjuw"
    assert req.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_multipart_body_with_nuls() -> None:
    # RFC 4475 3.1.1.11: "Parsers must accept this message as well formed, even if
    # the application above the parser does not support multipart/signed."
    req = request(t.MPART01)
    assert req.method == "MESSAGE"
    content_type = req.token("Content-Type")
    assert content_type is not None
    assert content_type.value == "multipart/mixed"
    assert content_type.param("boundary") == t.MPART01_BOUNDARY.decode()
    assert req.content_length == 553
    assert req.body == t.MPART01_BODY
    assert b"\x00" in req.body
    assert req.via.port == 5070 and req.via.host == "127.0.0.1"
    assert req.via.wants_rport and req.via.rport is None
    (route,) = req.name_addrs("Route")
    assert (sip(route.uri).host, sip(route.uri).port) == ("127.0.0.1", 5080)
    assert req.headers.get("Date") == "Sat, 15 Oct 2005 04:44:56 GMT"
    assert req.headers.get("Content-Transfer-Encoding") == "binary"


def test_unreason_non_ascii_reason_phrase() -> None:
    # RFC 4475 3.1.1.12: "This response is well formed. A parser must accept this message."
    resp = response(t.UNREASON)
    assert resp.status == 200
    assert resp.reason == t.UNREASON_REASON
    assert resp.to.tag == "2229"
    assert len(resp.body) == 154


def test_noreason_empty_reason_phrase() -> None:
    # RFC 4475 3.1.1.13: "The space character after the reason code is required."
    resp = response(t.NOREASON)
    assert resp.status == 100
    assert resp.reason == ""


# ---------------------------------------------------------------------------
# 3.1.2 Invalid messages
# ---------------------------------------------------------------------------


def test_badinv01_extra_separators_in_via() -> None:
    # RFC 4475 3.1.2.1: "An element receiving this request should respond with a 400."
    # The top Via itself is malformed ("192.0.2.15;;"), so the response has no Via to
    # follow: minipbx drops it (answerable False).
    expect_error(t.BADINV01, 400, False)
    expect_stream_error_item(t.BADINV01, 400, False)


def test_clerr_content_length_larger_than_datagram() -> None:
    # RFC 4475 3.1.2.2: over UDP "the receiving element should respond with a 400";
    # over a stream there is nothing to do but wait for more octets.
    expect_error(t.CLERR, 400, True)
    framer_items = feed_chunks([t.CLERR])
    assert framer_items == []


def test_clerr_on_a_stream_waits_for_the_body() -> None:
    framer = StreamFramer()
    assert framer.feed(t.CLERR) == []
    assert framer.buffered == len(t.CLERR)


def test_ncl_negative_content_length() -> None:
    # RFC 4475 3.1.2.3: "should respond with an error" over UDP; over TCP "the
    # framing error is not recoverable, and the connection should be closed".
    expect_error(t.NCL, 400, True)
    with pytest.raises(StreamError):
        feed_chunks([t.NCL])
    five = t.NCL.replace(b"Content-Length: -999", b"Content-Length: five")
    expect_error(five, 400, True)
    with pytest.raises(StreamError):
        feed_chunks([five])


def test_scalar02_overlarge_request_scalars() -> None:
    # RFC 4475 3.1.2.4: "An element receiving this request should respond with a 400
    # Bad Request due to the CSeq error." The CSeq header is there once; only its
    # number is out of range, so the 400 can be built and matched by the client
    # (branch): answerable.
    expect_error(t.SCALAR02, 400, True)


def test_scalar02_other_scalars_alone() -> None:
    # With CSeq fixed, Max-Forwards 300 and Expires 10**100 are still errors. The RFC
    # allows treating them as absent/default; minipbx rejects them (400), the simpler
    # and safer reading of RFC 3261 20.22/20.19 ranges.
    fixed = t.SCALAR02.replace(b"36893488147419103232", b"1")
    expect_error(fixed, 400, True)
    only_expires = fixed.replace(b"Max-Forwards: 300", b"Max-Forwards: 70")
    expect_error(only_expires, 400, True)


def test_scalarlg_overlarge_response_scalars_dropped() -> None:
    # RFC 4475 3.1.2.5: "An element receiving this response will simply discard it."
    exc = expect_error(t.SCALARLG, 400, False)
    assert exc.answerable is False


def test_quotbal_unterminated_quote() -> None:
    # RFC 4475 3.1.2.6: "should return a 400 Bad Request error". minipbx does not infer
    # the missing quote (the RFC's own example shows why that is hazardous). A 400
    # would have to copy that broken To into a response the client could not parse
    # either: minipbx drops the request.
    expect_error(t.QUOTBAL, 400, False)
    expect_stream_error_item(t.QUOTBAL, 400, False)


def test_ltgtruri_request_uri_in_angle_brackets() -> None:
    # RFC 4475 3.1.2.7: "It is reasonable always to reject a request with this error
    # with a 400 Bad Request." minipbx does: it never forwards a fixed-up URI.
    expect_error(t.LTGTRURI, 400, True)
    expect_stream_error_item(t.LTGTRURI, 400, True)


def test_lwsruri_lws_inside_request_uri() -> None:
    # RFC 4475 3.1.2.8: "should respond with a 400 Bad Request."
    expect_error(t.LWSRURI, 400, True)


def test_lwsstart_several_sp_in_request_line() -> None:
    # RFC 4475 3.1.2.9: "It is acceptable to reject this request as malformed." minipbx
    # is strict about the start line (RFC 3261 7.1: single SP), so it does.
    expect_error(t.LWSSTART, 400, True)


def test_trws_trailing_sp_in_request_line() -> None:
    # RFC 4475 3.1.2.10: "It is acceptable to reject this request as malformed." Same
    # choice as lwsstart.
    expect_error(t.TRWS, 400, True)
    expect_stream_error_item(t.TRWS, 400, True)


def test_escruri_escaped_headers_in_request_uri() -> None:
    # RFC 4475 3.1.2.11: "It is acceptable for an element to reject this request with a
    # 400 Bad Request." RFC 3261 19.1.1: headers are not allowed in a Request-URI.
    expect_error(t.ESCRURI, 400, True)


def test_baddate_non_gmt_date_is_accepted() -> None:
    # RFC 4475 3.1.2.12: "It is acceptable to reject this request as malformed (though
    # an element shouldn't do that unless the contents of the Date header field were
    # actually important to its processing). An element wishing to be liberal in what
    # it accepts could ignore this value altogether if it wasn't going to use the Date
    # header field anyway." The PBX never uses Date, so the parser accepts the request
    # and keeps the value verbatim; the RFC does not ask for a 400 here.
    req = request(t.BADDATE)
    assert req.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_regbadct_contact_addr_spec_with_header_needs_brackets() -> None:
    # RFC 4475 3.1.2.13: "It is reasonable for an element receiving this request to
    # respond with a 400 Bad Request." RFC 3261 20.10: an addr-spec containing '?' must
    # be a name-addr. minipbx does not guess the brackets, and checks Contact while
    # parsing (DESIGN.md: no lazy header errors surfacing far from the parser).
    expect_error(t.REGBADCT, 400, True)


def test_badaspec_spaces_inside_angle_brackets() -> None:
    # RFC 4475 3.1.2.14: "It is reasonable to reject this request with a 400 Bad
    # Request." minipbx does not ignore the spaces; the malformed value is the To a
    # response would copy, so it drops the request (see quotbal).
    expect_error(t.BADASPEC, 400, False)


def test_baddn_unquoted_display_name_with_comma() -> None:
    # RFC 4475 3.1.2.15: "It is reasonable always to reject this kind of error with a
    # 400 Bad Request response." minipbx does not infer the quotes; From and To, which
    # a response copies, are malformed, so it drops the request (see quotbal).
    expect_error(t.BADDN, 400, False)


def test_badvers_unknown_protocol_version() -> None:
    # RFC 4475 3.1.2.16: "The element should respond to the request with a 505 Version
    # Not Supported error." The Via "SIP/7.0/UDP" follows RFC 3261's Via grammar
    # (protocol-version is a token), so the 505 can be sent back.
    expect_error(t.BADVERS, 505, True)
    expect_stream_error_item(t.BADVERS, 505, True)


def test_mismatch01_cseq_method_mismatch() -> None:
    # RFC 4475 3.1.2.17: "Any element receiving this request will respond with a 400
    # Bad Request."
    expect_error(t.MISMATCH01, 400, True)
    expect_stream_error_item(t.MISMATCH01, 400, True)


def test_mismatch02_unknown_method_and_cseq_mismatch() -> None:
    # RFC 4475 3.1.2.18: "should respond with a 501 Not Implemented. A 400 Bad Request
    # is also acceptable". Both are allowed: the parser cannot know whether the layer
    # above implements NEWMETHOD, so either status passes here.
    with pytest.raises(ParseError) as info:
        parse(t.MISMATCH02)
    assert info.value.status in (400, 501)
    assert info.value.answerable is True


def test_bigcode_overlarge_response_code_dropped() -> None:
    # RFC 4475 3.1.2.19: "An element receiving this response should simply drop it."
    with pytest.raises(ParseError) as info:
        parse(t.BIGCODE)
    assert info.value.answerable is False
    items = feed_chunks([t.BIGCODE + NEXT])
    assert isinstance(items[0], ParseError) and items[0].answerable is False
    assert items[1] == parse(NEXT)


# ---------------------------------------------------------------------------
# 3.2 Transaction layer semantics
# ---------------------------------------------------------------------------


def test_badbranch_magic_cookie_without_identifier() -> None:
    # RFC 4475 3.2.1: "A parser must not break when receiving this message." The
    # transaction layer may answer 400 or fall back to RFC 2543 matching.
    req = request(t.BADBRANCH)
    assert req.via.branch == "z9hG4bK"


# ---------------------------------------------------------------------------
# 3.3 Application-layer semantics
# ---------------------------------------------------------------------------


def test_insuf_missing_required_headers() -> None:
    # RFC 4475 3.3.1: no Call-ID, From or To. "An element receiving this message must
    # not break because of the missing information. Ideally, it will respond with a
    # 400 Bad Request error." A response must copy From, To and Call-ID (RFC 3261
    # 8.2.6.2), which do not exist: minipbx drops it.
    expect_error(t.INSUF, 400, False)
    expect_stream_error_item(t.INSUF, 400, False)


def test_unkscm_unknown_request_uri_scheme() -> None:
    # RFC 4475 3.3.2: "An element receiving this request will reject it with a 416
    # Unsupported URI Scheme response." The To header is not routing information.
    expect_error(t.UNKSCM, 416, True)
    expect_stream_error_item(t.UNKSCM, 416, True)


def test_novelsc_known_but_atypical_scheme() -> None:
    # RFC 4475 3.3.3: "If an element will never accept this scheme as meaningful in a
    # Request-URI, it is appropriate to treat it as unknown and return a 416." The PBX
    # routes only sip, sips and tel Request-URIs.
    expect_error(t.NOVELSC, 416, True)


def test_unksm2_registered_schemes_in_headers() -> None:
    # RFC 4475 3.3.4: "Parsers must not fail when receiving this message." The
    # registrar then answers 400: the To of a REGISTER must be a SIP or SIPS AOR.
    req = request(t.UNKSM2)
    assert isinstance(req.to.uri, AbsoluteUri) and req.to.uri.scheme == "isbn"
    assert isinstance(req.from_.uri, AbsoluteUri) and req.from_.uri.scheme == "http"
    assert req.from_.tag == "3234233"
    (contact,) = req.contacts
    assert isinstance(contact.uri, AbsoluteUri) and str(contact.uri) == "name:John_Smith"


def test_bext01_require_and_proxy_require() -> None:
    # RFC 4475 3.3.5: Require and Proxy-Require name extensions nobody supports: the
    # element answers 420 Bad Extension with an Unsupported header listing them (RFC
    # 3261 8.2.2.3). The PBX, as UAS, lists the Require values.
    req = request(t.BEXT01)
    assert req.tokens("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert req.tokens("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert req.via.transport == "TLS"


def test_invut_unknown_content_type() -> None:
    # RFC 4475 3.3.6: "A parser must not fail when receiving it." An endpoint answers
    # 415 Unsupported Media Type (with Accept): the B2BUA does that, not the parser.
    req = request(t.INVUT)
    content_type = req.token("Content-Type")
    assert content_type is not None and content_type.value == "application/unknownformat"
    assert req.body == t.INVUT_BODY


def test_regaut01_unknown_authorization_scheme() -> None:
    # RFC 4475 3.3.7: "The request is well formed. A parser must not fail when
    # receiving it." The registrar, which does care about authentication, answers 401
    # with a Digest challenge; the header is kept verbatim.
    req = request(t.REGAUT01)
    assert req.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert req.content_length == 0


def test_multi01_repeated_single_value_headers() -> None:
    # RFC 4475 3.3.8: "The message contains a request with multiple Call-ID, To, From,
    # Max-Forwards, and CSeq values. An element receiving this request must not
    # break." It is a 400; with two From/To/Call-ID/CSeq there is no unambiguous
    # response to build, so minipbx drops it.
    expect_error(t.MULTI01, 400, False)
    expect_stream_error_item(t.MULTI01, 400, False)


def test_mcl01_conflicting_content_lengths() -> None:
    # RFC 4475 3.3.9: "An element receiving this message should respond with an error.
    # [...] If a request like this arrives over TCP, the framing error is not
    # recoverable, and the connection should be closed."
    expect_error(t.MCL01, 400, True)
    with pytest.raises(StreamError):
        feed_chunks([t.MCL01])
    with pytest.raises(StreamError):
        feed_chunks(byte_by_byte(t.MCL01))


def test_bcast_broadcast_address_in_via() -> None:
    # RFC 4475 3.3.10: "The message is well formed; parsers must not fail when
    # receiving it." The PBX (never a stateless proxy) drops the response rather than
    # ever sending anything to 255.255.255.255.
    resp = response(t.BCAST)
    assert resp.status == 200
    assert [v.host for v in resp.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    # RFC 4475 3.3.11: a legal request with Max-Forwards 0. A proxy must not forward it
    # and answers 483 Too Many Hops (RFC 3261 16.3 item 3); an endpoint processes it
    # normally. The B2BUA answers 483 only where it would forward (a new B leg).
    req = request(t.ZEROMF)
    assert req.max_forwards == 0


def test_cparam01_contact_param_not_url_param() -> None:
    # RFC 4475 3.3.12: 'unknownparam' "must be interpreted as a contact-param and not a
    # url-param". The registration succeeds; the 200 lists it as a contact-param.
    req = request(t.CPARAM01)
    (contact,) = req.contacts
    assert contact.params == {"unknownparam": None}
    uri = sip(contact.uri)
    assert (uri.user, uri.host, uri.params) == ("+19725552222", "gw1.example.net", {})


def test_cparam02_url_param() -> None:
    # RFC 4475 3.3.13: the URI has an unknown parameter; a later fetch of the binding
    # must show it as a url-param.
    req = request(t.CPARAM02)
    (contact,) = req.contacts
    assert contact.params == {}
    assert sip(contact.uri).params == {"unknownparam": None}


def test_regescrt_escaped_header_in_contact_uri() -> None:
    # RFC 4475 3.3.14: "The register should succeed and a subsequent retrieval of the
    # registration must include the escaped Route header in the contact URI." The
    # registrar stores str(contact.uri), which keeps the header escaped.
    req = request(t.REGESCRT)
    (contact,) = req.contacts  # compact "M"
    uri = sip(contact.uri)
    assert uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_sdp01_unacceptable_accept() -> None:
    # RFC 4475 3.3.15: the response may not carry SDP; the recipient could answer 406
    # Not Acceptable. The B2BUA decides; the parser only hands up Accept.
    req = request(t.SDP01)
    assert req.headers.values("Accept") == ["text/nobodyKnowsThis"]


def test_inv2543_rfc2543_syntax() -> None:
    # RFC 4475 3.4.1: "should be accepted by RFC 3261 elements that want to maintain
    # backwards compatibility": no branch, no From tag, no Content-Length (the body is
    # the rest of the datagram), no Max-Forwards.
    req = request(t.INV2543, stream=False)
    assert req.via.branch is None
    assert req.from_.tag is None
    assert req.max_forwards is None
    assert req.content_length is None
    assert req.body == t.INV2543_BODY
    # "user=phone" after an addr-spec is a header parameter of To (RFC 3261 20.10).
    assert req.to.params == {"user": "phone"}
    assert sip(req.from_.uri).params == {"user": "phone"}


# ---------------------------------------------------------------------------
# Every message: nothing but ParseError, on every path
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(t.ALL))
def test_every_torture_message_fails_only_with_parse_error(name: str) -> None:
    data = t.ALL[name]
    try:
        msg = parse(data)
    except ParseError:
        return
    assert parse(bytes(msg)) == msg


@pytest.mark.parametrize("name", sorted(t.ALL))
def test_every_torture_message_on_a_stream(name: str) -> None:
    data = t.ALL[name]
    try:
        whole = feed_chunks([data])
    except StreamError:
        with pytest.raises(StreamError):
            feed_chunks(byte_by_byte(data))
        return
    assert [type(i) for i in feed_chunks(byte_by_byte(data))] == [type(i) for i in whole]


def test_messages_name_only_documentation_addresses() -> None:
    # The brief: test messages name only loopback or documentation hosts. bcast's
    # broadcast address is the subject of its test (parsed, never sent).
    allowed = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24")]
    for name, data in t.ALL.items():
        for literal in re.findall(rb"(?<![0-9.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9.])", data):
            ip = ipaddress.ip_address(literal.decode())
            if name == "bcast" and str(ip) == "255.255.255.255":
                continue
            assert any(ip in net for net in allowed), (name, ip)


def test_tel_uri_is_not_an_absolute_uri() -> None:
    # Guard for the 416 tests above: tel is a known scheme (RFC 3966) and parses.
    req = parse(t.ZEROMF.replace(b"OPTIONS sip:user@example.com", b"OPTIONS tel:+12015550123"))
    assert isinstance(req, Request) and isinstance(req.uri, TelUri)
