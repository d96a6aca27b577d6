from __future__ import annotations

import itertools

import pytest

from minipbx import randomness
from minipbx.randomness import EntropyPool


def test_pool_hands_out_each_byte_once_and_reads_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = itertools.count()
    reads: list[int] = []

    def urandom(size: int) -> bytes:
        reads.append(size)
        return bytes(next(counter) % 256 for _ in range(size))

    monkeypatch.setattr(randomness.os, "urandom", urandom)
    pool = EntropyPool(block=10)
    assert [pool(4), pool(4)] == [bytes(range(4)), bytes(range(4, 8))]
    assert reads == [10]
    # Not enough left for 4: a new block, the last 2 bytes of the old one never used.
    assert pool(4) == bytes(range(10, 14))
    assert reads == [10, 10]
    assert pool(12) == bytes(range(20, 32))  # more than a block: read directly
    assert pool(6) == bytes(range(14, 20))  # the block goes on where it stopped
    assert reads == [10, 10, 12]
    assert pool(0) == b""


def test_pool_gives_real_randomness() -> None:
    pool = EntropyPool()
    values = {pool(16) for _ in range(1000)}
    assert len(values) == 1000 and all(len(v) == 16 for v in values)
    with pytest.raises(ValueError, match="block"):
        EntropyPool(block=0)
