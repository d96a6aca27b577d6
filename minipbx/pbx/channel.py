"""What a PBX service (auto attendant, voicemail, calling card) can do with a call it answered.

When the dial plan routes a call to a service, the B2BUA answers the caller itself with its
own SDP (RFC 3264 answer, PCMU/PCMA + telephone-event) and hands the service a
:class:`Channel`. A service is a coroutine that plays prompts, collects DTMF (RFC 4733 or
SIP INFO), records, and ends by handing the call on (:meth:`Channel.transfer`: the caller is
then joined to the new party end to end, with re-INVITEs, RFC 3725 style) or hanging up.

Services are written against this protocol only, so they are tested with a scripted fake
channel and a fake clock; the asyncio implementation lives with the app.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from minipbx.media.dtmf import Collected, CollectEnd


class ChannelClosedError(Exception):
    """The caller hung up (or the call was ended by the PBX): the service must stop."""


class TransferKind(enum.Enum):
    """Where :meth:`Channel.transfer` sends the call."""

    NUMBER = "number"  # routed through the caller's dial plan like a dialled number
    USER = "user"  # a local extension (its own forwarding applies)
    FOLLOWME = "followme"  # the follow-me list of a user
    VOICEMAIL = "voicemail"  # deposit in a user's voice mailbox


@dataclass(frozen=True, slots=True)
class Recording:
    """What :meth:`Channel.record` captured: a WAV (8 kHz 16-bit mono) and why it stopped."""

    wav: bytes
    seconds: float
    reason: str  # "terminator", "silence", "max_length", "hangup"


class Channel(Protocol):
    """A call answered by the PBX, seen from the service that runs it."""

    @property
    def call_id(self) -> str:
        """The PBX's call id (for logs and records)."""
        ...

    @property
    def caller(self) -> str:
        """The caller's number (user part of the From, or the asserted identity)."""
        ...

    @property
    def callee(self) -> str:
        """The number that reached the service, as routed."""
        ...

    @property
    def tenant_id(self) -> int:
        """The tenant of the call."""
        ...

    def now(self) -> float:
        """Monotonic seconds (the clock the channel's timeouts use)."""
        ...

    def wall(self) -> float:
        """Unix time now (for time conditions and dates)."""
        ...

    async def play(self, prompts: Sequence[str], *, barge_in: bool = True) -> str | None:
        """Play the named prompts one after the other.

        With ``barge_in`` a key press stops playback and is returned (it also stays
        queued, so a following :meth:`collect` sees it as its first digit); returns None
        when playback finished. Raises :class:`ChannelClosedError` when the caller hangs up.
        """
        ...

    async def play_audio(self, wav: bytes, *, barge_in: bool = True) -> str | None:
        """Like :meth:`play`, for a recording (a WAV file's bytes)."""
        ...

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
    ) -> Collected:
        """Gather keys (queued ones first) until one of the limits ends it."""
        ...

    def flush_digits(self) -> None:
        """Forget keys pressed but not yet collected."""
        ...

    async def record(
        self, *, max_seconds: float, silence_seconds: float = 5.0, terminators: str = "#"
    ) -> Recording:
        """Record the caller until a terminator key, ``silence_seconds`` of silence,
        ``max_seconds`` or hang-up (then the recording is returned, not an exception)."""
        ...

    async def transfer(self, kind: TransferKind, target: str) -> int:
        """Hand the call on. Returns 200 when another party answered and the call left the
        service (the service must then return), or the failure status (486 busy, 480 no
        answer, 404 unknown...) with the caller still on the channel."""
        ...

    async def hangup(self, reason: str = "service") -> None:
        """End the call (BYE to the caller)."""
        ...


__all__ = [
    "Channel",
    "ChannelClosedError",
    "CollectEnd",
    "Collected",
    "Recording",
    "TransferKind",
]
