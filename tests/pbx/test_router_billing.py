"""The dial plan router with billing: rated trunk calls, prepaid limits and refusals, and
calling-card transfers through the card's plan (a fake gate stands for the runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from minipbx.pbx.prepaid import Authorization, Refusal, RefusalReason
from minipbx.pbx.prepaid_gate import CardCall, CardUse
from tests.pbx.test_dialplan_router import LOCAL, OUT, _setup
from tests.pbx.test_services import FakeServices


@dataclass
class FakeGate:
    verdict: Authorization | Refusal
    asked: list[tuple[str, str]] = field(default_factory=list)
    cards: dict[str, CardCall] = field(default_factory=dict)

    def authorize(self, call_key: str, tenant_id: int, caller: str, number: str, **_: Any) -> Any:
        self.asked.append((caller, number))
        return self.verdict

    def card_call(self, call_key: str) -> CardCall | None:
        return self.cards.get(call_key)


def test_prepaid_limit_cuts_the_trunk_call() -> None:
    net, alice, _, _ = _setup(LOCAL, OUT)
    gate = FakeGate(Authorization("k", max_seconds=42))
    net.core.b2bua.router.billing = gate  # type: ignore[union-attr]
    alice.invite("02071234567")
    assert alice.responses[-1].status == 200
    assert gate.asked == [("100", "+442071234567")]  # rated by the number as routed
    (call,) = net.core.calls
    assert call.max_seconds == 42
    alice.invite("101")  # local calls are not billing's business
    assert len(gate.asked) == 1


def test_refused_call_hears_why_or_gets_the_status() -> None:
    net, alice, _, provider = _setup(LOCAL, OUT)
    gate = FakeGate(Refusal(RefusalReason.INSUFFICIENT_BALANCE, Decimal("0.01")))
    net.core.b2bua.router.billing = gate  # type: ignore[union-attr]
    alice.invite("02071234567")
    assert alice.responses[-1].status == 402 and not provider.invites  # no service host
    host = FakeServices()
    net.core.b2bua.services = host
    alice.invite("02071234567")
    assert alice.responses[-1].status == 200  # answered to play the refusal
    assert host.started[-1][0] == "prepaid:insufficient_balance" and not provider.invites


def test_card_transfer_routes_through_the_plan_with_the_card_limit() -> None:
    net, alice, _, _ = _setup(LOCAL, OUT)
    host = FakeServices()
    b2bua = net.core.b2bua
    b2bua.services = host
    alice.invite("101")
    (call,) = net.core.calls
    card = CardUse(5, 1, "9000", rate_table_id=None, dial_plan_id=None, currency="USD")
    gate = FakeGate(Authorization("k"), cards={call.id: CardCall(card, "02071234567", 30)})
    b2bua.router.billing = gate  # type: ignore[union-attr]
    route = b2bua.router.transfer(call, "number", "02071234567")
    assert route.kind == "trunk" and route.max_seconds == 30
    assert route.targets[0].uri.user == "+442071234567"  # type: ignore[union-attr]
