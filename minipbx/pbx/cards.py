"""Calling-card and balance-query calls, as coroutines over a :class:`~minipbx.pbx.channel.Channel`.

A calling card call (dial plan service ``card:<access>``, e.g. an access DID or ``*300``):

1. ``card_enter_number`` then ``card_enter_pin`` (keys end with ``#``, RFC 4733 or INFO:
   the channel hides which). A wrong number or PIN plays ``card_invalid`` and asks again,
   up to ``login_attempts`` times, then ``goodbye``. The desk counts wrong PINs per card
   *and caller* and locks the card at the N-th (:class:`LoginResult.LOCKED`: the caller
   hears ``card_locked``). Expired cards hear ``card_expired``, used-up ones
   ``insufficient_balance``.
2. ``your_balance_is`` and the amount (:func:`~minipbx.media.prompts.say_amount`).
3. ``card_enter_destination``: digits until ``#``. ``#`` alone (or silence twice) ends the
   session with ``goodbye``.
4. The desk authorizes the destination under the card's rate table: unrated numbers hear
   ``call_not_allowed``, too little money ``insufficient_balance``, and the caller is asked
   for another number. Otherwise ``you_have`` *N minutes* ``for_this_call`` (whole minutes,
   rounded down; seconds when under one minute).
5. The :class:`Dialer` places the call with the authorization's limit. A failure (busy, no
   answer...) releases the reservation, plays the reason and goes back to step 3. On
   success the phones talk end to end; when the callee hangs up the B2BUA hands the caller
   back to the service (:attr:`DialOutcome.returned`), the desk settles the answered
   seconds and the caller is back at step 3 for the next call. When the whole call ends
   first (the caller hung up, or the money ran out) the reservation is settled then,
   keyed by the call id.

A balance query (``balance:``, feature code ``*900``) says ``your_balance_is`` and the
amount, then ``goodbye``.

Pure: no sockets, clock or database; the desk and the dialer are protocols the app
implements (``minipbx.billing_runtime``), so tests drive this with scripted fakes.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from minipbx.media.prompts import say_amount, say_duration, say_duration_minutes
from minipbx.pbx.channel import Channel, ChannelClosedError, CollectEnd
from minipbx.pbx.ivr import failure_prompt
from minipbx.pbx.prepaid import Authorization, Refusal

log = logging.getLogger("minipbx.cards")

ENTER_NUMBER = "card_enter_number"
ENTER_PIN = "card_enter_pin"
INVALID = "card_invalid"
LOCKED = "card_locked"
EXPIRED = "card_expired"
ENTER_DESTINATION = "card_enter_destination"
BALANCE_IS = "your_balance_is"
NO_MONEY = "insufficient_balance"
GOODBYE = "goodbye"
TIME_IS_UP = "call_time_up"


class LoginResult(enum.Enum):
    """What the desk made of a card number and PIN."""

    OK = "ok"
    INVALID = "invalid"  # no such card, or a wrong PIN (the caller is not told which)
    LOCKED = "locked"  # locked before, or by this wrong PIN
    EXPIRED = "expired"
    USED = "used"  # status "used": nothing left on it


@dataclass(frozen=True, slots=True)
class CardSession:
    """A card the caller logged in with."""

    card_id: int
    number: str
    balance: Decimal
    currency: str = ""


@dataclass(frozen=True, slots=True)
class Login:
    """The desk's answer to a login; ``card`` set when ``result`` is OK."""

    result: LoginResult
    card: CardSession | None = None


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How one card call went: ``status`` 200 when the destination answered.

    ``returned``: the call came back to the service after the callee hung up, having been
    answered ``answered_seconds``; False: the call left the service (it is billed when it
    ends).
    """

    status: int
    returned: bool = False
    answered_seconds: int = 0


class CardDesk(Protocol):
    """What the card flow needs from billing (``minipbx.billing_runtime.CardDesk``)."""

    async def login(self, tenant_id: int, caller: str, number: str, pin: str) -> Login:
        """Check a card number and PIN from ``caller`` (counting wrong PINs, locking)."""
        ...

    def balance(self, card: CardSession) -> Decimal:
        """The card's balance now."""
        ...

    def authorize(
        self, card: CardSession, destination: str, call_key: str
    ) -> Authorization | Refusal:
        """Price ``destination`` for the card and reserve the money for the longest call."""
        ...

    def settle(self, call_key: str, seconds: int) -> None:
        """A card call that came back to the service was answered ``seconds``: charge it."""
        ...

    def release(self, call_key: str) -> None:
        """A card call was not answered: free its reservation."""
        ...


class Dialer(Protocol):
    """Places a card call (``minipbx.billing_runtime.TransferDialer`` over the channel)."""

    async def dial(
        self, channel: Channel, destination: str, authorization: Authorization
    ) -> DialOutcome:
        """Call ``destination``, cut at ``authorization.max_seconds`` after its answer."""
        ...


@dataclass(frozen=True, slots=True)
class CardFlowSettings:
    """Limits of a calling-card session."""

    login_attempts: int = 3  # wrong number/PIN entries in one call before goodbye
    number_digits: int = 32
    pin_digits: int = 16
    destination_digits: int = 24
    first_digit_timeout: float = 10.0
    inter_digit_timeout: float = 5.0
    silences: int = 2  # "enter destination" asked this often without a key: goodbye
    max_calls: int = 20  # destinations tried in one session (a bound on the loop)


_SAY_LOGIN = {
    LoginResult.LOCKED: LOCKED,
    LoginResult.EXPIRED: EXPIRED,
    LoginResult.USED: NO_MONEY,
}


async def _ask(
    channel: Channel, prompts: Sequence[str], digits: int, settings: CardFlowSettings
) -> str | None:
    """Play ``prompts`` (barge-in) and collect up to ``#``; None when nothing came."""
    await channel.play(prompts)
    got = await channel.collect(
        max_digits=digits,
        terminators="#",
        first_digit_timeout=settings.first_digit_timeout,
        inter_digit_timeout=settings.inter_digit_timeout,
    )
    if got.reason is CollectEnd.NO_INPUT:
        return None
    return got.digits


async def _goodbye(channel: Channel, outcome: str, prompts: Sequence[str] = ()) -> str:
    await channel.play([*prompts, GOODBYE], barge_in=False)
    await channel.hangup("card_" + outcome)
    return outcome


async def _login(channel: Channel, desk: CardDesk, settings: CardFlowSettings) -> CardSession | str:
    """Step 1: the card, or the outcome of a session that ends here."""
    before: list[str] = []
    for _attempt in range(settings.login_attempts):
        number = await _ask(channel, [*before, ENTER_NUMBER], settings.number_digits, settings)
        if not number:
            before = []
            continue
        pin = await _ask(channel, [ENTER_PIN], settings.pin_digits, settings)
        login = await desk.login(channel.tenant_id, channel.caller, number, pin or "")
        if login.result is LoginResult.OK and login.card is not None:
            return login.card
        said = _SAY_LOGIN.get(login.result)
        if said is not None:
            log.info("event=card_refused call=%s result=%s", channel.call_id, login.result.value)
            return await _goodbye(channel, login.result.value, [said])
        before = [INVALID]
    log.info("event=card_login_failed call=%s caller=%s", channel.call_id, channel.caller)
    return await _goodbye(channel, "login_failed", before)


def time_prompts(authorization: Authorization) -> list[str]:
    """The prompts of "you have N minutes for this call" (in seconds when under one
    minute); none for a call without a limit."""
    seconds = authorization.max_seconds
    if seconds is None:
        return []
    said = say_duration_minutes(seconds // 60) if seconds >= 60 else say_duration(seconds)
    return ["you_have", *said, "for_this_call"]


async def run_card(
    channel: Channel,
    desk: CardDesk,
    dialer: Dialer,
    settings: CardFlowSettings | None = None,
) -> str:
    """Serve one calling-card call (module docstring); returns the outcome for the log."""
    settings = settings or CardFlowSettings()
    card = await _login(channel, desk, settings)
    if isinstance(card, str):
        return card
    before = [BALANCE_IS, *say_amount(desk.balance(card), card.currency)]
    silent = 0
    for _attempt in range(settings.max_calls):
        number = await _ask(
            channel, [*before, ENTER_DESTINATION], settings.destination_digits, settings
        )
        before = []
        if number is None:
            silent += 1
            if silent >= settings.silences:
                return await _goodbye(channel, "no_destination")
            continue
        if not number:  # "#" alone: no further call
            return await _goodbye(channel, "done")
        silent = 0
        outcome = await _call(channel, desk, dialer, card, number)
        if isinstance(outcome, str):
            return outcome
        before = outcome
    return await _goodbye(channel, "too_many_calls")


async def _call(
    channel: Channel, desk: CardDesk, dialer: Dialer, card: CardSession, number: str
) -> str | list[str]:
    """Steps 4-5 for one destination: the session's outcome when the call left the
    service, else the prompts to play before asking for the next number."""
    key = channel.call_id
    verdict = desk.authorize(card, number, key)
    if isinstance(verdict, Refusal):
        log.info("event=card_call_refused call=%s to=%s why=%s", key, number, verdict.reason.value)
        return list(verdict.prompts)
    try:
        await channel.play(time_prompts(verdict))
        outcome = await dialer.dial(channel, number, verdict)
    except ChannelClosedError:  # hung up before the callee answered: nothing to charge
        desk.release(key)
        raise
    if outcome.status != 200:
        desk.release(key)
        return [failure_prompt(outcome.status, dialled=True)]
    if not outcome.returned:
        log.info("event=card_call_connected call=%s card=%s to=%s", key, card.card_id, number)
        return "connected"
    desk.settle(key, outcome.answered_seconds)
    limit = verdict.max_seconds
    cut = limit is not None and outcome.answered_seconds >= limit
    return [
        *([TIME_IS_UP] if cut else []),
        BALANCE_IS,
        *say_amount(desk.balance(card), card.currency),
    ]


async def run_balance(channel: Channel, balance: Decimal | None, currency: str = "") -> str:
    """Say the caller's balance (None: the caller has no account: ``call_not_allowed``)."""
    if balance is None:
        return await _goodbye(channel, "no_account", ["call_not_allowed"])
    await channel.play([BALANCE_IS, *say_amount(balance, currency)], barge_in=False)
    return await _goodbye(channel, "balance_said")
