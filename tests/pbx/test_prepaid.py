"""PrepaidBook: reservations, settlement, refusals, and no overdraft under any interleaving."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from minipbx.pbx.charging import RateRule, charge
from minipbx.pbx.prepaid import (
    AccountKey,
    Authorization,
    BookSettings,
    PrepaidBook,
    Refusal,
    RefusalReason,
)

ALICE = AccountKey.user(1)
CARD = AccountKey.card(9)
PER_MINUTE = RateRule("49", Decimal("0.60"), Decimal("0.10"))  # 60/60
PER_SECOND = RateRule("1", Decimal("0.60"), first_increment=1, next_increment=1)


def authorized(result: Authorization | Refusal) -> Authorization:
    assert isinstance(result, Authorization), result
    return result


def refused(result: Authorization | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def test_authorize_reserves_the_longest_call_and_settle_charges_the_real_one() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("1.30"), currency="EUR")
    auth = authorized(book.authorize("c1", ALICE, PER_MINUTE))
    assert (auth.max_seconds, auth.reserved, auth.warn_at, auth.minutes) == (
        120,
        Decimal("1.3000"),
        60,
        2,
    )
    assert (auth.available, auth.currency, auth.account) == (Decimal("1.30"), "EUR", ALICE)
    account = book.account(ALICE)
    assert account is not None and account.available == 0
    assert book.holding("c1") == auth
    done = book.settle("c1", 45)
    assert done is not None
    assert (done.cost, done.seconds, done.new_balance) == (Decimal("0.7000"), 45, Decimal("0.60"))
    assert account.reserved == 0 and account.available == Decimal("0.60")
    assert book.holding("c1") is None
    assert book.settle("c1", 45) is None  # once only


def test_credit_limit_extends_what_may_be_spent() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("0.10"), credit_limit=Decimal("0.60"))
    auth = authorized(book.authorize("c1", ALICE, PER_MINUTE))
    assert auth.max_seconds == 60
    done = book.settle("c1", 60)
    assert done is not None and done.new_balance == Decimal("-0.6000")


def test_release_frees_the_money_of_an_unanswered_call() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("1.00"))
    auth = authorized(book.authorize("c1", ALICE, PER_MINUTE))
    refused(book.authorize("c2", ALICE, PER_MINUTE))  # everything is held by c1
    assert book.release("c1") == auth
    assert book.release("c1") is None
    account = book.account(ALICE)
    assert account is not None and account.balance == Decimal("1.00") and account.reserved == 0
    authorized(book.authorize("c2", ALICE, PER_MINUTE))


def test_settlement_never_exceeds_the_limit_the_call_was_given() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("0.30"))
    auth = authorized(book.authorize("c1", ALICE, PER_SECOND))
    assert auth.max_seconds == 30
    done = book.settle("c1", 31)  # cut a little late: the PBX's fault, not the caller's
    assert done is not None and (done.seconds, done.new_balance) == (30, Decimal(0))


@pytest.mark.parametrize(
    ("balance", "rate", "why"),
    [
        (Decimal("0.0999"), PER_MINUTE, "fee"),  # not even the connection fee
        (Decimal("0.10"), PER_MINUTE, "no time"),  # the fee, but no second of talk
        # 20 free seconds, but not the first charged minute: under the minimum
        (Decimal("0.59"), RateRule("1", Decimal("0.60"), free_seconds=20), "free only"),
    ],
)
def test_refused_under_the_minimum(balance: Decimal, rate: RateRule, why: str) -> None:
    book = PrepaidBook()
    book.set_account(ALICE, balance)
    refusal = refused(book.authorize("c1", ALICE, rate))
    assert refusal.reason is RefusalReason.INSUFFICIENT_BALANCE, why
    assert (refusal.status, refusal.sip_reason, refusal.prompts) == (
        402,
        "Payment Required",
        ("insufficient_balance",),
    )
    assert refusal.available == balance
    account = book.account(ALICE)
    assert account is not None and account.reserved == 0


def test_settings_minimum_cap_and_warning_lead() -> None:
    book = PrepaidBook(BookSettings(warning_lead=30, min_seconds=45, longest_call=600))
    book.set_account(ALICE, Decimal("0.40"))
    refused(book.authorize("c1", ALICE, PER_SECOND))  # 40 s < 45 s
    book.set_account(ALICE, Decimal("100"))
    auth = authorized(book.authorize("c2", ALICE, PER_SECOND))
    assert (auth.max_seconds, auth.reserved, auth.warn_at) == (600, Decimal("6.0000"), 570)
    free = authorized(book.authorize("c3", ALICE, RateRule("", Decimal(0))))
    assert free.max_seconds == 600  # the cap limits unpriced calls too
    with pytest.raises(ValueError):
        BookSettings(longest_call=0)


def test_no_warning_when_the_call_is_not_longer_than_the_lead() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("0.60"))
    assert authorized(book.authorize("c1", ALICE, PER_SECOND)).warn_at is None  # 60 s


def test_fee_only_rates_hold_the_fee_and_are_not_limited() -> None:
    book = PrepaidBook()
    book.set_account(CARD, Decimal("1"))
    auth = authorized(book.authorize("c1", CARD, RateRule("", Decimal(0), Decimal("0.25"))))
    assert (auth.max_seconds, auth.reserved, auth.warn_at, auth.minutes) == (
        None,
        Decimal("0.2500"),
        None,
        None,
    )
    done = book.settle("c1", 7200)
    assert done is not None and done.new_balance == Decimal("0.75")


def test_unknown_account_and_duplicate_call_keys() -> None:
    book = PrepaidBook()
    assert refused(book.authorize("c1", ALICE, PER_MINUTE)).reason is RefusalReason.NO_ACCOUNT
    book.set_account(ALICE, Decimal(10))
    authorized(book.authorize("c1", ALICE, PER_MINUTE))
    again = refused(book.authorize("c1", ALICE, PER_MINUTE))
    assert again.reason is RefusalReason.ALREADY_AUTHORIZED


def test_refreshing_an_account_keeps_its_reservations() -> None:
    book = PrepaidBook()
    book.set_account(ALICE, Decimal("1.30"))
    authorized(book.authorize("c1", ALICE, PER_MINUTE))
    book.set_account(ALICE, Decimal("2.60"))  # a top-up arrived
    account = book.account(ALICE)
    assert account is not None and account.available == Decimal("1.30")
    book.drop_account(ALICE)  # no longer prepaid: new calls refused, the running one settles
    assert refused(book.authorize("c2", ALICE, PER_MINUTE)).reason is RefusalReason.NO_ACCOUNT
    assert book.settle("c1", 10) is not None
    assert book.account(ALICE) is None and len(book) == 0


def test_many_simultaneous_calls_never_overdraw() -> None:
    book = PrepaidBook(BookSettings(longest_call=90))
    balance, credit = Decimal("10.00"), Decimal("2.50")
    book.set_account(ALICE, balance, credit)
    granted = [
        a
        for n in range(1000)
        if isinstance(a := book.authorize(f"c{n}", ALICE, PER_SECOND), Authorization)
    ]
    assert sum(a.reserved for a in granted) <= balance + credit
    assert len(granted) == 14  # 13 x 0.90 of 12.50, and one last call on the 0.80 left
    assert granted[-1].max_seconds == 80
    for auth in granted:  # every call talks to its limit and beyond
        book.settle(auth.call_key, 10_000)
    account = book.account(ALICE)
    assert account is not None
    assert account.balance >= -credit
    assert account.balance == balance - sum(
        charge(a.max_seconds or 0, PER_SECOND).total for a in granted
    )


# --- any interleaving ----------------------------------------------------------------------

RATES = [
    PER_MINUTE,
    PER_SECOND,
    RateRule("2", Decimal("0.05"), Decimal("0.02"), 30, 6, min_duration=10, free_seconds=5),
    RateRule("3", Decimal(0), Decimal("0.15")),
    RateRule("4", Decimal("1.999999"), first_increment=1, next_increment=1),
]


class Interleavings(RuleBasedStateMachine):
    """Calls start, end, fail and top-ups arrive in any order on one account."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.book = PrepaidBook(BookSettings(longest_call=None))
        self.credit = Decimal("1.50")
        self.book.set_account(ALICE, Decimal("3.00"), self.credit)
        self.count = 0
        self.spent = Decimal(0)
        self.added = Decimal("3.00")

    @rule(target=calls, rate=st.sampled_from(RATES))
    def start(self, rate: RateRule) -> str:
        self.count += 1
        key = f"c{self.count}"
        self.book.authorize(key, ALICE, rate)
        return key

    @rule(key=consumes(calls), seconds=st.integers(0, 20_000))
    def answered_then_ended(self, key: str, seconds: int) -> None:
        done = self.book.settle(key, seconds)
        if done is not None:
            self.spent += done.cost

    @rule(key=consumes(calls))
    def never_answered(self, key: str) -> None:
        self.book.release(key)

    @rule(amount=st.integers(1, 500).map(lambda n: Decimal(n) / 100))
    def top_up(self, amount: Decimal) -> None:
        account = self.book.account(ALICE)
        assert account is not None
        self.added += amount
        self.book.set_account(ALICE, account.balance + amount, self.credit)

    @invariant()
    def never_below_the_credit_limit(self) -> None:
        account = self.book.account(ALICE)
        assert account is not None
        assert account.available >= 0  # reservations fit in balance + credit
        assert account.balance >= -self.credit
        assert account.balance == self.added - self.spent


TestInterleavings = Interleavings.TestCase
TestInterleavings.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(
    st.lists(st.tuples(st.sampled_from(RATES), st.integers(0, 5000)), min_size=1, max_size=60),
    st.integers(0, 2000).map(lambda n: Decimal(n) / 100),
)
def test_calls_all_started_at_once_then_ended_never_overdraw(
    calls: list[tuple[RateRule, int]], balance: Decimal
) -> None:
    book = PrepaidBook()
    book.set_account(CARD, balance)
    for n, (rate, _) in enumerate(calls):
        book.authorize(str(n), CARD, rate)
    for n, (_, seconds) in enumerate(calls):
        book.settle(str(n), seconds)
    account = book.account(CARD)
    assert account is not None and account.balance >= 0 and account.reserved == 0
