"""The dial plan router with billing: rated trunk calls, prepaid limits and refusals, and
calling-card transfers through the card's plan (a fake gate stands for the runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from minipbx.pbx.call import Call, PassThrough
from minipbx.pbx.prepaid import Authorization, Refusal, RefusalReason
from minipbx.pbx.prepaid_gate import CardCall, CardUse
from minipbx.sip.dialog import Dialog
from tests.pbx.phones import PBX, Net, Phone
from tests.pbx.test_calls import _via
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

    def bills(self, tenant_id: int, extension: str) -> bool:
        return True

    def release_earlier(self, call_key: str) -> None:
        pass


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


class WarnRecorder(PassThrough):
    """Media end to end, but notes when the B2BUA asks for the warning."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.warned: list[tuple[str, float]] = []

    def warn(self, call: Call) -> bool:
        self.warned.append((call.id, self.net.clock.now))
        return False  # not relayed: the call goes on all the same


def test_the_prepaid_route_carries_the_warning_time() -> None:
    net, alice, _, _ = _setup(LOCAL, OUT)
    router = net.core.b2bua.router
    router.billing = FakeGate(Authorization("k", max_seconds=600, warn_at=540))  # type: ignore[union-attr]
    alice.invite("02071234567")
    (call,) = net.core.calls
    assert (call.max_seconds, call.warn_at) == (600, 540)
    route = router.route(call)
    assert (route.max_seconds, route.warn_at) == (600, 540)
    # No warning when billing names none (call shorter than the lead), nor when the call is
    # cut earlier for another reason (the user's own limit) than the money running out.
    router.billing = FakeGate(Authorization("k", max_seconds=50, warn_at=None))  # type: ignore[union-attr]
    assert router.route(call).warn_at is None
    net, alice, _, _ = _setup(LOCAL, OUT, max_call_seconds=300)
    router = net.core.b2bua.router
    router.billing = FakeGate(Authorization("k", max_seconds=600, warn_at=540))  # type: ignore[union-attr]
    alice.invite("02071234567")
    (call,) = net.core.calls
    assert (call.max_seconds, call.warn_at) == (300, None)


def _answered(net: Net, alice: Phone, number: str) -> Call:
    """``alice`` calls ``number``, which answers; she ACKs. The call."""
    alice.invite(number)
    dialog = Dialog.from_uac(alice.invite_request, alice.responses[-1])
    alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
    net.run()
    (call,) = net.core.calls
    return call


def test_the_caller_is_warned_once_at_answer_plus_warn_at_then_cut() -> None:
    net, alice, _, _ = _setup(LOCAL, OUT)
    b2bua = net.core.b2bua
    b2bua.router.billing = FakeGate(Authorization("k", max_seconds=90, warn_at=30))  # type: ignore[union-attr]
    anchor = WarnRecorder(net)
    b2bua.media = anchor
    call = _answered(net, alice, "02071234567")
    assert call.answered is not None and call.due <= call.answered + 30
    net.advance(29.5, step=0.25)
    assert anchor.warned == []
    net.advance(0.75, step=0.25)
    assert anchor.warned == [(call.id, call.answered + 30)]
    assert call.warn_at is None and call.due > net.clock.now  # sent once
    net.advance(59.0, step=0.25)
    assert len(anchor.warned) == 1 and list(net.core.calls)  # still up until the limit
    net.advance(1.0, step=0.25)
    assert not list(net.core.calls) and net.ended.calls[-1].reason == "max_duration"


class PrepareRecorder(WarnRecorder):
    """Also notes the warning time the anchor sees when a call's legs are rung."""

    def __init__(self, net: Any) -> None:
        super().__init__(net)
        self.prepared: list[float | None] = []

    def prepare(self, call: Call, targets: Any) -> None:
        self.prepared.append(call.warn_at)


def test_a_card_call_is_warned_counting_from_its_callees_answer() -> None:
    """A calling card's call (a transfer of the card service) is warned ``warn_at`` after
    its callee answers, not after the service answered; the anchor sees the warning when
    the transfer rings (so it relays the call)."""
    net, alice, _, provider = _setup(
        {"pattern": "500", "action": "service", "target": "card:main"}, LOCAL, OUT
    )
    b2bua = net.core.b2bua
    b2bua.services = host = FakeServices()
    anchor = PrepareRecorder(net)
    b2bua.media = anchor
    call = _answered(net, alice, "500")
    assert call.service == "card:main" and call.answered is not None
    card = CardUse(5, 1, "9000", rate_table_id=None, dial_plan_id=None, currency="USD")
    gate = FakeGate(Authorization("k"))
    gate.cards[call.id] = CardCall(card, "02071234567", max_seconds=120, warn_at=60)
    b2bua.router.billing = gate  # type: ignore[union-attr]
    net.advance(20.0, step=0.5)  # the caller types the number for 20 s
    b2bua.transfer(call, "number", "02071234567", net.clock.now, come_back=True)
    net.run()
    assert anchor.prepared[-1] == 60
    assert host.transfers == [200] and provider.invites
    connected = net.clock.now
    assert call.warn_at is not None and call.answered + call.warn_at == connected + 60
    net.advance(59.5, step=0.25)
    assert anchor.warned == []  # not 60 s after the service's answer
    net.advance(0.75, step=0.25)
    assert anchor.warned == [(call.id, connected + 60)]
