"""One ``o=`` line towards a party, whoever's SDP we pass it (RFC 3264 8).

RFC 3264 section 8: every SDP a party receives in one session carries the same origin
(username, sess-id, address), and its sess-version goes up by one exactly when the content
changed. When the PBX first answers a caller itself (a service) and later passes on the SDP
of another phone (the hand-back to end-to-end media), the other phone's ``o=`` would look
to the caller like a new session; :class:`SdpOrigin` rewrites it to the one the caller knows.
"""

from __future__ import annotations

from dataclasses import replace

from minipbx.sip.errors import ParseError
from minipbx.sip.sdp import Origin, SessionDescription


class SdpOrigin:
    """The origin one party knows from us, and the last body it saw."""

    __slots__ = ("_last", "origin")

    def __init__(self, sent: bytes) -> None:
        """``sent``: the first SDP the party got from us (raises ParseError if unreadable)."""
        sdp = SessionDescription.parse(sent)
        self.origin: Origin = sdp.origin
        self._last = bytes(sdp)

    def rewrite(self, body: bytes) -> bytes:
        """``body`` under our origin; sess-version bumped when its content is new. A body
        that does not parse is passed unchanged (the party answers it as it sees fit)."""
        try:
            sdp = SessionDescription.parse(body)
        except ParseError:
            return body
        out = bytes(replace(sdp, origin=self.origin))
        if out != self._last:
            self.origin = replace(self.origin, sess_version=self.origin.sess_version + 1)
            out = bytes(replace(sdp, origin=self.origin))
        self._last = out
        return out


__all__ = ["SdpOrigin"]
