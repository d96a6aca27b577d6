"""The PBX core: dispatches SIP traffic to the registrar, the B2BUA and the small services.

Sans-IO like the SIP core: the asyncio glue hands it parsed messages with their source and
``now``, sends what ``datagrams_to_send()`` returns and calls ``handle_timer(now)`` at
``get_timer()``. It talks to the network only through its :class:`TransactionLayer`
(DESIGN.md), so a whole call runs in memory in the tests.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from minipbx.pbx.auth import RequestAuthenticator
from minipbx.pbx.b2bua import ALLOW, B2BUA
from minipbx.pbx.call import (
    Call,
    CallListener,
    CallSettings,
    InboundTrunk,
    Network,
    Router,
    TargetLookup,
)
from minipbx.pbx.location import Binding
from minipbx.pbx.messaging import MessageRelay
from minipbx.pbx.mwi import EVENT as MWI_EVENT
from minipbx.pbx.mwi import MessageWaiting, MwiSettings
from minipbx.pbx.ports import User
from minipbx.pbx.registrar import Registrar
from minipbx.pbx.routing import number_of
from minipbx.pbx.security import Guard
from minipbx.pbx.trunk_registration import TrunkRegistrations
from minipbx.sip.errors import ParseError
from minipbx.sip.headers import NameAddr, parse_name_addr_list
from minipbx.sip.message import Request, Response, build_request
from minipbx.sip.transaction import (
    AckReceived,
    AckTimedOut,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerSettings,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    make_branch,
)
from minipbx.transport.address import Address

log = logging.getLogger("minipbx.core")

# RFC 3261 8.2.1: methods we know (405 when not allowed here) vs. unknown ones (501).
_KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "MESSAGE",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "PUBLISH",
        "PRACK",
    ]
)
SUPPORTED = "path, outbound"
_SUPPORTED_OPTIONS = frozenset({"path", "outbound"})
ACCEPT = "application/sdp"


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Behaviour of the core; passed explicitly."""

    user_agent: str = "minipbx"
    timers: TimerSettings = field(default_factory=TimerSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    mwi: MwiSettings = field(default_factory=MwiSettings)


_CHALLENGED = frozenset({"REGISTER", "INVITE"})


def _refused_body(request: Request) -> bool:
    """True for an INVITE body we cannot take: answered 415 (RFC 3261 21.4.13)."""
    if not request.body:
        return False
    ctype = (request.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
    return ctype not in ("application/sdp", "multipart/mixed")


def _asserted_caller(request: Request) -> str:
    """The caller number of an INVITE from a trusted trunk: its P-Asserted-Identity
    (RFC 3325 9.1, a trusted peer's assertion), else its From user."""
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            identities = parse_name_addr_list(value, "P-Asserted-Identity")
        except ParseError:
            continue
        for identity in identities:
            number = number_of(identity.uri)
            if number:
                return number
    return number_of(request.from_.uri)


class PbxCore:
    """Routes events of the transaction layer to the parts of the PBX."""

    def __init__(
        self,
        *,
        network: Network,
        router: Router,
        listener: CallListener,
        authenticator: RequestAuthenticator,
        registrar: Registrar,
        guard: Guard,
        wall_clock: Callable[[], float],
        settings: CoreSettings | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        is_self: Callable[[Address], bool] = lambda _address: False,
        trunk_of: Callable[[Address], InboundTrunk | None] = lambda _address: None,
    ) -> None:
        """``wall_clock`` is the time of registrations, nonces and bans (they outlive a
        restart); every other ``now`` is the glue's monotonic clock (transactions, calls)."""
        self.settings = settings or CoreSettings()
        self.layer = TransactionLayer(self.settings.timers)
        self.b2bua = B2BUA(self.layer, network, router, listener, self.settings.calls, entropy)
        self.trunks = TrunkRegistrations(self.layer, network, entropy)
        self.authenticator = authenticator
        self.registrar = registrar
        self.guard = guard
        self._wall = wall_clock
        self._is_self = is_self
        self._trunk_of = trunk_of
        self.messages = (
            MessageRelay(self.layer, network, router, entropy)
            if isinstance(router, TargetLookup)
            else None
        )
        # MWI (RFC 3842): SUBSCRIBE/NOTIFY for message-summary. Counts are zero until the
        # app sets ``self.mwi.counts``; the voicemail store reports changes to
        # ``self.mwi.changed(...)``.
        self.mwi = MessageWaiting(
            self.layer, network, registrar, authenticator, wall_clock, self.settings.mwi, entropy
        )

    # -- glue interface --------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Address, now: float) -> None:
        """A parsed message from ``source`` (transport already applied RFC 3581).

        Responses and in-dialog requests go back to ``source`` itself, the packet's real
        origin, also when the client did not ask for rport: that is what makes phones
        behind NAT work (as Asterisk's force_rport), at the price of strict RFC 3261
        18.2.2 routing for clients that are not behind NAT and listen elsewhere.
        """
        if isinstance(message, Request):
            if not self.guard.allow(source.host, self._wall()):
                return  # flood: dropped without an answer (the guard logged it)
            if self._is_self(source) and message.method != "ACK":
                # A request from our own listener: a contact or route pointing back at the
                # PBX made it call itself. The B2BUA hides the Via trail, so stop it here.
                self.layer.send_stateless(message.response(482, to_tag=_tag()), source)
                log.warning("event=loop call_id=%s", message.call_id)
                return
            if message.method in _CHALLENGED and self._challenged_statelessly(message, source):
                return
        self.layer.receive(message, source, now)
        self._drain(now)

    def _challenged_statelessly(self, request: Request, source: Address) -> bool:
        """Answer a new REGISTER or INVITE without credentials 401/407, outside a transaction.

        RFC 3261 8.2.7: a UAS may issue challenges statelessly; it then sends no 1xx, never
        retransmits, and ignores the ACK and CANCEL that follow (a lost challenge is made
        again for the client's retransmission, with a fresh nonce). Half the requests of
        every registration and call are such challenges: no transaction is kept 32 s
        (Timer J) for them. Requests answered otherwise before authentication (in-dialog,
        Require, Max-Forwards, a refused body, a trunk's INVITE) take the stateful path.
        """
        headers = request.headers
        if request.to.tag is not None or "Require" in headers:
            return False
        proxy = request.method == "INVITE"
        if proxy:
            if (
                "Proxy-Authorization" in headers
                or request.max_forwards == 0
                or _refused_body(request)
                or self._trunk_of(source) is not None
            ):
                return False
        elif "Authorization" in headers:
            return False
        outcome = self.authenticator.check(
            request, proxy=proxy, source_ip=source.host, now=self._wall()
        )
        assert outcome.response is not None  # no credentials: always a challenge
        self.layer.send_stateless(outcome.response, source)
        return True

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""
        self.layer.handle_timer(now)
        self.b2bua.tick(now)
        self.trunks.tick(now)
        self.mwi.handle_timer(now)
        self._drain(now)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run."""
        times = [
            t
            for t in (
                self.layer.get_timer(),
                self.b2bua.next_deadline(),
                self.trunks.next_deadline(),
                self.mwi.next_deadline(),
            )
            if t is not None
        ]
        return min(times) if times else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Every message queued for the network since the last call."""
        return self.layer.datagrams_to_send()  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        """How much state the core holds, by kind: what ``minipbx run`` logs on SIGUSR1
        (``event=state``) and what the soak benchmark compares before and after."""
        sizes = self.layer.sizes()
        sizes.update(self.b2bua.sizes())
        sizes["bindings"] = self.registrar.location.count()
        sizes["digest_nonces"] = self.authenticator.digest.tracked_nonces
        return sizes

    @property
    def calls(self) -> Iterable[Call]:
        """Calls in progress (for the console and shutdown)."""
        return list(self.b2bua.calls.values())

    def hangup_all(self, now: float, reason: str = "shutdown") -> None:
        """End every call with BYE/CANCEL (clean shutdown)."""
        for call in self.calls:
            self.b2bua.hangup(call, now, reason)
        self._drain(now)

    def keepalive(self, bindings: Iterable[Binding], now: float) -> None:
        """OPTIONS to each binding's real address: keeps its NAT mapping open."""
        network = self.b2bua.network
        for binding in bindings:
            dest = binding.received
            try:
                uri = binding.uri
            except ParseError:
                continue
            local = network.contact(dest)
            request = build_request(
                "OPTIONS",
                uri,
                via=network.via(dest, make_branch()),
                from_=NameAddr(local.uri, None, {"tag": _tag()}),
                to=NameAddr(uri),
                call_id=f"{_tag()}{_tag()}",
                cseq=1,
            )
            self.layer.send_request(request, dest, dest.reliable, now)

    # -- dispatch --------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        layer = self.layer
        b2bua = self.b2bua
        messages = self.messages
        trunks = self.trunks
        while (event := layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                source = event.source
                assert isinstance(source, Address)
                self._request(event.transaction, event.request, source, now)
            elif isinstance(event, ResponseReceived):
                client, response = event.transaction, event.response
                if not (
                    trunks.on_response(client, response, now)
                    or (messages and messages.on_response(client, response, now))
                    or self.mwi.on_response(client, response, now)
                ):
                    b2bua.on_response(client, response, now)
            elif isinstance(event, AckReceived):
                b2bua.on_ack(event.request, now)
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                tx = event.transaction
                if isinstance(tx, ClientTransaction) and not (
                    trunks.on_timeout(tx, now)
                    or (messages and messages.on_timeout(tx, now))
                    or self.mwi.on_timeout(tx, now)
                ):
                    b2bua.on_timeout(tx, now)
            elif isinstance(event, TransactionTerminated):
                tx = event.transaction
                if isinstance(tx, ClientTransaction):
                    b2bua.forget(tx)
            elif isinstance(event, AckTimedOut):
                # RFC 3261 13.3.1.4: no ACK for our 2xx within 64*T1: end the dialog.
                call = b2bua.call_of(event.transaction)
                if call is not None:
                    b2bua.hangup(call, now, "no_ack")

    def _request(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> None:
        method = request.method
        if method not in _KNOWN_METHODS:
            self._reply(tx, request, 501, now, [("Allow", ALLOW)])
            return
        unsupported = self._unsupported(request)
        if unsupported:  # RFC 3261 8.2.2.3
            self._reply(tx, request, 420, now, [("Unsupported", ", ".join(unsupported))])
            return
        if request.to.tag is not None and method != "CANCEL":
            self._in_dialog(tx, request, source, now)
            return
        if method == "CANCEL":
            self._cancel(tx, request, now)
        elif method == "OPTIONS":
            self._reply(tx, request, 200, now, self._capabilities())
        elif method == "REGISTER":
            self._registration(tx, request, source, now)
        elif method == "INVITE":
            self._invite(tx, request, source, now)
        elif method == "MESSAGE":
            self._message(tx, request, source, now)
        elif method == "SUBSCRIBE":
            self.mwi.subscribe(tx, request, source, now)  # RFC 6665; 489 for other events
        else:
            self._reply(tx, request, 405, now, [("Allow", ALLOW)])

    def _in_dialog(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> None:
        if self.mwi.on_in_dialog(tx, request, source, now):
            return  # a refresh or unsubscription of an MWI subscription (RFC 6665 4.2.1.2)
        if not self.b2bua.on_in_dialog(tx, request, source, now):
            self._reply(tx, request, 481, now)

    def _cancel(self, tx: ServerTransaction, request: Request, now: float) -> None:
        invite_tx = self.layer.find_cancelled(request)
        if invite_tx is None:
            self._reply(tx, request, 481, now)  # RFC 3261 9.2
            return
        self._reply(tx, request, 200, now)
        if not invite_tx.final_sent and not self.b2bua.on_cancel(invite_tx, now, request):
            invite = invite_tx.request
            self.layer.send_response(invite_tx, invite.response(487, to_tag=_tag()), now)

    def _registration(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> None:
        response = self.registrar.handle(request, source, self._wall())
        self.layer.send_response(tx, response, now)

    def _invite(self, tx: ServerTransaction, request: Request, source: Address, now: float) -> None:
        if _refused_body(request):
            self._reply(tx, request, 415, now, [("Accept", ACCEPT)])  # RFC 3261 21.4.13
            return
        if request.max_forwards == 0:
            self._reply(tx, request, 483, now)  # RFC 3261 16.3 step 3
            return
        trunk = self._trunk_of(source)
        if trunk is not None:  # an IP-authenticated trunk: routed by DID, never to a trunk
            self.b2bua.new_call(
                tx,
                request,
                source,
                caller=_asserted_caller(request),
                tenant_id=trunk.tenant_id,
                domain=trunk.domain,
                now=now,
                inbound_trunk=trunk.name,
            )
            return
        user = self._authenticated(tx, request, source, now)
        if user is not None:
            self.b2bua.new_call(
                tx,
                request,
                source,
                caller=user.extension,
                tenant_id=user.tenant_id,
                domain=user.domain,
                now=now,
            )

    def _authenticated(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> User | None:
        """The user who sent ``request``, or None after answering 407/403/400 for us."""
        outcome = self.authenticator.check(
            request, proxy=True, source_ip=source.host, now=self._wall()
        )
        if outcome.user is None:
            assert outcome.response is not None
            self.layer.send_response(tx, outcome.response, now)
        return outcome.user

    @staticmethod
    def _unsupported(request: Request) -> list[str]:
        if request.method in ("ACK", "CANCEL") or "Require" not in request.headers:
            return []
        try:
            required = request.tokens("Require")
        except ParseError:
            return ["(malformed)"]
        return [option for option in required if option.lower() not in _SUPPORTED_OPTIONS]

    def _message(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> None:
        if self.messages is None:
            self._reply(tx, request, 405, now, [("Allow", ALLOW)])
            return
        user = self._authenticated(tx, request, source, now)
        if user is not None:
            self.messages.handle(tx, request, user, now)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ALLOW),
            ("Accept", ACCEPT),
            ("Supported", SUPPORTED),
            ("Allow-Events", MWI_EVENT),  # RFC 6665 8.2.2: the packages we notify
        ]

    def _reply(
        self,
        tx: ServerTransaction,
        request: Request,
        status: int,
        now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        tag = _tag() if request.to.tag is None else None
        response = request.response(status, to_tag=tag, headers=headers or [])
        self.layer.send_response(tx, response, now)


def _tag() -> str:
    return secrets.token_hex(6)
