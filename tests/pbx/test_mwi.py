"""Message waiting indication (RFC 3842 over RFC 6665) through the PBX core, in memory."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from minipbx.pbx.core import CoreSettings, PbxCore
from minipbx.pbx.mwi import CONTENT_TYPE, EVENT, Counts, MwiSettings, summary_body
from minipbx.sip import NameAddr, Request, Response, SipUri, Via
from minipbx.sip.message import build_request
from minipbx.sip.transaction import RequestReceived, ResponseReceived, make_branch
from tests.pbx.phones import Net, Phone
from tests.pbx.phones import TestNetwork as LoopbackNetwork

_tags = itertools.count(1)


class Subscriber(Phone):
    """A phone that answers NOTIFY with ``notify_status`` (0: never answers)."""

    notify_status = 200

    def handle_events(self) -> None:
        now = self.net.clock.now
        while (event := self.layer.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                self.responses.append(event.response)
            elif isinstance(event, RequestReceived):
                req = event.request
                self.requests.append(req)
                status = self.notify_status if req.method == "NOTIFY" else 200
                if status:
                    self.layer.send_response(event.transaction, req.response(status), now)


class Boxes:
    """A MessageCounts provider the test sets."""

    def __init__(self) -> None:
        self.boxes: dict[tuple[int, str], tuple[int, int]] = {}

    def cached_counts(self, tenant_id: int, extension: str) -> Counts:
        return Counts(*self.boxes.get((tenant_id, extension), (0, 0)))


def make_net(settings: MwiSettings | None = None) -> tuple[Net, Boxes]:
    net = Net()
    if settings is not None:  # a core built with these MWI settings, like app.py would
        old = net.core
        net.core = PbxCore(
            network=LoopbackNetwork(),
            router=old.b2bua.router,
            listener=net.ended,
            authenticator=net.auth,
            registrar=net.registrar,
            guard=net.guard,
            wall_clock=lambda: net.clock.wall,
            settings=CoreSettings(mwi=settings),
        )
    counts = Boxes()
    net.core.mwi.counts = counts
    return net, counts


def subscriber(net: Net, ext: str, port: int, password: str = "pw") -> Subscriber:
    if net.users.lookup("default", ext) is None:
        net.users.add_user(ext, password)
    return Subscriber(net, ext, password, port)


def subscribe_request(
    phone: Phone,
    *,
    mailbox: str | None = None,
    expires: int | None = 3600,
    event: str = EVENT,
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    box = mailbox or phone.ext
    headers = [
        ("Contact", f"<sip:{phone.ext}@127.0.0.1:{phone.addr.port}>"),
        ("Event", event),
        ("Accept", CONTENT_TYPE),
        *extra,
    ]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    return build_request(
        "SUBSCRIBE",
        SipUri("127.0.0.1", box),
        via=Via("UDP", "127.0.0.1", phone.addr.port, {"branch": make_branch(), "rport": None}),
        from_=NameAddr(SipUri("127.0.0.1", phone.ext), None, {"tag": f"s{next(_tags)}"}),
        to=NameAddr(SipUri("127.0.0.1", box)),
        call_id=f"sub{next(_tags)}@127.0.0.1",
        cseq=1,
        headers=headers,
    )


def subscribe(phone: Phone, **kwargs: object) -> tuple[Request, Response]:
    """SUBSCRIBE, answering the digest challenge; the request sent last and its answer."""
    request = subscribe_request(phone, **kwargs)  # type: ignore[arg-type]
    phone.send(request)
    response = _answer_to(phone, request)
    if response.status == 401:
        request = phone._retry_with_auth(request, response)
        phone.send(request)
        response = _answer_to(phone, request)
    return request, response


def _answer_to(phone: Phone, request: Request) -> Response:
    answers = [
        r for r in phone.responses if r.call_id == request.call_id and r.cseq == request.cseq
    ]
    assert answers, f"no answer to {request.method} {request.cseq}"
    return answers[-1]


def resubscribe(phone: Phone, first: Request, ok: Response, expires: int) -> Response:
    """An in-dialog SUBSCRIBE (refresh, or ``expires=0`` to unsubscribe)."""
    request = build_request(
        "SUBSCRIBE",
        ok.contacts[0].uri,
        via=Via("UDP", "127.0.0.1", phone.addr.port, {"branch": make_branch(), "rport": None}),
        from_=first.from_,
        to=ok.to,
        call_id=first.call_id,
        cseq=first.cseq.seq + 1 + next(_tags),
        headers=[
            ("Contact", f"<sip:{phone.ext}@127.0.0.1:{phone.addr.port}>"),
            ("Event", EVENT),
            ("Expires", str(expires)),
        ],
    )
    phone.send(request)
    return _answer_to(phone, request)


def notifies(phone: Phone) -> list[Request]:
    return [r for r in phone.requests if r.method == "NOTIFY"]


# -- subscriptions -----------------------------------------------------------------------------


def test_subscribe_is_challenged_then_accepted_with_an_immediate_notify() -> None:
    net, counts = make_net()
    counts.boxes[(1, "100")] = (3, 5)
    phone = subscriber(net, "100", 5071)
    first = subscribe_request(phone)
    phone.send(first)
    challenge = phone.responses[-1]
    assert challenge.status == 401 and challenge.headers.get_all("WWW-Authenticate")
    assert not notifies(phone)
    request, ok = subscribe(phone)
    assert ok.status == 200 and ok.to.tag
    assert ok.expires == 3600
    assert ok.contacts and ok.headers.get("Allow-Events") == EVENT
    (notify,) = notifies(phone)
    # RFC 6665: in the dialog the 200 created, towards the phone, its state and duration
    assert notify.call_id == request.call_id
    assert notify.to.tag == request.from_.tag and notify.from_.tag == ok.to.tag
    assert notify.uri == request.contacts[0].uri
    assert notify.headers.get("Event") == EVENT
    assert notify.headers.get("Subscription-State") == "active;expires=3600"
    assert notify.headers.get("Content-Type") == CONTENT_TYPE
    assert notify.contacts
    assert notify.body == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:100@127.0.0.1\r\n"
        b"Voice-Message: 3/5 (0/0)\r\n"
    )
    assert len(net.core.mwi) == 1


def test_summary_body_says_no_when_only_old_messages() -> None:
    assert summary_body(0, 4, "sip:7@example.com") == (
        b"Messages-Waiting: no\r\nMessage-Account: sip:7@example.com\r\n"
        b"Voice-Message: 0/4 (0/0)\r\n"
    )


def test_event_id_is_echoed_in_notify() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    _, ok = subscribe(phone, event=f"{EVENT};id=7")
    assert ok.status == 200
    assert notifies(phone)[-1].headers.get("Event") == f"{EVENT};id=7"


def test_changed_notifies_the_mailbox_subscriptions_only() -> None:
    net, counts = make_net()
    alice = subscriber(net, "100", 5071)
    bob = subscriber(net, "101", 5072)
    subscribe(alice)
    subscribe(bob)
    assert len(notifies(alice)) == len(notifies(bob)) == 1
    counts.boxes[(1, "100")] = (1, 0)
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    assert len(notifies(bob)) == 1
    first, second = notifies(alice)
    assert second.body == summary_body(1, 0, "sip:100@127.0.0.1")
    assert second.cseq.seq > first.cseq.seq
    assert (second.headers.get("Subscription-State") or "").startswith("active;expires=")


def test_a_change_during_a_notify_in_flight_is_sent_after_its_answer() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    subscribe(phone)
    now = net.clock.now
    net.core.mwi.changed(1, "100", 1, 0, now)
    net.core.mwi.changed(1, "100", 2, 0, now)  # the first NOTIFY is not answered yet
    net.run()
    _, *changes = notifies(phone)
    assert [n.body for n in changes] == [
        summary_body(1, 0, "sip:100@127.0.0.1"),
        summary_body(2, 0, "sip:100@127.0.0.1"),
    ]
    assert changes[0].cseq.seq < changes[1].cseq.seq


def test_refresh_extends_the_subscription_and_notifies() -> None:
    net, counts = make_net()
    phone = subscriber(net, "100", 5071)
    request, ok = subscribe(phone)
    net.advance(1000)
    counts.boxes[(1, "100")] = (0, 2)
    refreshed = resubscribe(phone, request, ok, 3600)
    assert refreshed.status == 200 and refreshed.expires == 3600
    latest = notifies(phone)[-1]
    assert len(notifies(phone)) == 2
    assert latest.headers.get("Subscription-State") == "active;expires=3600"
    assert latest.body == summary_body(0, 2, "sip:100@127.0.0.1")
    net.advance(2700)  # past the first expiry: still subscribed
    assert len(notifies(phone)) == 2 and len(net.core.mwi) == 1
    net.advance(1000)
    assert notifies(phone)[-1].headers.get("Subscription-State") == "terminated;reason=timeout"


def test_expiry_sends_terminated_timeout_and_forgets() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    subscribe(phone, expires=120)
    assert net.core.get_timer() is not None
    net.advance(119)
    assert len(notifies(phone)) == 1
    net.advance(2)
    final = notifies(phone)[-1]
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(net.core.mwi) == 0
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    assert len(notifies(phone)) == 2  # nothing after the end


def test_unsubscribe_with_expires_zero() -> None:
    net, counts = make_net()
    counts.boxes[(1, "100")] = (1, 1)
    phone = subscriber(net, "100", 5071)
    request, ok = subscribe(phone)
    gone = resubscribe(phone, request, ok, 0)
    assert gone.status == 200 and gone.expires == 0
    final = notifies(phone)[-1]
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert final.body == summary_body(1, 1, "sip:100@127.0.0.1")  # RFC 6665 4.2.1.2
    assert len(net.core.mwi) == 0
    assert resubscribe(phone, request, ok, 3600).status == 481  # the dialog is over


def test_fetch_with_expires_zero_gives_one_final_notify() -> None:
    net, counts = make_net()
    counts.boxes[(1, "100")] = (2, 0)
    phone = subscriber(net, "100", 5071)
    _, ok = subscribe(phone, expires=0)
    assert ok.status == 200 and ok.expires == 0
    (notify,) = notifies(phone)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert notify.body == summary_body(2, 0, "sip:100@127.0.0.1")
    assert len(net.core.mwi) == 0


def test_other_event_packages_get_489_without_a_challenge() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request = subscribe_request(phone, event="presence")
    phone.send(request)
    refused = _answer_to(phone, request)
    assert refused.status == 489
    assert refused.headers.get("Allow-Events") == EVENT
    assert not notifies(phone)


def test_missing_event_is_400() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request = subscribe_request(phone)
    request.headers.remove("Event")
    phone.send(request)
    assert _answer_to(phone, request).status == 400


def test_another_users_mailbox_is_403() -> None:
    net, _ = make_net()
    subscriber(net, "101", 5072)
    phone = subscriber(net, "100", 5071)
    _, refused = subscribe(phone, mailbox="101")
    assert refused.status == 403
    assert not notifies(phone) and len(net.core.mwi) == 0


def test_wrong_password_is_403() -> None:
    net, _ = make_net()
    net.users.add_user("100", "right")
    phone = Subscriber(net, "100", "wrong", 5071)
    _, refused = subscribe(phone)
    assert refused.status == 403 and len(net.core.mwi) == 0


def test_unacceptable_body_type_is_406() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request = subscribe_request(phone)
    request.headers.set("Accept", "application/pidf+xml")
    phone.send(request)
    refused = _answer_to(phone, request)  # before the challenge, as 489
    assert refused.status == 406 and refused.headers.get("Accept") == CONTENT_TYPE


def test_expires_bounds() -> None:
    net, _ = make_net(MwiSettings(min_expires=60, max_expires=1800))
    phone = subscriber(net, "100", 5071)
    _, brief = subscribe(phone, expires=30)
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    _, capped = subscribe(phone, expires=7200)
    assert capped.status == 200 and capped.expires == 1800
    _, default = subscribe(phone, expires=None)  # RFC 3842 3.4: one hour, capped here
    assert default.status == 200 and default.expires == 1800


def test_limits_answer_503_and_a_phone_resubscribing_replaces_its_old_subscription() -> None:
    net, _ = make_net(MwiSettings(max_per_user=1))
    phone = subscriber(net, "100", 5071)
    assert subscribe(phone)[1].status == 200
    assert subscribe(phone)[1].status == 200  # same Contact: the old one is replaced
    assert len(net.core.mwi) == 1
    other = Subscriber(net, "100", "pw", 5073)  # a second phone of the same user
    _, refused = subscribe(other)
    assert refused.status == 503 and refused.headers.get("Retry-After")
    assert len(net.core.mwi) == 1


def test_total_limit() -> None:
    net, _ = make_net(MwiSettings(max_total=1))
    assert subscribe(subscriber(net, "100", 5071))[1].status == 200
    assert subscribe(subscriber(net, "101", 5072))[1].status == 503


def test_notify_481_drops_the_subscription() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    subscribe(phone)
    phone.notify_status = 481
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    assert len(notifies(phone)) == 2 and len(net.core.mwi) == 0
    phone.notify_status = 200
    net.core.mwi.changed(1, "100", 2, 0, net.clock.now)
    net.run()
    assert len(notifies(phone)) == 2


def test_notify_without_answer_drops_the_subscription() -> None:
    net, _ = make_net(MwiSettings(unsolicited=False))
    phone = subscriber(net, "100", 5071)
    subscribe(phone)
    phone.notify_status = 0
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    assert len(net.core.mwi) == 1
    net.advance(40)  # Timer F, 64*T1
    assert len(net.core.mwi) == 0


# -- unsolicited NOTIFY ------------------------------------------------------------------------


def test_unsolicited_notify_to_a_registered_phone_without_subscription() -> None:
    net, _ = make_net()
    plain = subscriber(net, "100", 5071)
    assert plain.register().status == 200
    subscribed = subscriber(net, "100", 5072)
    assert subscribed.register().status == 200
    subscribe(subscribed)
    net.core.mwi.changed(1, "100", 4, 1, net.clock.now)
    net.run()
    (notify,) = notifies(plain)
    assert notify.to.tag is None and notify.from_.tag  # out of dialog
    assert notify.uri == SipUri("127.0.0.1", "100", None, 5071)
    assert notify.headers.get("Event") == EVENT
    assert notify.headers.get("Subscription-State") == "terminated"
    assert notify.headers.get("Content-Type") == CONTENT_TYPE
    assert notify.body == summary_body(4, 1, "sip:100@127.0.0.1:5060")
    # the subscribed phone hears the change once, in its dialog
    initial, change = notifies(subscribed)
    assert change.call_id == initial.call_id and change.to.tag
    assert net.core.layer.transaction_count > 0
    net.advance(40)
    assert net.core.layer.transaction_count == 0  # the unsolicited NOTIFY was answered


def test_unsolicited_notify_names_the_tenant_domain_when_given() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    phone.register()
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now, domain="pbx.example.com")
    net.run()
    (notify,) = notifies(phone)
    assert notify.to.uri == SipUri("pbx.example.com", "100")
    assert b"Message-Account: sip:100@pbx.example.com\r\n" in notify.body


def test_no_unsolicited_notify_when_disabled() -> None:
    net, _ = make_net(MwiSettings(unsolicited=False))
    assert net.core.mwi.settings.unsolicited is False
    phone = subscriber(net, "100", 5071)
    assert phone.register().status == 200
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    assert not notifies(phone)
    assert net.core.datagrams_to_send() == []


def test_unsolicited_notify_reaches_a_natted_phone_at_its_real_address() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    register = build_request(
        "REGISTER",
        SipUri("127.0.0.1"),
        via=Via("UDP", "192.0.2.10", 5060, {"branch": make_branch(), "rport": None}),
        from_=NameAddr(SipUri("127.0.0.1", "100"), None, {"tag": "nat"}),
        to=NameAddr(SipUri("127.0.0.1", "100")),
        call_id="nat-reg@192.0.2.10",
        cseq=1,
        headers=[("Contact", "<sip:100@192.0.2.10:5060>"), ("Expires", "600")],
    )
    phone.send(register)
    register = phone._retry_with_auth(register, phone.responses[-1])
    phone.send(register)
    assert phone.responses[-1].status == 200
    net.core.mwi.changed(1, "100", 1, 0, net.clock.now)
    net.run()
    (notify,) = notifies(phone)  # delivered to 127.0.0.1:5071, the REGISTER's source
    assert notify.uri == SipUri("192.0.2.10", "100", None, 5060)
    assert net.lost == 0


# -- core wiring -------------------------------------------------------------------------------


def test_options_advertises_the_event_package() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    options = phone._request("OPTIONS", "100", "100")
    phone.send(options)
    answer = _answer_to(phone, options)
    assert answer.status == 200
    assert answer.headers.get("Allow-Events") == EVENT
    assert {"SUBSCRIBE", "NOTIFY"} <= set(answer.tokens("Allow"))


def test_in_dialog_subscribe_for_an_unknown_dialog_is_481() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request, ok = subscribe(phone)
    stranger = Response(200, "OK", ok.headers)
    stranger.headers.set("To", "<sip:100@127.0.0.1>;tag=unknown")
    assert resubscribe(phone, request, stranger, 3600).status == 481


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        MwiSettings(min_expires=100, max_expires=50)
    with pytest.raises(ValueError):
        MwiSettings(max_per_user=0)
    net, _ = make_net()
    with pytest.raises(ValueError):
        net.core.mwi.changed(1, "100", -1, 0, net.clock.now)


def test_subscriber_behind_nat_is_notified_at_the_source() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request = subscribe_request(phone)
    request.headers.set("Contact", "<sip:100@192.0.2.10:5060>")  # a private address
    phone.send(request)
    request = phone._retry_with_auth(request, _answer_to(phone, request))
    phone.send(request)
    assert _answer_to(phone, request).status == 200
    (notify,) = notifies(phone)  # sent to the SUBSCRIBE's source, 127.0.0.1:5071
    assert notify.uri == SipUri("192.0.2.10", "100", None, 5060)
    assert net.lost == 0


def test_stop_all_deactivates_every_subscription() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    subscribe(phone)
    net.core.mwi.stop_all(net.clock.now)
    net.run()
    final = notifies(phone)[-1]
    assert final.headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert len(net.core.mwi) == 0 and net.core.mwi.next_deadline() is None


def test_refresh_out_of_order_is_refused() -> None:
    net, _ = make_net()
    phone = subscriber(net, "100", 5071)
    request, ok = subscribe(phone)
    assert resubscribe(phone, request, ok, 3600).status == 200
    stale = build_request(
        "SUBSCRIBE",
        ok.contacts[0].uri,
        via=Via("UDP", "127.0.0.1", phone.addr.port, {"branch": make_branch(), "rport": None}),
        from_=request.from_,
        to=ok.to,
        call_id=request.call_id,
        cseq=request.cseq.seq,  # lower than the refresh's (RFC 3261 12.2.2)
        headers=[("Event", EVENT), ("Expires", "3600")],
    )
    phone.send(stale)
    assert _answer_to(phone, stale).status == 500
    assert len(net.core.mwi) == 1


def test_mailbox_changed_reads_the_counts_provider() -> None:
    net, counts = make_net()
    phone = subscriber(net, "100", 5071)
    subscribe(phone)
    counts.boxes[(1, "100")] = (2, 3)
    net.core.mwi.mailbox_changed(1, "100", net.clock.now)
    net.run()
    assert notifies(phone)[-1].body == summary_body(2, 3, "sip:100@127.0.0.1")
