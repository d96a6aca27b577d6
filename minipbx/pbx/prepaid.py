"""Prepaid balances in memory: reservations per call, so no set of calls can overdraw (sans-IO).

A :class:`PrepaidBook` holds the accounts (a prepaid user or a calling card): the balance as
the database last had it, the credit limit, and the money *reserved* by calls in progress.
The money a new call may use is ``balance + credit_limit - reserved``.

- :meth:`PrepaidBook.authorize` prices the longest call that money pays for under the
  destination's rate (:func:`~minipbx.pbx.charging.max_seconds`) and reserves what that
  call would cost. The call is refused when the money does not reach beyond the free
  seconds into the first charged block (the rate's minimum: free seconds are for short
  calls of paying customers, not for empty balances), or is under ``min_seconds``.
  Concurrent calls therefore never together spend more than ``balance + credit_limit``:
  each reserves from what the others left. (A call reserves everything it may use, so a
  second call at the same time on a small balance is refused; ``longest_call`` caps a
  reservation so large balances serve several calls at once.)
- The router cuts the answered call at :attr:`Authorization.max_seconds`; a warning tone or
  prompt goes at :attr:`Authorization.warn_at` seconds after the answer
  (``warning_lead`` seconds before the cut, 60 by default; None when the whole call is
  not longer than that).
- :meth:`PrepaidBook.settle` charges the real duration (never more than ``max_seconds``: the
  PBX promised to cut there, its own lateness is not the caller's debt) and frees the
  reservation; :meth:`PrepaidBook.release` frees it for a call that was never answered.

Reservations live only here, in memory, and never touch the stored balance: a restart
forgets them with the calls they belonged to, and the stored balance only ever goes down
by settled charges, each at most its reservation. Making settlements durable (one
transaction: balance and ledger entry) is the app's job (``minipbx.billing_runtime``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

from minipbx.pbx.charging import NOT_AFFORDABLE, Charge, RateRule, charge, max_seconds

DEFAULT_WARNING_LEAD = 60


class AccountKind(enum.Enum):
    """Who pays: a prepaid user (extension) or a calling card."""

    USER = "user"
    CARD = "card"


@dataclass(frozen=True, slots=True)
class AccountKey:
    """A user's or a card's account (its row id in ``users`` / ``cards``)."""

    kind: AccountKind
    id: int

    @classmethod
    def user(cls, user_id: int) -> AccountKey:
        """The account of user ``user_id``."""
        return cls(AccountKind.USER, user_id)

    @classmethod
    def card(cls, card_id: int) -> AccountKey:
        """The account of card ``card_id``."""
        return cls(AccountKind.CARD, card_id)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"


class RefusalReason(enum.Enum):
    """Why a call may not be made; each suggests a SIP answer and a prompt."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    UNRATED = "unrated"  # no rate covers the destination (toll-fraud guard)
    NO_RATE_TABLE = "no_rate_table"  # a prepaid account without a rate table
    NO_ACCOUNT = "no_account"  # the account is not (yet) loaded
    ALREADY_AUTHORIZED = "already_authorized"  # the call key holds a reservation already


# status, reason phrase, prompts (names in minipbx/prompts/<lang>/prompts.txt)
_ANSWERS: dict[RefusalReason, tuple[int, str, tuple[str, ...]]] = {
    # RFC 3261 21.4.3 reserves 402; prepaid platforms use it for "no credit".
    RefusalReason.INSUFFICIENT_BALANCE: (402, "Payment Required", ("insufficient_balance",)),
    RefusalReason.UNRATED: (403, "Destination Not Rated", ("call_not_allowed",)),
    RefusalReason.NO_RATE_TABLE: (403, "No Rate Table", ("call_not_allowed",)),
    RefusalReason.NO_ACCOUNT: (403, "No Prepaid Account", ("call_cannot_complete",)),
    RefusalReason.ALREADY_AUTHORIZED: (500, "Call Already Authorized", ("call_cannot_complete",)),
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call billing does not allow; ``status``/``sip_reason`` answer the caller and
    ``prompts`` tell them why when the PBX can play them."""

    reason: RefusalReason
    available: Decimal = Decimal(0)
    detail: str = ""

    @property
    def status(self) -> int:
        """The SIP status to answer the INVITE with."""
        return _ANSWERS[self.reason][0]

    @property
    def sip_reason(self) -> str:
        """The reason phrase to go with :attr:`status`."""
        return _ANSWERS[self.reason][1]

    @property
    def prompts(self) -> tuple[str, ...]:
        """Prompt names that explain the refusal."""
        return _ANSWERS[self.reason][2]


@dataclass(frozen=True, slots=True)
class Authorization:
    """A call billing allows: its rate, its limit and the money held for it.

    ``account`` None: a postpaid call that is only rated (for the CDR's cost); ``rate``
    None as well: a call billing does not look at (no limit, no cost).
    """

    call_key: str
    account: AccountKey | None = None
    rate: RateRule | None = None
    max_seconds: int | None = None  # cut the answered call then; None: no billing limit
    reserved: Decimal = Decimal(0)
    warn_at: int | None = None  # seconds after the answer to warn the caller
    available: Decimal = Decimal(0)  # what the account could spend before this call
    currency: str = ""

    @property
    def minutes(self) -> int | None:
        """Whole minutes the call may last (to announce; rounded down), None: no limit."""
        return None if self.max_seconds is None else self.max_seconds // 60


@dataclass(frozen=True, slots=True)
class Settlement:
    """What an ended call cost: the charge and the account's balance after it."""

    call_key: str
    account: AccountKey | None
    charge: Charge
    seconds: int  # the answered seconds charged (capped at the authorization's limit)
    new_balance: Decimal | None  # None for postpaid calls
    rate: RateRule
    currency: str = ""
    card_number: str | None = None  # a calling card's call: the card (for records)
    destination: str = ""  # the number the call was authorized for

    @property
    def cost(self) -> Decimal:
        """The total charged (4 decimal places)."""
        return self.charge.total


@dataclass(slots=True)
class Account:
    """A balance with its credit limit and the reservations of calls in progress."""

    key: AccountKey
    balance: Decimal
    credit_limit: Decimal = Decimal(0)
    currency: str = ""
    reservations: dict[str, Authorization] = field(default_factory=dict)
    dropped: bool = False  # no longer prepaid: forgotten once its calls are settled

    @property
    def reserved(self) -> Decimal:
        """Money held by calls in progress."""
        return sum((a.reserved for a in self.reservations.values()), Decimal(0))

    @property
    def available(self) -> Decimal:
        """What a new call may spend: balance plus credit limit, less the reservations."""
        return self.balance + self.credit_limit - self.reserved


@dataclass(frozen=True, slots=True)
class BookSettings:
    """How the book authorizes (DESIGN: configuration as a documented dataclass)."""

    warning_lead: int = DEFAULT_WARNING_LEAD  # seconds before the cut to warn the caller
    min_seconds: int = 0  # refuse calls the money cannot keep up this long
    longest_call: int | None = None  # cap a reservation (and the call) at this many seconds

    def __post_init__(self) -> None:
        if self.warning_lead < 0 or self.min_seconds < 0:
            raise ValueError("warning_lead and min_seconds must not be negative")
        if self.longest_call is not None and self.longest_call < 1:
            raise ValueError("longest_call must be at least 1 second (or None)")


class PrepaidBook:
    """Prepaid accounts and the reservations of their calls (see the module docstring)."""

    def __init__(self, settings: BookSettings | None = None) -> None:
        self.settings = settings or BookSettings()
        self._accounts: dict[AccountKey, Account] = {}
        self._calls: dict[str, AccountKey] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def set_account(
        self,
        key: AccountKey,
        balance: Decimal,
        credit_limit: Decimal = Decimal(0),
        currency: str = "",
    ) -> Account:
        """Create or refresh an account from the stored balance (its calls keep their
        reservations)."""
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = Account(key, balance, credit_limit, currency)
        else:
            account.balance, account.credit_limit = balance, credit_limit
            account.currency, account.dropped = currency, False
        return account

    def drop_account(self, key: AccountKey) -> None:
        """Forget an account (no longer prepaid); kept while calls still hold money on it."""
        account = self._accounts.get(key)
        if account is None:
            return
        if account.reservations:
            account.dropped = True
        else:
            del self._accounts[key]

    def account_keys(self) -> list[AccountKey]:
        """The accounts in the book."""
        return list(self._accounts)

    def account(self, key: AccountKey) -> Account | None:
        """The account, or None when it is not in the book."""
        return self._accounts.get(key)

    def holding(self, call_key: str) -> Authorization | None:
        """The authorization of a call in progress, or None."""
        key = self._calls.get(call_key)
        account = self._accounts.get(key) if key is not None else None
        return account.reservations.get(call_key) if account is not None else None

    def authorize(self, call_key: str, key: AccountKey, rate: RateRule) -> Authorization | Refusal:
        """Reserve the money for the longest call ``rate`` allows on the account."""
        if call_key in self._calls:
            return Refusal(RefusalReason.ALREADY_AUTHORIZED, detail=call_key)
        account = self._accounts.get(key)
        if account is None or account.dropped:
            return Refusal(RefusalReason.NO_ACCOUNT, detail=str(key))
        available = account.available
        longest = max_seconds(available, rate)
        settings = self.settings
        if longest == NOT_AFFORDABLE or (
            longest is not None and longest < max(rate.free_seconds + 1, settings.min_seconds)
        ):
            return Refusal(RefusalReason.INSUFFICIENT_BALANCE, available)
        cap = settings.longest_call
        if cap is not None and (longest is None or longest > cap):
            longest = cap
        reserved = charge(longest if longest is not None else 0, rate).total
        lead = settings.warning_lead
        warn_at = longest - lead if longest is not None and longest > lead else None
        authorization = Authorization(
            call_key, key, rate, longest, reserved, warn_at, available, account.currency
        )
        account.reservations[call_key] = authorization
        self._calls[call_key] = key
        return authorization

    def settle(self, call_key: str, seconds: int) -> Settlement | None:
        """The call was answered for ``seconds``: charge it, free its reservation.

        None when the call holds no reservation here (not a prepaid call, or settled or
        released already).
        """
        authorization, account = self._take(call_key)
        if authorization is None or account is None or authorization.rate is None:
            return None
        limit = authorization.max_seconds
        billed = max(0, seconds if limit is None else min(seconds, limit))
        cost = charge(billed, authorization.rate)
        account.balance -= cost.total
        return Settlement(
            call_key,
            account.key,
            cost,
            billed,
            account.balance,
            authorization.rate,
            account.currency,
        )

    def release(self, call_key: str) -> Authorization | None:
        """The call was never answered: free its reservation (returned; None if none)."""
        authorization, _ = self._take(call_key)
        return authorization

    def _take(self, call_key: str) -> tuple[Authorization | None, Account | None]:
        key = self._calls.pop(call_key, None)
        account = self._accounts.get(key) if key is not None else None
        if account is None or key is None:
            return None, None
        authorization = account.reservations.pop(call_key, None)
        if account.dropped and not account.reservations:
            del self._accounts[key]
        return authorization, account
