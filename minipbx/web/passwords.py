"""Admin passwords: argon2id hashes (PHC strings) made and checked off the event loop.

Hashing costs a quarter of a second of CPU and 64 MiB by design, so it runs in a worker
thread, at most :data:`MAX_PARALLEL` at once: the SIP event loop never waits on it and a
burst of logins cannot exhaust memory. An unknown username is checked against a dummy
hash, so it costs the same as a wrong password (no username probing by timing).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import CHEAPEST

MAX_PARALLEL = 2
PASSWORD_MIN = 8
PASSWORD_MAX = 256


def new_password() -> str:
    """A random password for a new admin (16 URL-safe characters, 96 bits)."""
    return secrets.token_urlsafe(12)


def check_password(password: str) -> str | None:
    """Why ``password`` cannot be an admin password, or None when it can."""
    if len(password) < PASSWORD_MIN:
        return f"at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"at most {PASSWORD_MAX} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        return "no control characters"
    return None


@dataclass
class Passwords:
    """Hashes and verifies admin passwords (``fast=True``: cheapest parameters, for tests)."""

    fast: bool = False
    _hasher: PasswordHasher = field(init=False, repr=False)
    _dummy: str | None = field(default=None, init=False, repr=False)
    _gate: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._hasher = PasswordHasher.from_parameters(CHEAPEST) if self.fast else PasswordHasher()

    def hash_now(self, password: str) -> str:
        """The PHC string of ``password`` (blocking: for the CLI)."""
        return self._hasher.hash(password)

    def _verify_now(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_hex(16))
            password_hash = self._dummy
            password = password + "\x00"  # never matches the dummy
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        """The PHC string of ``password``, computed in a worker thread."""
        async with self._limit():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches ``password_hash`` (None: an unknown user, False
        after the same work as a real check)."""
        async with self._limit():
            return await asyncio.to_thread(self._verify_now, password_hash, password)

    def _limit(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(MAX_PARALLEL)
        return self._gate
