"""G.711 against the ITU-T G.191 reference algorithms (transcribed here as plain loops),
known table values, and Python's audioop where this Python still has it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from minipbx.media.g711 import (
    ALAW_DECODE,
    ALAW_ENCODE,
    CODECS,
    PCMA,
    PCMU,
    ULAW_DECODE,
    ULAW_ENCODE,
    as_pcm,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # removed in Python 3.13
        audioop = None  # type: ignore[assignment]

ALL = np.arange(-32768, 32768, dtype=np.int16)


# The G.191 STL g711.c routines, one sample at a time, as the reference.
def ref_ulaw_compress(x: int) -> int:
    absno = (((~x) >> 2) if x < 0 else (x >> 2)) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno, i = segno + 1, i >> 1
    code = ((8 - segno) << 4) | (15 - ((absno >> segno) & 0x0F))
    return code | 0x80 if x >= 0 else code


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    step = 4 << (exponent + 1)
    return sign * ((0x80 << exponent) + step * (mantissa & 0x0F) + step // 2 - 4 * 33)


def ref_alaw_compress(x: int) -> int:
    ix = ((~x) >> 4) if x < 0 else (x >> 4)
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix, iexp = ix >> 1, iexp + 1
        ix = ix - 16 + (iexp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp, mant = ix >> 4, ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def test_decode_tables_equal_the_reference() -> None:
    assert ULAW_DECODE.tolist() == [ref_ulaw_expand(c) for c in range(256)]
    assert ALAW_DECODE.tolist() == [ref_alaw_expand(c) for c in range(256)]


def test_encode_tables_equal_the_reference_for_every_sample() -> None:
    samples = ALL.tolist()
    assert PCMU.encode(ALL) == bytes(ref_ulaw_compress(x) for x in samples)
    assert PCMA.encode(ALL) == bytes(ref_alaw_compress(x) for x in samples)


@pytest.mark.parametrize(
    ("table", "known"),
    [
        (ULAW_DECODE, {0x00: -32124, 0x01: -31100, 0x7E: -8, 0x7F: 0, 0x80: 32124, 0xFF: 0}),
        (ALAW_DECODE, {0x55: -8, 0xD5: 8, 0x2A: -32256, 0xAA: 32256, 0x00: -5504, 0x80: 5504}),
    ],
)
def test_known_values(table: np.ndarray, known: dict[int, int]) -> None:
    assert {code: int(table[code]) for code in known} == known


def test_encode_of_decode_gives_the_code_back() -> None:
    codes = bytes(range(256))
    assert PCMA.encode(PCMA.decode(codes)) == codes
    again = PCMU.encode(PCMU.decode(codes))
    assert [c for c in range(256) if again[c] != c] == [0x7F]  # "negative zero" -> 0xFF
    assert again[0x7F] == 0xFF


def test_quantiser_is_symmetric_one_complement() -> None:
    for table in (ULAW_ENCODE, ALAW_ENCODE):
        codes = table[ALL.view(np.uint16)]
        mirrored = table[(~ALL).view(np.uint16)]
        assert np.all(codes ^ mirrored == 0x80)


def test_silence_and_extremes() -> None:
    assert (PCMU.silence, PCMA.silence) == (0xFF, 0xD5)
    assert PCMU.encode(np.array([32767, -32768], dtype=np.int16)) == b"\x80\x00"
    assert PCMA.encode(np.array([32767, -32768], dtype=np.int16)) == b"\xaa\x2a"
    assert CODECS == {0: PCMU, 8: PCMA}


def test_inputs() -> None:
    samples = np.array([0, 1000, -1000], dtype=np.int16)
    assert PCMU.encode(samples.astype("<i2").tobytes()) == PCMU.encode(samples)
    assert PCMU.decode(b"").dtype == np.int16 and len(PCMU.encode(b"")) == 0
    with pytest.raises(ValueError, match="even number of bytes, not 3"):
        as_pcm(b"abc")
    with pytest.raises(ValueError, match="must be int16, not float64"):
        PCMA.encode(np.zeros(3))
    with pytest.raises(ValueError, match="read-only"):
        ULAW_ENCODE[0] = 1


def _ints(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def _ulaw_disagreements(samples: np.ndarray) -> np.ndarray:
    """The samples whose mu-law code differs between us and audioop."""
    ours = np.frombuffer(PCMU.encode(samples), dtype=np.uint8).astype(int)
    theirs = np.frombuffer(audioop.lin2ulaw(samples.astype("<i2").tobytes(), 2), dtype=np.uint8)
    differ = np.flatnonzero(ours != theirs)
    assert np.all(np.abs(ours[differ] - theirs[differ].astype(int)) == 1)  # neighbouring codes
    return samples[differ]


@pytest.mark.skipif(audioop is None, reason="audioop was removed in Python 3.13")
def test_against_audioop() -> None:
    """Decoding and A-law agree everywhere. audioop's mu-law encoder (Sun g711.c) negates
    negative samples where G.191 takes the one's complement: on 508 negative samples on a
    decision boundary it picks the neighbouring code, one quantisation step away."""
    codes = bytes(range(256))
    assert np.array_equal(PCMU.decode(codes), _ints(audioop.ulaw2lin(codes, 2)))
    assert np.array_equal(PCMA.decode(codes), _ints(audioop.alaw2lin(codes, 2)))
    assert PCMA.encode(ALL) == audioop.lin2alaw(ALL.astype("<i2").tobytes(), 2)
    differ = _ulaw_disagreements(ALL)
    assert len(differ) == 508 and np.all(differ < 0)


@pytest.mark.skipif(audioop is None, reason="audioop was removed in Python 3.13")
def test_random_input_against_audioop() -> None:
    rng = np.random.default_rng(5769)
    samples = rng.integers(-32768, 32768, 100_000, dtype=np.int16)
    assert PCMA.encode(samples) == audioop.lin2alaw(samples.astype("<i2").tobytes(), 2)
    boundary = set(_ulaw_disagreements(ALL).tolist())
    assert set(_ulaw_disagreements(samples).tolist()) <= boundary
