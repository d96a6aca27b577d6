"""Transaction layer tests: a fake clock, whole SIP messages, bytes through the parser."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipbx.sip import NameAddr, Request, Response, TransactionError, Via, build_request, parse
from minipbx.sip.transaction import (
    STATE_TIMERS,
    TRANSITIONS,
    AckReceived,
    AckTimedOut,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerSettings,
    TransactionKind,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    TxState,
    UnmatchedResponse,
    build_cancel,
    make_branch,
)
from minipbx.sip.uri import parse_uri

ALICE = ("udp", "192.0.2.10", 5060)
BOB = ("udp", "198.51.100.20", 5060)
BRANCH = "z9hG4bK74bf9"


def request(
    method: str = "INVITE",
    *,
    branch: str | None = BRANCH,
    transport: str = "UDP",
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "3848276298220188511@192.0.2.10",
    extra: Iterable[tuple[str, str]] = (),
    parsed: bool = True,
) -> Request:
    """A request from Alice to Bob, through the parser so it looks like one off the wire."""
    params: dict[str, str | None] = {"branch": branch} if branch is not None else {}
    to_params: dict[str, str | None] = {"tag": to_tag} if to_tag else {}
    req = build_request(
        method,
        parse_uri("sip:bob@biloxi.example.com"),
        via=Via(transport, "192.0.2.10", 5060, params),
        from_=NameAddr(parse_uri("sip:alice@atlanta.example.com"), "Alice", {"tag": "9fxced76sl"}),
        to=NameAddr(parse_uri("sip:bob@biloxi.example.com"), "Bob", to_params),
        call_id=call_id,
        cseq=cseq,
        headers=[("Contact", "<sip:alice@192.0.2.10>"), *extra],
    )
    if not parsed:
        return req
    out = parse(bytes(req))
    assert isinstance(out, Request)
    return out


def wire(msg: Response) -> Response:
    """A response as the peer receives it."""
    parsed = parse(bytes(msg))
    assert isinstance(parsed, Response)
    return parsed


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


def run(layer: TransactionLayer, until: float, step: float = 0.5) -> list[tuple[float, bytes]]:
    """Advance a fake clock by ``step`` up to ``until``, collecting (time, datagram)."""
    sent: list[tuple[float, bytes]] = []
    now = 0.0
    while now < until:
        now += step
        deadline = layer.get_timer()
        if deadline is not None and deadline <= now:
            layer.handle_timer(now)
        sent += [(now, data) for data, _ in layer.datagrams_to_send()]
    return sent


def drain(layer: TransactionLayer, start: float = 0.0) -> float:
    """Fire every timer in deadline order until none is left; return the final time."""
    now = start
    while (deadline := layer.get_timer()) is not None:
        now = max(now, deadline)
        layer.handle_timer(now)
    return now


def advance(layer: TransactionLayer, until: float) -> None:
    """Fire, in order, every timer due by ``until``."""
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)


def assert_empty(layer: TransactionLayer) -> None:
    assert layer.transaction_count == 0
    assert layer.get_timer() is None
    assert not layer._heap and not layer._accepted and layer._live == 0


# -- client INVITE ------------------------------------------------------------------------


def test_invite_udp_retransmission_schedule_until_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.send_request(invite, BOB, reliable=False, now=0.0)
    first = layer.datagrams_to_send()
    assert first == [(bytes(invite), BOB)]
    assert tx.state is TxState.CALLING and tx.destination == BOB
    sent = run(layer, 31.5)
    # Timer A: 0.5, 1, 2, 4, 8, 16 between sends (RFC 3261 17.1.1.2).
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data is first[0][0] for _, data in sent)  # serialized once
    assert layer.next_event() is None
    layer.handle_timer(32.0)  # timer B = 64*T1
    assert kinds(layer.events()) == [TransactionTimedOut, TransactionTerminated]
    assert tx.state is TxState.TERMINATED and tx.terminated
    assert_empty(layer)


def test_invite_provisional_stops_retransmission_and_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), BOB, reliable=False, now=0.0)
    layer.datagrams_to_send()
    layer.receive(wire(tx.request.response(100)), BOB, 0.2)
    assert tx.state is TxState.PROCEEDING
    assert layer.get_timer() is None  # ringing as long as the TU wants
    ev = layer.next_event()
    assert isinstance(ev, ResponseReceived) and ev.response.status == 100
    layer.receive(wire(tx.request.response(180, to_tag="b1")), BOB, 5.0)
    assert isinstance(layer.next_event(), ResponseReceived)  # every 1xx goes up


def test_non_invite_timer_e_capped_at_t2() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("OPTIONS"), BOB, reliable=False, now=0.0)
    assert tx.kind is TransactionKind.CLIENT_NON_INVITE and tx.state is TxState.TRYING
    layer.datagrams_to_send()
    sent = run(layer, 31.5)
    times = [t for t, _ in sent]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)  # timer F
    assert kinds(layer.events()) == [TransactionTimedOut, TransactionTerminated]
    assert_empty(layer)


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("BYE", to_tag="b1"), BOB, reliable=False, now=0.0)
    layer.datagrams_to_send()
    layer.receive(wire(tx.request.response(100)), BOB, 0.1)
    assert tx.state is TxState.PROCEEDING
    sent = run(layer, 13.0)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5, 12.5]
    layer.receive(wire(tx.request.response(200)), BOB, 13.0)
    assert tx.state is TxState.COMPLETED
    assert kinds(layer.events()) == [ResponseReceived, ResponseReceived]
    layer.receive(wire(tx.request.response(200)), BOB, 13.1)  # duplicate: absorbed
    assert layer.events() == []
    assert layer.get_timer() == 18.0  # timer K = T4
    layer.handle_timer(18.0)
    assert layer.datagrams_to_send() == []
    assert kinds(layer.events()) == [TransactionTerminated]
    assert_empty(layer)


def test_no_retransmissions_over_tcp() -> None:
    layer = TransactionLayer()
    invite = layer.send_request(request(transport="TCP"), BOB, reliable=True, now=0.0)
    options = layer.send_request(
        request("OPTIONS", branch="z9hG4bKopt", transport="TCP"), BOB, reliable=True, now=0.0
    )
    assert len(layer.datagrams_to_send()) == 2
    assert layer.get_timer() == 32.0  # only B and F run
    assert run(layer, 31.5) == []
    # Timer K is zero on a reliable transport: the 200 ends the transaction at once.
    layer.receive(wire(options.request.response(200)), BOB, 31.6)
    assert kinds(layer.events()) == [ResponseReceived, TransactionTerminated]
    # Timer D is zero too: a 486 is ACKed and the transaction ends at once.
    layer.receive(wire(invite.request.response(486, to_tag="b1")), BOB, 31.7)
    assert [parse(d).method for d, _ in layer.datagrams_to_send()] == ["ACK"]  # type: ignore[union-attr]
    assert kinds(layer.events()) == [ResponseReceived, TransactionTerminated]
    assert_empty(layer)


def test_duplicate_final_responses_are_absorbed_and_reack() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), BOB, reliable=False, now=0.0)
    layer.datagrams_to_send()
    busy = wire(tx.request.response(486, to_tag="b1"))
    layer.receive(busy, BOB, 0.1)
    ack_bytes = layer.datagrams_to_send()
    assert len(ack_bytes) == 1 and tx.state is TxState.COMPLETED
    assert kinds(layer.events()) == [ResponseReceived]
    layer.receive(wire(tx.request.response(486, to_tag="b1")), BOB, 0.6)
    assert layer.datagrams_to_send() == ack_bytes  # the same ACK again (17.1.1.2)
    layer.receive(wire(tx.request.response(180, to_tag="b1")), BOB, 0.7)
    assert layer.events() == []  # not passed to the TU
    assert layer.get_timer() == pytest.approx(32.1)  # timer D
    drain(layer)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert_empty(layer)


def test_ack_for_487_follows_rfc3261_17_1_1_3() -> None:
    layer = TransactionLayer()
    routes = [("Route", "<sip:p1.example.com;lr>"), ("Route", "<sip:p2.example.com;lr>")]
    tx = layer.send_request(request(extra=routes), BOB, reliable=False, now=0.0)
    invite = tx.request  # once the final response is in, the transaction keeps less of it
    layer.receive(wire(tx.request.response(180, to_tag="b1")), BOB, 0.1)
    cancel = build_cancel(tx.request)
    ctx = layer.send_request(cancel, BOB, reliable=False, now=1.0)
    assert ctx.kind is TransactionKind.CLIENT_NON_INVITE
    layer.datagrams_to_send()
    layer.receive(wire(cancel.response(200, to_tag="b1")), BOB, 1.1)
    layer.receive(wire(tx.request.response(487, to_tag="b1")), BOB, 1.2)
    [(data, dest)] = layer.datagrams_to_send()
    ack = parse(data)
    assert isinstance(ack, Request) and dest == BOB and tx.ack is not None
    assert bytes(tx.ack) == data
    assert tx.request == invite.essentials()
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.call_id == invite.call_id and ack.from_ == invite.from_
    assert ack.to.tag == "b1" and ack.to.uri == invite.to.uri
    assert ack.vias == [invite.via] and ack.via.branch == BRANCH
    assert (ack.cseq.seq, ack.cseq.method) == (invite.cseq.seq, "ACK")
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.body == b"" and ack.content_length == 0
    got = [e for e in layer.events() if isinstance(e, ResponseReceived)]
    assert [(e.transaction, e.response.status) for e in got] == [(tx, 180), (ctx, 200), (tx, 487)]


def test_client_invite_2xx_accepted_passes_retransmissions_and_forks() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), BOB, reliable=False, now=0.0)
    layer.datagrams_to_send()
    ok = wire(tx.request.response(200, to_tag="b1"))
    layer.receive(ok, BOB, 0.2)
    assert tx.state is TxState.ACCEPTED
    layer.receive(wire(tx.request.response(200, to_tag="b1")), BOB, 0.7)  # retransmission
    layer.receive(wire(tx.request.response(200, to_tag="b2")), BOB, 0.8)  # another fork
    layer.receive(wire(tx.request.response(180, to_tag="b3")), BOB, 0.9)  # absorbed
    got = layer.events()
    assert kinds(got) == [ResponseReceived] * 3
    assert [e.response.to.tag for e in got if isinstance(e, ResponseReceived)] == ["b1"] * 2 + [
        "b2"
    ]
    assert layer.datagrams_to_send() == []  # the TU (not the transaction) ACKs a 2xx
    assert layer.get_timer() == pytest.approx(32.2)  # timer M = 64*T1
    drain(layer)
    assert kinds(layer.events()) == [TransactionTerminated]
    layer.receive(wire(tx.request.response(200, to_tag="b1")), BOB, 40.0)
    ev = layer.next_event()
    assert isinstance(ev, UnmatchedResponse) and ev.source == BOB
    assert_empty(layer)


def test_transport_error_terminates_client_transaction() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(transport="TCP"), BOB, reliable=True, now=0.0)
    layer.transport_error(tx, 0.1)
    assert kinds(layer.events()) == [TransportFailed, TransactionTerminated]
    layer.transport_error(tx, 0.2)  # late report: ignored
    assert_empty(layer)


def test_send_request_rejects_ack_missing_cookie_and_duplicates() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), BOB, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch="1234"), BOB, reliable=False, now=0.0)
    layer.send_request(request(), BOB, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(), BOB, reliable=False, now=0.0)


# -- server INVITE ------------------------------------------------------------------------


def receive_new(layer: TransactionLayer, req: Request, now: float = 0.0) -> ServerTransaction:
    layer.receive(req, ALICE, now)
    ev = layer.next_event()
    assert isinstance(ev, RequestReceived) and ev.request is req and ev.source == ALICE
    return ev.transaction


def test_server_invite_retransmits_final_on_g_until_ack_then_timer_i() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    assert tx.kind is TransactionKind.SERVER_INVITE and tx.source == ALICE
    assert not tx.reliable  # from the Via transport
    busy = tx.request.response(486, to_tag="b1")
    layer.send_response(tx, busy, 0.0)
    assert tx.state is TxState.COMPLETED and tx.final_sent
    assert layer.datagrams_to_send() == [(bytes(busy), ALICE)]
    sent = run(layer, 12.0)
    # Timer G: T1 doubling, capped at T2 (RFC 3261 17.2.1).
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert {d for _, d in sent} == {bytes(busy)}
    ack = parse(bytes(build_ack_from(tx.request, busy)))
    assert isinstance(ack, Request)
    layer.receive(ack, ALICE, 12.0)
    assert tx.state is TxState.CONFIRMED
    layer.receive(ack, ALICE, 12.1)  # retransmitted ACK: absorbed
    assert layer.events() == [] and layer.datagrams_to_send() == []
    assert layer.get_timer() == 17.0  # timer I = T4
    assert run(layer, 16.5) == []
    layer.handle_timer(17.0)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert_empty(layer)


def build_ack_from(invite: Request, response: Response) -> Request:
    """The ACK the client transaction would send for ``response``."""
    from minipbx.sip.transaction import build_ack

    return build_ack(invite, response)


def test_server_invite_timer_h_times_out_without_ack() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    layer.send_response(tx, tx.request.response(404, to_tag="b1"), 0.0)
    drain(layer)
    assert kinds(layer.events()) == [TransactionTimedOut, TransactionTerminated]
    assert_empty(layer)


def test_server_invite_over_tcp_ends_at_ack() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request(transport="TCP"))
    assert tx.reliable
    busy = tx.request.response(486, to_tag="b1")
    layer.send_response(tx, busy, 0.0)
    layer.datagrams_to_send()
    assert layer.get_timer() == 32.0  # H only, no G
    layer.receive(parse(bytes(build_ack_from(tx.request, busy))), ALICE, 1.0)
    assert kinds(layer.events()) == [TransactionTerminated]  # timer I is zero
    assert layer.datagrams_to_send() == []
    assert_empty(layer)


def test_automatic_100_trying_after_200ms() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    assert layer.datagrams_to_send() == []
    assert layer.get_timer() == 0.2
    layer.handle_timer(0.2)
    [(data, dest)] = layer.datagrams_to_send()
    trying = parse(data)
    assert isinstance(trying, Response) and trying.status == 100 and dest == ALICE
    assert trying.to.tag is None and tx.state is TxState.PROCEEDING


def test_no_automatic_100_when_tu_answers_in_time() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    ringing = tx.request.response(180, to_tag="b1")
    layer.send_response(tx, ringing, 0.05)
    assert layer.datagrams_to_send() == [(bytes(ringing), ALICE)]
    drain(layer)
    assert layer.datagrams_to_send() == []
    layer.receive(request(), ALICE, 1.0)  # retransmitted INVITE: last provisional again
    assert layer.datagrams_to_send() == [(bytes(ringing), ALICE)]
    assert layer.events() == []


def test_retransmitted_invite_before_any_response_gets_100_at_once() -> None:
    layer = TransactionLayer(TimerSettings(trying_delay=10.0))
    receive_new(layer, request())
    layer.receive(request(), ALICE, 0.1)
    [(data, _)] = layer.datagrams_to_send()
    assert parse(data).status == 100  # type: ignore[union-attr]
    assert layer.events() == []


def test_server_2xx_accepted_retransmits_until_ack_which_goes_to_tu() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    ok = tx.request.response(200, to_tag="b1", headers=[("Contact", "<sip:bob@198.51.100.20>")])
    layer.send_response(tx, ok, 0.0)
    assert tx.state is TxState.ACCEPTED
    assert layer.datagrams_to_send() == [(bytes(ok), ALICE)]
    sent = run(layer, 4.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5]  # RFC 3261 13.3.1.4
    layer.receive(request(), ALICE, 4.0)  # retransmitted INVITE: absorbed (RFC 6026 7.1)
    assert layer.datagrams_to_send() == [] and layer.events() == []
    ack = request("ACK", branch="z9hG4bKack1", to_tag="b1")
    layer.receive(ack, ALICE, 4.1)
    ev = layer.next_event()
    assert isinstance(ev, AckReceived) and ev.transaction is tx and ev.request is ack
    assert tx.acked
    assert run(layer, 31.5) == []  # retransmissions stopped
    layer.receive(ack, ALICE, 31.6)  # ACK retransmission: to the TU again
    assert isinstance(layer.next_event(), AckReceived)
    drain(layer)
    assert kinds(layer.events()) == [TransactionTerminated]  # timer L, no AckTimedOut
    layer.receive(ack, ALICE, 40.0)  # after L: still to the TU, without a transaction
    ev = layer.next_event()
    assert isinstance(ev, AckReceived) and ev.transaction is None
    assert_empty(layer)


def test_server_2xx_never_acked_reports_ack_timeout() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request())
    layer.send_response(tx, tx.request.response(200, to_tag="b1"), 0.0)
    first = layer.datagrams_to_send()
    sent = run(layer, 40.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(d == first[0][0] for _, d in sent)
    got = layer.events()
    assert kinds(got) == [AckTimedOut, TransactionTerminated]
    assert_empty(layer)


def test_server_2xx_over_tcp_is_not_retransmitted() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request(transport="TCP"), 0.0)
    layer.send_response(tx, tx.request.response(200, to_tag="b1"), 0.0)
    assert len(layer.datagrams_to_send()) == 1
    assert run(layer, 31.5) == []
    layer.receive(request("ACK", branch="z9hG4bKack", transport="TCP", to_tag="b1"), ALICE, 2)
    assert isinstance(layer.next_event(), AckReceived)
    drain(layer)
    assert kinds(layer.events()) == [TransactionTerminated]


def test_ack_to_unknown_2xx_goes_to_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKnew", to_tag="b9")
    layer.receive(ack, ALICE, 0.0)
    assert layer.events() == [AckReceived(ack, ALICE, None)]
    assert_empty(layer)


# -- server non-INVITE --------------------------------------------------------------------


def test_duplicate_non_invite_request_resends_last_response() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request("OPTIONS"))
    assert tx.kind is TransactionKind.SERVER_NON_INVITE and tx.state is TxState.TRYING
    layer.receive(request("OPTIONS"), ALICE, 0.5)  # absorbed: nothing to resend yet
    assert layer.datagrams_to_send() == [] and layer.events() == []
    ok = tx.request.response(200, to_tag="b1")
    layer.send_response(tx, ok, 0.6)
    assert layer.datagrams_to_send() == [(bytes(ok), ALICE)]
    layer.receive(request("OPTIONS"), ALICE, 1.5)
    assert layer.datagrams_to_send() == [(bytes(ok), ALICE)]
    assert layer.events() == []
    assert layer.get_timer() == pytest.approx(32.6)  # timer J = 64*T1
    drain(layer)
    assert kinds(layer.events()) == [TransactionTerminated]
    layer.receive(request("OPTIONS"), ALICE, 40.0)  # after J: a new transaction
    assert isinstance(layer.next_event(), RequestReceived)


@pytest.mark.parametrize("to_tag", [None, "a1"])
def test_completed_non_invite_keeps_bytes_and_rebuilds_its_messages(to_tag: str | None) -> None:
    layer = TransactionLayer()
    req = request("REGISTER", to_tag=to_tag)
    tx = receive_new(layer, req)
    ok = req.response(200, to_tag="b1", headers=[("Contact", "<sip:a@192.0.2.1>")])
    layer.send_response(tx, ok, 0.6)
    assert tx._request is None and tx._last_response is None  # only the bytes are kept
    assert tx.final_sent and tx.branch == req.via.branch
    assert tx.last_response == ok.essentials()
    assert tx.request.method == "REGISTER" and tx.request.uri == req.uri
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert tx.request.headers.get_all(name) == req.headers.get_all(name)
    drain(layer)  # terminated: what was rebuilt stays usable
    assert kinds(layer.events()) == [TransactionTerminated]
    assert tx.request.to.tag == to_tag and tx.last_response is not None
    assert tx.last_response.to.tag == (to_tag or "b1")
    # The To line is kept aside only when the response's To does not give it back.
    assert isinstance(tx._parts, tuple) == (to_tag is not None)


def test_provisional_to_non_invite_is_resent_for_retransmissions() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request("REGISTER"))
    trying = tx.request.response(100)
    layer.send_response(tx, trying, 0.1)
    assert tx.state is TxState.PROCEEDING
    layer.receive(request("REGISTER"), ALICE, 0.5)
    assert layer.datagrams_to_send() == [(bytes(trying), ALICE)] * 2


def test_timer_j_waits_in_a_queue_and_fires_in_deadline_order_with_the_heap() -> None:
    layer = TransactionLayer()
    done = []
    for i in range(3):
        req = request("REGISTER", branch=f"z9hG4bKj{i}")
        tx = receive_new(layer, req, float(i))
        layer.send_response(tx, req.response(200, to_tag="b1"), float(i))
        done.append(tx)
    # Timer B of a client INVITE over TCP (no retransmissions) falls between two Js.
    invite = layer.send_request(request(branch="z9hG4bKinv"), BOB, reliable=True, now=0.5)
    layer.datagrams_to_send()
    assert [e[2] for e in layer._heap] == [invite]  # the Js are not in the heap
    assert all(not tx._timers for tx in done)  # nor did they get a timer table
    assert layer.get_timer() == pytest.approx(32.0)
    layer.handle_timer(34.0)
    ended = [(type(e), e.transaction) for e in layer.events() if hasattr(e, "transaction")]
    assert ended == [
        (TransactionTerminated, done[0]),  # J at 32
        (TransactionTimedOut, invite),  # B at 32.5
        (TransactionTerminated, invite),
        (TransactionTerminated, done[1]),  # J at 33
        (TransactionTerminated, done[2]),  # J at 34
    ]
    assert_empty(layer)


def test_completed_non_invite_ended_by_a_transport_error_leaves_timer_j() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    tx = receive_new(layer, req)
    layer.send_response(tx, req.response(200, to_tag="b1"), 0.0)
    layer.transport_error(tx, 1.0)
    assert tx.terminated
    assert kinds(layer.events()) == [TransportFailed, TransactionTerminated]
    assert_empty(layer)  # the stale queue entry does not count as a timer
    layer.handle_timer(40.0)
    assert layer.events() == []


def test_completed_responses_wait_in_shared_spools_and_are_resent_from_them() -> None:
    layer = TransactionLayer()
    sent: dict[ServerTransaction, bytes] = {}
    for i in range(600):  # about 0.3 KiB each: several 64 KiB spools
        req = request("REGISTER", branch=f"z9hG4bKs{i}", call_id=f"c{i}")
        tx = receive_new(layer, req, i / 100)
        ok = req.response(200, to_tag=f"t{i}", headers=[("Contact", "<sip:a@192.0.2.1>")])
        layer.send_response(tx, ok, i / 100)
        sent[tx] = bytes(ok)
        assert tx._data == b"" and tx._spool is not None
    assert len({id(tx._spool) for tx in sent}) > 2
    layer.datagrams_to_send()
    for i, (tx, data) in enumerate(sent.items()):
        layer.receive(request("REGISTER", branch=f"z9hG4bKs{i}", call_id=f"c{i}"), ALICE, 5.0)
        assert layer.datagrams_to_send() == [(data, ALICE)]  # RFC 3261 17.2.2
        assert tx.last_response is not None and tx.last_response.to.tag == f"t{i}"
    # A response too big for the spool keeps its own bytes.
    big = request("MESSAGE", branch="z9hG4bKbig")
    tx = receive_new(layer, big, 5.0)
    large = big.response(200, to_tag="b", headers=[("X-Large", "x" * 9000)])
    layer.send_response(tx, large, 5.0)
    assert tx._spool is None and tx._data == bytes(large)
    layer.receive(request("MESSAGE", branch="z9hG4bKbig"), ALICE, 6.0)
    assert layer.datagrams_to_send()[-1] == (bytes(large), ALICE)
    drain(layer)
    assert_empty(layer)
    assert layer._spool is None  # let go with the last transaction


def test_illegal_transitions_raise() -> None:
    layer = TransactionLayer()
    tx = receive_new(layer, request("OPTIONS", transport="TCP"))
    layer.send_response(tx, tx.request.response(200, to_tag="b1"), 0.0)
    assert tx.terminated  # timer J is zero over TCP
    with pytest.raises(TransactionError, match="illegal in state Terminated"):
        layer.send_response(tx, tx.request.response(180, to_tag="b1"), 0.0)
    layer.events()
    tx2 = receive_new(layer, request("MESSAGE", branch="z9hG4bKm"))
    layer.send_response(tx2, tx2.request.response(200, to_tag="b1"), 0.0)
    with pytest.raises(TransactionError, match="1xx from TU is illegal in state Completed"):
        layer.send_response(tx2, tx2.request.response(180, to_tag="b1"), 0.0)
    with pytest.raises(TransactionError):
        layer.send_response(tx2, tx2.request.response(500, to_tag="b1"), 0.0)
    inv = receive_new(layer, request(branch="z9hG4bKi"))
    layer.send_response(inv, inv.request.response(486, to_tag="b1"), 0.0)
    with pytest.raises(TransactionError):
        layer.send_response(inv, inv.request.response(200, to_tag="b1"), 0.0)
    with pytest.raises(TransactionError, match="out of range"):
        layer.send_response(inv, inv.request.response(99), 0.0)


def test_transition_table_is_complete_for_timers() -> None:
    # Every timer a state arms has a transition in that state, and Terminated has none.
    for (kind, state), timers in STATE_TIMERS.items():
        for timer in timers:
            assert (kind, state, timer) in TRANSITIONS
    assert not [k for k in TRANSITIONS if k[1] is TxState.TERMINATED]


# -- CANCEL -------------------------------------------------------------------------------


def test_cancel_before_final_response() -> None:
    layer = TransactionLayer()
    inv = receive_new(layer, request())
    layer.send_response(inv, inv.request.response(180, to_tag="b1"), 0.0)
    cancel = parse(bytes(build_cancel(inv.request)))
    assert isinstance(cancel, Request)
    ctx = receive_new(layer, cancel, 1.0)
    assert ctx is not inv and ctx.kind is TransactionKind.SERVER_NON_INVITE
    assert layer.find_cancelled(cancel) is inv and not inv.final_sent
    layer.send_response(ctx, cancel.response(200, to_tag="b1"), 1.0)
    layer.send_response(inv, inv.request.response(487, to_tag="b1"), 1.0)
    assert [parse(d).status for d, _ in layer.datagrams_to_send()] == [180, 200, 487]  # type: ignore[union-attr]


def test_cancel_after_final_response_has_no_effect() -> None:
    layer = TransactionLayer()
    inv = receive_new(layer, request())
    layer.send_response(inv, inv.request.response(200, to_tag="b1"), 0.0)
    cancel = parse(bytes(build_cancel(inv.request)))
    assert isinstance(cancel, Request)
    ctx = receive_new(layer, cancel, 0.3)
    found = layer.find_cancelled(cancel)
    assert found is inv and found.final_sent and found.state is TxState.ACCEPTED
    layer.send_response(ctx, cancel.response(200, to_tag="b1"), 0.3)  # RFC 3261 9.2
    assert inv.state is TxState.ACCEPTED


def test_cancel_for_unknown_transaction_gets_481() -> None:
    layer = TransactionLayer()
    cancel = parse(bytes(build_cancel(request(branch="z9hG4bKgone"))))
    assert isinstance(cancel, Request)
    ctx = receive_new(layer, cancel)
    assert layer.find_cancelled(cancel) is None
    layer.send_response(ctx, cancel.response(481), 0.0)
    [(data, dest)] = layer.datagrams_to_send()
    assert parse(data).status == 481 and dest == ALICE  # type: ignore[union-attr]


def test_build_cancel_rfc3261_9_1() -> None:
    invite = request(extra=[("Route", "<sip:p1.example.com;lr>")])
    invite.headers.add("Via", "SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKbelow")
    cancel = build_cancel(invite, [("Reason", 'SIP;cause=200;text="Call completed elsewhere"')])
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.vias == [invite.via]  # top Via only: same branch as the INVITE
    assert cancel.to == invite.to and cancel.from_ == invite.from_
    assert cancel.call_id == invite.call_id
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.headers.get_all("Route") == ["<sip:p1.example.com;lr>"]
    assert cancel.headers.get("Reason") is not None
    with pytest.raises(TransactionError):
        build_cancel(request("OPTIONS"))


# -- RFC 2543 fallback --------------------------------------------------------------------


def test_rfc2543_fallback_matching() -> None:
    layer = TransactionLayer()
    old = request(branch=None)
    assert old.via.branch is None
    inv = receive_new(layer, old)
    busy = inv.request.response(486, to_tag="b1")
    layer.send_response(inv, busy, 0.0)
    layer.datagrams_to_send()
    layer.receive(request(branch=None), ALICE, 0.3)  # retransmission: matched
    assert layer.datagrams_to_send() == [(bytes(busy), ALICE)] and layer.events() == []
    # A different CSeq is a different transaction.
    other = receive_new(layer, request("OPTIONS", branch=None, cseq=2), 0.4)
    assert other is not inv
    # A CANCEL matches by Request-URI, tags, Call-ID, CSeq number and top Via.
    cancel = parse(bytes(build_cancel(old)))
    assert isinstance(cancel, Request)
    receive_new(layer, cancel, 0.5)
    assert layer.find_cancelled(cancel) is inv
    # An ACK with the wrong To tag does not match; one with our tag confirms.
    layer.receive(request("ACK", branch=None, to_tag="zz"), ALICE, 0.6)
    assert isinstance(layer.next_event(), AckReceived) and inv.state is TxState.COMPLETED
    layer.receive(request("ACK", branch=None, to_tag="b1"), ALICE, 0.7)
    assert inv.state is TxState.CONFIRMED and layer.events() == []


def test_rfc2543_different_sent_by_or_branch_do_not_match() -> None:
    layer = TransactionLayer()
    receive_new(layer, request(branch="z9hG4bKaaa"))
    receive_new(layer, request(branch="z9hG4bKbbb"))
    assert layer.transaction_count == 2


# -- memory and timers at scale -----------------------------------------------------------


def test_ten_thousand_transactions_leave_the_layer_empty() -> None:
    layer = TransactionLayer()
    now = 0.0
    for i in range(2500):
        now += 0.001
        call = f"c{i}"
        cli = layer.send_request(
            request(branch=f"z9hG4bKc{i}", call_id=call, parsed=False), BOB, False, now
        )
        layer.receive(cli.request.response(180, to_tag="t"), BOB, now)
        layer.receive(cli.request.response(486, to_tag="t"), BOB, now)
        opt = layer.send_request(
            request("OPTIONS", branch=f"z9hG4bKo{i}", parsed=False), BOB, False, now
        )
        layer.receive(opt.request.response(200, to_tag="t"), BOB, now)
        inv = request(branch=f"z9hG4bKs{i}", call_id=call, parsed=False)
        layer.receive(inv, ALICE, now)
        srv = layer.events()[-1]
        assert isinstance(srv, RequestReceived)
        layer.send_response(srv.transaction, inv.response(200, to_tag="u"), now)
        layer.receive(
            request("ACK", branch=f"z9hG4bKa{i}", call_id=call, to_tag="u", parsed=False),
            ALICE,
            now,
        )
        bye = request("BYE", branch=f"z9hG4bKb{i}", call_id=call, cseq=2, to_tag="u", parsed=False)
        layer.receive(bye, ALICE, now)
        srv = layer.events()[-1]
        assert isinstance(srv, RequestReceived)
        layer.send_response(srv.transaction, bye.response(200), now)
        layer.datagrams_to_send()
    assert layer.transaction_count == 10_000
    assert len(layer._heap) <= 2 * layer._live + 256  # stale entries are compacted
    drain(layer, now)
    terminated = [e for e in layer.events() if isinstance(e, TransactionTerminated)]
    assert len(terminated) == 10_000
    assert_empty(layer)
    # The tables sized for 10,000 transactions were let go (a dict never shrinks itself).
    assert sys.getsizeof(layer._server) < 1024 and sys.getsizeof(layer._client) < 1024


def test_client_transaction_types_and_branch_helper() -> None:
    bytes_seen: list[int] = []

    def entropy(n: int) -> bytes:
        bytes_seen.append(n)
        return bytes(range(n))

    branch = make_branch(entropy)
    assert branch == "z9hG4bK000102030405060708090a0b" and bytes_seen == [12]
    assert make_branch().startswith("z9hG4bK") and make_branch() != make_branch()
    layer = TransactionLayer()
    tx = layer.send_request(request(branch=branch), BOB, reliable=False, now=0.0)
    assert isinstance(tx, ClientTransaction) and tx.is_invite
    assert "INVITE" in repr(tx)


def test_timer_settings_validate_and_scale() -> None:
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)
    with pytest.raises(ValueError):
        TimerSettings(trying_delay=-1)
    layer = TransactionLayer(TimerSettings(t1=0.1, t2=0.4))
    layer.send_request(request("OPTIONS"), BOB, reliable=False, now=0.0)
    layer.datagrams_to_send()
    times = []
    while (deadline := layer.get_timer()) is not None:
        layer.handle_timer(deadline)
        times += [deadline for _ in layer.datagrams_to_send()]
    assert times[:4] == pytest.approx([0.1, 0.3, 0.7, 1.1])  # capped at T2 = 0.4
    assert times[-1] < 6.4  # timer F = 64*T1 = 6.4
    assert kinds(layer.events()) == [TransactionTimedOut, TransactionTerminated]


def test_events_are_frozen_and_validated() -> None:
    ack = request("ACK", to_tag="b1")
    ev = AckReceived(ack, ALICE)
    with pytest.raises(AttributeError):
        ev.source = BOB  # type: ignore[misc]
    with pytest.raises(ValueError):
        AckReceived(request("BYE", to_tag="b1"), ALICE)


def test_cancelled_invite_without_final_response_ends_after_64_t1() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), BOB, reliable=False, now=0.0)
    assert tx.branch == BRANCH
    layer.receive(wire(tx.request.response(180, to_tag="b1")), BOB, 0.1)
    cancel = build_cancel(tx.request)
    ctx = layer.send_request(cancel, BOB, reliable=False, now=1.0)
    layer.receive(wire(cancel.response(200, to_tag="b1")), BOB, 1.1)
    layer.events()
    advance(layer, 32.9)
    assert tx.state is TxState.PROCEEDING
    advance(layer, 33.0)  # RFC 3261 9.1: no 487 within 64*T1 of the CANCEL
    got = [e for e in layer.events() if e.transaction is tx]  # type: ignore[union-attr]
    assert got == [TransactionTimedOut(tx), TransactionTerminated(tx)]
    drain(layer)
    assert ctx.terminated
    assert_empty(layer)


# -- invariants over random interleavings -------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    reliable=st.booleans(),
    script=st.lists(
        st.tuples(
            st.sampled_from([100, 180, 183, 200, 202, 486, 487, 503]),
            st.sampled_from(["b1", "b2"]),
            st.floats(0, 40, allow_nan=False),
        ),
        max_size=8,
    ),
)
def test_client_transaction_invariants(
    method: str, reliable: bool, script: list[tuple[int, str, float]]
) -> None:
    layer = TransactionLayer()
    invite = request(method, transport="TCP" if reliable else "UDP")
    tx = layer.send_request(invite, BOB, reliable, 0.0)
    for status, tag, at in sorted(script, key=lambda item: item[2]):
        advance(layer, at)
        layer.receive(wire(invite.response(status, to_tag=tag)), BOB, at)
    end = drain(layer, 40.0)
    if not tx.terminated:  # ringing with no end: the TU cancels
        assert method == "INVITE" and tx.state is TxState.PROCEEDING
        layer.send_request(build_cancel(invite), BOB, reliable, end)
        drain(layer, end)
    assert_empty(layer)
    mine = [e for e in layer.events() if getattr(e, "transaction", None) is tx]
    assert mine[-1] == TransactionTerminated(tx)
    assert sum(isinstance(e, TransactionTerminated) for e in mine) == 1
    finals = [
        e.response.status
        for e in mine
        if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]
    timeouts = sum(isinstance(e, TransactionTimedOut) for e in mine)
    if method == "OPTIONS":
        assert len(finals) + timeouts == 1
    else:
        assert timeouts == 0 or not finals
        assert all(s < 300 for s in finals) or (len(finals) == 1 and finals[0] >= 300)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    reliable=st.booleans(),
    script=st.lists(
        st.tuples(
            st.sampled_from(["again", "ack", 100, 180, 200, 486]),
            st.floats(0, 40, allow_nan=False),
        ),
        max_size=8,
    ),
)
def test_server_transaction_invariants(
    method: str, reliable: bool, script: list[tuple[str | int, float]]
) -> None:
    layer = TransactionLayer()
    transport = "TCP" if reliable else "UDP"
    tx = receive_new(layer, request(method, transport=transport))
    sent_by_tu = {100}
    for op, at in sorted(script, key=lambda item: item[1]):
        advance(layer, at)
        if op == "again":
            if not tx.terminated:  # later it would start a new transaction
                layer.receive(request(method, transport=transport), ALICE, at)
        elif op == "ack":
            layer.receive(request("ACK", transport=transport, to_tag="b1"), ALICE, at)
        else:
            assert isinstance(op, int)
            final_before = tx.final_sent or tx.terminated
            try:
                layer.send_response(tx, tx.request.response(op, to_tag="b1"), at)
            except TransactionError:
                assert final_before and not (
                    method == "INVITE" and op == 200 and tx.state is TxState.ACCEPTED
                )
            else:
                sent_by_tu.add(op)
    end = drain(layer, 40.0)
    if not tx.terminated:  # the TU never answered
        assert not tx.final_sent
        layer.send_response(tx, tx.request.response(500, to_tag="b1"), end)
        sent_by_tu.add(500)
        drain(layer, end)
    assert_empty(layer)
    mine = [e for e in layer.events() if getattr(e, "transaction", None) is tx]
    assert mine[-1] == TransactionTerminated(tx)
    assert sum(isinstance(e, TransactionTerminated) for e in mine) == 1
    for data, dest in layer.datagrams_to_send():
        resp = parse(data)
        assert isinstance(resp, Response) and resp.status in sent_by_tu and dest == ALICE
