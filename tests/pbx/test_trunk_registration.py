"""The PBX registering to a provider (registering trunks), in memory on a fake clock."""

from __future__ import annotations

from minipbx.pbx.trunk_registration import RegState, TrunkAccount
from minipbx.sip import Request
from minipbx.sip.digest import (
    Algorithm,
    AuthResult,
    DigestAuthenticator,
    compute_ha1,
    parse_credentials,
)
from minipbx.sip.transaction import RequestReceived
from tests.pbx.phones import Net, Phone

REALM = "sip.provider.test"


class ProviderRegistrar(Phone):
    """A provider's registrar: 401, then 200 granting ``grant`` seconds (or ``status``)."""

    def __init__(self, net: Net, port: int, password: str = "secret") -> None:
        super().__init__(net, "registrar", password, port)
        self.digest = DigestAuthenticator(b"r" * 32)
        self.registers: list[Request] = []
        self.grant = 120
        self.min_expires = 0
        self.status = 200

    def handle_events(self) -> None:
        now = self.net.clock.now
        while (event := self.layer.next_event()) is not None:
            if not isinstance(event, RequestReceived):
                continue
            req, tx = event.request, event.transaction
            self.registers.append(req)
            auth = req.headers.get("Authorization")
            expires = int(req.headers.get("Expires") or "3600")
            if auth is None:
                headers = [
                    ("WWW-Authenticate", c)
                    for c in [str(c) for c in self.digest.challenges(REALM, now)]
                ]
                self.layer.send_response(tx, req.response(401, headers=headers), now)
                continue
            creds = parse_credentials(auth)
            algorithm = Algorithm.from_name(creds.algorithm) or Algorithm.MD5
            ha1 = compute_ha1("acct", REALM, self.password, algorithm)
            verdict = self.digest.verify(
                creds, method="REGISTER", request_uri=str(req.uri), ha1=ha1, now=now
            )
            if verdict is not AuthResult.OK:
                headers = [
                    ("WWW-Authenticate", c)
                    for c in [str(c) for c in self.digest.challenges(REALM, now)]
                ]
                self.layer.send_response(tx, req.response(401, headers=headers), now)
            elif 0 < expires < self.min_expires:
                headers = [("Min-Expires", str(self.min_expires))]
                self.layer.send_response(tx, req.response(423, headers=headers), now)
            elif self.status != 200:
                self.layer.send_response(tx, req.response(self.status), now)
            else:
                granted = min(expires, self.grant)
                contact = f"{req.headers.get('Contact')};expires={granted}"
                self.layer.send_response(tx, req.response(200, headers=[("Contact", contact)]), now)


def _setup(password: str = "secret") -> tuple[Net, ProviderRegistrar, TrunkAccount]:
    net = Net()
    registrar = ProviderRegistrar(net, 5099)
    account = TrunkAccount(
        name="prov",
        registrar=registrar.addr,
        domain="provider.test",
        username="acct",
        password=password,
        expires=3600,
    )
    net.core.trunks.configure([account], net.clock.now)
    net.run()
    return net, registrar, account


def test_registers_with_digest_and_refreshes_at_80_percent() -> None:
    net, registrar, _ = _setup()
    (status,) = net.core.trunks.statuses()
    assert status.state is RegState.REGISTERED and status.last_status == 200
    first, second = registrar.registers
    assert str(first.uri) == "sip:provider.test:5099"
    assert first.to.uri.user == "acct" and first.from_.uri.host == "provider.test"
    assert second.headers.get("Authorization") and second.cseq.seq == first.cseq.seq + 1
    assert (net.core.trunks.trunks["prov"].registered_until or 0) - net.clock.now == 120
    net.advance(97)  # 80% of 120 s
    refresh = registrar.registers[2:]
    assert refresh and refresh[0].call_id == first.call_id  # one Call-ID per boot
    assert refresh[0].cseq.seq > second.cseq.seq
    assert net.core.trunks.statuses()[0].state is RegState.REGISTERED


def test_wrong_password_fails_and_backs_off() -> None:
    net, registrar, _ = _setup(password="wrong")
    status = net.core.trunks.statuses()[0]
    assert status.state is RegState.FAILED and "credentials refused" in status.last_error
    assert len(registrar.registers) == 2  # no loop of answers
    wait = (status.next_try or 0) - net.clock.now
    assert 15 <= wait <= 30
    net.advance(wait + 1)
    second = net.core.trunks.statuses()[0]
    assert second.failures == 2 and len(registrar.registers) == 4
    assert 29 <= (second.next_try or 0) - net.clock.now <= 60  # 30-60 s after the failure


def test_interval_too_brief_takes_min_expires() -> None:
    net = Net()
    registrar = ProviderRegistrar(net, 5099)
    registrar.min_expires = 7200
    registrar.grant = 7200
    account = TrunkAccount("prov", registrar.addr, "provider.test", "acct", "secret", expires=3600)
    net.core.trunks.configure([account], net.clock.now)
    net.run()
    assert net.core.trunks.statuses()[0].state is RegState.REGISTERED
    assert registrar.registers[-1].headers.get("Expires") == "7200"


def test_silent_registrar_is_a_failure_then_a_retry() -> None:
    net, registrar, _ = _setup()
    del net.phones[registrar.addr]
    net.advance(140)  # the refresh at 96 s goes nowhere; Timer F fires 32 s later
    status = net.core.trunks.statuses()[0]
    assert status.state is RegState.FAILED and status.last_status == 408
    net.phones[registrar.addr] = registrar
    net.advance(40)
    assert net.core.trunks.statuses()[0].state is RegState.REGISTERED


def test_refused_and_removed_trunks() -> None:
    net, registrar, _ = _setup()
    registrar.status = 403
    net.advance(100)
    status = net.core.trunks.statuses()[0]
    assert status.state is RegState.FAILED and status.last_error.startswith("403")
    registrar.status = 200
    net.advance(60)
    assert net.core.trunks.statuses()[0].state is RegState.REGISTERED
    count = len(registrar.registers)
    net.core.trunks.configure([], net.clock.now)  # the trunk was deleted: unregister
    net.run()
    assert [r.headers.get("Expires") for r in registrar.registers[count:]][-1] == "0"
    assert net.core.trunks.statuses() == []
