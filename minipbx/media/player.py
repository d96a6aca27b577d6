"""Prompt playback and recording, sans-IO, plus the WAV format of prompts and recordings.

- :class:`PromptPlayer` paces 20 ms G.711 frames from a monotonic clock: frame ``n`` of a
  playback is due at ``start + n * ptime`` and carries timestamp ``ts0 + n * 160``, so the
  pace never drifts however late the timer fires; frames later than ``max_lag`` are
  skipped instead of being sent in a burst.
- :class:`Recorder` collects decoded audio (from PCM or RTP packets, filling lost packets
  with silence), stops at a maximum length or after a run of silence (a 20 ms frame whose
  level is below a threshold is silent), and writes 8 kHz 16-bit mono WAV.
"""

from __future__ import annotations

import enum
import io
import math
import wave

import numpy as np
import numpy.typing as npt

from minipbx.media.g711 import CODECS, G711, Pcm, as_pcm
from minipbx.media.rtp import CLOCK_RATE, RtpPacket, RtpSender, RtpSource

PTIME = 0.02
"""Packetization time of the frames the PBX sends (RFC 3551 4.5: 20 ms for G.711)."""
LEVEL_FRAME = 160
"""Samples per level measurement of the silence detector (20 ms)."""


# -- WAV ---------------------------------------------------------------------------------------


def read_wav(data: bytes, name: str = "WAV") -> Pcm:
    """The samples of an 8 kHz 16-bit mono PCM WAV file; ``ValueError`` names what differs."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{name}: not a PCM WAV file ({exc or 'truncated'})") from None
    if (channels, width, rate) != (1, 2, CLOCK_RATE):
        raise ValueError(
            f"{name}: {rate} Hz, {8 * width}-bit, {channels} channel(s);"
            " prompts must be 8000 Hz, 16-bit, mono"
        )
    return as_pcm(frames[: len(frames) // 2 * 2]).copy()


def wav_bytes(samples: Pcm) -> bytes:
    """``samples`` as an 8 kHz 16-bit mono WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(CLOCK_RATE)
        wav.writeframes(as_pcm(samples).astype("<i2").tobytes())
    return out.getvalue()


# -- playing ---------------------------------------------------------------------------------


class PromptPlayer:
    """Sends queued prompts as RTP on ``stream``, one frame per ``ptime``, without drift.

    :meth:`play` queues audio (starting at ``now`` when idle); the owner calls
    :meth:`packets_due` at :meth:`next_deadline` and sends what it returns.
    """

    def __init__(
        self, stream: RtpSender, codec: G711, ptime: float = PTIME, max_lag: float = 0.2
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.ptime = ptime
        self.max_lag = max_lag
        self.frame_size = round(ptime * stream.clock_rate)
        self.skipped = 0  # frames dropped because they were more than max_lag late
        self._pending = bytearray()  # encoded audio not yet sent, frame aligned
        self._start = -math.inf  # when frame 0 of the current playback was due
        self._timestamp = 0  # timestamp of frame 0
        self._frame = 0  # the next frame to send

    @property
    def playing(self) -> bool:
        """True while frames remain."""
        return bool(self._pending)

    def play(self, samples: Pcm | bytes, now: float) -> None:
        """Queue ``samples`` (8 kHz PCM) after whatever is playing; the last frame is padded
        with silence."""
        encoded = self.codec.encode(samples)
        if not encoded:
            return
        if not self._pending:  # a new talkspurt: re-anchor on the clock, after the last one
            self._start, self._frame = max(now, self._due(self._frame)), 0
            self._timestamp = self.stream.timestamp_at(self._start)
        encoded += bytes((self.codec.silence,)) * (-len(encoded) % self.frame_size)
        self._pending += encoded

    def stop(self) -> None:
        """Drop everything queued (barge-in)."""
        self._pending.clear()

    def next_deadline(self) -> float | None:
        """When the next frame is due, None when idle."""
        return self._due(self._frame) if self._pending else None

    def packets_due(self, now: float) -> list[RtpPacket]:
        """The frames due at or before ``now`` (late ones past ``max_lag`` are skipped)."""
        out: list[RtpPacket] = []
        size = self.frame_size
        while self._pending and self._due(self._frame) <= now:
            frame = self._frame
            self._frame += 1
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            if now - self._due(frame) > self.max_lag:
                self.skipped += 1
                continue
            timestamp = self._timestamp + frame * size
            out.append(self.stream.packet(self.codec.payload_type, timestamp, chunk, frame == 0))
        return out

    def _due(self, frame: int) -> float:
        return self._start + frame * self.ptime


# -- recording -------------------------------------------------------------------------------


class StopReason(enum.Enum):
    """Why a :class:`Recorder` stopped."""

    MAX_LENGTH = "max_length"
    SILENCE = "silence"
    STOPPED = "stopped"


def frame_levels(samples: Pcm, frame: int = LEVEL_FRAME) -> npt.NDArray[np.float64]:
    """The level (dBFS, RMS) of each ``frame``-sample block; the last may be shorter."""
    data = samples.astype(np.float64)
    full = len(data) // frame * frame
    power = (data[:full].reshape(-1, frame) ** 2).mean(axis=1)
    if full < len(data):
        power = np.append(power, (data[full:] ** 2).mean())
    with np.errstate(divide="ignore"):
        return np.asarray(10 * np.log10(power / 32768.0**2), dtype=np.float64)


class Recorder:
    """Accumulates a recording; see the module docstring.

    ``silence_seconds`` of ``None`` disables the silence stop; ``threshold`` is the level
    (dBFS) under which a frame counts as silence (-45 dBFS: well below speech, which is
    around -20 dBFS on a phone line, and above the hiss of a quiet line).
    """

    def __init__(
        self,
        max_seconds: float = 180.0,
        silence_seconds: float | None = 5.0,
        threshold: float = -45.0,
        max_gap: float = 1.0,
    ) -> None:
        if max_seconds <= 0 or (silence_seconds is not None and silence_seconds <= 0):
            raise ValueError("max_seconds and silence_seconds must be positive")
        self.max_samples = round(max_seconds * CLOCK_RATE)
        self.silence_samples = (
            None if silence_seconds is None else round(silence_seconds * CLOCK_RATE)
        )
        self.threshold = threshold
        self.max_gap = round(max_gap * CLOCK_RATE)
        self.stopped: StopReason | None = None
        self.heard_sound = False
        self.trailing_silence = 0  # samples of silence at the end so far
        self._chunks: list[Pcm] = []
        self._length = 0
        self._source = RtpSource()
        self._next_timestamp: int | None = None  # extended timestamp of the next sample

    @property
    def duration(self) -> float:
        """Seconds recorded."""
        return self._length / CLOCK_RATE

    def feed(self, samples: Pcm | bytes) -> StopReason | None:
        """Append audio; the reason when this ends the recording (later audio is ignored)."""
        if self.stopped is not None:
            return None
        pcm = as_pcm(samples)[: self.max_samples - self._length]
        if len(pcm):
            self._chunks.append(pcm)
            self._length += len(pcm)
            self._track_silence(pcm)
        if self._length >= self.max_samples:
            return self._stop(StopReason.MAX_LENGTH)
        if self.silence_samples is not None and self.trailing_silence >= self.silence_samples:
            return self._stop(StopReason.SILENCE)
        return None

    def feed_packet(self, packet: RtpPacket) -> StopReason | None:
        """Append a G.711 packet: a gap in timestamps (lost packets, silence suppression) is
        filled with up to ``max_gap`` of silence; late or repeated packets are dropped, as are
        other payload types (telephone-event, comfort noise)."""
        codec = CODECS.get(packet.payload_type)
        if codec is None or self.stopped is not None:
            return None
        if self._source.accept(packet):
            self._next_timestamp = None
        timestamp = self._source.extended_timestamp(packet)
        expected = self._next_timestamp if self._next_timestamp is not None else timestamp
        if timestamp < expected:
            return None
        gap = min(timestamp - expected, self.max_gap)
        self._next_timestamp = timestamp + len(packet.payload)
        if gap and self.feed(np.zeros(gap, dtype=np.int16)) is not None:
            return self.stopped
        return self.feed(codec.decode(packet.payload))

    def stop(self) -> None:
        """End the recording now (the caller hung up or pressed a key)."""
        if self.stopped is None:
            self._stop(StopReason.STOPPED)

    def samples(self, trim_silence: bool = False) -> Pcm:
        """Everything recorded; ``trim_silence`` drops the silence at the end."""
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return pcm[: len(pcm) - self.trailing_silence] if trim_silence else pcm

    def wav(self, trim_silence: bool = True) -> bytes:
        """The recording as a WAV file (8 kHz 16-bit mono)."""
        return wav_bytes(self.samples(trim_silence))

    def _stop(self, reason: StopReason) -> StopReason:
        self.stopped = reason
        return reason

    def _track_silence(self, pcm: Pcm) -> None:
        """Vectorised: find the last loud frame of this chunk, if any."""
        loud = np.flatnonzero(frame_levels(pcm) >= self.threshold)
        if len(loud):
            self.heard_sound = True
            end_of_sound = min((int(loud[-1]) + 1) * LEVEL_FRAME, len(pcm))
            self.trailing_silence = len(pcm) - end_of_sound
        else:
            self.trailing_silence += len(pcm)


def tone(frequency: float, seconds: float, level: float = -10.0) -> Pcm:
    """A sine tone at ``level`` dBFS (peak): for tests, beeps and the recording prompt."""
    count = round(seconds * CLOCK_RATE)
    amplitude = 32767 * 10 ** (level / 20)
    phase = 2 * math.pi * frequency * np.arange(count) / CLOCK_RATE
    return np.round(amplitude * np.sin(phase)).astype(np.int16)
