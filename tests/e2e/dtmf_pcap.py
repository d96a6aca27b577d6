"""Write pcap files of RFC 4733 telephone-events, for SIPp's ``play_pcap_audio``.

SIPp ships one pcap per digit 0-9; calling cards and voicemail need ``*``, ``#`` and whole
sequences. SIPp replays the UDP payloads of the capture with the capture's timing, to the
media address of the SDP it received, so only the RTP inside matters here; the Ethernet,
IPv4 and UDP headers around it are well-formed placeholders on 127.0.0.1.
"""

from __future__ import annotations

import struct
from pathlib import Path

EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
PAYLOAD_TYPE = 101
FRAME = 0.02  # seconds between packets of one event
TONE_FRAMES = 5  # 100 ms of tone per key
GAP = 0.1  # seconds of nothing between keys


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(rtp: bytes) -> bytes:
    udp = struct.pack("!HHHH", 20000, 20000, 8 + len(rtp), 0) + rtp
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    ethernet = b"\x00" * 12 + b"\x08\x00"
    return ethernet + ip + udp


def dtmf_packets(keys: str, start: float = 0.0) -> list[tuple[float, bytes]]:
    """(time, RTP packet) for each key: RFC 4733 2.5, a marker on the first packet of an
    event, the duration growing, three end packets (2.5.1.4 redundancy)."""
    packets: list[tuple[float, bytes]] = []
    seq, timestamp, at = 1000, 8000, start
    for key in keys:
        event = EVENTS[key.upper()]
        for n in range(TONE_FRAMES + 3):
            end = n >= TONE_FRAMES
            duration = 160 * min(n + 1, TONE_FRAMES)
            header = struct.pack(
                "!BBHII", 0x80, (0x80 if n == 0 else 0) | PAYLOAD_TYPE, seq, timestamp, 0x1234
            )
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            packets.append((at + FRAME * min(n, TONE_FRAMES), header + body))
            seq += 1
        timestamp += 160 * (TONE_FRAMES + 5)
        at += FRAME * TONE_FRAMES + GAP
    return packets


def write_dtmf_pcap(path: Path, keys: str) -> Path:
    """A pcap (Ethernet link type) of ``keys`` as telephone-events, ~0.2 s per key."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for at, rtp in dtmf_packets(keys, start=1_700_000_000.0):
        frame = _frame(rtp)
        seconds = int(at)
        micros = round((at - seconds) * 1_000_000)
        out += struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path
