"""G.711 PCMU (mu-law) and PCMA (A-law), bit-exact with the ITU-T reference (G.191 STL g711.c).

Encoding and decoding are single numpy table lookups: a 65536-entry table maps every 16-bit
sample to its code, a 256-entry table maps every code to its sample. The tables are built
once, vectorised, from the reference algorithms (``ulaw_compress``/``ulaw_expand``,
``alaw_compress``/``alaw_expand``):

- mu-law works on 14-bit samples (the 16-bit sample >> 2), A-law on 13-bit ones (>> 3;
  the reference shifts by 4 after taking the magnitude). Negative samples use the one's
  complement (``~x``), so the quantiser is symmetric around -0.5: ``encode(x)`` and
  ``encode(~x)`` differ only in the sign bit. (Python's old ``audioop`` follows Sun's
  g711.c, which negates instead: for mu-law it differs on 508 negative samples that sit
  on a quantisation boundary. A-law and all decoding agree.)
- Decoded values are the reference's 16-bit left-justified ones: mu-law +-32124, A-law
  +-32256 at most; mu-law 0x7F and 0xFF both decode to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""Signed 16-bit linear samples, 8 kHz mono."""
_Codes = npt.NDArray[np.uint8]
_Ints = npt.NDArray[np.int32]


def _bit_length(values: _Ints) -> _Ints:
    """``int.bit_length`` of each (non-negative, < 2**15) value."""
    powers = np.left_shift(1, np.arange(15))
    return np.searchsorted(powers, values, side="right").astype(np.int32)


def _all_samples() -> _Ints:
    """Every int16 value, ordered by its bit pattern (index = sample viewed as uint16)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_compress(x: _Ints) -> _Codes:
    """G.191 ``ulaw_compress``."""
    absno = np.minimum(np.where(x < 0, (~x) >> 2, x >> 2) + 33, 0x1FFF)
    segno = 1 + _bit_length(absno >> 6)
    high = 8 - segno
    low = 15 - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    signed: _Ints = np.where(x >= 0, code | 0x80, code)
    return signed.astype(np.uint8)


def _ulaw_expand(code: _Ints) -> Pcm:
    """G.191 ``ulaw_expand``."""
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * (mantissa & 0x0F) + step // 2 - 4 * 33
    return np.where(code < 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_compress(x: _Ints) -> _Codes:
    """G.191 ``alaw_compress``."""
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 0..2047
    exponent = np.maximum(_bit_length(ix) - 4, 1)  # segment of the values above 15
    chord = (ix >> (exponent - 1)) - 16 + (exponent << 4)
    code = np.where(ix > 15, chord, ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _alaw_expand(code: _Ints) -> Pcm:
    """G.191 ``alaw_expand``."""
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = np.where(exponent > 0, (ix & 0x0F) + 16, ix & 0x0F)
    mantissa = (mantissa << 4) + 0x08
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    return np.where(code > 127, mantissa, -mantissa).astype(np.int16)


def _frozen(table: npt.NDArray[np.generic]) -> None:
    table.flags.writeable = False


_CODES = np.arange(256, dtype=np.int32)
ULAW_ENCODE: _Codes = _ulaw_compress(_all_samples())
ULAW_DECODE: Pcm = _ulaw_expand(_CODES)
ALAW_ENCODE: _Codes = _alaw_compress(_all_samples())
ALAW_DECODE: Pcm = _alaw_expand(_CODES)
for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _frozen(_table)


def as_pcm(samples: Pcm | bytes) -> Pcm:
    """``samples`` as an int16 array; bytes are read as signed 16-bit little-endian."""
    if isinstance(samples, bytes | bytearray | memoryview):
        if len(samples) % 2:
            raise ValueError(f"16-bit PCM needs an even number of bytes, not {len(samples)}")
        return np.frombuffer(samples, dtype="<i2").astype(np.int16, copy=False)
    if samples.dtype != np.int16:
        raise ValueError(f"PCM samples must be int16, not {samples.dtype}")
    return samples


@dataclass(frozen=True, slots=True, eq=False)
class G711:
    """One G.711 law as an RTP codec (RFC 3551 4.5.14: payload types 0 and 8, 8 kHz)."""

    name: str
    payload_type: int
    encode_table: _Codes
    decode_table: Pcm

    @property
    def silence(self) -> int:
        """The code of a zero sample (PCMU 0xFF, PCMA 0xD5)."""
        return int(self.encode_table[0])

    def encode(self, samples: Pcm | bytes) -> bytes:
        """Codes for ``samples`` (one byte each)."""
        return bytes(self.encode_table[as_pcm(samples).view(np.uint16)].tobytes())

    def decode(self, data: bytes) -> Pcm:
        """Samples for the codes in ``data``."""
        return self.decode_table[np.frombuffer(data, dtype=np.uint8)]

    def __repr__(self) -> str:
        return f"G711({self.name})"


PCMU = G711("PCMU", 0, ULAW_ENCODE, ULAW_DECODE)
PCMA = G711("PCMA", 8, ALAW_ENCODE, ALAW_DECODE)
CODECS: dict[int, G711] = {PCMU.payload_type: PCMU, PCMA.payload_type: PCMA}
"""The codecs by static payload type."""
