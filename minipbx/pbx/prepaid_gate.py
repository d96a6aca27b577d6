"""The call path's side of prepaid billing: authorize before routing, settle at the end.

:class:`PrepaidGate` is synchronous and works from memory only (the
:class:`~minipbx.pbx.prepaid.PrepaidBook`, the rate tables as
:class:`~minipbx.pbx.charging.RateIndex` objects, the billed users and the cards in use),
which ``minipbx.billing_runtime.BillingRuntime`` keeps loaded and refreshed. It decides
per call:

- a user neither prepaid nor with a rate table: not billed (an :class:`Authorization`
  without rate or limit);
- a postpaid user with a rate table: rated; the CDR gets the cost, nothing is held;
- a prepaid user or a calling card: the longest call the money pays for is reserved;
- a destination no rate covers, for a billed caller: refused (toll-fraud guard).

When a call ends, :meth:`PrepaidGate.price_record` (or :meth:`PrepaidGate.settle`) charges
the answered time, puts the cost into the CDR and hands the charge to the runtime
(``on_charge``) to be written to the ledger.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from minipbx.pbx.call import Call
from minipbx.pbx.charging import RateIndex, RateRule, charge
from minipbx.pbx.prepaid import (
    AccountKey,
    AccountKind,
    Authorization,
    PrepaidBook,
    Refusal,
    RefusalReason,
    Settlement,
)
from minipbx.store.billing_data import UserBilling
from minipbx.store.cdrs import CdrRecord

log = logging.getLogger("minipbx.billing")


@dataclass(frozen=True, slots=True)
class CardUse:
    """A card logged in on some call: what authorizing its calls needs."""

    card_id: int
    tenant_id: int
    number: str
    rate_table_id: int | None
    dial_plan_id: int | None
    currency: str


@dataclass(slots=True)
class CardCall:
    """A card call of a service call: what the router and the call listener need.

    ``max_seconds``/``warn_at``: the limit and warning of the transfer the card flow asked
    for (count from ``connected_at``, when its callee answered: loop time, the B2BUA's clock).
    """

    card: CardUse
    destination: str
    max_seconds: int | None = None
    warn_at: int | None = None
    connected_at: float | None = None

    @property
    def dial_plan_id(self) -> int | None:
        """The card's dial plan (None: the tenant's)."""
        return self.card.dial_plan_id


@dataclass(slots=True)
class PendingCharge:
    """A settled charge not yet in the ledger."""

    account: AccountKey
    amount: Decimal  # negative: what the ledger entry adds
    cdr_uuid: str
    note: str
    spooled: bool = False
    retry: bool = False  # written before without a clear outcome: look before writing

    def to_json(self) -> str:
        kind, owner = self.account.kind.value, self.account.id
        values = {"kind": kind, "id": owner, "amount": str(self.amount), "cdr_uuid": self.cdr_uuid}
        return json.dumps({**values, "note": self.note}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> PendingCharge:
        values = json.loads(line)
        key = AccountKey(AccountKind(values["kind"]), int(values["id"]))
        amount = Decimal(values["amount"])
        return cls(key, amount, str(values["cdr_uuid"]), str(values["note"]), True, True)


def _billed(user: UserBilling) -> bool:
    return user.prepaid or user.rate_table_id is not None


def wall_time(seconds: float) -> datetime:
    """Unix time as an aware UTC datetime (rates' validity dates)."""
    return datetime.fromtimestamp(seconds, UTC)


class PrepaidGate:
    """The call path's side of billing: synchronous, memory only (module docstring)."""

    def __init__(
        self,
        book: PrepaidBook,
        wall_clock: Callable[[], float],
        on_charge: Callable[[PendingCharge], None],
    ) -> None:
        self.book = book
        self.users: dict[tuple[int, str], UserBilling] = {}
        self.tables: dict[int, RateIndex] = {}
        self.cards: dict[int, CardUse] = {}
        self._wall = wall_clock
        self._on_charge = on_charge
        self._rated: dict[str, Authorization] = {}  # postpaid calls: rated, nothing held
        self._card_calls: dict[str, CardCall] = {}
        self._destinations: dict[str, str] = {}

    def authorize(
        self,
        call_key: str,
        tenant_id: int,
        caller: str,
        number: str,
        *,
        card_id: int | None = None,
        wall: float | None = None,
    ) -> Authorization | Refusal:
        """May ``caller`` (an extension of the tenant; or card ``card_id``) call ``number``?

        A user that is neither prepaid nor has a rate table: an Authorization with no
        rate and no limit (not billed). A rated postpaid user: the rate, no limit, nothing
        held (the CDR gets the cost). Prepaid users and cards: the longest call their money
        pays for, reserved. Unrated destinations are refused (toll-fraud guard).
        """
        when = wall_time(self._wall() if wall is None else wall)
        if card_id is not None:
            card = self.cards.get(card_id)
            if card is None:
                return Refusal(RefusalReason.NO_ACCOUNT, detail=f"card {card_id}")
            return self._prepaid(
                call_key, AccountKey.card(card_id), card.rate_table_id, number, when, card
            )
        user = self.users.get((tenant_id, caller))
        if user is None or not _billed(user):
            return Authorization(call_key)
        if user.prepaid:
            key = AccountKey.user(user.user_id)
            return self._prepaid(call_key, key, user.rate_table_id, number, when, None)
        rate = self._rate(user.rate_table_id, number, when)
        if isinstance(rate, Refusal):
            return rate
        index = self.tables.get(user.rate_table_id or 0)
        currency = user.currency or (index.currency if index is not None else "")
        rated = Authorization(call_key, rate=rate, currency=currency)
        self._rated[call_key] = rated
        return rated

    def bills(self, tenant_id: int, extension: str) -> bool:
        """True when the user's calls out are billed (prepaid, or rated postpaid)."""
        user = self.users.get((tenant_id, extension))
        return user is not None and _billed(user)

    def release_earlier(self, call_key: str) -> None:
        """Free what a call holds for a route it no longer rings (a follow-me step or a
        forward replaced it), so the next route can be authorized. A calling card's call
        keeps its card: its reservation belongs to the card flow."""
        if call_key not in self._card_calls and self.holding(call_key) is not None:
            self.release(call_key)

    def _rate(self, table_id: int | None, number: str, when: datetime) -> RateRule | Refusal:
        index = self.tables.get(table_id) if table_id is not None else None
        if index is None:
            return Refusal(RefusalReason.NO_RATE_TABLE, detail=f"rate table {table_id}")
        rate = index.lookup(number, when)
        if rate is None:
            log.warning("event=call_unrated table=%s number=%s", table_id, number)
            return Refusal(RefusalReason.UNRATED, detail=number)
        return rate

    def _prepaid(
        self,
        call_key: str,
        key: AccountKey,
        table_id: int | None,
        number: str,
        when: datetime,
        card: CardUse | None,
    ) -> Authorization | Refusal:
        rate = self._rate(table_id, number, when)
        if isinstance(rate, Refusal):
            return rate
        verdict = self.book.authorize(call_key, key, rate)
        if isinstance(verdict, Authorization):
            self._destinations[call_key] = number
            if card is not None:
                limits = verdict.max_seconds, verdict.warn_at
                self._card_calls[call_key] = CardCall(card, number, *limits)
        log.info(
            "event=prepaid_authorize call=%s account=%s to=%s rate=%s result=%s",
            call_key,
            key,
            number,
            rate.prefix,
            verdict.max_seconds if isinstance(verdict, Authorization) else verdict.reason.value,
        )
        return verdict

    def holding(self, call_key: str) -> Authorization | None:
        """The authorization of a call in progress (prepaid or rated), or None."""
        return self.book.holding(call_key) or self._rated.get(call_key)

    def card_call(self, call_key: str) -> CardCall | None:
        """The card call a service call ``call_key`` is placing or carrying, or None."""
        return self._card_calls.get(call_key)

    def arm_transfer(self, call_key: str, max_seconds: int | None) -> CardCall | None:
        """Narrow the limit of the card call about to be transferred (None: unchanged)."""
        card_call = self._card_calls.get(call_key)
        if card_call is None or max_seconds is None:
            return card_call
        if card_call.max_seconds is None or max_seconds < card_call.max_seconds:
            card_call.max_seconds = max_seconds
            lead = self.book.settings.warning_lead
            card_call.warn_at = max_seconds - lead if max_seconds > lead else None
        return card_call

    def connected(self, call_key: str, now: float) -> None:
        """The card call's callee answered at loop time ``now``: charging counts from here."""
        card_call = self._card_calls.get(call_key)
        if card_call is not None:
            card_call.connected_at = now

    def settle(
        self, call_key: str, cdr_uuid: str, seconds: int, *, answered: bool = True
    ) -> Settlement | None:
        """The call ended: charge ``seconds`` of answered time (release when not answered).

        Returns the settlement (its ``cost`` goes into the CDR), None when the call was
        not billed. Prepaid charges are queued for the ledger at once.
        """
        destination = self._destinations.pop(call_key, "")
        card = self._card_calls.pop(call_key, None)
        rated = self._rated.pop(call_key, None)
        if not answered:
            self.book.release(call_key)
            return None
        if rated is not None and rated.rate is not None:
            cost = charge(max(seconds, 0), rated.rate)
            return Settlement(
                call_key, None, cost, max(seconds, 0), None, rated.rate, rated.currency
            )
        done = self.book.settle(call_key, seconds)
        if done is None:
            return None
        log.info(
            "event=prepaid_settle call=%s account=%s seconds=%d cost=%s balance=%s",
            call_key,
            done.account,
            done.seconds,
            done.cost,
            done.new_balance,
        )
        number = card.card.number if card is not None else None
        done = replace(done, card_number=number, destination=destination)
        if done.cost > 0 and done.account is not None:
            what = f"card {number} " if number is not None else ""
            note = f"{what}call to {destination}, {done.seconds} s, rate {done.rate.prefix or '*'}"
            self._on_charge(PendingCharge(done.account, -done.cost, cdr_uuid, note))
        return done

    def release(self, call_key: str) -> None:
        """Forget a call that was never answered (its reservation is freed)."""
        self.settle(call_key, "", 0, answered=False)

    def price_record(self, call: Call, record: CdrRecord, seconds: int | None = None) -> CdrRecord:
        """:meth:`price`, returning only the record."""
        return self.price(call, record, seconds)[0]

    def price(
        self, call: Call, record: CdrRecord, seconds: int | None = None
    ) -> tuple[CdrRecord, Settlement | None]:
        """Settle ``call``; its CDR ``record`` priced, and the settlement.

        A priced record carries the cost and currency and the billing details: the rate's
        prefix and price per minute, the connection fee charged, the billed seconds (after
        free seconds, minimum and increments) and, for a calling-card call, the card number.
        A call that was not billed (or not answered) keeps its record as it was.

        ``seconds``: the answered seconds to charge; by default the record's
        ``billable_seconds``, and for a calling-card call the seconds from its callee's
        answer (:meth:`connected`) to the end (or to its callee's hang-up when the call
        came back to the card service, ``Call.returned_at``), to the nearest second (half
        up, as ``billable_seconds``). A card call whose callee never answered is not
        charged. Card calls that came back were settled by the card flow already
        (:meth:`settle`, which forgets them): the end of the whole call does not charge
        them again.
        """
        answered = call.answered is not None
        billable = record.billable_seconds if seconds is None else seconds
        card_call = self._card_calls.get(call.id)
        if card_call is not None:
            start, end = card_call.connected_at, call.ended
            back = call.returned_at  # its callee hung up; the call ended before the flow settled
            if start is not None and back is not None and back >= start:
                end = back
            answered = start is not None
            if seconds is None and start is not None and end is not None:
                billable = math.floor(round(max(end - start, 0.0), 3) + 0.5)
        done = self.settle(call.id, record.uuid, billable, answered=answered)
        if done is None:
            return record, None
        priced = replace(
            record,
            cost=done.cost,
            currency=done.currency or record.currency,
            rate_prefix=done.rate.prefix,
            connection_fee=done.charge.fee,
            price_per_minute=done.rate.price_per_minute,
            billed_seconds=done.charge.billed_seconds,
            card_number=done.card_number,
        )
        return priced, done
