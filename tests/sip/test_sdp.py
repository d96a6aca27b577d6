"""Tests for minipbx.sip.sdp: parsing, serialization, offer/answer and relay helpers."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipbx.sip.errors import ParseError
from minipbx.sip.offer_answer import (
    NegotiatedCodec,
    build_answer,
    build_offer,
    is_hold,
    negotiated_codec,
    restrict_codecs,
    rewrite_connection,
)
from minipbx.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Bandwidth,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    OtherLine,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    Timing,
)

FUZZ = settings(derandomize=True, database=None, max_examples=300, deadline=None)
GENERATED = settings(FUZZ, max_examples=120)


def crlf(text: str) -> str:
    """Test SDPs are written with LF and sent with CRLF."""
    return text.lstrip("\n").replace("\n", "\r\n")


# baresip 1.0 style: session-level c=, tool attribute, dynamic payload types first.
BARESIP = crlf("""
v=0
o=- 1745312938 2185420392 IN IP4 192.168.1.23
s=-
c=IN IP4 192.168.1.23
t=0 0
a=tool:baresip 1.0.0
m=audio 10180 RTP/AVP 96 9 0 8 101
b=AS:128
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=sendrecv
a=label:1
a=ssrc:2436711891 cname:63b6dc53-0d36-4f67-a4b3-0a0a6f8d5a6e
a=rtcp-mux
a=ptime:20
""")

# SIPp's built-in uac scenario (payload type 0 without rtpmap, media-level c=).
SIPP = crlf("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
t=0 0
m=audio 6000 RTP/AVP 0
c=IN IP4 127.0.0.1
""")

# WebRTC-ish: bundle, ICE candidates, DTLS, rtcp-fb, an i= title and an unknown y= line.
WEBRTC = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS stream
a=ice-options:trickle
m=audio 54400 UDP/TLS/RTP/SAVPF 111 0 8 126
i=microphone
c=IN IP4 203.0.113.7
y=vendor-extension 1 2 3
a=rtcp:54401 IN IP4 203.0.113.7
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0
a=candidate:435653019 1 udp 1845501695 203.0.113.7 54400 typ srflx raddr 192.168.0.196 rport 46243
a=ice-ufrag:Oyef7uvBlwafI3hT
a=ice-pwd:T0teqPLNQQOf+5W+ls+P2p16
a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:7F:B9:A3:F4:70
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:126 telephone-event/8000
a=ssrc:3570614608 cname:4TOk42mSjXCkVIa6
m=video 54400 UDP/TLS/RTP/SAVPF 96
c=IN IP4 203.0.113.7
a=mid:1
a=rtpmap:96 VP8/90000
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0
a=end-of-candidates
""")

IPV6 = crlf("""
v=0
o=alice 1 1 IN IP6 2001:db8::1
s=call
c=IN IP6 2001:db8::1
t=0 0
m=audio 4000 RTP/AVP 8 0
""")

SAMPLES = [BARESIP, SIPP, WEBRTC, IPV6]


def offer(media: str, session: str = "") -> SessionDescription:
    """A minimal offer with the given media section(s)."""
    head = "v=0\no=- 1 1 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n"
    return SessionDescription.parse(crlf(head + session + media))


# --- parsing ---------------------------------------------------------------------------------


def test_parse_baresip() -> None:
    sdp = SessionDescription.parse(BARESIP.encode())
    assert sdp.version == 0
    assert sdp.origin == Origin("-", "1745312938", 2185420392, "IN", "IP4", "192.168.1.23")
    assert sdp.name == "-"
    assert sdp.connection == Connection("IN", "IP4", "192.168.1.23")
    assert sdp.timings == (Timing(0, 0),)
    assert sdp.attributes == (("tool", "baresip 1.0.0"),)
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        10180,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ("96", "9", "0", "8", "101")
    assert audio.bandwidths == (Bandwidth("AS", 128),)
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.rtpmap("101") == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp(101) == "0-15"
    assert audio.fmtp(96) == "stereo=1;sprop-stereo=1"
    assert audio.fmtp(0) is None
    assert audio.ptime() == 20
    assert audio.has_attribute("rtcp-mux")
    assert audio.attribute("rtcp-mux") == ""
    assert audio.attribute("label") == "1"
    assert audio.attribute("nope") is None
    assert list(audio.rtpmaps()) == ["96", "9", "0", "8", "101"]
    assert sdp.direction(audio) is Direction.SENDRECV
    assert sdp.connection_for(audio) == sdp.connection


def test_parse_sipp_uses_static_payload_type() -> None:
    sdp = SessionDescription.parse(SIPP)
    (audio,) = sdp.media
    assert sdp.connection is None
    assert sdp.connection_for(audio) == Connection("IN", "IP4", "127.0.0.1")
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert audio.rtpmap(8) == STATIC_PAYLOAD_TYPES[8]  # static even when not listed
    assert audio.rtpmap(96) is None
    assert audio.ptime() is None
    assert audio.rtcp() is None


def test_parse_webrtc_keeps_unknown_lines_and_attributes() -> None:
    sdp = SessionDescription.parse(WEBRTC)
    audio, video = sdp.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert [line.kind for line in audio.other_lines] == ["i", "y"]
    assert audio.other_lines[1].value == "vendor-extension 1 2 3"
    assert len(audio.attribute_values("candidate")) == 2
    assert audio.attribute("msid-semantic") is None
    assert sdp.attribute("msid-semantic") == " WMS stream"  # value kept verbatim
    assert audio.rtcp() == RtcpAttribute(54401, Connection("IN", "IP4", "203.0.113.7"))
    assert audio.rtpmap(111) == RtpMap(111, "opus", 48000, 2)
    assert video.attribute_values("end-of-candidates") == [""]
    assert str(sdp) == WEBRTC


@pytest.mark.parametrize("sample", SAMPLES)
def test_serialization_is_byte_exact(sample: str) -> None:
    sdp = SessionDescription.parse(sample.encode())
    assert bytes(sdp) == sample.encode()
    assert SessionDescription.parse(bytes(sdp)) == sdp


def test_bare_lf_and_blank_lines_accepted_crlf_written() -> None:
    lf = BARESIP.replace("\r\n", "\n") + "\n\n"
    sdp = SessionDescription.parse(lf)
    assert sdp == SessionDescription.parse(BARESIP)
    assert str(sdp) == BARESIP


def test_ipv6() -> None:
    sdp = SessionDescription.parse(IPV6)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("IN", "IP6", "2001:db8::1")
    assert Connection.for_address("2001:db8::5") == Connection("IN", "IP6", "2001:db8::5")
    assert Connection.for_address("pbx.example.com").addrtype == "IP4"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("IN IP4 224.2.1.1/127", Connection("IN", "IP4", "224.2.1.1", ttl=127)),
        ("IN IP4 224.2.1.1/127/3", Connection("IN", "IP4", "224.2.1.1", ttl=127, number=3)),
        ("IN IP6 FF15::101/3", Connection("IN", "IP6", "FF15::101", number=3)),
        ("IN X25 a/b/c", Connection("IN", "X25", "a/b/c")),
    ],
)
def test_multicast_connection(value: str, expected: Connection) -> None:
    assert Connection.parse(value) == expected
    assert str(expected) == value


def test_component_parsers() -> None:
    assert str(Origin.parse("bob 2890844526 2890842807 IN IP4 10.47.16.5")).startswith("bob ")
    assert RtpMap.parse("97 L16/44100/2").channel_count == 2
    assert RtpMap.parse("0 pcmu/8000").same_codec(STATIC_PAYLOAD_TYPES[0])
    assert not RtpMap.parse("97 PCMU/16000").same_codec(STATIC_PAYLOAD_TYPES[0])
    assert str(RtcpAttribute.parse("53020")) == "53020"
    assert str(RtcpAttribute.parse("53020 IN IP6 ::1")) == "53020 IN IP6 ::1"
    assert str(Bandwidth.parse("TIAS:64000")) == "TIAS:64000"


def test_session_level_direction_and_media_override() -> None:
    sdp = offer(
        "m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=recvonly\n", session="a=sendonly\n"
    )
    first, second = sdp.media
    assert sdp.direction(first) is Direction.SENDONLY
    assert sdp.direction(second) is Direction.RECVONLY
    assert first.direction_attribute() is None


def test_media_connection_overrides_session() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\nc=IN IP4 203.0.113.9\n")
    assert sdp.connection_for(sdp.media[0]) == Connection("IN", "IP4", "203.0.113.9")


def test_malformed_interpreted_attributes_are_ignored() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0 96\na=rtpmap:96 nonsense\na=ptime:x\na=rtcp:y\n")
    media = sdp.media[0]
    assert media.rtpmap(96) is None
    assert media.ptime() is None
    assert media.rtcp() is None
    assert media.rtpmap(0) == STATIC_PAYLOAD_TYPES[0]


def test_other_lines_keep_their_place() -> None:
    text = crlf("""
v=0
o=- 1 1 IN IP4 198.51.100.1
s=-
i=session info
u=http://example.com/
e=ops@example.com
c=IN IP4 198.51.100.1
t=0 0
r=7d 1h 0 25h
z=2882844526 -1h
k=prompt
a=recvonly
x=after attributes
m=audio 0 RTP/AVP 0
i=disabled
c=IN IP4 224.2.1.1/127
a=x
w=end
c=IN IP4 224.2.1.2/127
""")
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text
    assert sdp.timings == (Timing(0, 0, ("7d 1h 0 25h",)),)
    assert [line.kind for line in sdp.other_lines] == ["i", "u", "e", "z", "k", "x"]
    assert [line.kind for line in sdp.media[0].other_lines] == ["i", "w", "c"]  # 2nd c= kept


def test_out_of_order_lines_are_written_in_rfc_order() -> None:
    text = "v=0\no=- 1 1 IN IP4 x\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\na=x\nb=AS:1\nc=IN IP4 y\n"
    sdp = SessionDescription.parse(text)
    assert str(sdp.media[0]) == "m=audio 1 RTP/AVP 0\r\nc=IN IP4 y\r\nb=AS:1\r\na=x\r\n"
    assert SessionDescription.parse(bytes(sdp)) == sdp


# --- errors ----------------------------------------------------------------------------------

GOOD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("", 400, "must start with a v= line"),
        (GOOD.replace("v=0\n", ""), 400, "must start with a v= line"),
        (GOOD.replace("v=0", "v=x"), 400, "line 1 'v=x': v= version 'x' is not a decimal"),
        (GOOD.replace("o=- 1 1 IN IP4 192.0.2.1\n", ""), 400, "no o= line"),
        (GOOD.replace("s=-\n", ""), 400, "no s= line"),
        (GOOD.replace("s=-\n", "s=-\ns=again\n"), 400, "line 4 's=again': duplicate s="),
        (GOOD + "v=0\n", 400, "line 7 'v=0'"),
        (GOOD + "o=- 1 1 IN IP4 192.0.2.1\n", 400, "line 7"),
        (GOOD.replace("o=- 1 1", "o=- 1 x"), 400, "sess-version 'x' is not a decimal"),
        (GOOD.replace("o=- 1 1", "o=- 1"), 400, "o= needs 6 fields, got 5"),
        (GOOD.replace("4000", "abc"), 400, "line 6 'm=audio abc RTP/AVP 0': m= port 'abc'"),
        (GOOD.replace("4000", "70000"), 400, "m= port 70000 is out of range"),
        (GOOD.replace("4000", "4000/0"), 400, "number of ports 0 is out of range"),
        (GOOD.replace("4000", "-1"), 400, "m= port '-1'"),
        (GOOD.replace("m=audio 4000 RTP/AVP 0", "m=audio 4000"), 400, "at least 3 fields"),
        (GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4"), 400, "line 4 'c=IN IP4': c= address"),
        (GOOD.replace("c=IN IP4 192.0.2.1\n", ""), 488, "line 5: m=audio with port 4000 has no c="),
        (GOOD + "c=IN IP4 192.0.2.1/x\n", 400, "c= ttl 'x'"),
        (GOOD.replace("t=0 0", "t=0"), 400, "t= needs 2 fields"),
        (GOOD.replace("t=0 0", "r=1d 1h 0"), 400, "r= line before any t="),
        (GOOD + "b=AS\n", 400, "b= needs <bwtype>:<bandwidth>"),
        (GOOD + "b=AS:lots\n", 400, "b= bandwidth 'lots'"),
        (GOOD.replace("t=", "c=IN IP4 192.0.2.2\nt="), 400, "line 5 'c=IN IP4 192.0.2.2': dup"),
        (GOOD + "garbage\n", 400, "line 7 'garbage': not <type>=<value>"),
        (GOOD + "a=x\rb\n", 400, "CR or NUL"),
        (GOOD + "a=\0\n", 400, "CR or NUL"),
        (GOOD + "1=2\n", 400, "not <type>=<value>"),
    ],
)
def test_errors(text: str, status: int, message: str) -> None:
    with pytest.raises(ParseError) as info:
        SessionDescription.parse(text)
    assert info.value.status == status
    assert info.value.answerable
    assert message in info.value.reason


def test_invalid_utf8_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="UTF-8"):
        SessionDescription.parse(GOOD.encode() + b"a=\xff\n")
    with pytest.raises(ParseError, match="UTF-8"):
        SessionDescription.parse(GOOD + "a=\ud800\n")


def test_disabled_stream_needs_no_connection() -> None:
    text = GOOD.replace("c=IN IP4 192.0.2.1\n", "").replace("4000", "0")
    assert SessionDescription.parse(text).media[0].port == 0


def test_built_values_are_validated() -> None:
    with pytest.raises(ValueError, match="token"):
        Origin("a b", "1", 1, "IN", "IP4", "x")
    with pytest.raises(ValueError, match="out of range"):
        MediaDescription(media="audio", port=70000, proto="RTP/AVP", formats=("0",))
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        MediaDescription(
            media="audio", port=1, proto="RTP/AVP", formats=(), attributes=(("x", "a\r\nb"),)
        )
    with pytest.raises(ValueError, match="':'"):
        SessionDescription(origin=Origin.parse("- 1 1 IN IP4 x"), attributes=(("a:b", None),))
    with pytest.raises(ValueError, match="one ASCII letter"):
        OtherLine("xy", "", 1)
    with pytest.raises(ValueError, match="invalid rtpmap"):
        RtpMap(200, "PCMU", 8000)


# --- offer/answer ----------------------------------------------------------------------------


def answer(sdp: SessionDescription, **kwargs: Any) -> SessionDescription:
    """Our answer to ``sdp``, with ports 5000, 5002 ..."""
    ports = [5000 + 2 * i for i in range(len(sdp.media))]
    return build_answer(sdp, address="192.0.2.10", ports=ports, session_id=42, **kwargs)


def test_answer_baresip_offer_picks_offerers_first_supported_codec() -> None:
    sdp = answer(SessionDescription.parse(BARESIP))
    assert str(sdp) == crlf("""
v=0
o=minipbx 42 0 IN IP4 192.0.2.10
s=minipbx
c=IN IP4 192.0.2.10
t=0 0
m=audio 5000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
""")


def test_answer_pcma_only_offer() -> None:
    sdp = answer(SessionDescription.parse(SIPP.replace("RTP/AVP 0", "RTP/AVP 8")))
    media = sdp.media[0]
    assert media.formats == ("8",)
    assert media.rtpmap(8) == RtpMap(8, "PCMA", 8000)
    assert negotiated_codec(SessionDescription.parse(SIPP), sdp) is None  # PCMU offer vs PCMA


def test_answer_no_common_codec_is_488() -> None:
    with pytest.raises(ParseError) as info:
        answer(offer("m=audio 4000 RTP/AVP 18 96\na=rtpmap:96 opus/48000/2\n"))
    assert info.value.status == 488
    assert "no codec in common" in info.value.reason


def test_answer_rejects_video_and_keeps_audio() -> None:
    sdp = offer(
        "m=video 4002 RTP/AVP 31 34\nm=audio 4000 RTP/AVP 8 0 96\n"
        "a=rtpmap:96 telephone-event/8000\na=fmtp:96 0-16\n"
    )
    video, audio = answer(sdp).media
    assert (video.media, video.port, video.formats, video.attributes) == (
        "video",
        0,
        ("31", "34"),
        (),
    )
    assert audio.port == 5002
    assert audio.formats == ("8", "96")  # offerer's preference and DTMF payload type kept
    assert audio.fmtp(96) == "0-16"
    assert negotiated_codec(sdp, answer(sdp)) == NegotiatedCodec(
        1, RtpMap(8, "PCMA", 8000), RtpMap(96, "telephone-event", 8000)
    )


def test_answer_rejects_secure_and_disabled_profiles() -> None:
    sdp = SessionDescription.parse(WEBRTC)
    with pytest.raises(ParseError, match="UDP/TLS/RTP/SAVPF, not RTP/AVP") as info:
        answer(sdp)
    assert info.value.status == 488
    with pytest.raises(ParseError, match="disabled in the offer"):
        answer(offer("m=audio 0 RTP/AVP 0\n"))
    with pytest.raises(ParseError, match="no m= line"):
        answer(offer(""))


def test_answer_caller_can_refuse_a_stream_with_port_zero() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\n")
    result = build_answer(sdp, address="192.0.2.10", ports=[5000, 0], session_id=1)
    assert [m.port for m in result.media] == [5000, 0]
    with pytest.raises(ValueError, match="2 offered m-lines"):
        build_answer(sdp, address="192.0.2.10", ports=[5000], session_id=1)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("a=sendonly\n", Direction.RECVONLY),
        ("a=recvonly\n", Direction.SENDONLY),
        ("a=inactive\n", Direction.INACTIVE),
        ("a=sendrecv\n", Direction.SENDRECV),
        ("", Direction.SENDRECV),
    ],
)
def test_answer_mirrors_direction(offered: str, answered: Direction) -> None:
    sdp = answer(offer("m=audio 4000 RTP/AVP 0\n" + offered))
    assert sdp.direction(sdp.media[0]) is answered
    held = answer(offer("m=audio 4000 RTP/AVP 0\n", session=offered))  # session-level too
    assert held.direction(held.media[0]) is answered


def test_answer_options() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\n")
    result = answer(sdp, supported=("PCMA",), dtmf=False, ptime=None, session_version=7)
    assert result.origin.sess_version == 7
    assert result.media[0].formats == ("8",)
    assert result.media[0].attributes == (("rtpmap", "8 PCMA/8000"), ("sendrecv", None))
    no_fmtp = answer(sdp)
    assert no_fmtp.media[0].formats == ("0", "101")
    assert no_fmtp.media[0].fmtp(101) is None  # the offer had none: none invented
    v6 = build_answer(sdp, address="2001:db8::10", ports=[4000], session_id=1)
    assert (v6.origin.addrtype, str(v6.connection)) == ("IP6", "IN IP6 2001:db8::10")


def test_answer_ignores_wideband_telephone_event_and_stereo() -> None:
    sdp = offer(
        "m=audio 4000 RTP/AVP 97 0 98 99\na=rtpmap:97 PCMU/8000/2\n"
        "a=rtpmap:98 telephone-event/48000\na=rtpmap:99 telephone-event/8000\n"
    )
    assert answer(sdp).media[0].formats == ("0", "99")


def test_answer_copies_offer_timing() -> None:
    sdp = SessionDescription.parse(GOOD.replace("t=0 0", "t=3034423619 3042462419"))
    assert answer(sdp).timings == (Timing(3034423619, 3042462419),)


def test_build_offer() -> None:
    sdp = build_offer(address="192.0.2.10", port=20000, session_id=1234, session_version=5)
    assert str(sdp) == crlf("""
v=0
o=minipbx 1234 5 IN IP4 192.0.2.10
s=minipbx
c=IN IP4 192.0.2.10
t=0 0
m=audio 20000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")
    assert SessionDescription.parse(bytes(sdp)) == sdp
    held = build_offer(address="::1", port=1, session_id=1, direction=Direction.SENDONLY)
    assert is_hold(held)
    with pytest.raises(ValueError, match="opus"):
        build_offer(address="::1", port=1, session_id=1, codecs=("opus",))


def test_offer_answer_between_two_minipbx_legs() -> None:
    our_offer = build_offer(address="192.0.2.1", port=4000, session_id=1, codecs=("PCMA", "PCMU"))
    their_answer = build_answer(our_offer, address="192.0.2.2", ports=[6000], session_id=9)
    assert negotiated_codec(our_offer, their_answer) == NegotiatedCodec(
        0, RtpMap(8, "PCMA", 8000), RtpMap(101, "telephone-event", 8000)
    )


def test_negotiated_codec_errors_and_rejections() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\n")
    with pytest.raises(ParseError) as info:
        negotiated_codec(sdp, offer("m=audio 4000 RTP/AVP 0\n"))
    assert info.value.status == 488
    rejected = offer("m=audio 0 RTP/AVP 0\nm=audio 0 RTP/AVP 0\n")
    assert negotiated_codec(sdp, rejected) is None


def test_bump_version() -> None:
    sdp = SessionDescription.parse(SIPP)
    assert sdp.bump_version().origin.sess_version == 2353687638
    assert sdp.bump_version().media == sdp.media


# --- relay and hold --------------------------------------------------------------------------


def test_rewrite_connection_for_relay() -> None:
    sdp = SessionDescription.parse(WEBRTC)
    relayed = rewrite_connection(sdp, "192.0.2.50", [30000, 30002])
    audio, video = relayed.media
    assert (audio.port, video.port) == (30000, 30002)
    assert relayed.connection_for(audio) == Connection("IN", "IP4", "192.0.2.50")
    assert audio.rtcp() == RtcpAttribute(30001, Connection("IN", "IP4", "192.0.2.50"))
    for section in (relayed, audio, video):
        names = [name for name, _ in section.attributes]
        assert not [n for n in names if n.startswith("ice-") or "candidate" in n]
    assert relayed.attribute("group") == "BUNDLE 0 1"  # everything else kept
    assert audio.attribute("fingerprint") is not None
    assert "203.0.113.7" not in str(relayed)
    # verbatim lines keep their place among the remaining lines
    text = str(relayed)
    assert text.index("i=microphone") < text.index("c=IN IP4 192.0.2.50") < text.index("y=")
    assert text.index("y=") < text.index("a=rtcp:30001")
    assert SessionDescription.parse(text) == relayed
    assert relayed.origin == sdp.origin  # the caller bumps the version


def test_rewrite_connection_session_level_ipv6_and_disabled_streams() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\na=rtcp:4000\nm=video 0 RTP/AVP 31\n")
    relayed = rewrite_connection(sdp, "2001:db8::7", [30000, 30002])
    assert relayed.connection == Connection("IN", "IP6", "2001:db8::7")
    audio, video = relayed.media
    assert audio.connection is None
    assert audio.rtcp() == RtcpAttribute(30000)  # RTCP was on the RTP port: it stays muxed
    assert video.port == 0
    with pytest.raises(ValueError, match="1 ports"):
        rewrite_connection(sdp, "192.0.2.1", [1])


def test_rewrite_connection_keeps_hold_address_and_fills_missing() -> None:
    held = SessionDescription.parse(GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0"))
    relayed = rewrite_connection(held, "192.0.2.50", [30000])
    assert relayed.connection == Connection("IN", "IP4", "0.0.0.0")
    assert is_hold(relayed)
    bare = MediaDescription(
        media="audio",
        port=4000,
        proto="RTP/AVP",
        formats=("0",),
        attributes=(("rtcp", "4001"),),
        other_lines=(OtherLine("i", "title", 1), OtherLine("x", "last", 2)),
    )
    hand_built = SessionDescription(origin=held.origin, media=(bare,))
    fixed = rewrite_connection(hand_built, "192.0.2.50", [30000])
    assert str(fixed.media[0]) == crlf("""
m=audio 30000 RTP/AVP 0
i=title
c=IN IP4 192.0.2.50
a=rtcp:30001
x=last
""")


@pytest.mark.parametrize(
    ("media", "session", "held"),
    [
        ("m=audio 4000 RTP/AVP 0\na=sendonly\n", "", True),
        ("m=audio 4000 RTP/AVP 0\na=inactive\n", "", True),
        ("m=audio 4000 RTP/AVP 0\n", "a=sendonly\n", True),
        ("m=audio 4000 RTP/AVP 0\na=sendrecv\n", "a=sendonly\n", False),
        ("m=audio 4000 RTP/AVP 0\na=recvonly\n", "", False),
        ("m=audio 4000 RTP/AVP 0\n", "", False),
        ("m=audio 4000 RTP/AVP 0\nc=IN IP4 0.0.0.0\n", "", True),
        ("m=audio 4000 RTP/AVP 0\nc=IN IP6 ::\n", "", True),
        ("m=audio 9 RTP/AVP 0\nc=IN IP4 0.0.0.0\na=ice-ufrag:x\n", "", False),
        ("m=audio 4000 RTP/AVP 0\na=sendonly\nm=video 4002 RTP/AVP 31\n", "", False),
        ("m=audio 4000 RTP/AVP 0\na=sendonly\nm=video 0 RTP/AVP 31\n", "", True),
        ("m=audio 0 RTP/AVP 0\n", "", False),
    ],
)
def test_is_hold(media: str, session: str, held: bool) -> None:
    assert is_hold(offer(media, session)) is held


# --- properties ------------------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-./+_", min_size=1)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=20)
NUMBER = st.integers(0, 2**64)
ATTRIBUTES = st.lists(st.tuples(TOKEN, st.none() | TEXT), max_size=5).map(tuple)
BANDWIDTHS = st.lists(st.builds(Bandwidth, TOKEN, NUMBER), max_size=2).map(tuple)
IN = st.just("IN")
IP4 = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", fullmatch=True)
CONNECTIONS = st.one_of(
    st.builds(Connection, IN, st.just("IP4"), IP4),
    st.builds(Connection, IN, st.just("IP4"), IP4, st.integers(0, 255)),
    st.builds(Connection, IN, st.just("IP4"), IP4, st.integers(0, 255), st.integers(1, 2**32)),
    st.builds(Connection, IN, st.just("IP6"), st.just("ff15::1"), st.none(), st.integers(1, 9)),
    st.builds(Connection, IN, TOKEN.filter(lambda t: t[:2] != "IP"), TOKEN),
)


def with_other_lines(
    draw: st.DrawFn, section: SessionDescription | MediaDescription, kinds: str
) -> tuple[OtherLine, ...]:
    """Verbatim lines at valid positions of a section that has no media and no other lines."""
    known = str(section).count("\r\n")
    line = st.builds(OtherLine, st.sampled_from(kinds), TEXT, st.integers(1, known))
    return tuple(sorted(draw(st.lists(line, max_size=3)), key=lambda o: o.position))


@st.composite
def media_descriptions(draw: st.DrawFn, need_connection: bool) -> MediaDescription:
    port = draw(st.integers(0, 65535))
    media = MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application"]) | TOKEN),
        port=port,
        port_count=draw(st.none() | st.integers(1, 65535)),
        proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVPF", "udp"]) | TOKEN),
        formats=tuple(draw(st.lists(st.sampled_from(["0", "8", "101"]) | TOKEN, max_size=5))),
        connection=draw(CONNECTIONS if need_connection and port else st.none() | CONNECTIONS),
        bandwidths=draw(BANDWIDTHS),
        attributes=draw(ATTRIBUTES),
    )
    return dataclasses.replace(media, other_lines=with_other_lines(draw, media, "iktxyz"))


@st.composite
def sessions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | CONNECTIONS)
    addrtype = draw(st.sampled_from(["IP4", "IP6"]))
    origin = Origin(draw(TOKEN), draw(TOKEN), draw(NUMBER), "IN", addrtype, draw(TOKEN))
    timing = st.builds(Timing, NUMBER, NUMBER, st.lists(TEXT, max_size=2).map(tuple))
    sdp = SessionDescription(
        version=draw(st.integers(0, 3)),
        origin=origin,
        name=draw(TEXT),
        connection=connection,
        bandwidths=draw(BANDWIDTHS),
        timings=tuple(draw(st.lists(timing, max_size=2))),
        attributes=draw(ATTRIBUTES),
    )
    sdp = dataclasses.replace(sdp, other_lines=with_other_lines(draw, sdp, "iuepzkxy"))
    media = draw(st.lists(media_descriptions(need_connection=connection is None), max_size=3))
    return dataclasses.replace(sdp, media=tuple(media))


@GENERATED
@given(sessions())
def test_round_trip_generated_sessions(sdp: SessionDescription) -> None:
    assert SessionDescription.parse(bytes(sdp)) == sdp
    assert SessionDescription.parse(str(sdp).replace("\r\n", "\n")) == sdp


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, delete, insert in edits:
        position %= len(data) + 1
        data = data[:position] + insert + data[position + delete :]
    return data


INTERESTING = st.sampled_from(
    [b"\r\n", b"\n", b"=", b":", b"/", b" ", b"0", b"65536", b"\x00", b"\xff", b"m=", b"c=", b"a="]
)


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 8), INTERESTING | st.binary(max_size=6)),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_sdp_raises_only_parse_error(
    sample: str, edits: list[tuple[int, int, bytes]]
) -> None:
    data = mutate(sample.encode(), edits)
    try:
        sdp = SessionDescription.parse(data)
    except ParseError as exc:
        assert exc.status in (400, 488)
        return
    assert SessionDescription.parse(bytes(sdp)) == sdp
    is_hold(sdp)
    for media in sdp.media:  # accessors never raise on what the parser accepted
        assert isinstance(sdp.direction(media), Direction)
        media.rtpmaps(), media.ptime(), media.rtcp(), media.fmtp(101)


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.integers(0, 40), min_size=1, max_size=12),
)
def test_shuffled_lines_raise_only_parse_error(sample: str, order: list[int]) -> None:
    lines = sample.splitlines()
    data = "\n".join(lines[i % len(lines)] for i in order)
    try:
        sdp = SessionDescription.parse(data)
    except ParseError:
        return
    assert SessionDescription.parse(bytes(sdp)) == sdp


@settings(
    derandomize=True, database=None, max_examples=200, suppress_health_check=list(HealthCheck)
)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_input_raises_only_parse_error(data: bytes | str) -> None:
    with contextlib.suppress(ParseError):
        SessionDescription.parse(data)


@GENERATED
@given(sessions(), st.ip_addresses().map(str))
def test_rewrite_and_answer_never_crash_on_valid_sessions(
    sdp: SessionDescription, address: str
) -> None:
    ports = [2000 + 2 * i for i in range(len(sdp.media))]
    relayed = rewrite_connection(sdp, address, ports)
    assert SessionDescription.parse(bytes(relayed)) == relayed
    try:
        answered = build_answer(sdp, address=address, ports=ports, session_id=1)
    except ParseError as exc:
        assert exc.status == 488
        return
    assert len(answered.media) == len(sdp.media)
    assert SessionDescription.parse(bytes(answered)) == answered


OFFER_MANY = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 18 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\nx=verbatim line kept\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)


def test_restrict_codecs_keeps_allowed_and_dtmf() -> None:
    offer = SessionDescription.parse(OFFER_MANY)
    cut = restrict_codecs(offer, ["pcma"])
    assert cut is not None
    audio, video = cut.media
    assert audio.formats == ("8", "101")
    text = bytes(cut).decode()
    assert "G729" not in text and "annexb" not in text and "PCMU" not in text
    assert "a=fmtp:101 0-16" in text and "x=verbatim line kept" in text
    assert video == offer.media[1]  # other media untouched
    assert SessionDescription.parse(text) == cut  # still a valid SDP
    assert restrict_codecs(offer, ["G722"]) is None  # only DTMF would be left
    assert restrict_codecs(offer, ["PCMU", "PCMA", "G729"]) == offer
