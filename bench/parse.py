"""Parse and serialize speed of the SIP core, run by hand: ``python bench/parse.py``.

Reports messages per second on one core for a REGISTER with Authorization and an
INVITE with SDP, and the ratio against a floor measured in the same run: splitting
the same datagram into lines and a dict of headers, the least any parser must do.
Each figure is the best of several repeats, so other load on the machine shows less.
"""

from __future__ import annotations

import argparse
import timeit

from minipbx.sip import parse

REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-524287-1---5a9d9a7a1c2f;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:1000@127.0.0.1:5070;rinstance=8e1d7a0f3b2c;transport=UDP>\r\n"
    b"To: <sip:1000@127.0.0.1>\r\n"
    b"From: <sip:1000@127.0.0.1>;tag=3f1e2a7b\r\n"
    b"Call-ID: ZjQ4NWM0YTg3NjE5ZjA2NjA0NmE5YWM0NzRhMTc1ZmU\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Expires: 3600\r\n"
    b'Authorization: Digest username="1000",realm="127.0.0.1",'
    b'nonce="MTcwMDAwMDAwMC4xMjM0NTY3OA",uri="sip:127.0.0.1",'
    b'response="6629fae49393a05397450978507c4ef1",cnonce="0a4f113b",nc=00000001,'
    b"qop=auth,algorithm=MD5\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"User-Agent: Z 5.4.12 v2.10.13.2\r\n"
    b"Allow-Events: presence, kpml, talk\r\n"
    b"Content-Length: 0\r\n\r\n"
)

SDP = (
    b"v=0\r\no=- 3917236542 3917236542 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:101@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKPj3c1a7b4e\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:100@127.0.0.1>;tag=8d2f6e1a\r\n'
    b"To: <sip:101@127.0.0.1>\r\n"
    b"Contact: <sip:100@127.0.0.1:5070;ob>\r\n"
    b"Call-ID: 5f0f8c1e-2b7d-4c33-9a0e-1c9d2e3f4a5b\r\n"
    b"CSeq: 4711 INVITE\r\n"
    b"Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE\r\n"
    b"Supported: replaces, 100rel, timer, norefersub\r\n"
    b"Session-Expires: 1800\r\n"
    b"Min-SE: 90\r\n"
    b"User-Agent: baresip v1.0.0 (x86_64/linux)\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def floor_parse(data: bytes) -> dict[str, str]:
    """The least a parser does: split lines and build a header dict."""
    head, _, _ = data.partition(b"\r\n\r\n")
    out = {}
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def rate(stmt: object, number: int, repeat: int) -> float:
    """Best calls per second over ``repeat`` runs of ``number`` calls."""
    best = min(timeit.repeat(stmt, number=number, repeat=repeat))  # type: ignore[arg-type]
    return number / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    reg, inv = parse(REGISTER), parse(INVITE)
    assert parse(bytes(reg)) == reg and parse(bytes(inv)) == inv
    rows = [
        ("parse REGISTER", lambda: parse(REGISTER), lambda: floor_parse(REGISTER)),
        ("parse INVITE+SDP", lambda: parse(INVITE), lambda: floor_parse(INVITE)),
        ("serialize REGISTER", lambda: bytes(reg), None),
        ("serialize INVITE+SDP", lambda: bytes(inv), None),
        ("parse+serialize INVITE", lambda: bytes(parse(INVITE)), lambda: floor_parse(INVITE)),
    ]
    print(f"{'case':24s} {'msgs/s':>10s} {'floor/s':>10s} {'ratio':>6s}")
    for name, fn, floor in rows:
        ours = rate(fn, args.number, args.repeat)
        if floor is None:
            print(f"{name:24s} {ours:10,.0f}")
            continue
        base = rate(floor, args.number, args.repeat)
        print(f"{name:24s} {ours:10,.0f} {base:10,.0f} {ours / base:6.2f}")


if __name__ == "__main__":
    main()
