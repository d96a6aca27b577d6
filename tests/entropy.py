"""Deterministic randomness for tests (nonces, tags, branches)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def fake_entropy() -> Callable[[int], bytes]:
    """Deterministic stand-in for secrets.token_bytes."""
    counter = 0

    def entropy(size: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.sha256(counter.to_bytes(8, "big")).digest()[:size].ljust(size, b"\0")

    return entropy
