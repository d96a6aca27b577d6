"""The data of a call: its legs, state, outcome, and the seams around the B2BUA.

:class:`Router` decides where a call goes (local user now; dial plan, trunks and services
later), :class:`CallListener` hears every call end (call records, billing), and
:class:`Network` tells the B2BUA its own addresses. The B2BUA (``b2bua.py``) moves calls
through their states.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from minipbx.sip.dialog import Dialog
from minipbx.sip.headers import NameAddr, Via
from minipbx.sip.message import Request, Response
from minipbx.sip.sdp_origin import SdpOrigin
from minipbx.sip.transaction import ClientTransaction, ServerTransaction
from minipbx.sip.uri import Uri
from minipbx.transport.address import Address


class CallState(enum.Enum):
    """Where a call is; one module (this one) moves it forward."""

    ROUTING = "routing"  # B legs sent, nothing heard yet
    EARLY = "early"  # a provisional response relayed to the caller
    ANSWERED = "answered"  # 2xx relayed, dialogs confirmed on both sides
    ENDED = "ended"


class Disposition(enum.Enum):
    """How a call attempt ended, as call records name it."""

    ANSWERED = "ANSWERED"
    NO_ANSWER = "NO ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class LegAuth:
    """Credentials to answer a 401/407 from a target (a provider challenging the PBX)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Target:
    """One place to ring: the Request-URI to use and where to send it."""

    uri: Uri
    destination: Address
    path: tuple[str, ...] = ()  # RFC 3327 Path values of the binding, become Route headers
    from_: NameAddr | None = None  # From of the B leg (caller ID at a trunk); None: caller's
    auth: LegAuth | None = None  # answer one digest challenge of this target with these
    headers: tuple[tuple[str, str], ...] = ()  # added to the INVITE (P-Asserted-Identity...)
    body: bytes | None = None  # the SDP offer to send (codecs restricted); None: the caller's
    nat: bool = False  # a phone registered from behind NAT (its media may need the relay)


@dataclass(frozen=True, slots=True)
class Route:
    """What the router decided: ring these targets, or answer with ``status``."""

    targets: tuple[Target, ...] = ()
    # Rung when every first-choice target failed with 5xx or no answer (trunk failover).
    failover: tuple[Target, ...] = ()
    status: int = 0
    reason: str | None = None
    callee: str = ""  # the called number as routed, for records
    kind: str = "local"  # route type for records: local, trunk, service
    max_seconds: float | None = None  # answered calls are cut after this long
    warn_at: float | None = None  # the caller hears a warning this long after the answer
    no_answer: float | None = None  # ask the router to forward after this long ringing
    forwarded: bool = False  # the route is a forward: the caller hears 181
    service: str | None = None  # answered by the PBX itself ("ivr:main"): no targets
    trunk: str | None = None  # the trunk's name when kind is "trunk"
    # The extension that pays for a trunk route a forward or follow-me step made (its
    # billing was settled when the forward was routed); None: the caller's own call.
    billed_to: str | None = None


class Router(Protocol):
    """Decides where a new call goes, and where it goes next when its callee forwards."""

    def route(self, call: Call) -> Route: ...

    def forward(self, call: Call, why: str, to: str | None = None) -> Route | None:
        """Where the call goes now that its callee is ``why`` ("busy", "no_answer", or
        "redirect" to number ``to``, a 3xx from the phone); None: nowhere, fail as is."""
        ...

    def transfer(self, call: Call, kind: str, target: str) -> Route:
        """Where a service (auto attendant...) sends a call it answered: ``kind`` is a
        :class:`~minipbx.pbx.channel.TransferKind` value, ``target`` a number or user."""
        ...


@runtime_checkable
class TargetLookup(Protocol):
    """Routers that can also name a local user's contacts (the MESSAGE relay uses it)."""

    def targets(self, tenant_id: int, domain: str, number: str) -> Route: ...


class CallListener(Protocol):
    """Hears calls end (call records, billing)."""

    def call_ended(self, call: Call) -> bool:
        """``call`` ended (its fields are final). Return True to hold the answer to the
        request that hung it up (the 200 to a BYE) until the listener calls
        ``B2BUA.recorded(call, now)``: a durable record is then in place before the phone
        learns the call is over. Return False to let the answer go at once."""
        ...


class MediaAnchor(Protocol):
    """Where the PBX puts itself into a call's media (the relay for parties behind NAT).

    Every SDP body the B2BUA passes from one leg to the other goes through :meth:`sdp`;
    the default passes it unchanged (media end to end).
    """

    def prepare(self, call: Call, targets: Sequence[Target]) -> None:
        """The call is about to ring ``targets``: decide whether its media is anchored."""
        ...

    def sdp(self, call: Call, body: bytes, *, from_a: bool) -> bytes:
        """``body`` from the caller (``from_a``) or the callee, as the other side gets it."""
        ...

    def release(self, call: Call) -> None:
        """The call ended: free its media resources."""
        ...

    def warn(self, call: Call) -> bool:
        """Play the warning before the call is cut to the caller; False when it cannot
        (the call's media does not pass through the PBX)."""
        ...


class PassThrough:
    """Media end to end: SDP passes unchanged."""

    def prepare(self, call: Call, targets: Sequence[Target]) -> None:
        """Nothing to decide."""

    def sdp(self, call: Call, body: bytes, *, from_a: bool) -> bytes:
        """``body`` as it is."""
        return body

    def release(self, call: Call) -> None:
        """Nothing to free."""

    def warn(self, call: Call) -> bool:
        """The PBX is not in the media: no warning."""
        return False


class ServiceError(Exception):
    """A service cannot take the call; ``status`` is the answer to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class ServiceHost(Protocol):
    """Runs the PBX's own services (auto attendant...) on calls the B2BUA answers itself."""

    def start(self, call: Call, service: str, offer: bytes) -> bytes:
        """Begin ``service`` on ``call``: the SDP to answer ``offer`` with (or to offer,
        when ``offer`` is empty: the caller answers in its ACK). Raises ServiceError."""
        ...

    def media_update(self, call: Call, body: bytes) -> bytes | None:
        """A re-INVITE or UPDATE from the caller while the service runs: returns the answer
        to its offer, or our offer when it came without one (the answer then comes in the
        ACK, :meth:`acked`). Raises ServiceError (e.g. 488)."""
        ...

    def acked(self, call: Call, body: bytes) -> None:
        """The caller's ACK of a 2xx of the service: ``body`` is the answer when that 2xx
        carried our offer (RFC 3264 5). Raises ServiceError when the answer is missing or
        unusable (the B2BUA then hangs up)."""
        ...

    def info(self, call: Call, request: Request) -> int:
        """An INFO from the caller (DTMF, application/dtmf-relay): the status to answer."""
        ...

    def transferred(self, call: Call, status: int) -> None:
        """A transfer the service asked for ended: 200 (the call left the service) or why
        it failed (the caller is still with the service)."""
        ...

    def resume(self, call: Call, offer: bytes) -> bytes:
        """A transfer that asked to come back lost its callee: the caller, re-INVITEd
        without an offer, offered ``offer`` in its 2xx; the service takes the call again
        and returns the answer for the ACK (RFC 3264 5). Raises ServiceError."""
        ...

    def stop(self, call: Call) -> None:
        """The call ended: stop the service and free its media."""
        ...


@dataclass(frozen=True, slots=True)
class InboundTrunk:
    """A trunk that requests may come from without digest auth (its source addresses)."""

    name: str
    tenant_id: int
    domain: str


class Network(Protocol):
    """What the B2BUA needs to know about our own addresses."""

    def via(self, destination: Address, branch: str) -> Via: ...

    def contact(self, destination: Address) -> NameAddr: ...

    def reliable(self, destination: Address) -> bool: ...


@dataclass(slots=True, eq=False)
class BLeg:
    """One INVITE we sent for a call (one per forked contact)."""

    target: Target
    transaction: ClientTransaction
    request: Request
    dialog: Dialog | None = None
    provisional: bool = False  # a 1xx arrived: CANCEL is now allowed (RFC 3261 9.1)
    cancel_pending: bool = False
    final: int = 0  # final status, 0 while pending
    forwards: int = 70  # Max-Forwards it was sent with
    superseded: bool = False  # replaced by a forward or failover: its failure no longer counts
    heard: bool = False  # any response arrived (100 Trying included)
    authenticated: bool = False  # a challenge was answered already (never twice)


@dataclass(slots=True, eq=False)
class Call:
    """A call attempt: the caller's INVITE and our INVITEs to the callee."""

    id: str
    invite: Request
    server: ServerTransaction
    source: Address
    caller: str
    tenant_id: int
    domain: str
    started: float
    to_tag: str
    state: CallState = CallState.ROUTING
    legs: list[BLeg] = field(default_factory=list)
    winner: BLeg | None = None
    a_dialog: Dialog | None = None
    answered: float | None = None
    ended: float | None = None
    disposition: Disposition | None = None
    final_status: int = 0
    hangup_by: str = ""  # "caller", "callee", "system"
    reason: str = ""  # Reason header of the BYE/CANCEL (RFC 3326), or the PBX's own cause
    callee: str = ""
    route_kind: str = ""
    trunk: str | None = None
    inbound_trunk: str | None = None  # the trunk the call came in from (None: a user)
    user_agent: str = ""  # the caller's, for records (``invite`` is cut down once answered)
    ring_deadline: float = 0.0
    probe_due: float = 0.0  # next in-dialog OPTIONS to both legs (dead-peer detection)
    max_seconds: float | None = None  # duration limit of the call once answered
    warn_at: float | None = None  # seconds after answer to warn the caller (None once warned)
    failover: tuple[Target, ...] = ()  # targets left for trunk failover
    failover_at: float | None = None  # legs silent until then count as 408 (failover)
    no_answer_at: float | None = None  # then the router is asked where to forward
    forwarded_to: list[str] = field(default_factory=list)  # numbers forwarded to, in order
    # Follow-me in progress: whose list, and the steps still to ring (number, seconds, own
    # phones) in order (pbx/followme.py; the router moves on when a step fails).
    followme_owner: str | None = None
    followme_left: list[tuple[str, int, bool]] = field(default_factory=list)
    reinviting: bool = False  # a relayed re-INVITE awaits its final response
    service: str | None = None  # the PBX service answering the call now ("ivr:main")
    transfer_at: float | None = None  # a service's transfer stops ringing then
    transfer_limit: float | None = None  # the transfer's duration limit, from its answer
    transfer_warn: float | None = None  # its warning time (prepaid card), from its answer
    a_origin: SdpOrigin | None = None  # o= the caller saw from us (a service answered)
    # A transfer that comes back to its service when its callee hangs up (calling cards):
    come_back: str | None = None  # the service it returns to
    service_limit: float | None = None  # that service's own duration limit, restored then
    returned_at: float | None = None  # when the last such transfer's callee hung up
    # The answer to the hang-up request, held until the call's record is durable.
    held: tuple[ServerTransaction, Response] | None = None

    @property
    def due(self) -> float:
        """When the call next needs attention: ring timeout, dead-peer probe, its limit, a
        transfer's ring timeout or the warning before the limit."""
        if self.state is not CallState.ANSWERED:
            due = self.ring_deadline
            for at in (self.failover_at, self.no_answer_at):
                if at is not None and at < due:
                    due = at
            return due
        limit = self.limit_at
        due = self.probe_due if limit is None or self.probe_due < limit else limit
        transfer = self.transfer_at
        due = due if transfer is None or due < transfer else transfer
        if self.warn_at is not None and self.answered is not None:
            warn = self.answered + self.warn_at
            if warn < due:
                due = warn
        return due

    @property
    def limit_at(self) -> float | None:
        """When an answered call with a duration limit must end."""
        if self.max_seconds is None or self.answered is None:
            return None
        return self.answered + self.max_seconds

    @property
    def duration(self) -> float:
        """Seconds from answer to end (0 when never answered)."""
        if self.answered is None or self.ended is None:
            return 0.0
        return self.ended - self.answered


_K = TypeVar("_K")


class CallCounts:
    """Calls in progress per caller and per trunk, for concurrent-call limits.

    The B2BUA adds a call once it rings somewhere and removes it when it ends; the router
    reads the counts when it decides on a new call.
    """

    __slots__ = ("by_caller", "by_tenant", "by_trunk")

    def __init__(self) -> None:
        self.by_caller: dict[tuple[int, str], int] = {}
        self.by_trunk: dict[tuple[int, str], int] = {}
        self.by_tenant: dict[int, int] = {}

    def add(self, call: Call) -> None:
        """Count ``call``."""
        self._change(call, 1)

    def remove(self, call: Call) -> None:
        """Stop counting ``call``."""
        self._change(call, -1)

    def _change(self, call: Call, delta: int) -> None:
        _bump(self.by_tenant, call.tenant_id, delta)
        if call.inbound_trunk is None:
            _bump(self.by_caller, (call.tenant_id, call.caller), delta)
        else:
            _bump(self.by_trunk, (call.tenant_id, call.inbound_trunk), delta)
        if call.trunk is not None and call.trunk != call.inbound_trunk:
            _bump(self.by_trunk, (call.tenant_id, call.trunk), delta)

    def caller(self, tenant_id: int, caller: str) -> int:
        """Calls of a user in progress."""
        return self.by_caller.get((tenant_id, caller), 0)

    def tenant(self, tenant_id: int) -> int:
        """Calls of a tenant in progress (in and out)."""
        return self.by_tenant.get(tenant_id, 0)

    def trunk(self, tenant_id: int, name: str) -> int:
        """Calls in progress through a trunk (in and out)."""
        return self.by_trunk.get((tenant_id, name), 0)


def _bump(counts: dict[_K, int], key: _K, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Limits of calls, passed explicitly (DESIGN: configuration as a dataclass)."""

    ring_timeout: float = 60.0  # no answer after this: the caller gets 480
    probe_interval: float = 300.0  # in-dialog OPTIONS to both legs; a dead leg ends the call
    failover_timeout: float = 5.0  # a trunk silent this long (not even 100) fails over
    max_calls: int = 20000


def for_caller(status: int) -> int:
    """What a callee's final failure becomes for the caller.

    3xx: redirects are not followed yet (forwarding will), the callee is unreachable: 480.
    401/407: the callee challenged the PBX; the caller cannot answer that: 403.
    408/503: nobody answered / the phone is not taking calls: 480 (RFC 3261 16.7 step 6
    forbids passing 503 on).
    """
    if 300 <= status < 400 or status in (408, 503):
        return 480
    if status in (401, 407):
        return 403
    return status


def best_failure(statuses: Sequence[int]) -> int:
    """The response to pass upstream when every leg failed (RFC 3261 16.7 step 6)."""
    six = [s for s in statuses if s >= 600]
    if six:
        return min(six)
    if any(s == 486 for s in statuses):
        return 486
    mapped = [for_caller(s) for s in statuses] or [480]
    return min(mapped)


def disposition_of(status: int) -> Disposition:
    if 200 <= status < 300:
        return Disposition.ANSWERED
    if status in (486, 600):
        return Disposition.BUSY
    if status == 487:
        return Disposition.CANCELLED
    if status in (408, 480):
        return Disposition.NO_ANSWER
    return Disposition.FAILED
