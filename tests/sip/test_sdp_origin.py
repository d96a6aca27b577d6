"""RFC 3264 8: one origin towards a party, version bumped only when the content changes."""

from __future__ import annotations

import pytest

from minipbx.sip.errors import ParseError
from minipbx.sip.sdp import SessionDescription
from minipbx.sip.sdp_origin import SdpOrigin

OURS = b"v=0\r\no=minipbx 9 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
THEIRS = b"v=0\r\no=bob 555 17 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"


def _origin(body: bytes) -> tuple[str, str, int]:
    o = SessionDescription.parse(body).origin
    return o.username, o.sess_id, o.sess_version


def test_other_sdp_goes_out_under_our_origin_bumped_once() -> None:
    keeper = SdpOrigin(OURS)
    first = keeper.rewrite(THEIRS)
    assert _origin(first) == ("minipbx", "9", 4)
    assert b"c=IN IP4 127.0.0.2" in first
    assert _origin(keeper.rewrite(THEIRS)) == ("minipbx", "9", 4)  # same content: same version
    changed = THEIRS.replace(b"127.0.0.2\r\nt", b"127.0.0.3\r\nt")
    assert _origin(keeper.rewrite(changed)) == ("minipbx", "9", 5)


def test_unchanged_own_sdp_keeps_its_version() -> None:
    assert _origin(SdpOrigin(OURS).rewrite(OURS)) == ("minipbx", "9", 3)


def test_unreadable_bodies() -> None:
    with pytest.raises(ParseError):
        SdpOrigin(b"nonsense")
    assert SdpOrigin(OURS).rewrite(b"nonsense") == b"nonsense"
