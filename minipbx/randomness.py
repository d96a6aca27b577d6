"""Kernel randomness in blocks for the PBX's tags, branches, Call-IDs and nonces."""

from __future__ import annotations

import os


class EntropyPool:
    """``pool(n)``: n bytes from ``os.urandom``, read ``block`` bytes at a time.

    The same randomness as ``secrets.token_bytes``, one system call per 4 KiB instead of
    one per value: a registration takes three values (nonce, two To tags), a call a dozen.
    Bytes are handed out once and never reused. (The SIP core takes randomness as an
    ``entropy(n)`` callable and never reads it itself; this is what the app passes.)
    """

    __slots__ = ("_block", "_buffer", "_offset")

    def __init__(self, block: int = 4096) -> None:
        if block < 1:
            raise ValueError("block must be positive")
        self._block = block
        self._buffer = b""
        self._offset = 0

    def __call__(self, size: int) -> bytes:
        start = self._offset
        end = start + size
        if end > len(self._buffer):
            if size > self._block:
                return os.urandom(size)
            self._buffer = os.urandom(self._block)
            start, end = 0, size
        self._offset = end
        return self._buffer[start:end]
