"""Prompt pacing without drift, recording with silence detection, WAV in and out."""

from __future__ import annotations

import io
import random
import wave

import numpy as np
import pytest

from minipbx.media.g711 import PCMA, PCMU
from minipbx.media.player import (
    PromptPlayer,
    Recorder,
    StopReason,
    frame_levels,
    read_wav,
    tone,
    wav_bytes,
)
from minipbx.media.rtp import RtpPacket, RtpSender

TS0 = 4_000_000_000  # wraps during long tests


def _player(codec=PCMU, **kwargs: float) -> PromptPlayer:  # type: ignore[no-untyped-def]
    stream = RtpSender(ssrc=77, sequence=100, timestamp_origin=TS0, clock_origin=0.0)
    return PromptPlayer(stream, codec, **kwargs)


def _wav(channels: int = 1, width: int = 2, rate: int = 8000, frames: bytes = b"\x00\x00") -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames * (channels * width // 2))
    return out.getvalue()


# -- WAV -------------------------------------------------------------------------------------


def test_wav_round_trip() -> None:
    samples = tone(440, 0.5)
    assert np.array_equal(read_wav(wav_bytes(samples)), samples)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_wav(rate=16000), "greeting.wav: 16000 Hz, 16-bit, 1 channel"),
        (_wav(channels=2), "8000 Hz, 16-bit, 2 channel"),
        (_wav(width=1), "8000 Hz, 8-bit, 1 channel.*must be 8000 Hz, 16-bit, mono"),
        (b"ID3 an mp3 file", "greeting.wav: not a PCM WAV file"),
        (_wav()[:30], "greeting.wav: not a PCM WAV file"),
    ],
)
def test_read_wav_rejects_other_formats(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_wav(data, "greeting.wav")


# -- playing ---------------------------------------------------------------------------------


def test_one_second_prompt() -> None:
    prompt = tone(1000, 0.99)  # 49.5 frames: the last is padded with silence
    player = _player()
    player.play(prompt, now=10.0)
    assert player.playing and player.next_deadline() == 10.0
    packets: list[RtpPacket] = []
    while (due := player.next_deadline()) is not None:
        packets += player.packets_due(due)
    assert len(packets) == 50
    assert [p.sequence_number for p in packets] == list(range(100, 150))
    start = (TS0 + 80_000) & 0xFFFFFFFF
    assert [p.timestamp for p in packets] == [(start + 160 * n) & 0xFFFFFFFF for n in range(50)]
    assert [p.marker for p in packets] == [True] + [False] * 49
    payload = b"".join(p.payload for p in packets)
    assert payload == PCMU.encode(prompt) + b"\xff" * 80
    assert not player.playing and player.next_deadline() is None


def test_frames_are_due_on_the_grid() -> None:
    player = _player(PCMA)
    player.play(tone(500, 1.0), now=0.0)
    assert player.packets_due(-0.001) == []
    assert len(player.packets_due(0.0)) == 1
    assert len(player.packets_due(0.0399)) == 1  # frame 1 (0.02), not yet frame 2
    assert player.next_deadline() == pytest.approx(0.04)
    assert [p.payload_type for p in player.packets_due(0.1)] == [8] * 4


def test_no_drift_over_ten_minutes_of_late_timers() -> None:
    """The timer fires 0-15 ms late every time; frame n still goes out for start + n*20 ms,
    with its timestamp, and the pacing error does not grow."""
    rng = random.Random(7)
    player = _player()
    minutes = 10
    player.play(np.zeros(minutes * 60 * 8000, dtype=np.int16), now=1000.0)
    errors, sent, first_ts = [], 0, None
    while (due := player.next_deadline()) is not None:
        now = due + rng.uniform(0, 0.015)
        for packet in player.packets_due(now):
            first_ts = packet.timestamp if first_ts is None else first_ts
            frame = ((packet.timestamp - first_ts) & 0xFFFFFFFF) // 160
            assert frame == sent
            frame_due = 1000.0 + frame * 0.02
            assert frame_due <= now < frame_due + 0.036
            errors.append(now - frame_due)
            sent += 1
    assert sent == minutes * 60 * 50 and player.skipped == 0
    first_minute, last_minute = max(errors[:3000]), max(errors[-3000:])
    assert last_minute < 0.036 and abs(last_minute - first_minute) < 0.02
    assert player.stream.packets_sent == sent


def test_a_stalled_loop_skips_frames_instead_of_bursting() -> None:
    player = _player(max_lag=0.1)
    player.play(tone(300, 2.0), now=0.0)
    player.packets_due(0.0)
    late = player.packets_due(1.0)  # the loop stalled for a second
    assert player.skipped == 44  # frames 1..44 were due more than 100 ms ago
    assert len(late) == 6  # frames 45..50 (0.90-1.00 s)
    assert ((late[0].timestamp - TS0) & 0xFFFFFFFF) == 45 * 160  # the clock, not a shift


def test_queued_prompts_play_back_to_back() -> None:
    player = _player()
    player.play(tone(400, 0.04), now=0.0)
    player.play(tone(800, 0.04), now=0.01)  # queued: continues the same talkspurt
    packets = player.packets_due(0.06)
    assert [p.marker for p in packets] == [True, False, False, False]
    assert [(p.timestamp - TS0) & 0xFFFFFFFF for p in packets] == [0, 160, 320, 480]


def test_a_new_prompt_after_silence_is_a_new_talkspurt() -> None:
    player = _player()
    player.play(tone(400, 0.04), now=0.0)
    player.packets_due(0.02)
    player.play(tone(400, 0.02), now=0.021)  # idle, but the last frame still plays
    assert player.next_deadline() == pytest.approx(0.04)  # starts after it, not over it
    player.play(b"", now=0.03)  # nothing to add
    assert [p.marker for p in player.packets_due(0.05)] == [True]
    player.play(tone(400, 0.02), now=10.0)
    packet = player.packets_due(10.0)[0]
    assert packet.marker and (packet.timestamp - TS0) & 0xFFFFFFFF == 80_000


def test_stop_drops_the_rest() -> None:
    player = _player()
    player.play(tone(400, 1.0), now=0.0)
    player.packets_due(0.0)
    player.stop()
    assert not player.playing and player.packets_due(5.0) == []


# -- recording -------------------------------------------------------------------------------


def test_levels() -> None:
    full = tone(1000, 0.1, level=0.0)
    assert frame_levels(full) == pytest.approx([-3.01] * 5, abs=0.02)
    assert np.all(np.isneginf(frame_levels(np.zeros(200, dtype=np.int16))))
    assert len(frame_levels(np.zeros(161, dtype=np.int16))) == 2


def test_stops_after_silence_and_trims_it() -> None:
    recorder = Recorder(silence_seconds=2.0)
    assert recorder.feed(tone(400, 1.5, level=-20)) is None
    assert recorder.heard_sound
    quiet = (np.random.default_rng(1).normal(0, 30, 8000)).astype(np.int16)  # ~ -60 dBFS hiss
    assert recorder.feed(quiet) is None
    assert recorder.feed(quiet) is StopReason.SILENCE
    assert recorder.feed(tone(400, 1.0)) is None  # after the end: ignored
    assert recorder.duration == pytest.approx(3.5)
    kept = read_wav(recorder.wav())
    assert len(kept) == 12_000  # the silence at the end is trimmed
    assert len(recorder.samples()) == 28_000


def test_silence_inside_a_chunk_counts_from_the_last_loud_frame() -> None:
    recorder = Recorder(silence_seconds=1.0)
    chunk = np.concatenate([tone(400, 0.5), np.zeros(8000, dtype=np.int16)])
    assert recorder.feed(chunk) is StopReason.SILENCE
    assert recorder.trailing_silence == 8000


def test_max_length() -> None:
    recorder = Recorder(max_seconds=1.0, silence_seconds=None)
    assert recorder.feed(np.zeros(6000, dtype=np.int16)) is None
    assert recorder.feed(np.zeros(6000, dtype=np.int16)) is StopReason.MAX_LENGTH
    assert recorder.duration == 1.0 and not recorder.heard_sound


def test_recording_rtp_fills_gaps_and_drops_late_packets() -> None:
    recorder = Recorder(silence_seconds=None)
    audio = tone(700, 0.1)
    frames = [PCMU.encode(audio[i * 160 : (i + 1) * 160]) for i in range(5)]

    def packet(n: int, ssrc: int = 1, pt: int = 0, ts: int = 0xFFFFFF00) -> RtpPacket:
        return RtpPacket(pt, n, (ts + n * 160) & 0xFFFFFFFF, ssrc, frames[n % 5])

    for n in (0, 1, 3, 1, 2, 4):  # 2 comes late (dropped: 3 was recorded), 1 twice
        recorder.feed_packet(packet(n))
    recorder.feed_packet(RtpPacket(101, 9, 0, 1, b"\x05\x0a\x00\xa0"))  # telephone-event
    samples = recorder.samples()
    assert len(samples) == 5 * 160
    assert np.array_equal(samples[:320], PCMU.decode(frames[0] + frames[1]))
    assert not samples[320:480].any()  # the lost frame is silence
    recorder.feed_packet(packet(0, ssrc=2, ts=123))  # a new source continues the recording
    assert recorder.duration == pytest.approx(0.12)
    recorder.stop()
    assert recorder.stopped is StopReason.STOPPED
    assert recorder.feed_packet(packet(1, ssrc=2, ts=123)) is None


def test_recorder_settings() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Recorder(max_seconds=0)
    assert len(Recorder().samples()) == 0
