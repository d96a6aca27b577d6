"""Dialog tests (RFC 3261 12), plus a whole call between two layers wired in memory."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from minipbx.sip import (
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    TransactionError,
    Via,
    build_request,
    parse,
)
from minipbx.sip.dialog import (
    ACCEPT,
    Dialog,
    DialogId,
    DialogState,
    Verdict,
    dialog_id_of,
    make_tag,
)
from minipbx.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTerminated,
    make_branch,
)
from minipbx.sip.uri import parse_uri

ALICE_CONTACT = "<sip:alice@192.0.2.10:5060>"
BOB_CONTACT = "<sip:bob@198.51.100.20:5062;transport=udp>"
RR = [
    ("Record-Route", "<sip:p2.biloxi.example.com;lr>"),
    ("Record-Route", "<sip:p1.atlanta.example.com;lr>"),
]


def via(branch: str = "z9hG4bKnashds8") -> Via:
    return Via("UDP", "192.0.2.10", 5060, {"branch": branch})


def bob_via(branch: str = "z9hG4bKbob1") -> Via:
    return Via("UDP", "198.51.100.20", 5062, {"branch": branch})


def invite(
    uri: str = "sip:bob@biloxi.example.com", extra: Iterable[tuple[str, str]] = ()
) -> Request:
    req = build_request(
        "INVITE",
        parse_uri(uri),
        via=via(),
        from_=NameAddr(parse_uri("sip:alice@atlanta.example.com"), "Alice", {"tag": "1928301774"}),
        to=NameAddr(parse_uri("sip:bob@biloxi.example.com"), "Bob"),
        call_id="a84b4c76e66710@pc33.atlanta.example.com",
        cseq=314159,
        headers=[("Contact", ALICE_CONTACT), *extra],
    )
    parsed = parse(bytes(req))
    assert isinstance(parsed, Request)
    return parsed


def response(
    req: Request, status: int, contact: str | None = BOB_CONTACT, **kw: object
) -> Response:
    headers = list(RR)
    if contact is not None:
        headers.append(("Contact", contact))
    resp = req.response(status, to_tag="a6c85cf", headers=headers)
    parsed = parse(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def uac_dialog() -> Dialog:
    req = invite()
    return Dialog.from_uac(req, response(req, 200))


def uas_dialog(extra: Iterable[tuple[str, str]] = RR) -> tuple[Dialog, Request]:
    req = invite(extra=extra)
    return Dialog.from_uas(req, response(req, 200)), req


def test_uac_dialog_from_2xx() -> None:
    d = uac_dialog()
    assert d.state is DialogState.CONFIRMED
    assert d.id == DialogId("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "a6c85cf")
    assert str(d.local_uri) == "sip:alice@atlanta.example.com"
    assert str(d.remote_uri) == "sip:bob@biloxi.example.com"
    assert d.local_seq == 314159 and d.remote_seq is None and d.invite_seq == 314159
    assert str(d.remote_target) == "sip:bob@198.51.100.20:5062;transport=udp"
    # RFC 3261 12.1.2: Record-Route reversed.
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p1.atlanta.example.com;lr",
        "sip:p2.biloxi.example.com;lr",
    ]
    assert not d.secure


def test_uac_early_dialog_confirmed_by_2xx_recomputes_route_set() -> None:
    req = invite()
    ringing = req.response(180, to_tag="a6c85cf", headers=[("Contact", BOB_CONTACT)])
    d = Dialog.from_uac(req, ringing)
    assert d.state is DialogState.EARLY and d.route_set == ()
    d.receive_response(req, response(req, 200, contact="<sip:bob@198.51.100.99>"))
    assert d.state is DialogState.CONFIRMED
    assert len(d.route_set) == 2 and str(d.remote_target) == "sip:bob@198.51.100.99"


def test_uac_early_dialog_ended_by_error() -> None:
    req = invite()
    d = Dialog.from_uac(req, response(req, 183))
    d.receive_response(req, response(req, 486))
    assert d.state is DialogState.TERMINATED


def test_no_dialog_without_to_tag_or_contact() -> None:
    req = invite()
    with pytest.raises(TransactionError):
        Dialog.from_uac(req, req.response(180))
    with pytest.raises(TransactionError):
        Dialog.from_uac(req, req.response(486, to_tag="x"))
    with pytest.raises(ParseError):
        Dialog.from_uac(req, req.response(200, to_tag="x"))
    bare = invite()
    bare.headers.remove("Contact")
    with pytest.raises(ParseError) as err:
        Dialog.from_uas(bare, bare.response(200, to_tag="x"))
    assert err.value.status == 400


def test_uas_dialog_from_invite() -> None:
    d, req = uas_dialog()
    assert d.state is DialogState.CONFIRMED
    assert d.id == DialogId(req.call_id, "a6c85cf", "1928301774")
    assert d.remote_seq == 314159 and d.local_seq is None
    assert str(d.remote_target) == "sip:alice@192.0.2.10:5060"
    # RFC 3261 12.1.1: Record-Route in order.
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p2.biloxi.example.com;lr",
        "sip:p1.atlanta.example.com;lr",
    ]
    assert str(d.local_uri) == "sip:bob@biloxi.example.com"


def test_secure_flag_needs_tls_and_sips() -> None:
    req = invite("sips:bob@biloxi.example.com")
    assert Dialog.from_uac(req, response(req, 200), tls=True).secure
    assert not Dialog.from_uac(req, response(req, 200), tls=False).secure
    plain = invite()
    assert not Dialog.from_uac(plain, response(plain, 200), tls=True).secure


def test_in_dialog_request_loose_routing() -> None:
    d = uac_dialog()
    bye = d.create_request("BYE", via=via("z9hG4bKbye"))
    parsed = parse(bytes(bye))
    assert isinstance(parsed, Request)
    assert str(parsed.uri) == "sip:bob@198.51.100.20:5062;transport=udp"
    assert parsed.headers.get_all("Route") == [
        "<sip:p1.atlanta.example.com;lr>",
        "<sip:p2.biloxi.example.com;lr>",
    ]
    assert (parsed.cseq.seq, parsed.cseq.method) == (314160, "BYE")
    assert parsed.from_.tag == "1928301774" and parsed.to.tag == "a6c85cf"
    assert parsed.from_.display == "Alice" and parsed.to.display == "Bob"
    assert parsed.call_id == d.call_id and d.local_seq == 314160
    assert parsed.headers.get("Contact") is None


def test_in_dialog_request_without_route_set() -> None:
    req = invite()
    resp = parse(bytes(req.response(200, to_tag="t", headers=[("Contact", BOB_CONTACT)])))
    assert isinstance(resp, Response)
    d = Dialog.from_uac(req, resp)
    info = d.create_request(
        "INFO", via=via(), body=b"Signal=5\r\n", content_type="application/dtmf"
    )
    assert info.uri == d.remote_target and info.headers.get_all("Route") == []
    assert info.body == b"Signal=5\r\n" and info.content_length == 10


def test_in_dialog_request_strict_router() -> None:
    d = uac_dialog()
    d.route_set = (
        NameAddr(parse_uri("sip:strict.example.com;method=INVITE;maddr=203.0.113.5")),
        NameAddr(parse_uri("sip:p2.biloxi.example.com;lr")),
    )
    req = d.create_request("BYE", via=via())
    # RFC 3261 12.2.1.1: the strict router's URI is the Request-URI (no method param),
    # the rest of the route set follows, and the remote target goes last.
    assert isinstance(req.uri, SipUri)
    assert str(req.uri) == "sip:strict.example.com;maddr=203.0.113.5"
    assert req.headers.get_all("Route") == [
        "<sip:p2.biloxi.example.com;lr>",
        "<sip:bob@198.51.100.20:5062;transport=udp>",
    ]


def test_ack_uses_invite_cseq_and_reinvite_increments() -> None:
    d = uac_dialog()
    ack = d.create_request("ACK", via=via("z9hG4bKack"))
    assert (ack.cseq.seq, ack.cseq.method) == (314159, "ACK")
    contact = NameAddr(parse_uri("sip:alice@192.0.2.10:5060"))
    reinvite = d.create_request("INVITE", via=via("z9hG4bKre"), contact=contact)
    assert reinvite.cseq.seq == 314160 and d.invite_seq == 314160
    assert reinvite.headers.get("Contact") == "<sip:alice@192.0.2.10:5060>"
    assert d.create_request("ACK", via=via("z9hG4bKack2")).cseq.seq == 314160
    assert d.create_request("BYE", via=via("z9hG4bKbye")).cseq.seq == 314161
    with pytest.raises(TransactionError):
        d.create_request("INVITE", via=via())  # no Contact
    with pytest.raises(TransactionError):
        d.create_request("CANCEL", via=via())


def test_uas_dialog_first_request_and_ack_without_invite() -> None:
    d, _ = uas_dialog()
    bye = d.create_request("BYE", via=bob_via())
    assert bye.cseq.seq == 1
    assert bye.from_.tag == "a6c85cf" and bye.to.tag == "1928301774"
    assert str(bye.uri) == "sip:alice@192.0.2.10:5060"
    assert bye.headers.get_all("Route")[0] == "<sip:p2.biloxi.example.com;lr>"
    with pytest.raises(TransactionError):
        d.create_request("ACK", via=bob_via())
    assert d.create_request("NOTIFY", via=bob_via(), cseq=100).cseq.seq == 100
    assert d.create_request("NOTIFY", via=bob_via()).cseq.seq == 101


def test_receive_request_checks_cseq_order() -> None:
    uac = uac_dialog()
    # Bob's side of the dialog sends requests to Alice.
    d, _ = uas_dialog()
    assert uac.id.local_tag == d.id.remote_tag

    def from_alice(method: str, seq: int, to_tag: str = "a6c85cf") -> Request:
        req = build_request(
            method,
            parse_uri("sip:bob@198.51.100.20:5062"),
            via=via(make_branch()),
            from_=NameAddr(parse_uri("sip:alice@atlanta.example.com"), None, {"tag": "1928301774"}),
            to=NameAddr(parse_uri("sip:bob@biloxi.example.com"), None, {"tag": to_tag}),
            call_id=d.call_id,
            cseq=seq,
        )
        parsed = parse(bytes(req))
        assert isinstance(parsed, Request)
        return parsed

    assert d.receive_request(from_alice("INFO", 314160)) is ACCEPT and d.remote_seq == 314160
    verdict = d.receive_request(from_alice("INFO", 314150))
    assert verdict == Verdict(False, 500, "CSeq out of order") and d.remote_seq == 314160
    assert d.receive_request(from_alice("ACK", 314159)) is ACCEPT  # INVITE's number
    assert d.receive_request(from_alice("BYE", 314161)).ok
    assert d.receive_request(from_alice("BYE", 314162, to_tag="other")).status == 481
    d.terminate()
    assert d.receive_request(from_alice("BYE", 314163)).status == 481
    with pytest.raises(TransactionError):
        d.create_request("BYE", via=bob_via())


def test_target_refresh_on_2xx_only() -> None:
    d = uac_dialog()
    contact = NameAddr(parse_uri("sip:alice@192.0.2.10:5060"))
    reinvite = d.create_request("INVITE", via=via("z9hG4bKre"), contact=contact)
    d.receive_response(reinvite, response(reinvite, 491, contact="<sip:bob@203.0.113.7>"))
    assert str(d.remote_target) == "sip:bob@198.51.100.20:5062;transport=udp"
    assert d.state is DialogState.CONFIRMED  # a failed re-INVITE keeps the dialog
    d.receive_response(reinvite, response(reinvite, 200, contact="<sip:bob@203.0.113.7>"))
    assert str(d.remote_target) == "sip:bob@203.0.113.7"
    assert len(d.route_set) == 2  # the route set never changes in a confirmed dialog
    # UAS side: the remote target changes when we answer 2xx to the UPDATE.
    uas, _ = uas_dialog()
    update = build_request(
        "UPDATE",
        parse_uri("sip:bob@198.51.100.20:5062"),
        via=via(),
        from_=NameAddr(parse_uri("sip:alice@atlanta.example.com"), None, {"tag": "1928301774"}),
        to=NameAddr(parse_uri("sip:bob@biloxi.example.com"), None, {"tag": "a6c85cf"}),
        call_id=uas.call_id,
        cseq=314160,
        headers=[("Contact", "<sip:alice@192.0.2.77>")],
    )
    assert uas.receive_request(update).ok
    assert str(uas.remote_target) == "sip:alice@192.0.2.10:5060"
    uas.sent_response(update, update.response(200))
    assert str(uas.remote_target) == "sip:alice@192.0.2.77"


def test_481_and_408_end_the_dialog() -> None:
    d = uac_dialog()
    info = d.create_request("INFO", via=via())
    d.receive_response(info, info.response(481))
    assert d.state is DialogState.TERMINATED


def test_uas_early_dialog_states() -> None:
    req = invite()
    d = Dialog.from_uas(req, response(req, 180))
    assert d.state is DialogState.EARLY
    d.sent_response(req, response(req, 200))
    assert d.state is DialogState.CONFIRMED
    d2 = Dialog.from_uas(req, response(req, 183))
    d2.sent_response(req, response(req, 603))
    assert d2.state is DialogState.TERMINATED


def test_dialog_id_of_messages_on_both_sides() -> None:
    uac = uac_dialog()
    uas, req = uas_dialog()
    bye = uac.create_request("BYE", via=via())
    assert dialog_id_of(bye, incoming=False) == uac.id
    assert dialog_id_of(bye) == uas.id  # Bob receives it
    ok = bye.response(200)
    assert dialog_id_of(ok, incoming=False) == uas.id
    assert dialog_id_of(ok) == uac.id
    assert dialog_id_of(req) == DialogId(req.call_id, "", "1928301774")  # no To tag yet


def test_make_tag() -> None:
    assert make_tag(lambda n: b"\x01" * n) == "0101010101010101"
    assert make_tag() != make_tag()


def test_whole_call_between_two_layers_in_memory() -> None:
    """Alice's and Bob's transaction layers exchange bytes; dialogs drive the requests."""
    alice_addr, bob_addr = ("udp", "192.0.2.10", 5060), ("udp", "198.51.100.20", 5062)
    alice, bob = TransactionLayer(), TransactionLayer()
    now = 0.0

    def pump() -> None:
        moved = True
        while moved:
            moved = False
            for src, dst, src_addr in ((alice, bob, alice_addr), (bob, alice, bob_addr)):
                for data, _ in src.datagrams_to_send():
                    dst.receive(parse(data), src_addr, now)
                    moved = True

    def take(layer: TransactionLayer, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in layer.events() if isinstance(e, kind)]

    inv = invite()
    inv.headers.set("Via", str(via(make_branch())))
    client = alice.send_request(inv, bob_addr, reliable=False, now=now)
    pump()
    [incoming] = take(bob, RequestReceived)
    server = incoming.transaction
    ringing = incoming.request.response(180, to_tag="a6c85cf", headers=[("Contact", BOB_CONTACT)])
    bob.send_response(server, ringing, now)
    bob_dialog = Dialog.from_uas(incoming.request, ringing)
    pump()
    [got] = take(alice, ResponseReceived)
    alice_dialog = Dialog.from_uac(client.request, got.response)
    assert alice_dialog.id == dialog_id_of(got.response)
    now = 2.0
    ok = incoming.request.response(200, to_tag="a6c85cf", headers=[("Contact", BOB_CONTACT)])
    bob.send_response(server, ok, now)
    bob_dialog.sent_response(incoming.request, ok)
    pump()
    [got] = take(alice, ResponseReceived)
    alice_dialog.receive_response(client.request, got.response)
    assert alice_dialog.state is bob_dialog.state is DialogState.CONFIRMED
    ack = alice_dialog.create_request("ACK", via=via(make_branch()))
    alice.send_stateless(ack, bob_addr)
    pump()
    [acked] = take(bob, AckReceived)
    assert acked.transaction is server and bob_dialog.receive_request(acked.request).ok
    now = 10.0
    bye = bob_dialog.create_request("BYE", via=bob_via(make_branch()))
    bye_tx = bob.send_request(bye, alice_addr, reliable=False, now=now)
    pump()
    [incoming] = take(alice, RequestReceived)
    assert alice_dialog.receive_request(incoming.request).ok
    alice.send_response(incoming.transaction, incoming.request.response(200), now)
    alice_dialog.terminate()
    pump()
    [done] = take(bob, ResponseReceived)
    assert done.transaction is bye_tx and done.response.status == 200
    bob_dialog.receive_response(bye, done.response)
    bob_dialog.terminate()
    for layer in (alice, bob):
        while (deadline := layer.get_timer()) is not None:
            now = max(now, deadline)
            layer.handle_timer(now)
            pump()
        assert layer.transaction_count == 0
    assert len(take(alice, TransactionTerminated)) == 2  # INVITE and BYE transactions
