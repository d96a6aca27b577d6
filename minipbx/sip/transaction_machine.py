"""The four transaction state machines of RFC 3261 17 with the RFC 6026 changes, as data.

Every transition lives in :data:`TRANSITIONS`: ``(kind, state, trigger) -> (next state,
actions)``; a trigger with no entry is illegal and raises :class:`TransactionError`. The
timers that run in each state live in :data:`STATE_TIMERS`; entering a state disarms the
timers it does not list and arms the ones it lists that are not running yet.

A transaction owns no clock, socket or queue: it hands bytes, events and deadlines to its
host, the :class:`~minipbx.sip.transaction.TransactionLayer`, through the small
:class:`Host` protocol. Users import everything from :mod:`minipbx.sip.transaction`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from minipbx.sip.errors import TransactionError
from minipbx.sip.message import Headers, Request, Response
from minipbx.sip.parser import parse
from minipbx.sip.uri import Uri

Address = Hashable  # opaque to this layer: the glue's (transport, host, port) or similar
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 8.1.1.7


class TransactionKind(enum.Enum):
    """The four machines of RFC 3261 17.1.1, 17.1.2, 17.2.1 and 17.2.2."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow (3.11)

    CLIENT_INVITE = "client-invite"
    CLIENT_NON_INVITE = "client-non-invite"
    SERVER_INVITE = "server-invite"
    SERVER_NON_INVITE = "server-non-invite"


class TxState(enum.Enum):
    """Transaction states (RFC 3261 figures 5-8, RFC 6026 figures 5 and 7)."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow (3.11)

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Trigger(enum.Enum):
    """What drives a machine: a message from the wire or the TU, a timer, a transport error."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow (3.11)

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_FINAL = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "100 Trying timer"  # RFC 3261 17.2.1: the 200 ms rule
    TIMER_2XX = "2xx retransmission timer"  # RFC 3261 13.3.1.4, run for the UAS core
    TIMER_CANCEL = "CANCEL timer"  # RFC 3261 9.1: no final response 64*T1 after CANCEL


class Action(enum.Enum):
    """What a transition does, in the order listed, before entering the next state."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow (3.11)

    PASS_RESPONSE = enum.auto()  # hand the response to the TU
    SEND_ACK = enum.auto()  # build and send the ACK for a 300-699 (RFC 3261 17.1.1.3)
    RESEND_ACK = enum.auto()
    RETRANSMIT_REQUEST = enum.auto()  # timers A and E
    SEND_RESPONSE = enum.auto()  # a response from the TU
    RESEND_RESPONSE = enum.auto()  # the last response, for a retransmitted request
    RETRANSMIT_RESPONSE = enum.auto()  # timer G and the 2xx timer
    SEND_TRYING = enum.auto()
    TIMEOUT = enum.auto()  # tell the TU: timer B, F or H fired
    TRANSPORT_FAILED = enum.auto()  # tell the TU
    PASS_ACK = enum.auto()  # ACK for our 2xx: stop retransmitting it, tell the TU
    CHECK_ACKED = enum.auto()  # timer L: tell the TU when our 2xx was never ACKed


_CI = TransactionKind.CLIENT_INVITE
_CN = TransactionKind.CLIENT_NON_INVITE
_SI = TransactionKind.SERVER_INVITE
_SN = TransactionKind.SERVER_NON_INVITE
S, T, A = TxState, Trigger, Action  # short names for the tables below
Transition = tuple[TxState, tuple[Action, ...]]

TRANSITIONS: dict[tuple[TransactionKind, TxState, Trigger], Transition] = {
    # Client INVITE: RFC 3261 17.1.1.2 / figure 5, as changed by RFC 6026 7.2.
    (_CI, S.CALLING, T.TIMER_A): (S.CALLING, (A.RETRANSMIT_REQUEST,)),
    (_CI, S.CALLING, T.TIMER_B): (S.TERMINATED, (A.TIMEOUT,)),
    (_CI, S.CALLING, T.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (_CI, S.CALLING, T.RECV_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (_CI, S.CALLING, T.RECV_FINAL): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE)),
    (_CI, S.CALLING, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_CI, S.CALLING, T.TIMER_CANCEL): (S.TERMINATED, (A.TIMEOUT,)),
    (_CI, S.PROCEEDING, T.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (_CI, S.PROCEEDING, T.RECV_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (_CI, S.PROCEEDING, T.RECV_FINAL): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE)),
    (_CI, S.PROCEEDING, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_CI, S.PROCEEDING, T.TIMER_CANCEL): (S.TERMINATED, (A.TIMEOUT,)),
    (_CI, S.COMPLETED, T.RECV_1XX): (S.COMPLETED, ()),
    (_CI, S.COMPLETED, T.RECV_2XX): (S.COMPLETED, ()),
    (_CI, S.COMPLETED, T.RECV_FINAL): (S.COMPLETED, (A.RESEND_ACK,)),
    (_CI, S.COMPLETED, T.TIMER_D): (S.TERMINATED, ()),
    (_CI, S.COMPLETED, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_CI, S.ACCEPTED, T.RECV_1XX): (S.ACCEPTED, ()),
    (_CI, S.ACCEPTED, T.RECV_2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),  # RFC 6026 8.4
    (_CI, S.ACCEPTED, T.RECV_FINAL): (S.ACCEPTED, ()),
    (_CI, S.ACCEPTED, T.TIMER_M): (S.TERMINATED, ()),
    (_CI, S.ACCEPTED, T.TRANSPORT_ERROR): (S.ACCEPTED, ()),  # the TU sends the ACK
    # Client non-INVITE: RFC 3261 17.1.2.2 / figure 6.
    (_CN, S.TRYING, T.TIMER_E): (S.TRYING, (A.RETRANSMIT_REQUEST,)),
    (_CN, S.TRYING, T.TIMER_F): (S.TERMINATED, (A.TIMEOUT,)),
    (_CN, S.TRYING, T.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (_CN, S.TRYING, T.RECV_2XX): (S.COMPLETED, (A.PASS_RESPONSE,)),
    (_CN, S.TRYING, T.RECV_FINAL): (S.COMPLETED, (A.PASS_RESPONSE,)),
    (_CN, S.TRYING, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_CN, S.PROCEEDING, T.TIMER_E): (S.PROCEEDING, (A.RETRANSMIT_REQUEST,)),
    (_CN, S.PROCEEDING, T.TIMER_F): (S.TERMINATED, (A.TIMEOUT,)),
    (_CN, S.PROCEEDING, T.RECV_1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (_CN, S.PROCEEDING, T.RECV_2XX): (S.COMPLETED, (A.PASS_RESPONSE,)),
    (_CN, S.PROCEEDING, T.RECV_FINAL): (S.COMPLETED, (A.PASS_RESPONSE,)),
    (_CN, S.PROCEEDING, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_CN, S.COMPLETED, T.RECV_1XX): (S.COMPLETED, ()),
    (_CN, S.COMPLETED, T.RECV_2XX): (S.COMPLETED, ()),
    (_CN, S.COMPLETED, T.RECV_FINAL): (S.COMPLETED, ()),
    (_CN, S.COMPLETED, T.TIMER_K): (S.TERMINATED, ()),
    (_CN, S.COMPLETED, T.TRANSPORT_ERROR): (S.COMPLETED, ()),
    # Server INVITE: RFC 3261 17.2.1 / figure 7 as changed by RFC 6026 7.1 (transport
    # errors inform the TU but no longer end the transaction, RFC 6026 8.7).
    (_SI, S.PROCEEDING, T.RECV_REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (_SI, S.PROCEEDING, T.TIMER_TRYING): (S.PROCEEDING, (A.SEND_TRYING,)),
    (_SI, S.PROCEEDING, T.SEND_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (_SI, S.PROCEEDING, T.SEND_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (_SI, S.PROCEEDING, T.SEND_FINAL): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (_SI, S.PROCEEDING, T.TRANSPORT_ERROR): (S.PROCEEDING, (A.TRANSPORT_FAILED,)),
    (_SI, S.COMPLETED, T.RECV_REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (_SI, S.COMPLETED, T.RECV_ACK): (S.CONFIRMED, ()),
    (_SI, S.COMPLETED, T.TIMER_G): (S.COMPLETED, (A.RETRANSMIT_RESPONSE,)),
    (_SI, S.COMPLETED, T.TIMER_H): (S.TERMINATED, (A.TIMEOUT,)),
    (_SI, S.COMPLETED, T.TRANSPORT_ERROR): (S.COMPLETED, (A.TRANSPORT_FAILED,)),
    (_SI, S.CONFIRMED, T.RECV_REQUEST): (S.CONFIRMED, ()),
    (_SI, S.CONFIRMED, T.RECV_ACK): (S.CONFIRMED, ()),
    (_SI, S.CONFIRMED, T.TIMER_I): (S.TERMINATED, ()),
    (_SI, S.CONFIRMED, T.TRANSPORT_ERROR): (S.CONFIRMED, ()),
    (_SI, S.ACCEPTED, T.RECV_REQUEST): (S.ACCEPTED, ()),  # RFC 6026 7.1: absorbed
    (_SI, S.ACCEPTED, T.RECV_ACK): (S.ACCEPTED, (A.PASS_ACK,)),
    (_SI, S.ACCEPTED, T.SEND_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (_SI, S.ACCEPTED, T.TIMER_2XX): (S.ACCEPTED, (A.RETRANSMIT_RESPONSE,)),
    (_SI, S.ACCEPTED, T.TIMER_L): (S.TERMINATED, (A.CHECK_ACKED,)),
    (_SI, S.ACCEPTED, T.TRANSPORT_ERROR): (S.ACCEPTED, (A.TRANSPORT_FAILED,)),
    # Server non-INVITE: RFC 3261 17.2.2 / figure 8.
    (_SN, S.TRYING, T.RECV_REQUEST): (S.TRYING, ()),
    (_SN, S.TRYING, T.SEND_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (_SN, S.TRYING, T.SEND_2XX): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (_SN, S.TRYING, T.SEND_FINAL): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (_SN, S.TRYING, T.TRANSPORT_ERROR): (S.TRYING, ()),
    (_SN, S.PROCEEDING, T.RECV_REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (_SN, S.PROCEEDING, T.SEND_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (_SN, S.PROCEEDING, T.SEND_2XX): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (_SN, S.PROCEEDING, T.SEND_FINAL): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (_SN, S.PROCEEDING, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
    (_SN, S.COMPLETED, T.RECV_REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (_SN, S.COMPLETED, T.TIMER_J): (S.TERMINATED, ()),
    (_SN, S.COMPLETED, T.TRANSPORT_ERROR): (S.TERMINATED, (A.TRANSPORT_FAILED,)),
}

# Timers that run in each state: entering a state arms those with a duration (see
# TimerSettings.durations) and keeps running only those listed. Timer B runs in Calling only
# (RFC 3261 figure 5): once a provisional arrived, how long to ring is the TU's decision; it
# sends CANCEL, which arms the CANCEL timer (no duration: armed by the layer, not on entry).
STATE_TIMERS: dict[tuple[TransactionKind, TxState], tuple[Trigger, ...]] = {
    (_CI, S.CALLING): (T.TIMER_A, T.TIMER_B, T.TIMER_CANCEL),
    (_CI, S.PROCEEDING): (T.TIMER_CANCEL,),
    (_CI, S.COMPLETED): (T.TIMER_D,),
    (_CI, S.ACCEPTED): (T.TIMER_M,),
    (_CN, S.TRYING): (T.TIMER_E, T.TIMER_F),
    (_CN, S.PROCEEDING): (T.TIMER_E, T.TIMER_F),  # both keep running (RFC 3261 17.1.2.2)
    (_CN, S.COMPLETED): (T.TIMER_K,),
    (_SI, S.PROCEEDING): (T.TIMER_TRYING,),
    (_SI, S.COMPLETED): (T.TIMER_G, T.TIMER_H),
    (_SI, S.CONFIRMED): (T.TIMER_I,),
    (_SI, S.ACCEPTED): (T.TIMER_2XX, T.TIMER_L),
    (_SN, S.TRYING): (),
    (_SN, S.PROCEEDING): (),
    (_SN, S.COMPLETED): (T.TIMER_J,),
}
for _kind in TransactionKind:
    STATE_TIMERS[(_kind, S.TERMINATED)] = ()

INITIAL_STATE = {_CI: S.CALLING, _CN: S.TRYING, _SI: S.PROCEEDING, _SN: S.TRYING}
_RETRANSMIT_TIMERS = frozenset({T.TIMER_A, T.TIMER_E, T.TIMER_G, T.TIMER_2XX})
# The running timers of a transaction that never armed one (most server non-INVITE ones:
# no timer before Completed, and the host runs Timer J apart). Shared and never written:
# the host gives a transaction its own dict when it arms the first timer.
NO_TIMERS: dict[Trigger, int] = {}


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """Transaction timer values in seconds (RFC 3261 17 and the table of appendix A).

    ``t1``: round-trip estimate and base of A, B, E, F, G, H, J, L, M (500 ms).
    ``t2``: cap on the retransmission interval of non-INVITE requests and of INVITE
    responses (4 s). ``t4``: how long a message may stay in the network; timers I, K (5 s).
    ``timer_d``: how long a client INVITE transaction absorbs retransmitted 300-699
    responses over UDP (RFC 3261 17.1.1.2: at least 32 s).
    ``trying_delay``: a server INVITE transaction sends 100 Trying by itself when the TU
    has sent no response this long after the INVITE arrived (RFC 3261 17.2.1: 200 ms);
    0 sends it at once.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError(f"need 0 < t1 <= t2, got t1={self.t1} t2={self.t2}")
        if self.t4 <= 0 or self.timer_d < 0 or self.trying_delay < 0:
            raise ValueError("t4 must be positive, timer_d and trying_delay not negative")

    def durations(self, reliable: bool) -> dict[Trigger, float | None]:
        """Initial value of every timer; None for one that does not run on this transport.

        RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2: reliable transports retransmit
        nothing (A, E, G unused) and use zero for D, I, J and K.
        """
        t1, t4, long = self.t1, self.t4, 64 * self.t1
        return {
            T.TIMER_A: None if reliable else t1,
            T.TIMER_B: long,
            T.TIMER_D: 0.0 if reliable else self.timer_d,
            T.TIMER_E: None if reliable else t1,
            T.TIMER_F: long,
            T.TIMER_G: None if reliable else t1,
            T.TIMER_H: long,
            T.TIMER_I: 0.0 if reliable else t4,
            T.TIMER_J: 0.0 if reliable else long,
            T.TIMER_K: 0.0 if reliable else t4,
            T.TIMER_L: long,  # RFC 6026 8.7
            T.TIMER_M: long,  # RFC 6026 8.4
            T.TIMER_TRYING: self.trying_delay,
            T.TIMER_2XX: None if reliable else t1,  # RFC 3261 13.3.1.4
            T.TIMER_CANCEL: None,  # armed by the layer when a CANCEL is sent
        }


# ---------------------------------------------------------------------------------------
# Events reported to the transaction user (small frozen dataclasses, h11/wsproto style).


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request: the TU answers it with ``layer.send_response(transaction, ...)``.

    CANCEL arrives this way too, in its own transaction; ``layer.find_cancelled(request)``
    gives the INVITE server transaction it cancels (None: answer 481, RFC 3261 9.2).
    """

    transaction: ServerTransaction
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (its own transaction, RFC 3261 17): for the TU / dialog.

    ``transaction`` is the INVITE server transaction whose 2xx it acknowledges while that
    one is still in Accepted, else None.
    """

    request: Request
    source: Address
    transaction: ServerTransaction | None = None

    def __post_init__(self) -> None:
        if self.request.method != "ACK":
            raise ValueError(f"AckReceived needs an ACK, not {self.request.method}")


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction (including 2xx retransmissions, RFC 6026)."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True, slots=True)
class UnmatchedResponse:
    """A response that matches no client transaction (RFC 3261 17.1.3, RFC 6026 7.5)."""

    response: Response
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F or H fired. For a client transaction the TU acts as on a 408."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The glue reported a transport error for this transaction (RFC 3261 17.1.4, 17.2.4)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """Our 2xx to an INVITE got no ACK in 64*T1: the TU should send BYE (RFC 3261 13.3.1.4)."""

    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and left every table of the layer."""

    transaction: Transaction


Event = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | UnmatchedResponse
    | TransactionTimedOut
    | TransportFailed
    | AckTimedOut
    | TransactionTerminated
)


class Spooled(Protocol):
    """Where a compacted transaction's response bytes went (the host's spool)."""

    def get(self, key: Hashable) -> bytes:
        """The bytes stored for the transaction whose key is ``key`` (this very object)."""
        ...


class Host(Protocol):
    """What a transaction needs from the layer that holds it."""

    settings: TimerSettings
    _durations: dict[bool, dict[Trigger, float | None]]

    def _send(self, data: bytes, destination: Address) -> None: ...

    def _emit(self, event: Event) -> None: ...

    def _arm(self, tx: Transaction, timer: Trigger, deadline: float) -> None: ...

    def _disarm(self, tx: Transaction, timer: Trigger) -> None: ...

    def _removed(self, tx: Transaction) -> None: ...


# ---------------------------------------------------------------------------------------
# Transactions.


class Transaction:
    """State common to the four machines. Created by the layer, never directly."""

    __slots__ = (
        "_data",
        "_durations",
        "_host",
        "_interval",
        "_last_response",
        "_parts",
        "_request",
        "_t2",
        "_timers",
        "key",
        "kind",
        "peer",
        "reliable",
        "state",
    )

    def __init__(
        self,
        kind: TransactionKind,
        request: Request,
        peer: Address,
        reliable: bool,
        key: Hashable,
        host: Host,
    ) -> None:
        self.kind = kind
        self.state = INITIAL_STATE[kind]
        self._request: Request | None = request
        self.reliable = reliable
        self.peer = peer
        self.key = key
        self._last_response: Response | None = None
        # Request-URI (and the To line when the response's does not give it back) of a
        # compacted transaction, see ServerTransaction._compact
        self._parts: Uri | tuple[Uri, str] | None = None
        self._host = host
        self._durations = host._durations[reliable]
        self._t2 = host.settings.t2
        self._timers = NO_TIMERS  # running timer -> token of its heap entry (host's business)
        # Current retransmission interval; in Completed of a server non-INVITE transaction
        # (no retransmissions) the deadline of Timer J, which its host keeps in a queue.
        self._interval = 0.0
        self._data = b""  # client: the request; server: the last response, serialized

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key!r} {self.state.name}>"

    @property
    def request(self) -> Request:
        """The request of the transaction (only its identifying headers once it ended)."""
        request = self._request
        if request is None:
            request = self._request = self._rebuild_request()
        return request

    @request.setter
    def request(self, request: Request) -> None:
        self._request = request

    @property
    def last_response(self) -> Response | None:
        """The last response sent (server) or received (client), if any."""
        response = self._last_response
        if response is None and self._parts is not None:
            parsed = parse(self._sent())
            assert isinstance(parsed, Response)
            response = self._last_response = parsed.essentials()
        return response

    @last_response.setter
    def last_response(self, response: Response | None) -> None:
        self._last_response = response

    def _sent(self) -> bytes:
        """The serialized message kept for retransmissions (see ``_data``)."""
        return self._data

    def _rebuild_request(self) -> Request:
        """The identifying headers of a compacted transaction's request, from its response.

        A response copies the request's Via, From, Call-ID and CSeq (RFC 3261 8.2.6.2);
        the Request-URI and the To line (without our tag) were kept aside.
        """
        parts = self._parts
        response = self.last_response
        assert parts is not None and response is not None, "the request was dropped"
        if isinstance(parts, tuple):
            uri, to = parts
        else:  # the response's To is the request's with our tag added (RFC 3261 8.2.6.2)
            uri, to = parts, _untagged(response.headers.get("To") or "")
        items = [(n, to if n == "To" else v) for n, v in response.headers]
        return Request(response.cseq.method, uri, Headers._trusted(items))

    @property
    def is_invite(self) -> bool:
        """True for INVITE transactions."""
        return self.kind is _CI or self.kind is _SI

    @property
    def branch(self) -> str | None:
        """The branch of the request's top Via."""
        return self.request.via.branch

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self.state is S.TERMINATED

    def _start(self, now: float) -> None:
        self._enter(now)

    def _handle(
        self,
        trigger: Trigger,
        now: float,
        msg: Request | Response | None = None,
        source: Address = None,
    ) -> None:
        """Apply one trigger: look the transition up, run its actions, enter the state."""
        old = self.state
        try:
            new, actions = TRANSITIONS[(self.kind, old, trigger)]
        except KeyError:
            raise TransactionError(
                f"{self.kind.value} transaction: {trigger.value} is illegal in state {old.value}"
            ) from None
        self.state = new
        for action in actions:
            self._run(action, now, msg, source)
        if new is not old:
            self._enter(now)

    def _enter(self, now: float) -> None:
        """Disarm timers the new state does not use, arm the ones it does."""
        wanted = STATE_TIMERS[(self.kind, self.state)]
        host = self._host
        if self._timers:
            for timer in [t for t in self._timers if t not in wanted]:
                host._disarm(self, timer)
        immediate: Trigger | None = None
        for timer in wanted:
            duration = self._durations[timer]
            if duration is None or timer in self._timers:
                continue
            if timer in _RETRANSMIT_TIMERS:
                self._interval = duration
            if duration == 0.0:
                immediate = timer  # reliable transports: D, I, J, K are zero
            else:
                host._arm(self, timer, now + duration)
        if self.state is S.TERMINATED:
            host._removed(self)
        elif immediate is not None:
            self._handle(immediate, now)

    def _run(
        self, action: Action, now: float, msg: Request | Response | None, source: Address
    ) -> None:
        raise NotImplementedError

    def _retransmit(self, timer: Trigger, now: float, interval: float) -> None:
        """Send the stored bytes again and re-arm ``timer`` to fire ``interval`` from now."""
        self._host._send(self._data, self.peer)
        self._interval = interval
        self._host._arm(self, timer, now + interval)


class ClientTransaction(Transaction):
    """A client transaction: sends ``request`` to ``destination`` (RFC 3261 17.1)."""

    __slots__ = ("ack",)

    def __init__(
        self,
        kind: TransactionKind,
        request: Request,
        peer: Address,
        reliable: bool,
        key: Hashable,
        host: Host,
    ) -> None:
        super().__init__(kind, request, peer, reliable, key, host)
        self.ack: Request | None = None  # the ACK this transaction sent for a 300-699

    @property
    def destination(self) -> Address:
        """Where the request (and any ACK for a 300-699) goes."""
        return self.peer

    def _run(
        self, action: Action, now: float, msg: Request | Response | None, source: Address
    ) -> None:
        if action is A.PASS_RESPONSE:
            assert isinstance(msg, Response)
            self.last_response = msg
            self._host._emit(ResponseReceived(self, msg))
        elif action is A.RETRANSMIT_REQUEST:
            if self.kind is _CI:  # RFC 3261 17.1.1.2: timer A doubles without a cap
                self._retransmit(T.TIMER_A, now, self._interval * 2)
            elif self.state is S.PROCEEDING:  # RFC 3261 17.1.2.2: T2 once proceeding
                self._retransmit(T.TIMER_E, now, self._t2)
            else:  # Trying: double up to T2
                self._retransmit(T.TIMER_E, now, min(self._interval * 2, self._t2))
        elif action is A.SEND_ACK:
            assert isinstance(msg, Response)
            self.ack = build_ack(self.request, msg)
            self._data = bytes(self.ack)  # the request is never sent again
            self._host._send(self._data, self.peer)
        elif action is A.RESEND_ACK:
            self._host._send(self._data, self.peer)
        else:
            _run_common(self, action)


class ServerTransaction(Transaction):
    """A server transaction for ``request``, which came from ``source`` (RFC 3261 17.2)."""

    __slots__ = ("_spool", "acked")

    def __init__(
        self,
        kind: TransactionKind,
        request: Request,
        peer: Address,
        reliable: bool,
        key: Hashable,
        host: Host,
    ) -> None:
        super().__init__(kind, request, peer, reliable, key, host)
        self.acked = False  # an ACK for our 2xx arrived (INVITE, Accepted state)
        # Compacted: the host's spool holds the response bytes instead of ``_data``.
        self._spool: Spooled | None = None

    @property
    def source(self) -> Address:
        """Where the request came from; responses go back there (the glue applies 18.2.2)."""
        return self.peer

    @property
    def final_sent(self) -> bool:
        """True once the TU sent a final response (a CANCEL then has no effect, 9.2)."""
        if self._parts is not None:
            return True  # compacted: only done in Completed
        return self._last_response is not None and self._last_response.status >= 200

    def _compact(self) -> None:
        """Completed non-INVITE over UDP: Timer J keeps the transaction 64*T1 only to resend
        the response bytes (RFC 3261 17.2.2). Keep those bytes and the Request-URI, plus
        the request's To line when the response's To is not that line with our tag added;
        the parsed request and response are rebuilt from them when someone asks (rarely):
        tens of thousands of registrations may wait here at once.
        """
        request = self.request
        to = request.headers.get("To") or ""
        response = self._last_response
        sent = response.headers.get("To") if response is not None else None
        if sent is not None and _untagged(sent) == to:
            self._parts = request.uri
        else:
            self._parts = (request.uri, to)
        self._request = None
        self._last_response = None

    def _spooled(self, spool: Spooled) -> None:
        """The response bytes now live in ``spool`` (see TransactionLayer._spool_response)."""
        self._spool = spool
        self._data = b""

    def _sent(self) -> bytes:
        spool = self._spool
        return self._data if spool is None else spool.get(self.key)

    def _run(
        self, action: Action, now: float, msg: Request | Response | None, source: Address
    ) -> None:
        host = self._host
        if action is A.SEND_RESPONSE:
            assert isinstance(msg, Response)
            self.last_response = msg
            self._data = bytes(msg)
            host._send(self._data, self.peer)
        elif action is A.RESEND_RESPONSE:
            if self._data or self._spool is not None:
                host._send(self._sent(), self.peer)
            elif self.kind is _SI:  # nothing sent yet: the client wants a 100 now
                self._run(A.SEND_TRYING, now, None, None)
        elif action is A.SEND_TRYING:
            if self.last_response is None:  # RFC 3261 17.2.1
                self._run(A.SEND_RESPONSE, now, self.request.response(100), None)
        elif action is A.RETRANSMIT_RESPONSE:  # RFC 3261 17.2.1 (G) and 13.3.1.4 (2xx)
            timer = T.TIMER_G if self.state is S.COMPLETED else T.TIMER_2XX
            self._retransmit(timer, now, min(self._interval * 2, self._t2))
        elif action is A.PASS_ACK:
            assert isinstance(msg, Request)
            if not self.acked:
                self.acked = True
                host._disarm(self, T.TIMER_2XX)
            host._emit(AckReceived(msg, source, self))
        elif action is A.CHECK_ACKED:
            if not self.acked:
                host._emit(AckTimedOut(self))
        else:
            _run_common(self, action)


def _untagged(to: str) -> str:
    """A To line without its last ``;tag=`` parameter (the one a UAS adds, 8.2.6.2)."""
    cut = to.rfind(";tag=")
    return to[:cut] if cut >= 0 else to


def _run_common(tx: Transaction, action: Action) -> None:
    if action is A.TIMEOUT:
        tx._host._emit(TransactionTimedOut(tx))
    elif action is A.TRANSPORT_FAILED:
        tx._host._emit(TransportFailed(tx))
    else:  # pragma: no cover - the table only names actions the class implements
        raise TransactionError(f"{type(tx).__name__} cannot perform {action.name}")


# ---------------------------------------------------------------------------------------
# Messages the transaction layer builds itself.


def _route_lines(invite: Request) -> list[tuple[str, str]]:
    return [("Route", value) for value in invite.headers.get_all("Route")]


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to ``invite`` (RFC 3261 17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, the To of the response
    (with its tag), the INVITE's top Via only and its Route headers.
    """
    items = [
        ("Via", str(invite.via)),
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
        *_route_lines(invite),
        ("Content-Length", "0"),
    ]
    return Request("ACK", invite.uri, Headers(items))


def build_cancel(invite: Request, headers: list[tuple[str, str]] | None = None) -> Request:
    """A CANCEL for ``invite`` (RFC 3261 9.1).

    Same Request-URI, Call-ID, To, From and CSeq number (method CANCEL), the INVITE's top
    Via only (so it shares the INVITE's branch) and its Route headers. ``headers`` adds
    lines such as ``("Reason", "SIP;cause=200;text=\\"Call completed elsewhere\\"")``.
    Send it only after a provisional response arrived (RFC 3261 9.1).
    """
    if invite.method != "INVITE":
        raise TransactionError(f"only INVITE can be cancelled, not {invite.method}")
    items = [
        ("Via", str(invite.via)),
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", invite.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} CANCEL"),
        *_route_lines(invite),
        *(headers or ()),
        ("Content-Length", "0"),
    ]
    return Request("CANCEL", invite.uri, Headers(items))


def make_branch(entropy: Callable[[int], bytes]) -> str:
    """A fresh RFC 3261 branch: the magic cookie and 96 bits from ``entropy`` (8.1.1.7)."""
    return MAGIC_COOKIE + entropy(12).hex()
