"""RFC 5118 SIP torture test messages for IPv6, against the parser.

The messages are written from RFC 5118 section 4 with CRLF line ends. Their hosts
are already documentation ones (2001:db8::/32, 192.0.2.0/24, example.com).

One deliberate change: the RFC's Content-Length values for the three messages with
SDP (268, 181, 236) do not count the bodies it prints (251, 189 and 245 octets with
CRLF line ends), a known slip in RFC 5118. The messages are meant to be valid, so
here Content-Length counts the body; ``test_4_6_with_the_rfcs_literal_length`` shows
what the literal 268 gets (a Content-Length past the end of the datagram, a 400 as in
RFC 4475 3.1.2.2).
"""

from __future__ import annotations

import ipaddress

import pytest

from minipbx.sip import ParseError, Request, SipUri, parse
from tests.sip.framing import expect_error, expect_stream_error_item, parse_everywhere


def sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri), uri
    return uri


def v6(host: str) -> ipaddress.IPv6Address:
    """The address of a bracketed IPv6 reference (RFC 5118 uses them everywhere)."""
    assert host.startswith("[") and host.endswith("]"), host
    return ipaddress.IPv6Address(host[1:-1])


def request(data: bytes) -> Request:
    msg = parse_everywhere(data)
    assert isinstance(msg, Request)
    return msg


# 4.1 Valid SIP Message with an IPv6 Reference
IPV6_GOOD = (
    b"REGISTER sip:[2001:db8::10] SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b"Max-Forwards: 70\r\n"
    b'Contact: "Caller" <sip:caller@[2001:db8::1]>\r\n'
    b"CSeq: 98176 REGISTER\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 4.2 Invalid SIP Message with an IPv6 Reference (no "[" "]" in the Request-URI)
IPV6_BAD = IPV6_GOOD.replace(
    b"REGISTER sip:[2001:db8::10] SIP/2.0", b"REGISTER sip:2001:db8::10 SIP/2.0"
)

# 4.3 Port Ambiguous in a SIP URI
PORT_AMBIGUOUS = (
    b"REGISTER sip:[2001:db8::10:5070] SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b'Contact: "Caller" <sip:caller@[2001:db8::1]>\r\n'
    b"Max-Forwards: 70\r\n"
    b"CSeq: 98176 REGISTER\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 4.4 Port Unambiguous in a SIP URI
PORT_UNAMBIGUOUS = PORT_AMBIGUOUS.replace(b"sip:[2001:db8::10:5070]", b"sip:[2001:db8::10]:5070")

# 4.5 IPv6 Reference Delimiters in Via Header (with and without "[" "]" in received)
VIA_RECEIVED_DELIMITED = (
    b"BYE sip:[2001:db8::10] SIP/2.0\r\n"
    b"To: sip:user@example.com;tag=bd76ya\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b"Max-Forwards: 70\r\n"
    b"CSeq: 321 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
VIA_RECEIVED_BARE = (
    b"OPTIONS sip:[2001:db8::10] SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3\r\n"
    b"Call-ID: SSG95523997077@hlau_4100\r\n"
    b"Max-Forwards: 70\r\n"
    b'Contact: "Caller" <sip:caller@[2001:db8::9:1]>\r\n'
    b"CSeq: 921 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 4.6 SIP Request with IPv6 Addresses in SDP Body
IPV6_IN_SDP_BODY = (
    b"v=0\r\n"
    b"o=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n"
    b"s=Live video feed for today's meeting\r\n"
    b"c=IN IP6 2001:db8::20\r\n"
    b"t=3338481189 3370017201\r\n"
    b"m=audio 6000 RTP/AVP 2\r\n"
    b"a=rtpmap:2 G726-32/8000\r\n"
    b"m=video 6024 RTP/AVP 107\r\n"
    b"a=rtpmap:107 H263-1998/90000\r\n"
)
IPV6_IN_SDP = (
    b"INVITE sip:user@[2001:db8::10] SIP/2.0\r\n"
    b"To: sip:user@[2001:db8::10]\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::20];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b'Contact: "Caller" <sip:caller@[2001:db8::20]>\r\n'
    b"CSeq: 8612 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n" % len(IPV6_IN_SDP_BODY) + b"\r\n" + IPV6_IN_SDP_BODY
)

# 4.7 Multiple IP Addresses in SIP Headers
MULTIPLE_IN_HEADERS = (
    b"BYE sip:user@host.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200\r\n"
    b"Call-ID: 997077@lau_4100\r\n"
    b"Max-Forwards: 70\r\n"
    b"CSeq: 89187 BYE\r\n"
    b"To: sip:user@example.net;tag=9817--94\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# 4.8 Multiple IP Addresses in SDP
MULTIPLE_IN_SDP_BODY = (
    b"v=0\r\n"
    b"o=bob 280744730 28977631 IN IP4 host.example.com\r\n"
    b"s=\r\n"
    b"t=0 0\r\n"
    b"m=audio 22334 RTP/AVP 0\r\n"
    b"c=IN IP4 192.0.2.1\r\n"
    b"m=video 6024 RTP/AVP 107\r\n"
    b"c=IN IP6 2001:db8::1\r\n"
    b"a=rtpmap:107 H263-1998/90000\r\n"
)
MULTIPLE_IN_SDP = (
    b"INVITE sip:user@[2001:db8::10] SIP/2.0\r\n"
    b"To: sip:user@[2001:db8::10]\r\n"
    b"From: sip:user@example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b'Contact: "Caller" <sip:caller@[2001:db8::9:1]>\r\n'
    b"Max-Forwards: 70\r\n"
    b"CSeq: 8912 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n" % len(MULTIPLE_IN_SDP_BODY) + b"\r\n" + MULTIPLE_IN_SDP_BODY
)

# 4.9 IPv4-Mapped IPv6 Addresses
IPV4_MAPPED_BODY = (
    b"v=0\r\n"
    b"o=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2\r\n"
    b"s=Call me soon, please!\r\n"
    b"c=IN IP6 ::ffff:192.0.2.2\r\n"
    b"t=3338481189 3370017201\r\n"
    b"m=audio 6000 RTP/AVP 2\r\n"
    b"a=rtpmap:2 G726-32/8000\r\n"
    b"m=video 6024 RTP/AVP 107\r\n"
    b"a=rtpmap:107 H263-1998/90000\r\n"
)
IPV4_MAPPED = (
    b"INVITE sip:user@example.com SIP/2.0\r\n"
    b"To: sip:user@example.com\r\n"
    b"From: sip:user@east.example.com;tag=81x2\r\n"
    b"Via: SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19\r\n"
    b"Via: SIP/2.0/UDP [::ffff:192.0.2.2];branch=z9hG4bKas3-111\r\n"
    b"Call-ID: SSG9559905523997077@hlau_4100\r\n"
    b'Contact: "T. desk phone" <sip:ted@[::ffff:192.0.2.2]>\r\n'
    b"CSeq: 612 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n" % len(IPV4_MAPPED_BODY) + b"\r\n" + IPV4_MAPPED_BODY
)

# 4.10 IPv6 Reference Bug in RFC 3261 ABNF: an extra colon, then the correct form
THREE_COLONS = (
    b"OPTIONS sip:user@[2001:db8:::192.0.2.1] SIP/2.0\r\n"
    b"To: sip:user@[2001:db8:::192.0.2.1]\r\n"
    b"From: sip:user@example.com;tag=810x2\r\n"
    b"Via: SIP/2.0/UDP lab1.east.example.com;branch=z9hG4bKas3-111\r\n"
    b"Call-ID: G9559905523997077@hlau_4100\r\n"
    b"CSeq: 689 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
TWO_COLONS = THREE_COLONS.replace(b"2001:db8:::192.0.2.1", b"2001:db8::192.0.2.1")


def test_content_lengths_match_the_bodies() -> None:
    # Transcription check (see the module docstring for the RFC's own values).
    assert (len(IPV6_IN_SDP_BODY), len(MULTIPLE_IN_SDP_BODY), len(IPV4_MAPPED_BODY)) == (
        251,
        189,
        245,
    )
    assert b"Content-Length: 251\r\n" in IPV6_IN_SDP
    assert b"Content-Length: 189\r\n" in MULTIPLE_IN_SDP
    assert b"Content-Length: 245\r\n" in IPV4_MAPPED


def test_4_6_with_the_rfcs_literal_length() -> None:
    # Content-Length 268 with 251 octets of body in a datagram: RFC 3261 18.3 / RFC
    # 4475 3.1.2.2, a 400 (all the headers a response needs are fine).
    literal = IPV6_IN_SDP.replace(b"Content-Length: 251", b"Content-Length: 268")
    expect_error(literal, 400, True)


def test_4_1_ipv6_reference_in_request_uri_via_and_contact() -> None:
    # RFC 5118 4.1: "well-formatted according to the grammar in [RFC3261]".
    req = request(IPV6_GOOD)
    uri = sip(req.uri)
    assert (uri.host, uri.port, uri.user) == ("[2001:db8::10]", None, None)
    assert v6(uri.host) == ipaddress.IPv6Address("2001:db8::10")
    assert (req.via.host, req.via.port) == ("[2001:db8::9:1]", None)
    assert req.via.branch == "z9hG4bKas3-111"
    (contact,) = req.contacts
    assert contact.display == "Caller"
    assert sip(contact.uri).host == "[2001:db8::1]"


def test_4_2_unbracketed_ipv6_in_request_uri() -> None:
    # RFC 5118 4.2: "A SIP implementation receiving this request should respond with a
    # 400 Bad Request error." Everything but the Request-URI is fine: answerable.
    expect_error(IPV6_BAD, 400, True)
    expect_stream_error_item(IPV6_BAD, 400, True)


def test_4_3_port_inside_brackets_is_part_of_the_address() -> None:
    # RFC 5118 4.3: "From a parsing perspective, the request below is well-formed.
    # However, from a semantic point of view, it will not yield the desired result."
    # "2001:db8::10:5070" is a valid IPv6 address: no port was given.
    req = request(PORT_AMBIGUOUS)
    uri = sip(req.uri)
    assert uri.host == "[2001:db8::10:5070]"
    assert uri.port is None
    assert v6(uri.host) == ipaddress.IPv6Address("2001:db8::10:5070")


def test_4_4_port_outside_brackets() -> None:
    # RFC 5118 4.4: "leaves no ambiguity whatsoever on where the IPv6 address ends and
    # the port number begins."
    req = request(PORT_UNAMBIGUOUS)
    uri = sip(req.uri)
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)
    assert uri.host_port == "[2001:db8::10]:5070"
    assert str(uri) == "sip:[2001:db8::10]:5070"


def test_4_5_via_received_with_delimiters() -> None:
    # RFC 5118 4.5: "Even though this is not a valid request based on a strict
    # interpretation of the grammar in [RFC3261], robust implementations must
    # nonetheless be able to parse the topmost Via header field and continue
    # processing the request."
    req = request(VIA_RECEIVED_DELIMITED)
    assert req.method == "BYE"
    received = req.via.received
    assert received is not None
    assert ipaddress.IPv6Address(received.strip("[]")) == ipaddress.IPv6Address("2001:db8::9:255")
    assert req.via.branch == "z9hG4bKas3-111"


def test_4_5_via_received_without_delimiters() -> None:
    # RFC 5118 4.5: "This request is valid according to the grammar in [RFC3261]."
    req = request(VIA_RECEIVED_BARE)
    assert req.via.received == "2001:db8::9:255"
    assert req.via.host == "[2001:db8::9:1]"
    assert req.via.branch == "z9hG4bKas3"
    (contact,) = req.contacts
    assert sip(contact.uri).host == "[2001:db8::9:1]"


def test_4_6_ipv6_in_sdp() -> None:
    # RFC 5118 4.6: "valid and well-formed"; SDP addresses carry no brackets.
    req = request(IPV6_IN_SDP)
    assert sip(req.uri).host == "[2001:db8::10]"
    assert sip(req.to.uri).host == "[2001:db8::10]"
    assert req.via.host == "[2001:db8::20]"
    assert req.body == IPV6_IN_SDP_BODY


def test_4_7_mixed_ipv4_and_ipv6_vias() -> None:
    # RFC 5118 4.7: "The Via list contains a mix of IPv4 addresses and IPv6 references."
    req = request(MULTIPLE_IN_HEADERS)
    assert [(v.transport, v.host, v.port) for v in req.vias] == [
        ("UDP", "[2001:db8::9:1]", 6050),
        ("UDP", "192.0.2.1", None),
        ("TCP", "[2001:db8::9:255]", None),
    ]
    assert req.vias[2].received == "192.0.2.200"
    assert req.vias[2].branch == "z9hG4bK451jj"
    assert req.to.tag == "9817--94"


def test_4_7_several_ipv6_vias_on_one_line() -> None:
    # The same Via values as one comma-separated line: the ':' inside "[...]" and the
    # port after "]" must not confuse the list split.
    folded = MULTIPLE_IN_HEADERS.replace(
        b"branch=z9hG4bKas3-111\r\nVia: SIP/2.0/UDP 192.0.2.1",
        b"branch=z9hG4bKas3-111, SIP/2.0/UDP 192.0.2.1",
    ).replace(b"65144\r\nVia: ", b"65144,\r\n ")
    req = request(folded)
    assert [(v.host, v.port) for v in req.vias] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
    assert len(req.headers.get_all("Via")) == 1


def test_4_8_multiple_addresses_in_sdp() -> None:
    req = request(MULTIPLE_IN_SDP)
    assert req.body == MULTIPLE_IN_SDP_BODY
    (contact,) = req.contacts
    assert sip(contact.uri).host == "[2001:db8::9:1]"


def test_4_9_ipv4_mapped_ipv6() -> None:
    # RFC 5118 4.9: "The topmost Via header includes a port number that is
    # appropriately delimited by ']'."
    req = request(IPV4_MAPPED)
    top, second = req.vias
    assert (top.port, v6(top.host).ipv4_mapped) == (19823, ipaddress.IPv4Address("192.0.2.10"))
    assert (second.port, v6(second.host).ipv4_mapped) == (None, ipaddress.IPv4Address("192.0.2.2"))
    (contact,) = req.contacts
    assert contact.display == "T. desk phone"
    assert v6(sip(contact.uri).host).ipv4_mapped == ipaddress.IPv4Address("192.0.2.2")
    assert sip(req.uri).host == "example.com"


def test_4_10_extra_colon_is_rejected() -> None:
    # RFC 5118 4.10: an implementation "may exhibit robustness by successfully parsing
    # the IPv6 reference (it can choose to ignore the extra colon". minipbx does not:
    # "2001:db8:::192.0.2.1" is no IPv6 address, and guessing what was meant in a
    # Request-URI is how requests get misrouted. The To, which a response copies,
    # holds the same bad reference, so the request is dropped.
    expect_error(THREE_COLONS, 400, False)


def test_4_10_extra_colon_only_in_request_uri_is_answered() -> None:
    only_ruri = THREE_COLONS.replace(
        b"To: sip:user@[2001:db8:::192.0.2.1]", b"To: sip:user@example.com"
    )
    expect_error(only_ruri, 400, True)


def test_4_10_correct_two_colons() -> None:
    # RFC 5118 4.10: "The next message has the correct syntax for the IPv6 reference
    # in the R-URI."
    req = request(TWO_COLONS)
    uri = sip(req.uri)
    assert uri.user == "user"
    assert v6(uri.host) == ipaddress.IPv6Address("2001:db8::c000:201")
    assert sip(req.to.uri).host == "[2001:db8::192.0.2.1]"


@pytest.mark.parametrize(
    "host",
    [
        "[2001:db8::10",  # unterminated reference
        "2001:db8::10]",
        "[2001:db8::10::1]",  # two "::"
        "[2001:db8::g]",  # not hex
        "[]",
        "[192.0.2.1]",  # an IPv4 address is not an IPv6 reference
        "[2001:db8:0:0:0:0:0:0:1]",  # nine groups
    ],
)
def test_bad_ipv6_references_are_400(host: str) -> None:
    data = IPV6_GOOD.replace(b"sip:[2001:db8::10]", b"sip:" + host.encode())
    expect_error(data, 400, True)


@pytest.mark.parametrize(
    "via",
    [
        b"SIP/2.0/UDP [2001:db8::9:1;branch=z9hG4bKx",
        b"SIP/2.0/UDP 2001:db8::9:1;branch=z9hG4bKx",
        b"SIP/2.0/UDP [2001:db8::9::1];branch=z9hG4bKx",
        b"SIP/2.0/UDP [2001:db8::9:1]:65536;branch=z9hG4bKx",
    ],
)
def test_bad_ipv6_in_via_is_dropped(via: bytes) -> None:
    # A Via the response cannot be sent back along is a 400 nobody can receive.
    data = IPV6_GOOD.replace(b"SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111", via)
    expect_error(data, 400, False)


@pytest.mark.parametrize("data", [IPV6_GOOD, PORT_UNAMBIGUOUS, MULTIPLE_IN_HEADERS, IPV4_MAPPED])
def test_ipv6_hosts_survive_a_round_trip(data: bytes) -> None:
    msg = parse(data)
    again = parse(bytes(msg))
    assert again == msg
    assert [(v.host, v.port) for v in again.vias] == [(v.host, v.port) for v in msg.vias]


def test_ipv6_contact_in_a_list_with_commas_and_ports() -> None:
    data = IPV6_GOOD.replace(
        b'Contact: "Caller" <sip:caller@[2001:db8::1]>',
        b'Contact: "Caller, Esq." <sip:caller@[2001:db8::1]:5070>;q=0.5, <sip:[::1]>',
    )
    req = request(data)
    first, second = req.contacts
    assert first.display == "Caller, Esq."
    assert (sip(first.uri).host, sip(first.uri).port) == ("[2001:db8::1]", 5070)
    assert first.params == {"q": "0.5"}
    assert sip(second.uri).host == "[::1]"


def test_parse_error_is_the_only_exception() -> None:
    for data in (IPV6_BAD, THREE_COLONS):
        with pytest.raises(ParseError):
            parse(data)
