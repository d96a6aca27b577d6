"""In-memory phones and a network joining them to a :class:`PbxCore` (no sockets, fake clock).

Every message crosses the "wire" as bytes and is parsed again, as it would be for real.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from minipbx.pbx.auth import RequestAuthenticator
from minipbx.pbx.call import Call, CallSettings
from minipbx.pbx.core import CoreSettings, PbxCore
from minipbx.pbx.location import MemoryLocation
from minipbx.pbx.ports import StaticUsers
from minipbx.pbx.registrar import Registrar
from minipbx.pbx.routing import LocalRouter
from minipbx.pbx.security import Guard, GuardConfig
from minipbx.sip import NameAddr, Request, Response, SipUri, Via, parse
from minipbx.sip.digest import DigestAuthenticator, answer_challenge, parse_challenge
from minipbx.sip.message import build_request
from minipbx.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerSettings,
    TransactionLayer,
    make_branch,
)
from minipbx.transport.address import Address
from minipbx.transport.routing import stamp_request

PBX = Address("udp", "127.0.0.1", 5060)
_counter = itertools.count(1)


def sdp(port: int) -> bytes:
    """A small audio offer/answer naming loopback."""
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


class Clock:
    """The fake clock every party shares."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


@dataclass
class TestNetwork:
    """The B2BUA's view of our own addresses."""

    def via(self, destination: Address, branch: str) -> Via:
        return Via("UDP", PBX.host, PBX.port, {"branch": branch, "rport": None})

    def contact(self, destination: Address) -> NameAddr:
        return NameAddr(SipUri(PBX.host, "minipbx", None, PBX.port))

    def reliable(self, destination: Address) -> bool:
        return destination.reliable


@dataclass
class Ended:
    calls: list[Call] = field(default_factory=list)
    hold: bool = False  # True: hold hang-up answers until the test calls B2BUA.recorded

    def call_ended(self, call: Call) -> bool:
        self.calls.append(call)
        return self.hold


class Phone:
    """A SIP user agent driven by the test: registers, calls, answers as told."""

    def __init__(self, net: Net, ext: str, password: str, port: int) -> None:
        self.net = net
        self.ext = ext
        self.password = password
        self.addr = Address("udp", "127.0.0.1", port)
        self.layer = TransactionLayer(TimerSettings(trying_delay=0.0))
        self.answer: Callable[[Phone, ServerTransaction, Request], None] = Phone.ring_and_answer
        self.responses: list[Response] = []
        self.requests: list[Request] = []
        self.sent_responses: list[Response] = []
        self.acks: list[Request] = []  # ACKs for our 2xx
        self.nc = itertools.count(1)
        self.to_tag = f"tag{ext}"
        net.phones[self.addr] = self

    # -- building requests ---------------------------------------------------------------

    def _request(self, method: str, uri: str, to: str, **extra: object) -> Request:
        me = SipUri("127.0.0.1", self.ext)
        return build_request(
            method,
            SipUri("127.0.0.1", uri),
            via=Via("UDP", "127.0.0.1", self.addr.port, {"branch": make_branch(), "rport": None}),
            from_=NameAddr(me, None, {"tag": f"f{next(_counter)}"}),
            to=NameAddr(SipUri("127.0.0.1", to)),
            call_id=f"c{next(_counter)}@127.0.0.1",
            cseq=1,
            headers=[("Contact", f"<sip:{self.ext}@127.0.0.1:{self.addr.port}>")],
            **extra,  # type: ignore[arg-type]
        )

    def _retry_with_auth(self, request: Request, response: Response) -> Request:
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenge = parse_challenge(response.headers.get_all(name)[-1])  # MD5
        creds = answer_challenge(
            challenge,
            method=request.method,
            uri=str(request.uri),
            username=self.ext,
            password=self.password,
            nc=next(self.nc),
            cnonce="abcdef0123456789",
        )
        retry = parse(bytes(request))
        assert isinstance(retry, Request)
        retry.headers.set("Authorization" if not proxy else "Proxy-Authorization", str(creds))
        retry.headers.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
        top = retry.via
        retry.headers.set(
            "Via",
            str(Via(top.transport, top.host, top.port, {"branch": make_branch(), "rport": None})),
        )
        return retry

    # -- actions ---------------------------------------------------------------------------

    def send(self, request: Request) -> None:
        self.layer.send_request(request, PBX, False, self.net.clock.now)
        self.net.run()

    def register(self, expires: int = 600) -> Response:
        req = build_request(
            "REGISTER",
            SipUri("127.0.0.1"),
            via=Via("UDP", "127.0.0.1", self.addr.port, {"branch": make_branch(), "rport": None}),
            from_=NameAddr(SipUri("127.0.0.1", self.ext), None, {"tag": f"r{next(_counter)}"}),
            to=NameAddr(SipUri("127.0.0.1", self.ext)),
            call_id=f"reg{self.ext}@127.0.0.1",
            cseq=1,
            headers=[
                ("Contact", f"<sip:{self.ext}@127.0.0.1:{self.addr.port}>"),
                ("Expires", str(expires)),
            ],
        )
        self.send(req)
        first = self.responses[-1]
        if first.status == 401:
            self.send(self._retry_with_auth(req, first))
        return self.responses[-1]

    def invite(self, callee: str, *, authenticate: bool = True, offer: bool = True) -> Request:
        """An INVITE to ``callee`` (with our SDP offer, or none: a late offer)."""
        body = {"body": sdp(4000 + self.addr.port % 1000), "content_type": "application/sdp"}
        req = self._request("INVITE", callee, callee, **(body if offer else {}))
        self.send(req)
        if authenticate and self.responses and self.responses[-1].status == 407:
            req = self._retry_with_auth(req, self.responses[-1])
            self.send(req)
        self.invite_request = req
        return req

    # -- answering -------------------------------------------------------------------------

    @staticmethod
    def ring_and_answer(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        now = phone.net.clock.now
        phone.layer.send_response(tx, request.response(180, to_tag=phone.to_tag), now)
        contact = [("Contact", f"<sip:{phone.ext}@127.0.0.1:{phone.addr.port}>")]
        ok = request.response(
            200,
            to_tag=phone.to_tag,
            headers=contact,
            body=sdp(6000),
            content_type="application/sdp",
        )
        phone.layer.send_response(tx, ok, now)
        phone.sent_responses.append(ok)

    @staticmethod
    def busy(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        phone.layer.send_response(
            tx, request.response(486, to_tag=phone.to_tag), phone.net.clock.now
        )

    @staticmethod
    def ring_only(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        phone.layer.send_response(
            tx, request.response(180, to_tag=phone.to_tag), phone.net.clock.now
        )
        phone.ringing = tx

    def handle_events(self) -> None:
        now = self.net.clock.now
        while (event := self.layer.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                self.responses.append(event.response)
            elif isinstance(event, AckReceived):
                self.acks.append(event.request)
            elif isinstance(event, RequestReceived):
                req = event.request
                self.requests.append(req)
                if req.method == "INVITE" and req.to.tag is None:
                    self.answer(self, event.transaction, req)
                elif req.method == "CANCEL":
                    self.layer.send_response(event.transaction, req.response(200), now)
                    ringing = getattr(self, "ringing", None)
                    if ringing is not None and not ringing.final_sent:
                        inv = ringing.request
                        self.layer.send_response(
                            ringing, inv.response(487, to_tag=self.to_tag), now
                        )
                elif req.method == "INVITE" and req.body:  # a re-INVITE: answer its offer
                    ok = req.response(
                        200,
                        headers=[("Contact", f"<sip:{self.ext}@127.0.0.1:{self.addr.port}>")],
                        body=sdp(4000 + self.addr.port % 1000),
                        content_type="application/sdp",
                    )
                    self.layer.send_response(event.transaction, ok, now)
                else:
                    self.layer.send_response(event.transaction, req.response(200), now)


class Net:
    """Delivers bytes between the PBX core and the phones until nothing moves."""

    def __init__(self, users: StaticUsers | None = None) -> None:
        self.clock = Clock()
        self.users = users or StaticUsers()
        self.guard = Guard(GuardConfig())
        digest = DigestAuthenticator(b"k" * 32)
        self.auth = RequestAuthenticator(digest, self.users, guard=self.guard)
        self.registrar = Registrar(MemoryLocation(), self.users, self.auth)
        self.ended = Ended()
        self.core = PbxCore(
            network=TestNetwork(),
            router=LocalRouter(self.users, self.registrar, lambda: self.clock.wall),
            listener=self.ended,
            authenticator=self.auth,
            registrar=self.registrar,
            guard=self.guard,
            wall_clock=lambda: self.clock.wall,
            settings=CoreSettings(calls=CallSettings(ring_timeout=30.0, probe_interval=60.0)),
        )
        self.phones: dict[Address, Phone] = {}
        self.lost = 0

    def phone(self, ext: str, port: int, password: str = "pw") -> Phone:
        if self.users.lookup("default", ext) is None:
            self.users.add_user(ext, password)
        return Phone(self, ext, password, port)

    def run(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            moved = False
            for data, dest in self.core.datagrams_to_send():
                moved = True
                phone = self.phones.get(dest)
                if phone is None:
                    self.lost += 1
                    continue
                phone.layer.receive(parse(data), PBX, self.clock.now)
                phone.handle_events()
            for phone in self.phones.values():
                for data, _ in phone.layer.datagrams_to_send():
                    moved = True
                    message = parse(data)
                    if isinstance(message, Request):
                        stamp_request(message, phone.addr)
                    self.core.receive(message, phone.addr, self.clock.now)
                phone.handle_events()
            if not moved:
                return
        raise AssertionError("the network never settled")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(step)
            self.core.handle_timer(self.clock.now)
            for phone in self.phones.values():
                phone.layer.handle_timer(self.clock.now)
                phone.handle_events()
            self.run()
