"""Logging for the transport layer: one ``key=value`` line per event, rate-limited per source.

Per-message events (parse errors, oversized datagrams) come from the network at the
attacker's pace; :class:`SourceLogLimiter` lets ``burst`` lines per source IP through per
window and reports how many it held back in the next line it lets through.
"""

from __future__ import annotations

import logging

log = logging.getLogger("minipbx.transport")


class SourceLogLimiter:
    """Rate limit for log lines, per source IP (``now`` is passed in, no clock inside)."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 5,
        window: float = 10.0,
        max_sources: int = 4096,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._max = max_sources
        # source ip -> [window start, lines let through, lines held back]
        self._state: dict[str, list[float]] = {}

    def log(self, level: int, now: float, src: str, line: str) -> bool:
        """Log ``line`` (which should contain ``src=...``) unless ``src`` is over its budget.

        Returns whether the line was logged.
        """
        if not self._log.isEnabledFor(level):
            return False
        state = self._state.get(src)
        if state is None:
            if len(self._state) >= self._max:
                self._prune(now)
                if len(self._state) >= self._max:
                    src = "*"  # a flood from many addresses shares one budget
                    state = self._state.get(src)
            if state is None:
                state = self._state[src] = [now, 0.0, 0.0]
        if now - state[0] >= self._window:
            held = int(state[2])
            state[0], state[1], state[2] = now, 0.0, 0.0
            if held:
                line = f"{line} suppressed={held}"
        if state[1] >= self._burst:
            state[2] += 1
            return False
        state[1] += 1
        self._log.log(level, line)
        return True

    def _prune(self, now: float) -> None:
        expired = [k for k, s in self._state.items() if now - s[0] >= self._window and not s[2]]
        for key in expired:
            del self._state[key]
