"""When and how the PBX puts its media relay into a call (the :class:`MediaAnchor` seam).

Media goes end to end unless a party cannot be reached directly (DESIGN: media). A call is
relayed when, as it starts ringing:

- the relay mode is ``always`` (the server's ``[media] relay``, or a user's own setting as
  caller or callee), or
- in ``auto``: the caller's SDP names an address other than the one its INVITE came from
  (a private address behind NAT, or a public one on another box), or a phone rung is
  registered from behind NAT (``Target.nat``, the registrar's RFC 3581 detection).

``never`` (server or user) keeps SDP untouched. Once a call is relayed, every SDP in either
direction is rewritten to the relay's ports for the receiving side
(:func:`~minipbx.sip.offer_answer.rewrite_connection`) and the relay is told where the
sending party said it receives media; the relay then latches to where its packets really
come from (symmetric RTP, RFC 4961), which is what makes NATed phones work.

Only the first active audio stream is relayed; other streams of a relayed call are
disabled (port 0) rather than sent around the relay.

A call that must hear a warning before it is cut (``Call.warn_at``: prepaid money running
out) is relayed too, whatever the ``auto`` decision, since the PBX can only speak into
media it relays; ``never`` still wins. :meth:`RelayAnchor.warn` then has the relay replace
the audio sent to the caller with :data:`WARNING_TONE` (the packets keep their headers and
sizes, RFC 3550). That works for PCMU/PCMA streams only, and not for SRTP (``RTP/SAVP``):
the phone would drop the altered packets, so no warning is played there.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import numpy as np

from minipbx.media.g711 import Pcm
from minipbx.media.player import tone
from minipbx.pbx.call import Call, Target
from minipbx.sip.errors import ParseError
from minipbx.sip.offer_answer import rewrite_connection
from minipbx.sip.sdp import MediaDescription, SessionDescription, is_unspecified

log = logging.getLogger("minipbx.media")

RELAY_MODES = ("auto", "always", "never")

Side = Literal["a", "b"]


def warning_tone(
    beeps: int = 3,
    frequency: float = 440.0,
    beep: float = 0.15,
    gap: float = 0.175,
    level: float = -15.0,
) -> Pcm:
    """``beeps`` beeps of ``frequency`` Hz, ``beep`` seconds each, ``gap`` seconds apart, at
    ``level`` dBFS: by default three 440 Hz beeps of 150 ms in 0.8 s (40 frames of 20 ms)."""
    sound = tone(frequency, beep, level)
    silence = np.zeros(round(gap * 8000), dtype=np.int16)
    parts = [part for _ in range(beeps) for part in (sound, silence)][:-1]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


WARNING_TONE = warning_tone()
"""What the caller of a prepaid call hears before the call is cut."""
WARNING_TONE.flags.writeable = False


class RelaySession(Protocol):
    """One call's relay (``minipbx.transport.rtp.RelaySession``)."""

    def port(self, side: Side) -> int: ...

    def expect(self, side: Side, ip: str, port: int, rtcp_port: int | None = None) -> None: ...

    def inject(self, side: Side, pcm: Pcm) -> None: ...


class Relays(Protocol):
    """Opens and closes relays synchronously (``minipbx.transport.rtp.RelayManager``)."""

    def open(self, key: str) -> RelaySession: ...

    def close(self, key: str) -> None: ...


def needs_relay(sdp_address: str | None, signalling_ip: str) -> bool:
    """True when a party's SDP address is not where its signalling comes from: it sits
    behind a NAT (or names some other box) and may not be reachable at that address."""
    if sdp_address is None or is_unspecified(sdp_address):
        return False
    try:
        return ipaddress.ip_address(sdp_address) != ipaddress.ip_address(signalling_ip)
    except ValueError:  # a host name in c=: not comparable, relay to be safe
        return True


def _audio(sdp: SessionDescription) -> MediaDescription | None:
    """The first active audio stream."""
    return next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)


def media_address(body: bytes) -> str | None:
    """The connection address of the first active audio stream of an SDP body."""
    try:
        sdp = SessionDescription.parse(body)
    except ParseError:
        return None
    audio = _audio(sdp)
    connection = sdp.connection_for(audio) if audio is not None else None
    return connection.address if connection is not None else None


class RelayAnchor:
    """Relays the calls that need it (see the module docstring)."""

    def __init__(
        self,
        relays: Relays,
        address_for: Callable[[str], str],
        mode: str = "auto",
        user_mode: Callable[[int, str], str] | None = None,
    ) -> None:
        """``address_for(remote_ip)``: our IP as that remote sees it (goes in the SDP);
        ``user_mode(tenant_id, extension)``: a user's own relay setting ("auto" default)."""
        if mode not in RELAY_MODES:
            raise ValueError(f"media relay must be one of {', '.join(RELAY_MODES)}, not {mode!r}")
        self.relays = relays
        self.address_for = address_for
        self.mode = mode
        self.user_mode = user_mode
        self._sessions: dict[str, RelaySession] = {}
        self._encrypted: set[str] = set()  # calls whose caller's audio is SRTP
        self.warning = WARNING_TONE

    def _decide(self, call: Call, targets: Sequence[Target]) -> str | None:
        """Why the call is relayed, None when it is not."""
        modes = [self.mode]
        if self.user_mode is not None:
            if call.inbound_trunk is None:
                modes.append(self.user_mode(call.tenant_id, call.caller))
            if call.callee:
                modes.append(self.user_mode(call.tenant_id, call.callee))
        if "never" in modes:
            return None
        if "always" in modes:
            return "always"
        if call.warn_at is not None:
            return "warning"
        if any(target.nat for target in targets):
            return "callee_nat"
        body = call.invite.body
        if body and needs_relay(media_address(body), call.source.host):
            return "caller_nat"
        return None

    def prepare(self, call: Call, targets: Sequence[Target]) -> None:
        """Open a relay for the call when it needs one (once per call)."""
        if call.id in self._sessions or self.mode == "never":
            return
        why = self._decide(call, targets)
        if why is None:
            return
        try:
            self._sessions[call.id] = self.relays.open(call.id)
        except Exception as exc:  # ports exhausted, socket errors: media end to end then
            log.error("event=relay_unavailable call=%s error=%s", call.id, exc)
            return
        log.info("event=relay_open call=%s why=%s", call.id, why)

    def sdp(self, call: Call, body: bytes, *, from_a: bool) -> bytes:
        """``body`` rewritten to the relay's ports for the side receiving it."""
        session = self._sessions.get(call.id)
        if session is None:
            return body
        try:
            sdp = SessionDescription.parse(body)
        except ParseError:
            return body  # the receiving party answers a broken SDP as it sees fit
        audio = _audio(sdp)
        if audio is None:
            return body
        sender: Side = "a" if from_a else "b"
        receiver: Side = "b" if from_a else "a"
        if "SAVP" in audio.proto.upper():  # SRTP (RFC 3711): payloads cannot be replaced
            self._encrypted.add(call.id)
        connection = sdp.connection_for(audio)
        if connection is not None and not is_unspecified(connection.address):
            rtcp = audio.rtcp()
            rtcp_port = rtcp.port if rtcp is not None else None
            session.expect(sender, connection.address, audio.port, rtcp_port)
        ports = [session.port(receiver) if m is audio else 0 for m in sdp.media]
        address = self.address_for(self._remote(call, receiver))
        return bytes(rewrite_connection(sdp, address, ports))

    @staticmethod
    def _remote(call: Call, side: Side) -> str:
        """The IP of the party on ``side``, to pick our own address facing it."""
        if side == "b":
            leg = call.winner or next((leg for leg in call.legs if not leg.superseded), None)
            if leg is not None:
                return leg.target.destination.host
        return call.source.host

    def warn(self, call: Call) -> bool:
        """Play :attr:`warning` to the caller (side ``a``) in the relayed media; False when
        the call is not relayed or its media is encrypted."""
        session = self._sessions.get(call.id)
        if session is None or call.id in self._encrypted:
            return False
        session.inject("a", self.warning)
        return True

    def release(self, call: Call) -> None:
        """Close the call's relay, if it had one."""
        self._encrypted.discard(call.id)
        if self._sessions.pop(call.id, None) is not None:
            self.relays.close(call.id)

    @property
    def count(self) -> int:
        """Calls relayed now."""
        return len(self._sessions)


__all__ = [
    "RELAY_MODES",
    "WARNING_TONE",
    "RelayAnchor",
    "Relays",
    "media_address",
    "needs_relay",
    "warning_tone",
]
