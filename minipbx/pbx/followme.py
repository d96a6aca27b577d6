"""Follow-me lists: where a user's calls ring besides (or after) its own phones.

A user's list is text an administrator types, one destination per entry, in order::

    102:20, 0044201234567:30, 105

Each entry is a number (an extension, or an external number routed through the user's dial
plan) and how long it rings (seconds, default :data:`DEFAULT_RING`). The mode says how the
list is used:

- ``sequential``: one step after the other, each for its ring time (busy or failure moves on
  at once); the user's own phones are the first step when ``own_first``.
- ``simultaneous``: the user's phones and every destination ring at once, for the longest
  ring time.
- ``off``: the list is kept but not used.

When nobody answers, the call goes to the user's voicemail if it has one (miniSipServer's
"follow-me with voicemail"), else the caller hears the last failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FOLLOWME_MODES = ("off", "sequential", "simultaneous")
DEFAULT_RING = 20
MIN_RING, MAX_RING = 5, 300
MAX_STEPS = 10
_ENTRY = re.compile(r"(\+?[A-Za-z0-9*#._\-]{1,64})(?::([0-9]{1,4}))?")


@dataclass(frozen=True, slots=True)
class FollowStep:
    """One destination of a follow-me list."""

    number: str
    seconds: int = DEFAULT_RING


def parse_followme(text: str) -> tuple[FollowStep, ...]:
    """The steps of a list (see the module docstring); ValueError says what is wrong."""
    steps: list[FollowStep] = []
    for position, raw in enumerate((e.strip() for e in text.replace(";", ",").split(",")), 1):
        if not raw:
            continue
        match = _ENTRY.fullmatch(raw)
        if match is None:
            raise ValueError(f"entry {position} ({raw!r}): expected NUMBER or NUMBER:SECONDS")
        seconds = int(match.group(2)) if match.group(2) else DEFAULT_RING
        if not MIN_RING <= seconds <= MAX_RING:
            raise ValueError(
                f"entry {position} ({raw!r}): ring time must be {MIN_RING}-{MAX_RING} seconds"
            )
        steps.append(FollowStep(match.group(1), seconds))
    if len(steps) > MAX_STEPS:
        raise ValueError(f"at most {MAX_STEPS} destinations, not {len(steps)}")
    return tuple(steps)


def format_followme(steps: tuple[FollowStep, ...]) -> str:
    """The canonical text of a list (what is stored)."""
    return ", ".join(f"{s.number}:{s.seconds}" for s in steps)


__all__ = [
    "DEFAULT_RING",
    "FOLLOWME_MODES",
    "FollowStep",
    "format_followme",
    "parse_followme",
]
