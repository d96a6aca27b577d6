"""General tests of the SIP parser, URIs, typed headers, builders and stream framer.

Section numbers are RFC 3261 unless stated otherwise. Datagrams are fed whole, with
trailing octets and on a stream (whole, byte by byte, followed by another message)
through ``tests.sip.framing.parse_everywhere``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from minipbx.sip import (
    COMPILED,
    AbsoluteUri,
    CSeq,
    Keepalive,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    StreamError,
    StreamFramer,
    TelUri,
    Via,
    build_request,
    parse,
    parse_uri,
)
from tests.sip import torture as t
from tests.sip.framing import (
    NEXT,
    byte_by_byte,
    expect_error,
    expect_stream_error_item,
    feed_chunks,
    parse_everywhere,
)

# The mandatory headers of a request (RFC 3261 8.1.1), as (name, value) pairs.
BASE = [
    ("Via", "SIP/2.0/UDP client.example.com:5060;branch=z9hG4bK74bf9"),
    ("Max-Forwards", "70"),
    ("From", "Alice <sip:alice@example.com>;tag=9fxced76sl"),
    ("To", "Bob <sip:bob@example.com>"),
    ("Call-ID", "3848276298220188511@example.com"),
    ("CSeq", "1 INVITE"),
]


def raw(
    start: str = "INVITE sip:bob@example.com SIP/2.0",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    content_length: bool = True,
    extra: Sequence[str] = (),
) -> bytes:
    """A message as bytes: start line, header lines, optional Content-Length, body."""
    lines = [start] + [f"{n}: {v}" for n, v in (BASE if headers is None else headers)]
    lines += list(extra)
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def replace(name: str, value: str | None) -> list[tuple[str, str]]:
    """BASE with header ``name`` given a new value (or removed when None)."""
    out = [(n, value if n == name else v) for n, v in BASE if n != name or value is not None]
    return out


def req_of(data: bytes) -> Request:
    msg = parse_everywhere(data)
    assert isinstance(msg, Request)
    return msg


def sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri), uri
    return uri


# ---------------------------------------------------------------------------
# Header folding, LWS, names
# ---------------------------------------------------------------------------


def test_folded_value_is_one_line_with_single_spaces() -> None:
    # RFC 3261 7.3.1: the folded Subject below equals the one-line form.
    data = raw(
        extra=[
            "Subject:            I know you're there,\r\n"
            "                    pull up the phone\r\n"
            "\tand talk to me!"
        ]
    )
    req = req_of(data)
    assert req.headers.get("Subject") == "I know you're there, pull up the phone and talk to me!"


def test_whitespace_around_the_colon() -> None:
    req = req_of(raw(extra=["Subject   :   hello   ", "Organization:\tExample Inc."]))
    assert req.headers.get("Subject") == "hello"
    assert req.headers.get("Organization") == "Example Inc."


def test_empty_header_value() -> None:
    req = req_of(raw(extra=["Subject:", "Organization:   "]))
    assert req.headers.get("Subject") == ""
    assert req.headers.get("Organization") == ""


def test_folding_inside_typed_headers() -> None:
    headers = replace("From", '"Alice"\r\n <sip:alice@example.com>\r\n ;tag=1')
    headers = [
        (n, "SIP/2.0/UDP\r\n\tclient.example.com;branch=z9hG4bK1" if n == "Via" else v)
        for n, v in headers
    ]
    req = req_of(raw(headers=headers))
    assert req.from_.display == "Alice"
    assert req.from_.tag == "1"
    assert (req.via.host, req.via.branch) == ("client.example.com", "z9hG4bK1")


def test_leading_crlfs_before_the_start_line_are_ignored() -> None:
    # RFC 3261 7.5: "implementations processing SIP messages over stream-oriented
    # transports MUST ignore any CRLF appearing before the start-line".
    data = raw()
    assert parse(b"\r\n\r\n" + data) == parse(data)


@pytest.mark.parametrize(
    ("compact", "full", "value"),
    [
        # RFC 3261 7.3.3 and 20
        ("i", "Call-ID", "compact@example.com"),
        ("m", "Contact", "<sip:alice@client.example.com>"),
        ("e", "Content-Encoding", "gzip"),
        ("l", "Content-Length", "0"),
        ("c", "Content-Type", "text/plain"),
        ("f", "From", "<sip:alice@example.com>;tag=1"),
        ("s", "Subject", "hi"),
        ("k", "Supported", "100rel"),
        ("t", "To", "<sip:bob@example.com>"),
        ("v", "Via", "SIP/2.0/UDP client.example.com;branch=z9hG4bK1"),
        # extensions (IANA header field registry)
        ("o", "Event", "presence"),  # RFC 6665
        ("u", "Allow-Events", "presence"),  # RFC 6665
        ("r", "Refer-To", "<sip:carol@example.com>"),  # RFC 3515
        ("b", "Referred-By", "<sip:alice@example.com>"),  # RFC 3892
        ("x", "Session-Expires", "1800"),  # RFC 4028
        ("a", "Accept-Contact", "*;audio"),  # RFC 3841
        ("j", "Reject-Contact", "*;video"),  # RFC 3841
        ("d", "Request-Disposition", "proxy"),  # RFC 3841
        ("y", "Identity", "abc"),  # RFC 4474
        ("n", "Identity-Info", "<https://example.com/cert>"),  # RFC 4474
    ],
)
def test_compact_header_names(compact: str, full: str, value: str) -> None:
    headers = [(n, v) for n, v in BASE if n != full]
    data = raw(
        headers=headers, extra=[f"{compact}: {value}"], content_length=full != "Content-Length"
    )
    req = req_of(data)
    assert req.headers.get(full) == value
    assert req.headers.get(compact) == value
    assert full in [n for n, _ in req.headers]


def test_header_names_are_case_insensitive() -> None:
    headers = [(n.upper() if i % 2 else n.lower(), v) for i, (n, v) in enumerate(BASE)]
    req = req_of(raw(headers=headers, extra=["x-CUSTOM-thing: v"]))
    assert req.call_id == "3848276298220188511@example.com"
    assert req.headers.get("CALL-ID") == req.headers.get("call-id") == req.headers.get("i")
    assert req.headers.get("X-Custom-Thing") == "v"
    assert ("x-CUSTOM-thing", "v") in list(req.headers)  # unknown names keep their spelling


@pytest.mark.parametrize(
    "line", ["No colon here", "Bad Name: x", "Bad\tName: x", ": no name", "Bad@Name: x"]
)
def test_malformed_header_lines(line: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(raw(extra=[line]))
    assert info.value.status == 400


# ---------------------------------------------------------------------------
# Lists: commas split except inside quotes and <>
# ---------------------------------------------------------------------------


def test_contact_list_with_quoted_commas_and_brackets() -> None:
    contact = (
        '"Doe, John" <sip:john@example.com>;q=0.7, '
        "<sip:jd,alias@[2001:db8::1]:5060;transport=tcp>, "
        '"A \\"quoted, comma\\"" <sip:a@example.com>;note="x,y;z"'
    )
    req = req_of(raw(extra=[f"Contact: {contact}", "Contact: sip:last@example.com"]))
    names = [(c.display, sip(c.uri).user) for c in req.contacts]
    assert names == [
        ("Doe, John", "john"),
        (None, "jd,alias"),
        ('A "quoted, comma"', "a"),
        (None, "last"),
    ]
    assert req.contacts[0].params == {"q": "0.7"}
    assert sip(req.contacts[1].uri).params == {"transport": "tcp"}
    assert req.contacts[2].params == {"note": '"x,y;z"'}
    assert len(req.headers.values("Contact")) == 4


def test_contact_with_instance_id_and_reg_id() -> None:
    # RFC 5626 4.2: +sip.instance holds a quoted "<urn:...>".
    contact = '<sip:alice@192.0.2.7:5070;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1'
    req = req_of(raw(extra=[f"Contact: {contact}"]))
    (c,) = req.contacts
    assert c.params == {
        "+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"',
        "reg-id": "1",
    }
    assert sip(c.uri).params == {"ob": None}


def test_star_contact() -> None:
    req = req_of(raw(extra=["Contact: *", "Expires: 0"]))
    assert req.star_contact
    assert req.contacts == []
    assert req.expires == 0


def test_addr_spec_contacts_separated_by_commas() -> None:
    req = req_of(raw(extra=["Contact: sip:a@example.com, sip:b@example.com;expires=60"]))
    assert [sip(c.uri).user for c in req.contacts] == ["a", "b"]
    assert req.contacts[1].params == {"expires": "60"}


def test_route_and_record_route_lists() -> None:
    req = req_of(
        raw(
            extra=[
                "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                "Route: <sip:p3.example.com;lr>",
                "Record-Route: <sip:rr.example.com;lr;ftag=x>",
            ]
        )
    )
    assert [sip(r.uri).host for r in req.name_addrs("Route")] == [
        "p1.example.com",
        "p2.example.com",
        "p3.example.com",
    ]
    assert sip(req.name_addrs("Record-Route")[0].uri).params == {"lr": None, "ftag": "x"}


def test_non_list_headers_are_never_split() -> None:
    auth = (
        'Digest username="alice", realm="example.com", nonce="abc,def", '
        'uri="sip:example.com", response="0123456789abcdef0123456789abcdef"'
    )
    req = req_of(
        raw(extra=["Subject: one, two, three", f"Authorization: {auth}", "User-Agent: a, b"])
    )
    assert req.headers.values("Subject") == ["one, two, three"]
    assert req.headers.values("Authorization") == [auth]
    assert req.headers.values("User-Agent") == ["a, b"]


def test_token_lists() -> None:
    req = req_of(
        raw(extra=["Supported: replaces, 100rel", "Supported: timer", "Allow: INVITE,ACK , BYE"])
    )
    assert req.tokens("Supported") == ["replaces", "100rel", "timer"]
    assert req.tokens("Allow") == ["INVITE", "ACK", "BYE"]


def test_reason_header() -> None:
    # RFC 3326
    req = req_of(
        raw(extra=['Reason: SIP ;cause=200 ;text="Call completed elsewhere", Q.850;cause=16'])
    )
    first, second = req.reasons()
    assert (first.value, first.param("cause"), first.param("text")) == (
        "SIP",
        "200",
        "Call completed elsewhere",
    )
    assert (second.value, second.param("cause")) == ("Q.850", "16")


# ---------------------------------------------------------------------------
# Quoted strings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quoted", "display"),
    [
        ('"Alice"', "Alice"),
        ('""', ""),
        ('"a \\\\ b"', "a \\ b"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"<weird;name>, really"', "<weird;name>, really"),
        ('"\\a\\b"', "ab"),  # quoted-pair of ordinary characters
        ('"Zoë 日本"', "Zoë 日本"),  # UTF8-NONASCII in qdtext
    ],
)
def test_quoted_display_names(quoted: str, display: str) -> None:
    req = req_of(raw(headers=replace("From", f"{quoted} <sip:alice@example.com>;tag=1")))
    assert req.from_.display == display
    assert req.from_.tag == "1"


def test_unterminated_quoted_string() -> None:
    expect_error(raw(headers=replace("From", '"Alice <sip:alice@example.com>;tag=1')), 400, False)


def test_quoted_parameter_value() -> None:
    req = req_of(
        raw(extra=['Event: presence;id="a;b,c"', 'Content-Type: multipart/mixed; boundary="x y"'])
    )
    event = req.token("Event")
    assert event is not None and event.param("id") == "a;b,c"
    content_type = req.token("Content-Type")
    assert content_type is not None and content_type.param("boundary") == "x y"


# ---------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------


def test_full_sip_uri() -> None:
    uri = sip(
        parse_uri(
            "sip:alice:secret@example.com:5061;transport=TCP;lr;maddr=192.0.2.1?Subject=hi&Priority=urgent"
        )
    )
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip",
        "alice",
        "secret",
        "example.com",
        5061,
    )
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "192.0.2.1"}
    assert uri.transport == "tcp"
    assert uri.headers == (("Subject", "hi"), ("Priority", "urgent"))
    assert parse_uri(str(uri)) == uri


def test_uri_parameter_names_are_lower_cased_values_kept() -> None:
    uri = sip(parse_uri("sip:bob@example.com;Transport=UDP;LR;User=Phone"))
    assert uri.params == {"transport": "UDP", "lr": None, "user": "Phone"}


def test_sips_and_scheme_case() -> None:
    uri = sip(parse_uri("SIPS:bob@Example.COM"))
    assert (uri.scheme, uri.secure, uri.host) == ("sips", True, "Example.COM")
    assert sip(parse_uri("sip:bob@example.com")).secure is False


def test_uri_without_user() -> None:
    uri = sip(parse_uri("sip:example.com:5060"))
    assert (uri.user, uri.password, uri.host, uri.port) == (None, None, "example.com", 5060)
    assert uri.host_port == "example.com:5060"


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("sip:%2561@example.com", "%61"),  # decoded once, never twice (RFC 3261 19.1.2)
        ("sip:%61lice@example.com", "alice"),
        ("sip:a%40b@example.com", "a@b"),
        ("sip:a%20b@example.com", "a b"),
        ("sip:%E6%97%A5@example.com", "日"),  # UTF-8 octets
        ("sip:+1-201-555-0123;npdi@example.com", "+1-201-555-0123;npdi"),
    ],
)
def test_user_escapes(text: str, user: str) -> None:
    uri = sip(parse_uri(text))
    assert uri.user == user
    assert parse_uri(str(uri)) == uri  # serialized form escapes again


def test_password_escapes() -> None:
    uri = sip(parse_uri("sip:u:p%3Aw%40rd@example.com"))
    assert (uri.user, uri.password) == ("u", "p:w@rd")
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize(
    "text",
    [
        "sip:a%4@example.com",  # truncated escape
        "sip:a%zz@example.com",  # not hex
        "sip:example.com:65536",  # port out of range
        "sip:example.com:",  # empty port
        "sip:",
        "sip:alice@",
        "sip:exa mple.com",
        "sip:-bad.example.com",
        "sip:192.0.2.300",  # looks like IPv4, is not
        "sip:1.2.3",
        "sip:alice@example.com>",
        "no-colon",
        "1sip:example.com",  # scheme must start with a letter
        "sip:alice@example.com;=x",  # empty parameter name
        "sip:@example.com",  # user = 1*( unreserved / escaped / user-unreserved )
        "sip::secret@example.com",
        "sip:example.com:\uff15\uff10\uff16\uff10",  # fullwidth digits are not DIGIT
        "sip:bob@exa%6dple.com",  # no escapes in a host
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


@pytest.mark.parametrize("port", ["0", "5060", "65535"])
def test_port_range(port: str) -> None:
    assert sip(parse_uri(f"sip:example.com:{port}")).port == int(port)


def test_tel_uris() -> None:
    # RFC 3966
    uri = parse_uri("tel:+1-201-555-0123")
    assert isinstance(uri, TelUri) and uri.global_number and uri.number == "+1-201-555-0123"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri) and not local.global_number
    assert local.params == {"phone-context": "example.com"}
    assert uri.matches(parse_uri("tel:+1.201.555.0123"))


def test_other_schemes_are_absolute_uris() -> None:
    for text in (
        "mailto:alice@example.com",
        "urn:service:sos",
        "http://www.example.com/a?b=c",
        "im:alice@example.com",
    ):
        uri = parse_uri(text)
        assert isinstance(uri, AbsoluteUri)
        assert str(uri) == text


def test_uri_comparison() -> None:
    # RFC 3261 19.1.4: host case-insensitive, user case-sensitive, escapes equivalent.
    a = parse_uri("sip:alice@EXAMPLE.com;Transport=TCP")
    assert a.matches(parse_uri("sip:%61lice@example.com;transport=tcp"))
    assert not a.matches(parse_uri("sip:ALICE@example.com;transport=tcp"))
    assert not a.matches(parse_uri("sips:alice@example.com;transport=tcp"))
    assert not parse_uri("sip:bob@example.com").matches(parse_uri("sip:bob@example.com:5060"))


def test_request_uri_in_start_line() -> None:
    req = req_of(raw("INVITE sip:bob;x=1:pw@example.com:5080;transport=udp;lr SIP/2.0"))
    uri = sip(req.uri)
    assert (uri.user, uri.password, uri.port, uri.params) == (
        "bob;x=1",
        "pw",
        5080,
        {"transport": "udp", "lr": None},
    )


def test_request_uri_with_headers_is_rejected() -> None:
    # RFC 3261 19.1.1: headers are not allowed in a Request-URI.
    expect_error(raw("INVITE sip:bob@example.com?Subject=x SIP/2.0"), 400, True)


# ---------------------------------------------------------------------------
# name-addr and addr-spec (RFC 3261 20.10)
# ---------------------------------------------------------------------------


def test_addr_spec_parameters_belong_to_the_header() -> None:
    req = req_of(raw(headers=replace("From", "sip:alice@example.com;tag=1;transport=tcp")))
    assert req.from_.params == {"tag": "1", "transport": "tcp"}
    assert sip(req.from_.uri).params == {}


def test_name_addr_parameters_inside_brackets_belong_to_the_uri() -> None:
    req = req_of(raw(headers=replace("From", "<sip:alice@example.com;tag=1>;tag=2")))
    assert sip(req.from_.uri).params == {"tag": "1"}
    assert req.from_.tag == "2"


def test_addr_spec_with_question_mark_must_be_bracketed() -> None:
    expect_error(raw(headers=replace("To", "sip:bob@example.com?Subject=x")), 400, False)
    req = req_of(raw(headers=replace("To", "<sip:bob@example.com?Subject=x>")))
    assert sip(req.to.uri).headers == (("Subject", "x"),)


@pytest.mark.parametrize(
    ("to", "display"),
    [
        ("Bob <sip:bob@example.com>", "Bob"),
        ('"Bob"<sip:bob@example.com>', "Bob"),
        ("<sip:bob@example.com>", None),
        ("sip:bob@example.com", None),
    ],
)
def test_display_names(to: str, display: str | None) -> None:
    req = req_of(raw(headers=replace("To", to)))
    assert req.to.display == display
    assert sip(req.to.uri).user == "bob"


def test_display_name_of_several_tokens() -> None:
    # display-name = *(token LWS) / quoted-string: the tokens survive, however spaced.
    req = req_of(raw(headers=replace("To", "Bob  Q.\tSmith <sip:bob@example.com>")))
    assert req.to.display is not None and req.to.display.split() == ["Bob", "Q.", "Smith"]


@pytest.mark.parametrize(
    "to",
    [
        "<sip:bob@example.com",  # no '>'
        "Bob sip:bob@example.com",  # display name without brackets
        "< sip:bob@example.com >",  # LWS inside <> (RFC 4475 3.1.2.14)
        "Bob, Smith <sip:bob@example.com>",  # comma in unquoted display (RFC 4475 3.1.2.15)
    ],
)
def test_malformed_name_addrs(to: str) -> None:
    expect_error(raw(headers=replace("To", to)), 400, False)


def test_to_tag_and_with_tag() -> None:
    req = req_of(raw())
    assert req.to.tag is None
    tagged = req.to.with_tag("abc")
    assert tagged.tag == "abc" and req.to.tag is None
    assert NameAddr.parse(str(tagged)).tag == "abc"


# ---------------------------------------------------------------------------
# Via (RFC 3261 20.42, RFC 3581)
# ---------------------------------------------------------------------------


def via_of(value: str) -> Via:
    return req_of(raw(headers=replace("Via", value))).via


def test_via_branch_received_and_empty_rport() -> None:
    via = via_of("SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds;rport;received=192.0.2.9")
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.4", 5060)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.9"
    assert via.wants_rport is True and via.rport is None
    assert via.sent_by == ("192.0.2.4", 5060)


def test_via_ports_are_shared_ints() -> None:
    # Every server transaction's key keeps its Via port: one int per port text. (Compiled,
    # a Via holds the port as a machine integer, which needs no sharing: scripts/test also
    # runs these tests as plain Python.)
    first = via_of("SIP/2.0/UDP 192.0.2.4:45678;branch=z9hG4bK1")
    second = via_of("SIP/2.0/UDP 192.0.2.5:45678;branch=z9hG4bK2")
    assert first.port == second.port == 45678
    assert first.port is second.port or COMPILED
    with pytest.raises(ParseError):
        Via.parse("SIP/2.0/UDP 192.0.2.4:65536;branch=z9hG4bK3")


def test_via_rport_with_value() -> None:
    via = via_of("SIP/2.0/UDP client.example.com;rport=5060;branch=z9hG4bK1")
    assert via.wants_rport is True and via.rport == 5060


def test_via_without_rport() -> None:
    via = via_of("SIP/2.0/TLS client.example.com:5061;branch=z9hG4bK1;maddr=192.0.2.1;ttl=16")
    assert via.wants_rport is False and via.rport is None
    assert (via.transport, via.port) == ("TLS", 5061)
    assert via.params["maddr"] == "192.0.2.1" and via.params["ttl"] == "16"


def test_via_lower_case_transport_and_lws() -> None:
    via = via_of("SIP / 2.0 / udp   client.example.com : 5070 ; branch = z9hG4bK1")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "client.example.com",
        5070,
        "z9hG4bK1",
    )


def test_via_received_must_be_an_address() -> None:
    # RFC 3261 20.42 / 25.1: via-received = "received" EQUAL (IPv4address / IPv6address).
    # A host name there would be used as the address to answer (18.2.2).
    value = "SIP/2.0/UDP client.example.com;received=other.example.com;branch=z9hG4bK1"
    expect_error(raw(headers=replace("Via", value)), 400, False)


def test_via_without_branch_is_rfc2543() -> None:
    assert via_of("SIP/2.0/UDP client.example.com").branch is None


def test_several_vias_on_one_line_and_on_several() -> None:
    headers = replace(
        "Via",
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
    )
    headers.insert(1, ("Via", "SIP/2.0/TLS c.example.com;branch=z9hG4bK3"))
    req = req_of(raw(headers=headers))
    assert [(v.transport, v.host) for v in req.vias] == [
        ("UDP", "a.example.com"),
        ("TCP", "b.example.com"),
        ("TLS", "c.example.com"),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP",  # no sent-by
        "SIP/2.0 client.example.com",  # no transport
        "SIP/2.0/UDP client.example.com:65536;branch=z9hG4bK1",
        "SIP/2.0/UDP client.example.com;rport=65536",
        "SIP/2.0/UDP client.example.com;rport=abc",
        "SIP/2.0/UDP client.example.com;branch=z9hG4bK1;received=",
        "SIP/2.0/UDP client example.com",
        "SIP/2.0/UDP client.example.com;;branch=z9hG4bK1",
    ],
)
def test_malformed_vias_are_dropped(value: str) -> None:
    # Without a usable top Via no response can be sent (RFC 3261 18.2.2): drop.
    expect_error(raw(headers=replace("Via", value)), 400, False)


def test_missing_via_is_dropped() -> None:
    expect_error(raw(headers=replace("Via", None)), 400, False)


# ---------------------------------------------------------------------------
# Scalar ranges
# ---------------------------------------------------------------------------


def test_cseq_range() -> None:
    # RFC 3261 8.1.1.5: "The sequence number MUST be expressible as a 32-bit unsigned
    # integer". Out of range is still answered with a 400 (RFC 4475 3.1.2.4).
    ok = req_of(raw(headers=replace("CSeq", "4294967295 INVITE")))
    assert ok.cseq == CSeq(2**32 - 1, "INVITE")
    zero = req_of(raw(headers=replace("CSeq", "0 INVITE")))
    assert zero.cseq.seq == 0
    expect_error(raw(headers=replace("CSeq", "4294967296 INVITE")), 400, True)


@pytest.mark.parametrize(
    "value", ["INVITE", "1", "-1 INVITE", "1.5 INVITE", "x INVITE", "1 INVITE extra", ""]
)
def test_malformed_cseq_is_dropped(value: str) -> None:
    expect_error(raw(headers=replace("CSeq", value)), 400, False)


def test_max_forwards_range() -> None:
    # RFC 3261 20.22 / RFC 4475 3.1.2.4: 0..255.
    assert req_of(raw(headers=replace("Max-Forwards", "255"))).max_forwards == 255
    assert req_of(raw(headers=replace("Max-Forwards", "0"))).max_forwards == 0
    expect_error(raw(headers=replace("Max-Forwards", "256")), 400, True)
    expect_error(raw(headers=replace("Max-Forwards", "-1")), 400, True)
    expect_error(raw(headers=replace("Max-Forwards", "seventy")), 400, True)


@pytest.mark.parametrize(
    ("name", "value", "answerable"),
    [
        ("CSeq", "\u0661\u0662 INVITE", False),  # ARABIC-INDIC DIGITs: str.isdigit() is True
        ("Max-Forwards", "\u0667\u0660", True),
        ("Expires", "\u0666\u0660", True),
        ("Content-Length", "\u0660", True),
        ("Via", "SIP/2.0/UDP client.example.com:\u0665\u0660\u0666\u0660;branch=z9hG4bK1", False),
        (
            "Via",
            "SIP/2.0/UDP client.example.com;rport=\u0665\u0660\u0666\u0660;branch=z9hG4bK1",
            False,
        ),
    ],
)
def test_numbers_are_ascii_digits_only(name: str, value: str, answerable: bool) -> None:
    # RFC 3261 25.1: DIGIT = %x30-39. Optimised parsers that switch to str.isdigit()
    # or int() accept other Unicode digits; these must stay errors.
    headers = [(n, v) for n, v in BASE if n != name] + [(name, value)]
    expect_error(raw(headers=headers, content_length=name != "Content-Length"), 400, answerable)


def test_status_code_digits_are_ascii() -> None:
    with pytest.raises(ParseError):
        parse(response_bytes("SIP/2.0 \u0662\u0660\u0660 OK"))


def test_missing_max_forwards_is_accepted() -> None:
    # RFC 2543 clients send none (RFC 4475 3.4.1).
    assert req_of(raw(headers=replace("Max-Forwards", None))).max_forwards is None


def test_expires_range() -> None:
    # RFC 3261 20.19 / 25.1: delta-seconds, at most 2**32-1 (RFC 4475 3.1.2.4).
    assert req_of(raw(extra=["Expires: 4294967295"])).expires == 2**32 - 1
    assert req_of(raw(extra=["Expires: 0"])).expires == 0
    expect_error(raw(extra=["Expires: 4294967296"]), 400, True)
    expect_error(raw(extra=["Expires: soon"]), 400, True)


def test_content_length_checks() -> None:
    body = b"v=0\r\n"
    assert req_of(raw(body=body)).body == body
    expect_error(raw(content_length=False, extra=["Content-Length: 6"]) + body, 400, True)
    expect_error(raw(content_length=False, extra=["Content-Length: five"]), 400, True)
    expect_error(raw(content_length=False, extra=["Content-Length: -1"]), 400, True)
    # Fewer octets declared than received in a datagram: the rest is discarded (RFC 3261 18.3).
    short = raw(content_length=False, extra=["Content-Length: 3"]) + body
    assert parse(short).body == b"v=0"


def test_missing_content_length_in_a_datagram_means_the_rest() -> None:
    # RFC 3261 18.3 (UDP): without Content-Length the body runs to the end of the datagram.
    body = b"hello\r\n"
    msg = parse(raw(content_length=False) + body)
    assert msg.body == body and msg.content_length is None


# ---------------------------------------------------------------------------
# Repeated and missing headers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "answerable"),
    [
        ("Call-ID", "other@example.com", False),
        ("From", "<sip:mallory@example.com>;tag=2", False),
        ("To", "<sip:carol@example.com>", False),
        ("CSeq", "2 INVITE", False),
        ("Max-Forwards", "69", True),
    ],
)
def test_repeated_single_value_headers(name: str, value: str, answerable: bool) -> None:
    # RFC 3261 7.3.1: only list headers may appear more than once (RFC 4475 3.3.8).
    expect_error(raw(extra=[f"{name}: {value}"]), 400, answerable)


@pytest.mark.parametrize(
    "lines",
    [
        ["Expires: 60", "Expires: 60"],
        ["Content-Type: text/plain", "Content-Type: text/html"],
    ],
)
def test_repeated_other_single_value_headers(lines: list[str]) -> None:
    expect_error(raw(extra=lines), 400, True)


def test_conflicting_content_lengths() -> None:
    expect_error(raw(extra=["Content-Length: 5"]), 400, True)


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_headers_are_dropped(name: str) -> None:
    expect_error(raw(headers=replace(name, None)), 400, False)


@pytest.mark.parametrize("call_id", ["a b@example.com", ""])
def test_malformed_call_id(call_id: str) -> None:
    expect_error(raw(headers=replace("Call-ID", call_id)), 400, False)


# ---------------------------------------------------------------------------
# Start lines
# ---------------------------------------------------------------------------


def test_cseq_method_must_match_the_request_method() -> None:
    # RFC 4475 3.1.2.17
    expect_error(raw("OPTIONS sip:bob@example.com SIP/2.0"), 400, True)


@pytest.mark.parametrize("method", ["FOO", "PUBLISH", "X-Custom.Method", "RE%47IST%45R", "invite"])
def test_unknown_and_extension_methods_are_accepted(method: str) -> None:
    # RFC 3261 7.1 and 8.2.1: methods are case-sensitive tokens; unknown ones reach the
    # layer above (which answers 501/405).
    req = req_of(raw(f"{method} sip:bob@example.com SIP/2.0", replace("CSeq", f"7 {method}")))
    assert req.method == method and req.cseq.method == method


def test_methods_are_case_sensitive() -> None:
    expect_error(raw("invite sip:bob@example.com SIP/2.0"), 400, True)


@pytest.mark.parametrize(
    "uri",
    [
        "im:alice@example.com",
        "urn:service:sos",
        "http://www.example.com/",
        "nobodyKnowsThisScheme:x",
    ],
)
def test_unsupported_request_uri_scheme_is_416(uri: str) -> None:
    # RFC 3261 8.2.2.1: "the UAS SHOULD reject the request with a 416".
    data = raw(f"OPTIONS {uri} SIP/2.0", replace("CSeq", "1 OPTIONS"))
    expect_error(data, 416, True)
    expect_stream_error_item(data, 416, True)


def test_tel_request_uri_is_accepted() -> None:
    req = req_of(raw("INVITE tel:+12015550123 SIP/2.0"))
    assert isinstance(req.uri, TelUri) and req.uri.number == "+12015550123"


def test_sip_version_is_case_insensitive() -> None:
    # RFC 3261 7.1: "The SIP-Version string is case-insensitive".
    req = req_of(raw("INVITE sip:bob@example.com sip/2.0"))
    assert req.method == "INVITE"


def test_unsupported_request_version_is_505() -> None:
    # RFC 3261 21.5.6: 505 Version Not Supported (RFC 4475 3.1.2.16).
    data = raw("INVITE sip:bob@example.com SIP/3.0")
    expect_error(data, 505, True)
    expect_stream_error_item(data, 505, True)


@pytest.mark.parametrize(
    "start",
    [
        "INVITE sip:bob@example.com",
        "INVITE  sip:bob@example.com SIP/2.0",
        "INVITE sip:bob@example.com SIP/2.0 ",
        "INVITE\tsip:bob@example.com\tSIP/2.0",
        "INVITE sip:bob@example.com HTTP/1.1",
        "INV(ITE sip:bob@example.com SIP/2.0",
    ],
)
def test_malformed_request_lines(start: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(raw(start))
    assert info.value.status == 400


def response_bytes(status_line: str) -> bytes:
    headers = [(n, v) for n, v in BASE if n != "Max-Forwards"]
    return raw(status_line, headers)


@pytest.mark.parametrize("code", [100, 180, 199, 200, 301, 404, 486, 500, 503, 603, 699])
def test_status_codes_in_range(code: int) -> None:
    msg = parse_everywhere(response_bytes(f"SIP/2.0 {code} Whatever"))
    assert isinstance(msg, Response) and msg.status == code and msg.reason == "Whatever"


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 700 Too Big",  # RFC 4475 3.1.2.19: larger than 699, drop
        "SIP/2.0 099 Too Small",
        "SIP/2.0 2000 OK",
        "SIP/2.0 20 OK",
        "SIP/2.0 OK",
        "SIP/3.0 200 OK",
        "SIP/2.0  200 OK",
    ],
)
def test_bad_status_lines_are_dropped(line: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(response_bytes(line))
    assert info.value.answerable is False


def test_reason_phrase_keeps_spaces_and_utf8() -> None:
    resp = parse(response_bytes("SIP/2.0 486 Busy  Here — très occupé"))
    assert isinstance(resp, Response) and resp.reason == "Busy  Here — très occupé"


@pytest.mark.parametrize(
    "data", [b"", b"\r\n", b"\r\n\r\n", b"INVITE", b"\x00\x01\x02", b"SIP/2.0"]
)
def test_garbage_datagrams(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse(data)


# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


def test_multipart_body_is_kept_octet_for_octet() -> None:
    body = (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\r\n\r\n\x00\r\n"
        b"--b1--\r\n"
    )
    req = req_of(raw(extra=['Content-Type: multipart/mixed;boundary="b1"'], body=body))
    assert req.body == body
    content_type = req.token("Content-Type")
    assert content_type is not None and content_type.param("boundary") == "b1"
    assert req.content_length == len(body)


def test_body_with_crlfcrlf_and_non_utf8() -> None:
    body = bytes(range(256)) + b"\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    req = req_of(raw(extra=["Content-Type: application/octet-stream"], body=body))
    assert req.body == body


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

ROUND_TRIP = {
    **{f"torture-{k}": v for k, v in t.VALID.items()},
    "torture-badbranch": t.BADBRANCH,
    "torture-unksm2": t.UNKSM2,
    "torture-bext01": t.BEXT01,
    "torture-invut": t.INVUT,
    "torture-regaut01": t.REGAUT01,
    "torture-bcast": t.BCAST,
    "torture-zeromf": t.ZEROMF,
    "torture-cparam01": t.CPARAM01,
    "torture-cparam02": t.CPARAM02,
    "torture-regescrt": t.REGESCRT,
    "torture-sdp01": t.SDP01,
    "torture-inv2543": t.INV2543,
    "torture-baddate": t.BADDATE,
    "base": raw(),
    "folded": raw(
        extra=["Subject: a\r\n b", "Contact: <sip:a@example.com>,\r\n\t<sip:b@example.com>"]
    ),
    "compact": raw(
        headers=[
            ("v", BASE[0][1]),
            ("f", BASE[2][1]),
            ("t", BASE[3][1]),
            ("i", BASE[4][1]),
            ("CSeq", "1 INVITE"),
        ]
    ),
    "response": response_bytes("SIP/2.0 180 Ringing"),
    "empty-reason": response_bytes("SIP/2.0 200 "),
    "quoted": raw(headers=replace("From", '"a \\"b\\" \\\\c" <sip:alice@example.com>;tag=1')),
    "escapes": raw("INVITE sip:%61%20b@example.com SIP/2.0"),
    "ipv6": raw(
        "INVITE sip:bob@[2001:db8::1]:5070 SIP/2.0",
        replace("Via", "SIP/2.0/UDP [2001:db8::2]:5060;branch=z9hG4bK1;rport"),
    ),
    "body": raw(
        extra=["Content-Type: application/sdp"], body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    ),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_round_trip(name: str) -> None:
    msg = parse(ROUND_TRIP[name])
    data = bytes(msg)
    again = parse(data)
    assert again == msg
    assert bytes(again) == data  # serialization is stable


# ---------------------------------------------------------------------------
# Request.response and build_request
# ---------------------------------------------------------------------------


def invite_with_two_vias() -> Request:
    headers = [
        (
            "Via",
            "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP 192.0.2.3;branch=z9hG4bKp2",
        )
    ]
    headers += [*BASE, ("Timestamp", "54")]
    return req_of(
        raw(
            headers=headers,
            extra=["Record-Route: <sip:proxy.example.com;lr>", "Contact: <sip:alice@192.0.2.4>"],
        )
    )


def test_response_copies_the_transaction_headers() -> None:
    # RFC 3261 8.2.6.2: From, Call-ID, CSeq and Via (all, in order) are copied; To too,
    # with a tag added by the UAS.
    req = invite_with_two_vias()
    resp = req.response(180, to_tag="as83kd9bs")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.vias == req.vias
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("Call-ID") == req.headers.get("Call-ID")
    assert resp.headers.get("CSeq") == req.headers.get("CSeq")
    assert resp.to.tag == "as83kd9bs"
    assert resp.to.uri == req.to.uri and resp.to.display == req.to.display
    assert resp.from_ == req.from_ and resp.cseq == req.cseq and resp.call_id == req.call_id
    assert resp.content_length == 0 and resp.body == b""
    for name in ("Max-Forwards", "Contact", "Record-Route", "Timestamp"):
        assert name not in resp.headers, name
    assert parse_everywhere(bytes(resp)) == resp


def test_100_trying_gets_no_tag_and_keeps_timestamp() -> None:
    # RFC 3261 8.2.6.1: Timestamp is copied into 100; 100 Trying never creates a dialog.
    req = invite_with_two_vias()
    resp = req.response(100, to_tag="x")
    assert resp.to.tag is None
    assert resp.headers.get("Timestamp") == "54"
    assert resp.reason == "Trying"


def test_response_keeps_an_existing_to_tag() -> None:
    req = req_of(raw(headers=replace("To", "<sip:bob@example.com>;tag=dialog1")))
    resp = req.response(200, to_tag="other")
    assert resp.to.tag == "dialog1"


def test_response_reason_headers_and_body() -> None:
    req = req_of(raw())
    resp = req.response(
        488,
        "Not Here",
        to_tag="t",
        headers=[("Warning", '399 pbx.example.com "no codec"'), ("Accept", "application/sdp")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert resp.reason == "Not Here"
    assert resp.headers.get("Warning") == '399 pbx.example.com "no codec"'
    assert resp.body == b"v=0\r\n" and resp.content_length == 5
    content_type = resp.token("Content-Type")
    assert content_type is not None and content_type.value == "application/sdp"
    again = parse(bytes(resp))
    assert again == resp


def test_response_to_an_unusual_request_round_trips() -> None:
    for data in (t.INTMETH, t.ESCNULL, t.LONGREQ, t.TRANSPORTS):
        req = parse(data)
        assert isinstance(req, Request)
        resp = req.response(501, to_tag="z")
        assert parse(bytes(resp)) == resp
        assert parse(bytes(resp)).vias == req.vias


def test_build_request() -> None:
    via = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK-1", "rport": None})
    from_ = NameAddr(parse_uri("sip:alice@example.com"), 'Alice "Al" \\ A.', {"tag": "f1"})
    to = NameAddr(parse_uri("sip:bob@example.com"))
    uri = parse_uri("sip:bob@192.0.2.2:5070;transport=udp")
    req = build_request(
        "INVITE",
        uri,
        via=via,
        from_=from_,
        to=to,
        call_id="call-1@example.com",
        cseq=314159,
        headers=[("Contact", "<sip:alice@192.0.2.1:5060>"), ("Allow", "INVITE, ACK, BYE")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert [n for n, _ in req.headers][:6] == [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
    ]
    again = parse_everywhere(bytes(req))
    assert again == req
    assert isinstance(again, Request) and again.uri == uri
    assert again.via == via
    assert again.from_.display == 'Alice "Al" \\ A.' and again.from_.tag == "f1"
    assert again.to.tag is None
    assert again.cseq == CSeq(314159, "INVITE")
    assert again.max_forwards == 70
    assert again.call_id == "call-1@example.com"
    assert again.content_length == 5 and again.body == b"v=0\r\n"
    assert again.tokens("Allow") == ["INVITE", "ACK", "BYE"]


def test_build_request_escapes_users() -> None:
    uri = SipUri(host="example.com", user="a b;c@d\x00")
    req = build_request(
        "MESSAGE",
        uri,
        via=Via("TCP", "client.example.com", None, {"branch": "z9hG4bK-2"}),
        from_=NameAddr(SipUri(host="example.com", user="alice"), None, {"tag": "1"}),
        to=NameAddr(uri),
        call_id="c2",
        cseq=1,
        max_forwards=5,
    )
    data = bytes(req)
    assert b"\x00" not in data and b"a b" not in data
    again = parse(data)
    assert isinstance(again, Request)
    assert sip(again.uri).user == "a b;c@d\x00"
    assert again.max_forwards == 5 and again.content_length == 0


# ---------------------------------------------------------------------------
# Stream framing (RFC 3261 18.3, RFC 5626 4.4.1)
# ---------------------------------------------------------------------------

ONE = raw(body=b"v=0\r\n", extra=["Content-Type: application/sdp"])
TWO = NEXT


def test_stream_one_message_whole_and_byte_by_byte() -> None:
    msg = parse(ONE)
    assert feed_chunks([ONE]) == [msg]
    assert feed_chunks(byte_by_byte(ONE)) == [msg]


def test_stream_two_messages_in_one_read() -> None:
    assert feed_chunks([ONE + TWO + ONE]) == [parse(ONE), parse(TWO), parse(ONE)]


def test_stream_message_then_partial_message() -> None:
    framer = StreamFramer()
    cut = 40
    assert framer.feed(ONE + TWO[:cut]) == [parse(ONE)]
    assert framer.buffered == cut
    assert framer.feed(TWO[cut:]) == [parse(TWO)]
    assert framer.buffered == 0


@pytest.mark.parametrize("cut", [1, 10, 100, len(ONE) - 1])
def test_stream_any_split_point(cut: int) -> None:
    data = ONE + TWO
    assert feed_chunks([data[:cut], data[cut:]]) == [parse(ONE), parse(TWO)]


def test_stream_ping_between_messages_server_side() -> None:
    # RFC 5626 4.4.1: the side that accepted the connection receives pings (CRLFCRLF)
    # and answers them; a lone CRLF before a message is ignored (RFC 3261 7.5).
    items = feed_chunks([ONE + b"\r\n\r\n" + TWO + b"\r\n" + ONE])
    assert items == [parse(ONE), Keepalive(ping=True), parse(TWO), parse(ONE)]


def test_stream_pong_between_messages_client_side() -> None:
    # RFC 5626 4.4.1: the side that opened the connection (a trunk over TCP/TLS, say)
    # sends pings and receives pongs (CRLF); it must see every pong, even one that a
    # request follows in the same read.
    framer = StreamFramer(client=True)
    items = framer.feed(ONE + b"\r\n" + TWO + b"\r\n")
    assert items == [parse(ONE), Keepalive(ping=False), parse(TWO), Keepalive(ping=False)]


def test_stream_pong_then_message_in_a_later_read() -> None:
    client = StreamFramer(client=True)
    assert client.feed(b"\r\n") + client.feed(TWO) == [Keepalive(ping=False), parse(TWO)]
    server = StreamFramer()
    assert server.feed(b"\r\n") + server.feed(TWO) == [parse(TWO)]


def test_stream_ping_alone() -> None:
    assert feed_chunks([b"\r\n\r\n"]) == [Keepalive(ping=True)]


def test_stream_ping_split_across_reads_is_one_ping() -> None:
    # TCP carries octets, not reads: a CRLFCRLF that arrives as two segments is still
    # one ping, to be answered with a pong (RFC 5626 4.4.1).
    assert feed_chunks([b"\r\n", b"\r\n"]) == [Keepalive(ping=True)]
    assert feed_chunks(byte_by_byte(b"\r\n\r\n")) == [Keepalive(ping=True)]
    assert feed_chunks(byte_by_byte(ONE + b"\r\n\r\n" + TWO)) == [
        parse(ONE),
        Keepalive(ping=True),
        parse(TWO),
    ]


def test_stream_malformed_message_then_good_one() -> None:
    bad = raw("OPTIONS sip:bob@example.com SIP/2.0")  # CSeq says INVITE
    items = feed_chunks([bad + TWO])
    assert isinstance(items[0], ParseError) and items[0].status == 400 and items[0].answerable
    assert items[1] == parse(TWO)
    items = feed_chunks(byte_by_byte(bad + TWO))
    assert isinstance(items[0], ParseError) and items[1] == parse(TWO)


def test_stream_huge_header_is_a_stream_error() -> None:
    framer = StreamFramer()
    with pytest.raises(StreamError) as info:
        framer.feed(b"INVITE sip:bob@example.com SIP/2.0\r\nSubject: " + b"x" * 40_000)
    assert info.value.status == 413


def test_stream_huge_header_with_small_limit() -> None:
    framer = StreamFramer(max_header=100)
    with pytest.raises(StreamError):
        framer.feed(ONE)


def test_stream_huge_content_length_is_a_stream_error() -> None:
    data = raw(content_length=False, extra=["Content-Length: 100000000"])
    with pytest.raises(StreamError) as info:
        feed_chunks([data])
    assert info.value.status == 413
    with pytest.raises(StreamError):
        StreamFramer(max_body=4).feed(ONE)


@pytest.mark.parametrize("value", ["-1", "five", "", "1e3", "0x10", "99999999999999999999"])
def test_stream_bad_content_length_is_a_stream_error(value: str) -> None:
    with pytest.raises(StreamError):
        feed_chunks([raw(content_length=False, extra=[f"Content-Length: {value}"])])


def test_stream_conflicting_content_lengths_is_a_stream_error() -> None:
    with pytest.raises(StreamError):
        feed_chunks([raw(body=b"abc", extra=["l: 2"])])


def test_stream_missing_content_length_means_empty_body() -> None:
    no_length = raw(content_length=False)
    items = feed_chunks([no_length + TWO])
    assert len(items) == 2
    first = items[0]
    assert isinstance(first, Request) and first.body == b"" and first.content_length is None
    assert items[1] == parse(TWO)


def test_stream_compact_and_spaced_content_length() -> None:
    body = b"hello"
    for line in ("l: 5", "L:5", "content-LENGTH   :   5"):
        data = raw(content_length=False, extra=["Content-Type: text/plain", line]) + body
        items = feed_chunks([data + TWO])
        assert [type(i) for i in items] == [Request, Request], items
        assert items[0].body == body  # type: ignore[union-attr]


def test_stream_folded_content_length() -> None:
    # RFC 3261 7.3.1: any header value may be folded, Content-Length included.
    data = (
        raw(content_length=False, extra=["Content-Type: text/plain", "Content-Length:\r\n 5"])
        + b"hello"
    )
    items = feed_chunks([data + TWO])
    assert len(items) == 2 and isinstance(items[0], Request)
    assert items[0].body == b"hello"
    assert items[1] == parse(TWO)


def test_stream_responses() -> None:
    resp = response_bytes("SIP/2.0 200 OK")
    assert feed_chunks(byte_by_byte(resp + TWO)) == [parse(resp), parse(TWO)]


def test_stream_body_containing_crlfcrlf_and_a_fake_content_length() -> None:
    body = b"\r\n\r\nContent-Length: 999\r\n\r\n"
    data = raw(extra=["Content-Type: text/plain"], body=body)
    items = feed_chunks(byte_by_byte(data + TWO))
    assert items == [parse(data), parse(TWO)]
    assert items[0].body == body  # type: ignore[union-attr]
