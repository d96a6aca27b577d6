"""Login rate limiting: failures counted per source IP and per username.

After ``limit`` failures within ``window`` seconds from one IP, or for one username, further
attempts are refused (HTTP 429 with Retry-After) until the oldest of those failures is
older than the window. A success clears the username's count (not the IP's: one valid
account must not reset an attacker's budget for the others). Memory is bounded: keys whose
failures have all aged out are dropped, and at most ``max_keys`` keys are kept.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoginLimiter:
    """Sliding-window failure counts per ``ip:`` and ``user:`` key."""

    limit: int = 5
    window: float = 300.0
    max_keys: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def retry_after(self, ip: str, username: str) -> int:
        """Seconds to wait before another attempt may be made (0: go ahead)."""
        now = self.clock()
        wait = 0.0
        for key in (f"ip:{ip}", f"user:{username.lower()}"):
            stamps = self._recent(key, now)
            if len(stamps) >= self.limit:
                wait = max(wait, stamps[-self.limit] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, ip: str, username: str) -> None:
        """Count a failed attempt."""
        now = self.clock()
        if len(self._failures) >= self.max_keys:
            self.sweep()
        for key in (f"ip:{ip}", f"user:{username.lower()}"):
            stamps = self._failures.setdefault(key, deque(maxlen=self.limit))
            stamps.append(now)

    def succeeded(self, username: str) -> None:
        """Forget the failures of ``username``."""
        self._failures.pop(f"user:{username.lower()}", None)

    def sweep(self) -> None:
        """Drop keys whose failures have aged out (and the oldest keys past ``max_keys``)."""
        now = self.clock()
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]
