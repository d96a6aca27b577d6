"""Whole calls through the PBX core and B2BUA, in memory on a fake clock."""

from __future__ import annotations

from minipbx.pbx.call import CallState, Disposition
from minipbx.sip import NameAddr, Request, Response, SipUri, Via, parse
from minipbx.sip.dialog import Dialog
from minipbx.sip.message import build_request
from minipbx.sip.transaction import ServerTransaction, build_cancel, make_branch
from tests.pbx.phones import PBX, Net, Phone, sdp


def _pair(net: Net) -> tuple[Phone, Phone]:
    alice = net.phone("100", 5071)
    bob = net.phone("101", 5072)
    assert alice.register().status == 200
    assert bob.register().status == 200
    return alice, bob


def test_register_then_call_answered_and_hung_up_by_caller() -> None:
    net = Net()
    alice, bob = _pair(net)
    alice.invite("101")
    statuses = [r.status for r in alice.responses if r.cseq.method == "INVITE"]
    assert statuses[-3:] == [100, 180, 200] or statuses[-2:] == [180, 200]
    b_invite = bob.requests[-1]
    assert b_invite.method == "INVITE"
    assert b_invite.call_id != alice.invite_request.call_id  # the B leg is its own call
    assert b_invite.body == alice.invite_request.body  # SDP passes through
    answered = alice.responses[-1]
    assert answered.body == sdp(6000) and answered.to.tag
    (call,) = net.core.calls
    assert call.state is CallState.ANSWERED
    # ACK and BYE from alice, through the dialog she got
    dialog = Dialog.from_uac(alice.invite_request, answered)
    ack = dialog.create_request("ACK", via=_via(alice))
    alice.layer.send_stateless(ack, PBX)
    net.run()
    bye = dialog.create_request("BYE", via=_via(alice))
    alice.send(bye)
    assert alice.responses[-1].status == 200
    assert any(r.method == "BYE" for r in bob.requests)
    assert not list(net.core.calls)
    (ended,) = net.ended.calls
    assert ended.disposition is Disposition.ANSWERED and ended.hangup_by == "caller"
    net.advance(40)  # every transaction ends
    assert net.core.layer.transaction_count == 0


def test_busy_callee_gives_486() -> None:
    net = Net()
    alice, bob = _pair(net)
    bob.answer = Phone.busy
    alice.invite("101")
    assert alice.responses[-1].status == 486
    assert net.ended.calls[-1].disposition is Disposition.BUSY
    assert not list(net.core.calls)


def test_unregistered_callee_gives_480_and_unknown_404() -> None:
    net = Net()
    alice = net.phone("100", 5071)
    net.phone("101", 5072)  # exists, never registers
    alice.register()
    alice.invite("101")
    assert alice.responses[-1].status == 480
    alice.invite("999")
    assert alice.responses[-1].status == 404


def test_unauthenticated_invite_is_challenged_and_never_rings() -> None:
    net = Net()
    alice, bob = _pair(net)
    alice.invite("101", authenticate=False)
    assert alice.responses[-1].status == 407
    assert not any(r.method == "INVITE" for r in bob.requests)


def _to_core(net: Net, phone: Phone, request: Request) -> list[Response]:
    """Hand ``request`` to the core as if it came from ``phone``; what the core sent back."""
    message = parse(bytes(request))
    assert isinstance(message, Request)
    net.core.receive(message, phone.addr, net.clock.now)
    out = [parse(data) for data, _ in net.core.datagrams_to_send()]
    assert all(isinstance(m, Response) for m in out)
    return out  # type: ignore[return-value]


def test_challenges_are_stateless() -> None:
    """RFC 3261 8.2.7: 401/407 without a transaction; a retransmission gets a new nonce."""
    net = Net()
    alice, _bob = _pair(net)
    net.advance(40)
    assert net.core.layer.transaction_count == 0
    register = build_request(
        "REGISTER",
        SipUri("127.0.0.1"),
        via=Via("UDP", "127.0.0.1", alice.addr.port, {"branch": make_branch(), "rport": None}),
        from_=NameAddr(SipUri("127.0.0.1", "100"), None, {"tag": "r1"}),
        to=NameAddr(SipUri("127.0.0.1", "100")),
        call_id="stateless@127.0.0.1",
        cseq=1,
        headers=[("Contact", f"<sip:100@127.0.0.1:{alice.addr.port}>")],
    )
    first = _to_core(net, alice, register)
    again = _to_core(net, alice, register)  # the same branch: a retransmission
    assert [r.status for r in first + again] == [401, 401]
    nonces = {r.headers.get("WWW-Authenticate") for r in first + again}
    assert len(nonces) == 2
    invite = alice._request("INVITE", "101", "101", body=sdp(4000), content_type="application/sdp")
    (challenge,) = _to_core(net, alice, invite)
    assert challenge.status == 407 and challenge.to.tag
    to_line = f"To: {invite.headers.get('To')}"
    ack_text = (
        bytes(invite)
        .decode()
        .replace("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(to_line, f"{to_line};tag={challenge.to.tag}")
    )
    ack = parse(ack_text.encode())
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert _to_core(net, alice, ack) == []  # the ACK is ignored
    assert net.core.layer.transaction_count == 0 and not list(net.core.calls)
    # Answered before authentication: still in a transaction (retransmissions absorbed).
    odd = parse(bytes(invite).replace(b"CSeq:", b"Require: foo\r\nCSeq:", 1))
    assert isinstance(odd, Request)
    assert [r.status for r in _to_core(net, alice, odd)] == [420]
    assert net.core.layer.transaction_count == 1


def test_cancel_before_answer() -> None:
    net = Net()
    alice, bob = _pair(net)
    bob.answer = Phone.ring_only
    invite = alice.invite("101")
    assert alice.responses[-1].status == 180
    alice.send(build_cancel(invite))
    finals = [r.status for r in alice.responses if r.status >= 200]
    assert 487 in finals
    assert any(r.method == "CANCEL" for r in bob.requests)
    assert net.ended.calls[-1].disposition is Disposition.CANCELLED
    assert not list(net.core.calls)


def test_no_answer_timeout() -> None:
    net = Net()
    alice, bob = _pair(net)
    bob.answer = Phone.ring_only
    alice.invite("101")
    net.advance(31)
    assert alice.responses[-1].status == 480
    assert any(r.method == "CANCEL" for r in bob.requests)
    assert net.ended.calls[-1].disposition is Disposition.NO_ANSWER


def test_forking_first_answer_wins_other_cancelled() -> None:
    net = Net()
    alice, bob = _pair(net)
    bob2 = Phone(net, "101", "pw", 5073)
    bob.answer = Phone.ring_only
    assert bob2.register().status == 200
    alice.invite("101")
    assert alice.responses[-1].status == 200
    assert any(r.method == "CANCEL" for r in bob.requests)


def _via(phone: Phone) -> Via:
    return Via("UDP", "127.0.0.1", phone.addr.port, {"branch": make_branch(), "rport": None})


def _answered(net: Net) -> tuple[Phone, Phone, Dialog]:
    alice, bob = _pair(net)
    alice.invite("101")
    answered = alice.responses[-1]
    assert answered.status == 200
    dialog = Dialog.from_uac(alice.invite_request, answered)
    alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
    net.run()
    return alice, bob, dialog


def test_callee_hangs_up() -> None:
    net = Net()
    alice, bob, _ = _answered(net)
    b_invite = next(r for r in bob.requests if r.method == "INVITE")
    ok = next(r for r in net_responses_from(bob) if r.status == 200)
    bob_dialog = Dialog.from_uas(b_invite, ok)
    bob.send(bob_dialog.create_request("BYE", via=_via(bob)))
    assert bob.responses[-1].status == 200
    assert any(r.method == "BYE" for r in alice.requests)
    assert net.ended.calls[-1].hangup_by == "callee"


def test_reinvite_hold_is_relayed_both_ways() -> None:
    net = Net()
    alice, bob, dialog = _answered(net)
    hold = sdp(4000).replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    reinvite = dialog.create_request(
        "INVITE",
        via=_via(alice),
        contact=NameAddr(SipUri("127.0.0.1", "100", None, 5071)),
        body=hold,
        content_type="application/sdp",
    )
    alice.send(reinvite)
    relayed = bob.requests[-1]
    assert relayed.method == "INVITE" and b"a=sendonly" in relayed.body
    assert relayed.to.tag == "tag101"  # in bob's dialog with the PBX
    assert alice.responses[-1].status == 200  # bob's answer came back
    assert next(iter(net.core.calls)).state is CallState.ANSWERED


def test_in_dialog_request_for_unknown_dialog_gets_481() -> None:
    net = Net()
    alice, _bob, dialog = _answered(net)
    stray = dialog.create_request("INFO", via=_via(alice))
    stray.headers.set("Call-ID", "unknown@127.0.0.1")
    alice.send(stray)
    assert alice.responses[-1].status == 481


def test_dead_callee_is_detected_by_probe() -> None:
    net = Net()
    alice, bob, _ = _answered(net)
    del net.phones[bob.addr]  # bob vanishes without a BYE
    net.advance(60 + 40)  # probe interval, then the OPTIONS times out (64*T1)
    assert not list(net.core.calls)
    assert any(r.method == "BYE" for r in alice.requests)
    assert net.ended.calls[-1].reason == "dead_peer"


def test_no_state_left_after_calls_ending_every_way() -> None:
    """Answered and hung up by either side, busy, cancelled, unanswered: once the
    transactions' timers ran out, the core holds nothing but the bindings (``sizes()`` is
    also what ``kill -USR1`` logs and the soak benchmark compares)."""
    net = Net()
    alice, bob = _pair(net)
    for ending in ("caller_bye", "callee_bye", "busy", "cancel", "no_answer") * 20:
        bob.answer = {"busy": Phone.busy, "cancel": Phone.ring_only}.get(
            ending, Phone.ring_only if ending == "no_answer" else Phone.ring_and_answer
        )
        invite = alice.invite("101")
        if ending == "cancel":
            alice.send(build_cancel(invite))
        elif ending == "no_answer":
            net.advance(31)
        elif ending.endswith("_bye"):
            answered = alice.responses[-1]
            dialog = Dialog.from_uac(alice.invite_request, answered)
            alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
            net.run()
            if ending == "caller_bye":
                alice.send(dialog.create_request("BYE", via=_via(alice)))
            else:
                b_invite = [r for r in bob.requests if r.method == "INVITE"][-1]
                ok = net_responses_from(bob)[-1]
                bob.send(Dialog.from_uas(b_invite, ok).create_request("BYE", via=_via(bob)))
        assert not list(net.core.calls), ending
    net.advance(40)
    sizes = net.core.sizes()
    assert sizes.pop("bindings") == 2
    assert sizes.pop("digest_nonces") <= 100  # one per INVITE's challenge; they expire (300 s)
    assert set(sizes.values()) == {0}, {k: v for k, v in sizes.items() if v}
    assert len(net.ended.calls) == 100


def net_responses_from(phone: Phone) -> list[Response]:
    """Responses a phone sent (read back from its server transactions' last responses)."""
    return phone.sent_responses


def test_message_is_relayed_to_the_user() -> None:
    net = Net()
    alice, bob = _pair(net)
    msg = alice._request("MESSAGE", "101", "101", body=b"hello bob", content_type="text/plain")
    alice.send(msg)
    assert alice.responses[-1].status == 407
    alice.send(alice._retry_with_auth(msg, alice.responses[-1]))
    relayed = bob.requests[-1]
    assert relayed.method == "MESSAGE" and relayed.body == b"hello bob"
    assert relayed.call_id != msg.call_id
    assert alice.responses[-1].status == 200
    offline = alice._request("MESSAGE", "102", "102", body=b"x", content_type="text/plain")
    net.users.add_user("102", "pw")
    alice.send(offline)
    alice.send(alice._retry_with_auth(offline, alice.responses[-1]))
    assert alice.responses[-1].status == 480


def test_caller_bye_while_ringing_ends_the_attempt() -> None:
    net = Net()
    alice, bob = _pair(net)
    bob.answer = Phone.ring_only
    invite = alice.invite("101")
    ringing = alice.responses[-1]
    assert ringing.status == 180
    early = Dialog.from_uac(invite, ringing)
    alice.send(early.create_request("BYE", via=_via(alice)))
    statuses = [r.status for r in alice.responses]
    assert 487 in statuses  # the INVITE is answered 487
    assert any(r.method == "CANCEL" for r in bob.requests)
    assert not list(net.core.calls)


def test_one_100_trying_per_invite() -> None:
    net = Net()
    alice, _bob = _pair(net)
    alice.invite("101")
    trying = [r for r in alice.responses if r.status == 100 and r.cseq.seq == 2]
    assert len(trying) == 1


def test_callee_challenge_is_not_passed_to_the_caller() -> None:
    net = Net()
    alice, bob = _pair(net)

    def challenge(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        resp = request.response(407, to_tag=phone.to_tag)
        phone.layer.send_response(tx, resp, phone.net.clock.now)

    bob.answer = challenge
    alice.invite("101")
    assert alice.responses[-1].status == 403


def test_request_from_ourselves_is_a_loop() -> None:
    net = Net()
    net.core._is_self = lambda address: address.port == 5071
    alice = net.phone("100", 5071)
    alice.send(
        alice._request("INVITE", "101", "101", body=sdp(4000), content_type="application/sdp")
    )
    assert alice.responses[-1].status == 482


def test_call_without_ack_is_hung_up() -> None:
    net = Net()
    alice, bob = _pair(net)
    alice.invite("101")  # answered, but alice never ACKs the 200
    assert alice.responses[-1].status == 200
    net.advance(40)  # RFC 3261 13.3.1.4: 64*T1 without ACK ends the call
    assert not list(net.core.calls)
    (ended,) = net.ended.calls
    assert ended.reason == "no_ack" and ended.hangup_by == "system"
    assert any(r.method == "BYE" for r in bob.requests)
