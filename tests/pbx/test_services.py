"""Calls the PBX answers itself (a service such as the auto attendant) and hands on with
re-INVITEs (RFC 3725 flow I), in memory with a fake service host."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from minipbx.pbx.call import Call, CallState, Disposition, Route, ServiceError
from minipbx.pbx.routing import LocalRouter, called_number
from minipbx.sip import NameAddr, Request, SipUri
from minipbx.sip.dialog import Dialog
from minipbx.sip.sdp import SessionDescription
from minipbx.sip.transaction import Event, RequestReceived
from tests.pbx.phones import PBX, Net, Phone, sdp
from tests.pbx.test_calls import _via

SERVICE_SDP = (
    b"v=0\r\no=minipbx 77 1 IN IP4 127.0.0.1\r\ns=minipbx\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


@dataclass
class FakeServices:
    """Records what the B2BUA asks of the service host."""

    refuse: int = 0
    started: list[tuple[str, bytes]] = field(default_factory=list)
    updates: list[bytes] = field(default_factory=list)
    infos: list[bytes] = field(default_factory=list)
    transfers: list[int] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    resumed: list[bytes] = field(default_factory=list)
    refuse_resume: int = 0
    acks: list[bytes] = field(default_factory=list)
    refuse_ack: int = 0

    def start(self, call: Call, service: str, offer: bytes) -> bytes:
        if self.refuse:
            raise ServiceError(self.refuse, "no codec in common")
        self.started.append((service, offer))
        return SERVICE_SDP

    def media_update(self, call: Call, body: bytes) -> bytes | None:
        self.updates.append(body)
        return SERVICE_SDP.replace(b"30000", b"30002")

    def acked(self, call: Call, body: bytes) -> None:
        self.acks.append(body)
        if self.refuse_ack:
            raise ServiceError(self.refuse_ack, "no answer in the ACK")

    def info(self, call: Call, request: Request) -> int:
        self.infos.append(request.body)
        return 200

    def transferred(self, call: Call, status: int) -> None:
        self.transfers.append(status)

    def stop(self, call: Call) -> None:
        self.stopped.append(call.id)

    def resume(self, call: Call, offer: bytes) -> bytes:
        if self.refuse_resume:
            raise ServiceError(self.refuse_resume, "no codec in common")
        self.resumed.append(offer)
        return SERVICE_SDP.replace(b"30000", b"30004")


class ServiceRouter(LocalRouter):
    """Number 500 is the attendant; everything else rings local users."""

    def route(self, call: Call) -> Route:
        if called_number(call) == "500":
            return Route(callee="500", kind="service", service="ivr:main")
        return super().route(call)


def _setup(services: FakeServices | None = None) -> tuple[Net, FakeServices, Phone, Phone]:
    net = Net()
    b2bua = net.core.b2bua
    b2bua.router = ServiceRouter(net.users, net.registrar, lambda: net.clock.wall)
    host = services or FakeServices()
    b2bua.services = host
    alice, bob = net.phone("100", 5071), net.phone("101", 5072)
    assert alice.register().status == 200 and bob.register().status == 200
    return net, host, alice, bob


def _served(net: Net, alice: Phone) -> tuple[Call, Dialog]:
    alice.invite("500")
    answered = alice.responses[-1]
    assert answered.status == 200 and answered.body == SERVICE_SDP
    dialog = Dialog.from_uac(alice.invite_request, answered)
    alice.layer.send_stateless(dialog.create_request("ACK", via=_via(alice)), PBX)
    net.run()
    (call,) = net.core.calls
    return call, dialog


def _invites(phone: Phone) -> list[Request]:
    return [r for r in phone.requests if r.method == "INVITE"]


def test_service_answers_and_sees_info_and_the_callers_bye() -> None:
    net, host, alice, _ = _setup()
    call, dialog = _served(net, alice)
    assert host.started == [("ivr:main", alice.invite_request.body)]
    assert call.state is CallState.ANSWERED and call.service == "ivr:main"
    info = dialog.create_request(
        "INFO",
        via=_via(alice),
        body=b"Signal=5\r\nDuration=160\r\n",
        content_type="application/dtmf-relay",
    )
    alice.send(info)
    assert alice.responses[-1].status == 200 and host.infos == [info.body]
    alice.send(dialog.create_request("BYE", via=_via(alice)))
    assert alice.responses[-1].status == 200
    assert host.stopped == [call.id] and not list(net.core.calls)
    (ended,) = net.ended.calls
    assert ended.disposition is Disposition.ANSWERED and ended.route_kind == "service"


def test_a_late_offer_gets_the_services_offer_and_its_ack_the_answer() -> None:
    """RFC 3261 13.2.1: an INVITE without SDP is answered with an offer in the 2xx; the
    caller's ACK carries the answer, which goes to the service; an ACK without one (or
    with one the service cannot use) ends the call."""
    for refuse in (0, 488):
        net, host, alice, _ = _setup(FakeServices(refuse_ack=refuse))
        alice.invite("500", offer=False)
        answered = alice.responses[-1]
        assert answered.status == 200 and answered.body == SERVICE_SDP
        assert host.started == [("ivr:main", b"")]
        dialog = Dialog.from_uac(alice.invite_request, answered)
        ack = dialog.create_request(
            "ACK", via=_via(alice), body=sdp(4100), content_type="application/sdp"
        )
        alice.layer.send_stateless(ack, PBX)
        net.run()
        assert host.acks == [sdp(4100)]
        hung_up = any(r.method == "BYE" for r in alice.requests)
        assert hung_up is bool(refuse), refuse
        assert bool(list(net.core.calls)) is not bool(refuse)


def test_caller_reinvite_during_service_is_answered_by_it_under_one_origin() -> None:
    net, host, alice, _ = _setup()
    _, dialog = _served(net, alice)
    reinvite = dialog.create_request(
        "INVITE",
        via=_via(alice),
        contact=NameAddr(SipUri("127.0.0.1", "100", None, 5071)),
        body=alice.invite_request.body,
        content_type="application/sdp",
    )
    alice.send(reinvite)
    ok = alice.responses[-1]
    assert ok.status == 200 and host.updates == [alice.invite_request.body]
    sdp = SessionDescription.parse(ok.body)
    assert (sdp.origin.sess_id, sdp.origin.sess_version) == ("77", 2)  # RFC 3264 8: changed
    assert sdp.media[0].port == 30002


def test_transfer_hands_the_call_back_to_end_to_end_media() -> None:
    net, host, alice, bob = _setup()
    call, dialog = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    (b_invite,) = _invites(bob)
    assert not b_invite.body  # late offer: bob offers in his 200
    assert host.transfers == [200] and call.service is None and call.callee == "101"
    # alice got a re-INVITE with bob's offer under the origin she knows from the service
    reinvite = next(r for r in alice.requests if r.method == "INVITE")
    offered = SessionDescription.parse(reinvite.body)
    assert offered.media[0].port == 6000
    assert (offered.origin.username, offered.origin.sess_id) == ("minipbx", "77")
    assert offered.origin.sess_version == 2
    # bob's ACK carries alice's answer
    (ack,) = bob.acks
    assert SessionDescription.parse(ack.body).media[0].port == 4000 + 5071 % 1000
    # from now on the call is an ordinary bridged call
    alice.send(dialog.create_request("BYE", via=_via(alice)))
    assert any(r.method == "BYE" for r in bob.requests)
    assert host.stopped == [call.id] and net.ended.calls[-1].callee == "101"


def test_transfer_to_busy_user_keeps_the_caller_in_the_service() -> None:
    net, host, alice, bob = _setup()
    bob.answer = Phone.busy
    call, _ = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    assert host.transfers == [486]
    assert call.service == "ivr:main" and call.state is CallState.ANSWERED
    assert not any(r.method in ("INVITE", "BYE") for r in alice.requests)
    # the service may try again
    bob.answer = Phone.ring_and_answer
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    assert host.transfers == [486, 200]


def test_transfer_nobody_answers_is_cancelled_after_the_ring_time() -> None:
    net, host, alice, bob = _setup()
    bob.answer = Phone.ring_only
    call, _ = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    assert host.transfers == []
    net.advance(31)  # ring_timeout is 30 s in the harness
    assert host.transfers == [480]
    assert any(r.method == "CANCEL" for r in bob.requests)
    assert call.service == "ivr:main" and call.id in net.core.b2bua.calls


def test_transfer_to_unknown_or_offline_user_fails_at_once() -> None:
    net, host, alice, _ = _setup()
    net.phone("102", 5073)  # a user who is not registered
    call, _ = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "999", net.clock.now)
    net.core.b2bua.transfer(call, "user", "102", net.clock.now)
    assert host.transfers == [404, 480]


def test_caller_hangs_up_while_the_transfer_rings() -> None:
    net, host, alice, bob = _setup()
    bob.answer = Phone.ring_only
    call, dialog = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    alice.send(dialog.create_request("BYE", via=_via(alice)))
    assert any(r.method == "CANCEL" for r in bob.requests)
    assert host.stopped == [call.id] and not list(net.core.calls)


def test_second_transfer_while_one_rings_is_refused() -> None:
    net, host, alice, bob = _setup()
    bob.answer = Phone.ring_only
    call, _ = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    assert host.transfers == [491]


def test_service_refusing_the_offer_answers_its_status() -> None:
    net, _, alice, _ = _setup(FakeServices(refuse=488))
    alice.invite("500")
    assert alice.responses[-1].status == 488
    assert not list(net.core.calls)


def test_no_service_host_gives_501() -> None:
    net, _, alice, _ = _setup()
    net.core.b2bua.services = None
    alice.invite("500")
    assert alice.responses[-1].status == 501


def test_pbx_hangup_of_a_served_call() -> None:
    net, host, alice, _ = _setup()
    call, _ = _served(net, alice)
    net.core.b2bua.hangup(call, net.clock.now, "service")
    net.run()
    assert any(r.method == "BYE" for r in alice.requests)
    assert host.stopped == [call.id]


# -- transfers that come back to the service (calling cards) ----------------------------------


class OfferingPhone(Phone):
    """Answers an offerless re-INVITE with its own offer (RFC 3264 5), or ``refuse`` it."""

    refuse = 0

    def handle_events(self) -> None:
        now = self.net.clock.now
        rest: list[Event] = []
        for event in self.layer.events():
            if not isinstance(event, RequestReceived):
                rest.append(event)
                continue
            req = event.request
            if req.method != "INVITE" or req.to.tag is None or req.body:
                rest.append(event)
                continue
            self.requests.append(req)
            contact = [("Contact", f"<sip:{self.ext}@127.0.0.1:{self.addr.port}>")]
            if self.refuse:
                out = req.response(self.refuse)
            else:
                out = req.response(200, headers=contact, body=sdp(4444), content_type=SDP_TYPE)
            self.layer.send_response(event.transaction, out, now)
        self.layer._events.extend(rest)
        super().handle_events()


SDP_TYPE = "application/sdp"


def _come_back_setup(refuse: int = 0) -> tuple[Net, FakeServices, OfferingPhone, Phone]:
    net, host, _, bob = _setup()
    net.users.add_user("103", "pw")
    alice = OfferingPhone(net, "103", "pw", 5074)
    alice.refuse = refuse
    assert alice.register().status == 200
    return net, host, alice, bob


def _transferred_back(net: Net, alice: Phone, bob: Phone) -> tuple[Call, Dialog, Dialog]:
    """alice in the service, transferred to bob asking to come back; bob's dialog."""
    call, a_dialog = _served(net, alice)
    call.max_seconds = 600.0  # the service's own limit
    net.core.b2bua.transfer(call, "user", "101", net.clock.now, come_back=True)
    net.run()
    assert call.service is None and call.come_back == "ivr:main"
    (b_invite,) = _invites(bob)
    b_dialog = Dialog.from_uas(b_invite, bob.sent_responses[-1])
    return call, a_dialog, b_dialog


def test_callee_bye_brings_the_caller_back_to_the_service() -> None:
    net, host, alice, bob = _come_back_setup()
    call, _, b_dialog = _transferred_back(net, alice, bob)
    assert host.transfers == [200]
    call.transfer_limit = None
    net.clock.advance(7)
    bob.send(b_dialog.create_request("BYE", via=_via(bob)))
    # bob's BYE is answered at once: the call goes on
    assert bob.responses[-1].status == 200 and not net.ended.calls
    assert call.winner is None and call.service == "ivr:main" and call.come_back is None
    assert call.returned_at == net.clock.now and call.max_seconds == 600.0
    # alice got a re-INVITE without an offer (the hand-back one had bob's)
    handback, back = (r for r in alice.requests if r.method == "INVITE")
    assert handback.body and not back.body and back.cseq.seq > handback.cseq.seq
    # her offer went to the service, its answer in the ACK under the origin she knows
    assert host.resumed == [sdp(4444)]
    ack = alice.acks[-1]
    answer = SessionDescription.parse(ack.body)
    assert answer.media[0].port == 30004
    assert (answer.origin.sess_id, answer.origin.sess_version) == ("77", 3)
    assert call.state is CallState.ANSWERED and call.id in net.core.b2bua.calls
    assert not any(r.method == "BYE" for r in alice.requests)
    # the service may transfer again, and the call is back to being served
    net.core.b2bua.transfer(call, "user", "101", net.clock.now, come_back=True)
    net.run()
    assert host.transfers == [200, 200] and call.service is None


def test_caller_refusing_to_come_back_is_hung_up() -> None:
    net, host, alice, bob = _come_back_setup(refuse=488)
    call, _, b_dialog = _transferred_back(net, alice, bob)
    bob.send(b_dialog.create_request("BYE", via=_via(bob)))
    assert bob.responses[-1].status == 200
    assert any(r.method == "BYE" for r in alice.requests)
    assert host.resumed == [] and host.stopped == [call.id]
    (ended,) = net.ended.calls
    assert ended.reason == "come_back_failed" and ended.returned_at is not None


def test_caller_answering_without_an_offer_is_hung_up() -> None:
    net, host, alice, bob = _setup()  # a plain phone: 200 without a body
    call, _, b_dialog = _transferred_back(net, alice, bob)
    bob.send(b_dialog.create_request("BYE", via=_via(bob)))
    back = [r for r in alice.requests if r.method == "INVITE"][-1]
    assert not back.body
    assert call.reason == "come_back_failed"
    assert any(r.method == "BYE" for r in alice.requests)
    assert host.resumed == [] and not list(net.core.calls)


def test_service_refusing_the_callers_offer_hangs_up() -> None:
    net, host, alice, bob = _come_back_setup()
    host.refuse_resume = 488
    _, _, b_dialog = _transferred_back(net, alice, bob)
    bob.send(b_dialog.create_request("BYE", via=_via(bob)))
    assert any(r.method == "BYE" for r in alice.requests)
    assert not list(net.core.calls) and net.ended.calls[-1].reason == "come_back_failed"


def test_caller_bye_during_a_come_back_transfer_ends_the_call() -> None:
    net, host, alice, bob = _come_back_setup()
    call, a_dialog, _ = _transferred_back(net, alice, bob)
    alice.send(a_dialog.create_request("BYE", via=_via(alice)))
    assert alice.responses[-1].status == 200
    assert any(r.method == "BYE" for r in bob.requests)
    assert host.resumed == [] and host.stopped == [call.id] and not list(net.core.calls)
    (ended,) = net.ended.calls
    assert ended.hangup_by == "caller" and ended.returned_at is None


def test_come_back_transfer_limit_ends_the_whole_call() -> None:
    net, host, alice, bob = _come_back_setup()
    call, _, _ = _transferred_back(net, alice, bob)
    call.max_seconds = (net.clock.now - (call.answered or 0)) + 5  # the transfer's limit
    heapq.heappush(net.core.b2bua._timers, (call.due, call.id))
    net.advance(6)
    assert any(r.method == "BYE" for r in bob.requests)
    assert any(r.method == "BYE" for r in alice.requests)
    assert host.resumed == [] and net.ended.calls[-1].reason == "max_duration"


def test_transfer_without_come_back_still_ends_on_the_callees_bye() -> None:
    net, host, alice, bob = _come_back_setup()
    call, _ = _served(net, alice)
    net.core.b2bua.transfer(call, "user", "101", net.clock.now)
    net.run()
    (b_invite,) = _invites(bob)
    b_dialog = Dialog.from_uas(b_invite, bob.sent_responses[-1])
    bob.send(b_dialog.create_request("BYE", via=_via(bob)))
    assert any(r.method == "BYE" for r in alice.requests)
    assert host.resumed == [] and net.ended.calls[-1].hangup_by == "callee"
