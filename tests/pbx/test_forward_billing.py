"""Who pays for a forward out through a trunk: the forwarding user, not the caller, who
dialled an extension. In memory, with the real :class:`PrepaidGate` and book: unconditional,
busy and no-answer forwards, follow-me steps, calls in from a trunk, refusals, and a
replaced leg whose 2xx crosses the CANCEL."""

from __future__ import annotations

from decimal import Decimal

from minipbx.pbx.call import InboundTrunk
from minipbx.pbx.charging import RateIndex, RateRule
from minipbx.pbx.prepaid import AccountKey, PrepaidBook
from minipbx.pbx.prepaid_gate import PendingCharge, PrepaidGate
from minipbx.sip import Request
from minipbx.sip.transaction import ServerTransaction
from minipbx.store.billing_data import UserBilling
from tests.pbx.phones import Net, Phone
from tests.pbx.test_forwarding import _followme, _invites, _net, _phones, _statuses
from tests.pbx.test_services import FakeServices

OUT = {"pattern": "0", "action": "trunk", "target": "prov", "strip": 1, "prepend": "+44"}
LOCAL = {"pattern": "1", "action": "local"}
RATE = RateRule("44", Decimal("0.60"))  # 0.60 a minute, billed by the minute


def _billed(
    net: Net, balances: dict[str, Decimal], postpaid: tuple[str, ...] = ()
) -> tuple[PrepaidGate, list[PendingCharge]]:
    """A real gate on the router: ``balances`` prepaid users, ``postpaid`` rated ones."""
    book = PrepaidBook()
    charges: list[PendingCharge] = []
    gate = PrepaidGate(book, lambda: net.clock.wall, charges.append)
    gate.tables[1] = RateIndex([RATE], "EUR")
    for ext, balance in balances.items():
        gate.users[(1, ext)] = UserBilling(int(ext), 1, ext, True, balance, Decimal(0), "EUR", 1)
        book.set_account(AccountKey.user(int(ext)), balance, currency="EUR")
    for ext in postpaid:
        gate.users[(1, ext)] = UserBilling(int(ext), 1, ext, False, Decimal(0), Decimal(0), "", 1)
    net.core.b2bua.router.billing = gate  # type: ignore[union-attr]
    return gate, charges


def _payer(gate: PrepaidGate, call_id: str) -> AccountKey | None:
    held = gate.holding(call_id)
    return held.account if held is not None else None


def test_an_unconditional_forward_out_is_paid_by_the_forwarding_user() -> None:
    net, provider = _net({"101": {"forward_unconditional": "0201234"}}, LOCAL, OUT)
    gate, charges = _billed(net, {"100": Decimal("0.50"), "101": Decimal("10.00")})
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200 and len(provider.invites) == 2  # 407, then 200
    (call,) = net.core.calls
    assert _payer(gate, call.id) == AccountKey.user(101)
    held = gate.holding(call.id)
    assert held is not None and held.max_seconds == 960  # 16 whole minutes of 0.60
    assert call.max_seconds == 960  # cut when the forwarding user's money runs out
    done = gate.settle(call.id, "cdr-1", 61)
    assert done is not None and done.account == AccountKey.user(101)
    assert [(c.account, c.amount) for c in charges] == [(AccountKey.user(101), Decimal("-1.2"))]


def test_a_forward_the_user_cannot_pay_for_rings_the_users_own_phones() -> None:
    net, provider = _net({"101": {"forward_unconditional": "0201234"}}, LOCAL, OUT)
    gate, _ = _billed(net, {"100": Decimal("100"), "101": Decimal("0")})
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    assert not provider.invites and _invites(p["101"]) == 1
    (call,) = net.core.calls
    assert gate.holding(call.id) is None  # the caller's money is not touched


def test_a_rated_postpaid_user_forwarding_out_gets_the_cost() -> None:
    net, provider = _net({"101": {"forward_unconditional": "0201234"}}, LOCAL, OUT)
    gate, charges = _billed(net, {}, postpaid=("101",))
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    (call,) = net.core.calls
    held = gate.holding(call.id)
    assert provider.invites and held is not None and held.rate == RATE
    assert call.max_seconds is None  # postpaid: rated, never cut
    done = gate.settle(call.id, "cdr-1", 30)
    assert done is not None and done.cost == Decimal("0.6") and not charges


def test_busy_and_no_answer_forwards_out_are_paid_by_the_forwarding_user() -> None:
    for why, setting in (("busy", "forward_busy"), ("no answer", "forward_no_answer")):
        policies = {"101": {setting: "0201234", "no_answer_seconds": 5}}
        net, provider = _net(policies, LOCAL, OUT)  # type: ignore[arg-type]
        gate, _ = _billed(net, {"100": Decimal("0"), "101": Decimal("3.00")})
        p = _phones(net, "100", "101")
        p["101"].answer = Phone.busy if why == "busy" else Phone.ring_only
        p["100"].invite("101")
        net.advance(6)
        assert provider.invites, why
        (call,) = net.core.calls
        assert _payer(gate, call.id) == AccountKey.user(101), why
        assert call.max_seconds == 300  # 3.00 at 0.60 a minute


def test_a_refused_busy_forward_goes_to_the_mailbox() -> None:
    net, provider = _net({"101": {"forward_busy": "0201234", "voicemail": True}}, LOCAL, OUT)
    _billed(net, {"101": Decimal("0")})
    host = FakeServices()
    net.core.b2bua.services = host
    p = _phones(net, "100", "101")
    p["101"].answer = Phone.busy
    p["100"].invite("101")
    assert not provider.invites
    assert host.started and host.started[0][0] == "voicemail:101:busy"


def test_a_call_in_from_a_trunk_forwarded_out_is_paid_by_the_forwarding_user() -> None:
    net, provider = _net({"101": {"forward_unconditional": "0201234"}}, LOCAL, OUT)
    gate, _ = _billed(net, {"101": Decimal("1.20")})
    p = _phones(net, "101")
    trunk = InboundTrunk("prov", 1, "default")
    outside = net.phone("+4420999", 5095)
    net.core._trunk_of = lambda source: trunk if source == outside.addr else None
    outside.invite("101", authenticate=False)
    assert outside.responses[-1].status == 200 and provider.invites
    (call,) = net.core.calls
    assert _payer(gate, call.id) == AccountKey.user(101) and call.max_seconds == 120
    assert _invites(p["101"]) == 0


def test_sequential_followme_steps_out_hold_one_reservation_at_a_time() -> None:
    policies = {"101": _followme("sequential", "0201:15, 0202:15", followme_own_first=False)}
    net, provider = _net(policies, LOCAL, OUT)
    provider.status = 486  # every external step is busy: the next one at once
    gate, _ = _billed(net, {"101": Decimal("6.00")})
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    numbers = {str(r.uri.user) for r in provider.invites}  # type: ignore[union-attr]
    assert numbers == {"+44201", "+44202"}
    assert _invites(p["101"]) == 1 and _statuses(p["100"])[-1] == 200  # own phone answers
    (call,) = net.core.calls
    assert gate.holding(call.id) is None  # the steps out were released, nothing charged
    assert gate.book.account(AccountKey.user(101)).reserved == 0  # type: ignore[union-attr]


def test_simultaneous_followme_leaves_out_steps_a_billed_owner_would_pay_for() -> None:
    policies = {"101": _followme("simultaneous", "0201:15, 102:15")}
    net, provider = _net(policies, LOCAL, OUT)
    _billed(net, {"101": Decimal("50")})
    p = _phones(net, "100", "101", "102")
    p["101"].answer = Phone.ring_only
    p["100"].invite("101")
    assert not provider.invites and _invites(p["102"]) == 1  # the local step still rings
    net, provider = _net(policies, LOCAL, OUT)  # the same owner, not billed: all ring
    _billed(net, {})
    p = _phones(net, "100", "101", "102")
    p["101"].answer = p["102"].answer = Phone.ring_only
    p["100"].invite("101")
    assert provider.invites


def test_a_replaced_leg_that_answers_late_is_hung_up() -> None:
    net, _ = _net({"101": {"forward_no_answer": "102", "no_answer_seconds": 5}})
    p = _phones(net, "100", "101", "102")
    late: list[tuple[ServerTransaction, Request]] = []

    def answer_after_cancel(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        ringing = request.response(180, to_tag=phone.to_tag)
        phone.layer.send_response(tx, ringing, phone.net.clock.now)
        late.append((tx, request))  # answers once the PBX has moved on (no 487 first)

    p["101"].answer = answer_after_cancel
    p["102"].answer = Phone.ring_only
    p["100"].invite("101")
    net.advance(5.5)
    assert _invites(p["102"]) == 1  # forwarded: 101's leg is replaced
    tx, request = late[0]
    contact = [("Contact", "<sip:101@127.0.0.1:5072>")]
    ok = request.response(200, to_tag=p["101"].to_tag, headers=contact)
    p["101"].layer.send_response(tx, ok, net.clock.now)
    net.run()
    assert any(r.method == "BYE" for r in p["101"].requests)  # ACKed and hung up
    (call,) = net.core.calls
    assert call.winner is None and call.callee == "102"


def test_a_providers_redirect_is_not_followed() -> None:
    """A 3xx from a trunk names a number no plan allowed and no one would pay for: the
    caller gets the failure; the money held for the call stays the forwarding user's."""
    net, provider = _net({"101": {"forward_unconditional": "0201234"}}, LOCAL, OUT)
    gate, _ = _billed(net, {"101": Decimal("5.00")})
    p = _phones(net, "100", "101")

    def redirect(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        provider.invites.append(request)
        contact = [("Contact", "<sip:0209999@127.0.0.1:5090>")]  # the plan would allow it
        phone.layer.send_response(tx, request.response(302, headers=contact), net.clock.now)

    provider.phone.answer = redirect
    p["100"].invite("101")
    assert len(provider.invites) == 1  # no second INVITE, to +44209999
    assert _statuses(p["100"])[-1] >= 300
    # Still the forwarding user's hold, freed when the call's record is priced (the app's
    # listener; this harness has none).
    assert _payer(gate, net.ended.calls[-1].id) == AccountKey.user(101)
