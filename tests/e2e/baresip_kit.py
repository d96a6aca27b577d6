"""What the baresip end-to-end tests share: its config directory, a tone for it to send,
and reading back what it heard (REAL-PEERS.md: baresip as a headless phone)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

RATE = 8000


def write_tone(path: Path, frequency: float, seconds: int) -> None:
    """A sine tone, 8 kHz mono 16-bit, as baresip's aufile wants."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / RATE)))
        for i in range(RATE * seconds)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(frames)


def read_samples(path: Path) -> list[int]:
    """The samples of a 16-bit mono WAV file."""
    with wave.open(str(path), "rb") as dump:
        if dump.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples")
        data = dump.readframes(dump.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def write_config(
    directory: Path,
    *,
    listen_ip: str,
    listen_port: int,
    account: str,
    password: str,
    tone: float,
    tone_seconds: int,
) -> None:
    """A phone's config directory: ``config`` (G.711, a tone as its microphone, what it
    hears dumped to ``snd/``), ``accounts`` (``account`` is ``ext@host:port``, answering
    calls at once) and the tone file."""
    (directory / "snd").mkdir(parents=True)
    write_tone(directory / "tone.wav", tone, tone_seconds)
    config = [
        "module_path /usr/lib/baresip/modules",
        f"net_interface {listen_ip}",
        f"sip_listen {listen_ip}:{listen_port}",
        "audio_player alsa,null",
        "audio_alert alsa,null",
        f"audio_source aufile,{directory / 'tone.wav'}",
        "module g711.so",
        "module aufile.so",
        "module alsa.so",
        "module sndfile.so",
        f"snd_path {directory / 'snd'}",
        "module_tmp account.so",
        "module_app menu.so",
        "rtp_stats yes",
    ]
    (directory / "config").write_text("\n".join(config) + "\n")
    (directory / "accounts").write_text(
        f"<sip:{account}>;auth_pass={password};answermode=auto;audio_codecs=PCMU;regint=60\n"
    )
