"""Calls out through a trunk, in memory: digest challenges from the provider, failover,
the B leg's From (caller ID at the trunk) and extra headers."""

from __future__ import annotations

from minipbx.pbx.call import Call, InboundTrunk, LegAuth, Route, Target
from minipbx.sip import NameAddr, Request, SipUri
from minipbx.sip.digest import (
    Algorithm,
    AuthResult,
    DigestAuthenticator,
    compute_ha1,
    parse_credentials,
)
from minipbx.sip.transaction import ServerTransaction
from minipbx.transport.address import Address
from tests.pbx.phones import Net, Phone

PROVIDER_REALM = "voip.example.net"


class Provider:
    """A provider's SIP server: challenges every INVITE (407), then answers or fails."""

    def __init__(self, net: Net, port: int, *, status: int = 200, password: str = "tr-pw") -> None:
        self.phone = net.phone(f"provider{port}", port)
        self.phone.answer = self._answer
        self.status = status
        self.password = password
        self.digest = DigestAuthenticator(b"p" * 32)
        self.invites: list[Request] = []
        self.verdicts: list[AuthResult] = []
        self.algorithms: list[Algorithm] = []

    @property
    def address(self) -> Address:
        return self.phone.addr

    def _answer(self, phone: Phone, tx: ServerTransaction, request: Request) -> None:
        now = phone.net.clock.now
        self.invites.append(request)
        auth = request.headers.get("Proxy-Authorization")
        if auth is None:
            challenge = [str(c) for c in self.digest.challenges(PROVIDER_REALM, now)]
            headers = [("Proxy-Authenticate", c) for c in challenge]
            phone.layer.send_response(tx, request.response(407, headers=headers), now)
            return
        creds = parse_credentials(auth)
        algorithm = Algorithm.from_name(creds.algorithm) or Algorithm.MD5
        self.algorithms.append(algorithm)
        ha1 = compute_ha1("pbx-account", PROVIDER_REALM, self.password, algorithm)
        verdict = self.digest.verify(
            creds, method="INVITE", request_uri=str(request.uri), ha1=ha1, now=now
        )
        self.verdicts.append(verdict)
        if verdict is not AuthResult.OK:
            phone.layer.send_response(tx, request.response(403), now)
        elif self.status == 200:
            Phone.ring_and_answer(phone, tx, request)
        else:
            phone.layer.send_response(tx, request.response(self.status), now)


class TrunkRouter:
    """Routes every call to the given providers (first choice, then failover)."""

    def __init__(self, first: Provider, failover: Provider | None = None, password: str = "tr-pw"):
        self.first, self.second, self.password = first, failover, password

    def _target(self, provider: Provider, number: str) -> Target:
        return Target(
            uri=SipUri(provider.address.host, number, None, provider.address.port),
            destination=provider.address,
            from_=NameAddr(SipUri("trunk.example.net", "+3312345678"), "Office"),
            auth=LegAuth("pbx-account", self.password),
            headers=(("P-Asserted-Identity", "<sip:+3312345678@trunk.example.net>"),),
        )

    def forward(self, call: Call, why: str, to: str | None = None) -> Route | None:
        return None

    def route(self, call: Call) -> Route:
        number = "0044" + call.invite.uri.user if isinstance(call.invite.uri, SipUri) else ""
        failover = (self._target(self.second, number),) if self.second else ()
        return Route(
            targets=(self._target(self.first, number),),
            failover=failover,
            callee=number,
            kind="trunk",
            trunk="provider",
        )


def _caller(net: Net) -> Phone:
    alice = net.phone("100", 5071)
    assert alice.register().status == 200
    return alice


def test_provider_challenge_is_answered_once_and_call_connects() -> None:
    net = Net()
    provider = Provider(net, 5090)
    net.core.b2bua.router = TrunkRouter(provider)
    alice = _caller(net)
    alice.invite("2071234567")
    assert alice.responses[-1].status == 200
    first, second = provider.invites
    assert first.call_id == second.call_id and first.from_.tag == second.from_.tag
    assert second.cseq.seq == first.cseq.seq + 1 and second.via.branch != first.via.branch
    assert provider.verdicts == [AuthResult.OK]
    assert provider.algorithms == [Algorithm.SHA_256]  # preferred over MD5 (RFC 8760)
    assert str(second.uri).startswith("sip:00442071234567@")
    assert second.from_.display == "Office" and second.from_.uri.user == "+3312345678"
    assert second.headers.get("P-Asserted-Identity") == "<sip:+3312345678@trunk.example.net>"
    (call,) = net.core.calls
    assert call.route_kind == "trunk" and call.trunk == "provider"


def test_wrong_trunk_password_fails_without_a_loop() -> None:
    net = Net()
    provider = Provider(net, 5090)
    net.core.b2bua.router = TrunkRouter(provider, password="wrong")
    alice = _caller(net)
    alice.invite("2071234567")
    assert alice.responses[-1].status == 403  # the provider refused; no endless retries
    assert len(provider.invites) == 2
    assert provider.verdicts == [AuthResult.FAILED]


def test_failover_to_second_trunk_on_5xx() -> None:
    net = Net()
    down = Provider(net, 5090, status=503)
    backup = Provider(net, 5091)
    net.core.b2bua.router = TrunkRouter(down, backup)
    alice = _caller(net)
    alice.invite("2071234567")
    assert alice.responses[-1].status == 200
    assert len(down.invites) == 2 and len(backup.invites) == 2
    assert net.ended.calls == []


def test_no_failover_on_busy() -> None:
    net = Net()
    busy = Provider(net, 5090, status=486)
    backup = Provider(net, 5091)
    net.core.b2bua.router = TrunkRouter(busy, backup)
    alice = _caller(net)
    alice.invite("2071234567")
    assert alice.responses[-1].status == 486
    assert backup.invites == []
    assert net.ended.calls[-1].disposition.value == "BUSY"


def test_failover_on_timeout() -> None:
    net = Net()
    silent = Provider(net, 5090)
    backup = Provider(net, 5091)
    net.core.b2bua.router = TrunkRouter(silent, backup)
    silent.phone.answer = lambda phone, tx, request: None  # never answers
    del net.phones[silent.address]  # nothing reaches it: Timer B fires
    alice = _caller(net)
    alice.invite("2071234567")
    net.advance(40)
    assert [r.status for r in alice.responses if r.cseq.method == "INVITE"][-1] == 200
    assert len(backup.invites) == 2


def test_inbound_call_from_an_ip_trunk_needs_no_digest() -> None:
    net = Net()
    provider = net.phone("+4420555", 5090)  # its From user is the external caller
    bob = net.phone("101", 5072)
    assert bob.register().status == 200
    trunk = InboundTrunk("provider", tenant_id=1, domain="default")
    net.core._trunk_of = lambda source: trunk if source == provider.addr else None
    provider.invite("101", authenticate=False)
    assert provider.responses[-1].status == 200
    (call,) = net.core.calls
    assert call.inbound_trunk == "provider" and call.caller == "+4420555"
    stranger = net.phone("666", 5093)
    stranger.invite("101", authenticate=False)
    assert stranger.responses[-1].status == 407  # any other source is challenged


def test_only_invites_are_trusted_from_a_trunk() -> None:
    net = Net()
    provider = net.phone("+4420555", 5090)
    bob = net.phone("101", 5072)
    assert bob.register().status == 200
    trunk = InboundTrunk("provider", tenant_id=1, domain="default")
    net.core._trunk_of = lambda source: trunk if source == provider.addr else None
    message = provider._request("MESSAGE", "101", "101", body=b"hi", content_type="text/plain")
    provider.send(message)
    assert provider.responses[-1].status == 407  # MESSAGE is authenticated as always
    assert not list(net.core.calls) and not net.ended.calls
