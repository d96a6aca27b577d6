"""SDP offer/answer for the legs the PBX terminates (RFC 3264), relay rewriting and hold.

Split from :mod:`minipbx.sip.sdp`, which holds the data model and parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from minipbx.sip.sdp import (
    DTMF_PAYLOAD_TYPE,
    ICE_CANDIDATE_ATTRIBUTES,
    NON_CODECS,
    STATIC_AUDIO,
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    OtherLine,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    Timing,
    is_unspecified,
    sdp_error,
)

# --- offer/answer (RFC 3264) -----------------------------------------------------------------


def _audio_media(
    port: int, maps: Sequence[RtpMap], fmtps: Mapping[int, str], tail: list[Attribute]
) -> MediaDescription:
    """``m=audio`` with an rtpmap for each payload type, their fmtp, then ``tail``."""
    attributes: list[Attribute] = [("rtpmap", str(rtpmap)) for rtpmap in maps]
    attributes += [("fmtp", f"{pt} {params}") for pt, params in fmtps.items()]
    formats = tuple(str(rtpmap.payload_type) for rtpmap in maps)
    return MediaDescription(
        media="audio", port=port, proto="RTP/AVP", formats=formats, attributes=(*attributes, *tail)
    )


def _tail(ptime: int | None, direction: Direction) -> list[Attribute]:
    """``a=ptime`` (RFC 4566 6) if wanted, then an explicit direction (RFC 3264 5.1)."""
    return ([("ptime", str(ptime))] if ptime is not None else []) + [(direction.value, None)]


def _local(
    address: str, session_id: int | str, version: int, user: str
) -> tuple[Origin, Connection]:
    """Our ``o=`` and ``c=`` lines for a media address (RFC 4566 5.2, 5.7)."""
    connection = Connection.for_address(address)
    return Origin(user, str(session_id), version, "IN", connection.addrtype, address), connection


def build_offer(
    *,
    address: str,
    port: int,
    session_id: int | str,
    session_version: int = 0,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    dtmf: bool = True,
    ptime: int | None = 20,
    direction: Direction = Direction.SENDRECV,
    username: str = "minipbx",
    session_name: str = "minipbx",
) -> SessionDescription:
    """An audio offer for a PBX-originated leg (RFC 3264 5).

    ``codecs`` name RFC 3551 static audio payload types in preference order; with ``dtmf``,
    telephone-event/8000 is offered as payload type 101 with events 0-16 (RFC 4733 7.1.1).
    ``session_id`` should be unique (RFC 4566 5.2 suggests an NTP timestamp); the caller picks
    it since this module reads no clock.
    """
    unknown = [name for name in codecs if name.upper() not in STATIC_AUDIO]
    if unknown:
        raise ValueError(f"no static audio payload type for {unknown}")
    maps = [STATIC_AUDIO[name.upper()] for name in codecs]
    maps += [RtpMap(DTMF_PAYLOAD_TYPE, "telephone-event", 8000)] if dtmf else []
    fmtps = {DTMF_PAYLOAD_TYPE: "0-16"} if dtmf else {}
    media = _audio_media(port, maps, fmtps, _tail(ptime, direction))
    origin, connection = _local(address, session_id, session_version, username)
    return SessionDescription(
        origin=origin, name=session_name, connection=connection, media=(media,)
    )


def _pick(offered: MediaDescription, port: int, wanted: set[str], dtmf: bool) -> list[RtpMap] | str:
    """What to answer a stream with (codec, then telephone-event), or why to reject it."""
    if offered.port == 0:
        return "is disabled in the offer"
    if offered.media != "audio":
        return "is not audio"
    if offered.proto.upper() != "RTP/AVP":
        return f"uses {offered.proto}, not RTP/AVP"
    if port == 0:
        return "was refused by the caller"
    offered_maps = offered.rtpmaps().values()
    for codec in offered_maps:  # RFC 3264 6.1: the offerer's preference order
        name = codec.encoding.upper()
        usual = STATIC_AUDIO.get(name, codec)  # a static codec name must have its usual rate
        if name in wanted and codec.channel_count == 1 and usual.clock_rate == codec.clock_rate:
            break
    else:
        return f"has no codec in common with {sorted(wanted)}"
    # RFC 4733 7.1.1: telephone-event runs at the clock rate of the codec it goes with.
    event = RtpMap(0, "telephone-event", codec.clock_rate)
    return [codec, *[m for m in offered_maps if dtmf and m.same_codec(event)][:1]]


def build_answer(
    offer: SessionDescription,
    *,
    address: str,
    ports: Sequence[int],
    session_id: int | str,
    session_version: int = 0,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    dtmf: bool = True,
    ptime: int | None = 20,
    username: str = "minipbx",
    session_name: str = "minipbx",
) -> SessionDescription:
    """Answer an offer with the same number and order of m-lines (RFC 3264 6).

    ``ports`` has one entry per offered m-line; 0 refuses that stream. An audio ``RTP/AVP``
    stream is accepted with the offerer's most preferred codec among ``supported`` and its
    payload type, plus (with ``dtmf``) the offered telephone-event payload type and fmtp. The
    direction mirrors the offer's and ``t=`` copies it. Other streams get port 0. Raises
    ParseError(488) when no stream can be accepted.
    """
    if len(ports) != len(offer.media):
        raise ValueError(f"{len(ports)} ports given for {len(offer.media)} offered m-lines")
    wanted = {name.upper() for name in supported}
    media: list[MediaDescription] = []
    reasons: list[str] = []
    for offered, port in zip(offer.media, ports, strict=True):
        picked = _pick(offered, port, wanted, dtmf)
        if isinstance(picked, str):  # RFC 3264 6: rejected with port zero, same formats
            reasons.append(f"m={offered.media} {picked}")
            formats = offered.formats
            media.append(
                MediaDescription(media=offered.media, port=0, proto=offered.proto, formats=formats)
            )
            continue
        events = {m.payload_type: offered.fmtp(m.payload_type) for m in picked[1:]}
        fmtps = {pt: params for pt, params in events.items() if params is not None}
        # RFC 3264 6.1: sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive.
        tail = _tail(ptime, offer.direction(offered).reverse())
        media.append(_audio_media(port, picked, fmtps, tail))
    if not any(m.port for m in media):
        why = "; ".join(reasons) or "it has no m= line"
        raise sdp_error(f"SDP offer has no acceptable audio stream (RFC 3264 6): {why}", 488)
    origin, connection = _local(address, session_id, session_version, username)
    timings = offer.timings or (Timing(),)  # RFC 3264 6: the answer's t= equals the offer's
    return SessionDescription(
        origin=origin, name=session_name, connection=connection, timings=timings, media=tuple(media)
    )


@dataclass(frozen=True)
class NegotiatedCodec:
    """The audio outcome of an offer/answer: m-line index, codec and DTMF payload."""

    index: int
    codec: RtpMap
    telephone_event: RtpMap | None = None


def negotiated_codec(
    offer: SessionDescription, answer: SessionDescription
) -> NegotiatedCodec | None:
    """The audio codec an answer chose: its first format that was also offered (RFC 3264 6.1).

    Payload types are the answer's. None when no audio stream was accepted; ParseError(488)
    when the answer's m-lines do not match the offer's (RFC 3264 6).
    """
    if len(answer.media) != len(offer.media):
        raise sdp_error(
            f"SDP answer has {len(answer.media)} m-lines, offer {len(offer.media)}", 488
        )
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True)):
        if 0 in (offered.port, answered.port) or answered.media != "audio":
            continue
        offered_maps = offered.rtpmaps().values()
        accepted = [
            r for r in answered.rtpmaps().values() if any(r.same_codec(o) for o in offered_maps)
        ]
        codecs = [r for r in accepted if r.encoding.upper() not in NON_CODECS]
        if codecs:
            events = (r for r in accepted if r.encoding.upper() == "TELEPHONE-EVENT")
            event = next((e for e in events if e.clock_rate == codecs[0].clock_rate), None)
            return NegotiatedCodec(index, codecs[0], event)
    return None


# --- media relay and hold --------------------------------------------------------------------


def _drop_attributes(
    section: MediaDescription | SessionDescription, drop: Callable[[Attribute], bool]
) -> tuple[tuple[Attribute, ...], tuple[OtherLine, ...]]:
    """Attributes without those ``drop`` picks; verbatim lines moved to keep their place."""
    header = len(section._known_lines()) - len(section.attributes)
    marks = [drop(a) for a in section.attributes]
    dropped = [header + i for i, gone in enumerate(marks) if gone]
    kept = tuple(a for a, gone in zip(section.attributes, marks, strict=True) if not gone)
    others = tuple(
        replace(line, position=line.position - sum(k < line.position for k in dropped))
        for line in section.other_lines
    )
    return kept, others


def _drop_ice(
    section: MediaDescription | SessionDescription,
) -> tuple[tuple[Attribute, ...], tuple[OtherLine, ...]]:
    """Attributes without ICE ones (RFC 8839 5: they describe the party's own ICE agent)."""
    return _drop_attributes(
        section, lambda a: a[0] in ICE_CANDIDATE_ATTRIBUTES or a[0].startswith("ice-")
    )


def restrict_codecs(sdp: SessionDescription, allowed: Iterable[str]) -> SessionDescription | None:
    """The offer with only ``allowed`` codecs (encoding names, any case) in its audio
    streams, telephone-event kept; None when an active audio stream would be left with no
    codec (the caller then gets 488, RFC 3261 21.4.26). Other media are left alone."""
    wanted = {name.upper() for name in allowed} | {"TELEPHONE-EVENT"}
    media = []
    for m in sdp.media:
        if m.media != "audio" or m.port == 0:
            media.append(m)
            continue
        maps = m.rtpmaps()
        keep = tuple(f for f in m.formats if f in maps and maps[f].encoding.upper() in wanted)
        if not any(maps[f].encoding.upper() != "TELEPHONE-EVENT" for f in keep):
            return None
        gone = set(m.formats) - set(keep)

        def payload_gone(attr: Attribute, gone: set[str] = gone) -> bool:
            name, value = attr
            fields = (value or "").split(None, 1)
            return name in ("rtpmap", "fmtp") and bool(fields) and fields[0] in gone

        attributes, others = _drop_attributes(m, payload_gone)
        media.append(replace(m, formats=keep, attributes=attributes, other_lines=others))
    return replace(sdp, media=tuple(media))


def _relay_media(
    sdp: SessionDescription, media: MediaDescription, connection: Connection, port: int
) -> MediaDescription:
    attributes, others = _drop_ice(media)
    if media.port == 0:  # a disabled stream stays disabled
        return replace(media, attributes=attributes, other_lines=others)
    own = media.connection
    if own is not None and not is_unspecified(own.address):
        own = connection
    elif own is None and sdp.connection is None:  # hand-built, no c= at all: add one
        own = connection
        others = tuple(replace(o, position=o.position + (o.position > 1)) for o in others)
    old = media.rtcp()
    # RFC 3605: RTCP on the RTP port (rtcp-mux) stays there, otherwise it takes the next port.
    rtcp_port = port if old is not None and old.port == media.port else port + 1
    rtcp = RtcpAttribute(rtcp_port, connection if old and old.connection else None)
    attributes = tuple((k, str(rtcp) if k == "rtcp" else v) for k, v in attributes)
    return replace(media, port=port, connection=own, attributes=attributes, other_lines=others)


def rewrite_connection(
    sdp: SessionDescription, address: str, ports: Sequence[int]
) -> SessionDescription:
    """A copy of ``sdp`` whose media go to a relay at ``address``, one port per m-line.

    Session and media ``c=`` take ``address`` (an unspecified 0.0.0.0 or :: is kept: it means
    hold, RFC 3264 8.4); ``m=`` ports take ``ports`` except disabled streams (port 0), which stay
    disabled; ``a=rtcp`` (RFC 3605) moves to the relay, on port+1 or, if it was on the RTP port,
    on the RTP port. ICE attributes (RFC 8839) are removed at both levels: their candidates and
    credentials belong to the original party, so a peer would check and send around the relay;
    without them it falls back to ``c=``/``m=``. ``o=`` is untouched: the caller decides when to
    :meth:`~SessionDescription.bump_version` (RFC 3264 8).
    """
    if len(ports) != len(sdp.media):
        raise ValueError(f"{len(ports)} ports given for {len(sdp.media)} m-lines")
    connection = Connection.for_address(address)
    media = tuple(
        _relay_media(sdp, m, connection, port) for m, port in zip(sdp.media, ports, strict=True)
    )
    session = sdp.connection
    if session is not None and not is_unspecified(session.address):
        session = connection
    attributes, others = _drop_ice(sdp)
    return replace(sdp, connection=session, attributes=attributes, other_lines=others, media=media)


def _is_held(sdp: SessionDescription, media: MediaDescription) -> bool:
    if sdp.direction(media) in (Direction.SENDONLY, Direction.INACTIVE):
        return True
    connection = sdp.connection_for(media)
    # RFC 3264 8.4: the legacy hold is c=0.0.0.0. Trickle ICE (RFC 8840) uses 0.0.0.0 as a
    # placeholder before candidates are known, so with ICE it does not mean hold.
    uses_ice = media.has_attribute("ice-ufrag") or sdp.has_attribute("ice-ufrag")
    return connection is not None and is_unspecified(connection.address) and not uses_ice


def is_hold(sdp: SessionDescription) -> bool:
    """Whether every active stream of ``sdp`` is put on hold (RFC 3264 8.4).

    A stream is held when its effective direction is sendonly or inactive, or (without ICE) its
    address is 0.0.0.0 or ::. An SDP with no active stream is not a hold.
    """
    active = [media for media in sdp.media if media.port != 0]
    return bool(active) and all(_is_held(sdp, media) for media in active)
