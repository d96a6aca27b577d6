"""Call detail records of whole calls (in memory, fake clock) and the held BYE answer."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from minipbx.pbx.call import Route
from minipbx.pbx.cdr import record_of
from minipbx.sip import Via
from minipbx.sip.dialog import Dialog
from minipbx.sip.transaction import make_branch
from minipbx.transport.address import Address
from tests.pbx.phones import PBX, Net, Phone


def _via(phone: Phone) -> Via:
    return Via("UDP", "127.0.0.1", phone.addr.port, {"branch": make_branch(), "rport": None})


def _answered_call(net: Net) -> tuple[Phone, Dialog]:
    alice = net.phone("100", 5071)
    bob = net.phone("101", 5072)
    assert alice.register().status == 200 and bob.register().status == 200
    alice.invite("101")
    answered = alice.responses[-1]
    assert answered.status == 200
    dialog = Dialog.from_uac(alice.invite_request, answered)
    alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
    net.run()
    return alice, dialog


def _offset(net: Net) -> float:
    return net.clock.wall - net.clock.now


def test_answered_call_record() -> None:
    net = Net()
    alice, dialog = _answered_call(net)
    net.advance(61.5)
    bye = dialog.create_request("BYE", via=_via(alice), headers=[("Reason", "Q.850;cause=16")])
    alice.send(bye)
    (call,) = net.ended.calls
    record = record_of(call, _offset(net), "u-1")
    assert record.uuid == "u-1"
    assert record.call_id == alice.invite_request.call_id
    assert record.caller_number == "100" and record.called_number == "101"
    assert record.routed_number == "101" and record.route_type == "local"
    assert record.trunk is None and record.tenant == "default"
    assert record.disposition == "ANSWERED" and record.sip_status == 200
    assert record.hangup_by == "caller" and record.reason_cause == "Q.850;cause=16"
    assert record.answer_time is not None
    assert record.start_time <= record.answer_time < record.end_time
    assert record.billable_seconds == 62  # 61.5 s answered: nearest second, half up
    assert record.duration >= Decimal("61.500")
    assert record.duration.as_tuple().exponent == -3  # milliseconds
    assert record.source_ip == "127.0.0.1"
    assert record.cost == 0 and record.currency == ""
    wall_end = datetime.fromtimestamp(round(net.clock.wall, 3), UTC)
    assert record.end_time == wall_end


def test_busy_and_unknown_records() -> None:
    net = Net()
    alice = net.phone("100", 5071)
    bob = net.phone("101", 5072)
    assert alice.register().status == 200 and bob.register().status == 200
    bob.answer = Phone.busy
    alice.invite("101")
    alice.invite("999")
    busy, unknown = (record_of(c, _offset(net), str(i)) for i, c in enumerate(net.ended.calls))
    assert (busy.disposition, busy.sip_status, busy.hangup_by) == ("BUSY", 486, "callee")
    assert busy.answer_time is None and busy.billable_seconds == 0
    assert (unknown.disposition, unknown.sip_status) == ("FAILED", 404)
    assert unknown.called_number == "999" and unknown.hangup_by == "system"


def test_long_values_are_cut_to_the_columns() -> None:
    net = Net()
    alice, dialog = _answered_call(net)
    alice.send(dialog.create_request("BYE", via=_via(alice), headers=[("Reason", "x" * 400)]))
    record = record_of(net.ended.calls[0], _offset(net), "u")
    assert len(record.reason_cause) == 255


def test_bye_answer_waits_for_the_record() -> None:
    net = Net()
    net.ended.hold = True
    alice, dialog = _answered_call(net)
    alice.send(dialog.create_request("BYE", via=_via(alice)))
    bye_answers = [r for r in alice.responses if r.cseq.method == "BYE"]
    assert bye_answers == []  # held: the record is not durable yet
    net.advance(2.0)  # alice retransmits; the PBX absorbs, still no answer
    assert not [r for r in alice.responses if r.cseq.method == "BYE"]
    (call,) = net.ended.calls
    net.core.b2bua.recorded(call, net.clock.now)
    net.run()
    assert [r.status for r in alice.responses if r.cseq.method == "BYE"] == [200]
    net.core.b2bua.recorded(call, net.clock.now)  # a second call sends nothing more
    net.run()
    assert [r.status for r in alice.responses if r.cseq.method == "BYE"] == [200]


class LimitRouter:
    """The local router with a duration limit on every route (as a dial plan rule sets)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def route(self, call: Any) -> Route:
        return dataclasses.replace(self.inner.route(call), max_seconds=self.seconds)

    def forward(self, call: Any, why: str, to: str | None = None) -> Route | None:
        return None


def test_duration_limit_cuts_both_legs_with_a_reason() -> None:
    net = Net()
    net.core.b2bua.router = LimitRouter(net.core.b2bua.router, 30.0)
    alice, _ = _answered_call(net)
    bob = net.phones[Address("udp", "127.0.0.1", 5072)]
    net.advance(29.5, step=0.25)
    assert list(net.core.calls)  # still up
    net.advance(1.0, step=0.25)
    assert not list(net.core.calls)
    for phone in (alice, bob):
        bye = [r for r in phone.requests if r.method == "BYE"]
        assert len(bye) == 1 and "duration limit" in (bye[0].headers.get("Reason") or "")
    (call,) = net.ended.calls
    record = record_of(call, _offset(net), "u")
    assert record.hangup_by == "system" and record.reason_cause == "max_duration"
    assert record.billable_seconds == 30 and record.disposition == "ANSWERED"
