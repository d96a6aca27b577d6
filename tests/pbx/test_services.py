"""Calls the PBX answers itself (a service such as the auto attendant) and hands on with
re-INVITEs (RFC 3725 flow I), in memory with a fake service host."""

from __future__ import annotations

from dataclasses import dataclass, field

from minipbx.pbx.call import Call, CallState, Disposition, Route, ServiceError
from minipbx.pbx.routing import LocalRouter, called_number
from minipbx.sip import NameAddr, Request, SipUri
from minipbx.sip.dialog import Dialog
from minipbx.sip.sdp import SessionDescription
from tests.pbx.phones import PBX, Net, Phone
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

    def start(self, call: Call, service: str, offer: bytes) -> bytes:
        if self.refuse:
            raise ServiceError(self.refuse, "no codec in common")
        self.started.append((service, offer))
        return SERVICE_SDP

    def media_update(self, call: Call, body: bytes) -> bytes | None:
        self.updates.append(body)
        return SERVICE_SDP.replace(b"30000", b"30002")

    def info(self, call: Call, request: Request) -> int:
        self.infos.append(request.body)
        return 200

    def transferred(self, call: Call, status: int) -> None:
        self.transfers.append(status)

    def stop(self, call: Call) -> None:
        self.stopped.append(call.id)


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
