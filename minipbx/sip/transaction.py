"""The SIP transaction layer (RFC 3261 17, RFC 6026), sans-IO in the style of aioquic.

The glue feeds parsed messages with ``receive(message, source, now)``, sends what
``datagrams_to_send()`` returns, calls ``handle_timer(now)`` at ``get_timer()`` and passes the
events of ``next_event()`` to the transaction user (TU). The TU starts client transactions
with ``send_request`` and answers server transactions with ``send_response``.

Decisions worth knowing:

- 100 Trying (RFC 3261 17.2.1): a server INVITE transaction sends it by itself when the TU
  has sent no response ``TimerSettings.trying_delay`` (200 ms) after the INVITE, or at once
  when the INVITE is retransmitted before the TU answered. A TU that wants it at once sends
  it itself or sets ``trying_delay=0``.
- 2xx to INVITE (RFC 6026): the server transaction goes to Accepted. On UDP the layer, acting
  for the UAS core (RFC 3261 13.3.1.4), retransmits the 2xx (T1 doubling up to T2) until an
  ACK with the same Call-ID, CSeq number, From tag and To tag arrives; the ACK is still
  reported (:class:`AckReceived`). No ACK before timer L: :class:`AckTimedOut` (send BYE).
  The TU must therefore not retransmit 2xx itself.
- On the client side, every 2xx (first and retransmitted, any To tag) reaches the TU as
  :class:`ResponseReceived` while the transaction is in Accepted; the TU sends the ACK with
  ``send_stateless`` (RFC 3261 13.2.2.4). Later strays come out as :class:`UnmatchedResponse`.
- Timer B runs in Calling only: how long a call may ring is the TU's choice. Once the TU
  sends a CANCEL (``build_cancel``; only after a provisional arrived, RFC 3261 9.1), the
  INVITE client transaction ends with :class:`TransactionTimedOut` if no final response
  arrives within 64*T1.
- Server transactions learn whether their transport is reliable from ``receive(...,
  reliable=)``; when not given, from the top Via's transport (UDP is unreliable).
"""

from __future__ import annotations

import heapq
import mmap
import secrets
from array import array
from collections import deque
from collections.abc import Callable, Hashable

from minipbx.sip.errors import TransactionError
from minipbx.sip.message import Message, Request, Response
from minipbx.sip.transaction_machine import (
    INITIAL_STATE,
    MAGIC_COOKIE,
    NO_TIMERS,
    STATE_TIMERS,
    TRANSITIONS,
    AckReceived,
    AckTimedOut,
    Action,
    Address,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerSettings,
    Transaction,
    TransactionKind,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    Trigger,
    TxState,
    UnmatchedResponse,
    build_ack,
    build_cancel,
)
from minipbx.sip.transaction_machine import make_branch as _make_branch

__all__ = [
    "INITIAL_STATE",
    "MAGIC_COOKIE",
    "STATE_TIMERS",
    "TRANSITIONS",
    "AckReceived",
    "AckTimedOut",
    "Action",
    "Address",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "TimerSettings",
    "Transaction",
    "TransactionKind",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "Trigger",
    "TxState",
    "UnmatchedResponse",
    "build_ack",
    "build_cancel",
    "make_branch",
]

_UNRELIABLE = frozenset({"UDP"})
_COMPACT_ABOVE = 4096  # transactions: below that, the tables are not worth copying
_SPOOL_SIZE = 64 * 1024  # bytes of one spool mapping (about 150 responses)
_TIMER_J = Trigger.TIMER_J
_COMPLETED = TxState.COMPLETED
_NEVER = float("inf")
_HeapEntry = tuple[float, int, Transaction, Trigger]
_AckKey = tuple[str, int, str | None, str | None]


def make_branch(entropy: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh branch id with the RFC 3261 magic cookie (8.1.1.7); ``entropy(n)`` gives n bytes."""
    return _make_branch(entropy)


def _status_trigger(status: int, sending: bool) -> Trigger:
    if not 100 <= status <= 699:
        raise TransactionError(f"status code {status} out of range")
    if status < 200:
        return Trigger.SEND_1XX if sending else Trigger.RECV_1XX
    if status < 300:
        return Trigger.SEND_2XX if sending else Trigger.RECV_2XX
    return Trigger.SEND_FINAL if sending else Trigger.RECV_FINAL


class TransactionLayer:
    """Matches messages to transactions, runs their timers and queues bytes and events."""

    def __init__(self, settings: TimerSettings | None = None) -> None:
        self.settings = settings if settings is not None else TimerSettings()
        self._durations = {r: self.settings.durations(r) for r in (False, True)}
        self._client: dict[Hashable, ClientTransaction] = {}
        self._server: dict[Hashable, ServerTransaction] = {}
        self._accepted: dict[_AckKey, ServerTransaction] = {}  # 2xx sent, waiting for ACK
        self._peak = 0  # most transactions held since the tables were last compacted
        self._datagrams: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self._heap: list[_HeapEntry] = []
        self._token = 0
        self._live = 0  # armed timers; the rest of the heap is stale (lazy deletion)
        # Timer J runs apart from the heap, see _arm.
        self._timer_j: deque[Transaction] = deque()
        self._spool: _Spool | None = None  # filling; see _spool_response

    # -- queries -------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        """Live client and server transactions."""
        return len(self._client) + len(self._server)

    def sizes(self) -> dict[str, int]:
        """How much state the layer holds (operators' state dump, leak checks)."""
        return {
            "client_transactions": len(self._client),
            "server_transactions": len(self._server),
            "awaiting_ack": len(self._accepted),
            "timers": self._live,
            "timer_heap": len(self._heap),
            "timer_j": len(self._timer_j),
        }

    def find_cancelled(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL cancels, or None (answer 481).

        RFC 3261 9.2: matched like a request (17.2.3) but with method INVITE; the RFC 2543
        fallback compares Request-URI, To and From tags, Call-ID, CSeq number and top Via.
        The transaction may already have sent its final response (``final_sent``): answer
        the CANCEL 200 and leave the INVITE alone.
        """
        key, _ = _server_key(cancel, "INVITE", cancel.to.tag)
        tx = self._server.get(key)
        return tx if tx is not None and tx.kind is TransactionKind.SERVER_INVITE else None

    # -- input -----------------------------------------------------------------------------

    def receive(
        self,
        message: Request | Response,
        source: Address,
        now: float,
        *,
        reliable: bool | None = None,
    ) -> None:
        """Handle a parsed message that arrived from ``source``."""
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        elif message.method == "ACK":
            self._receive_ack(message, source, now)
        else:
            self._receive_request(message, source, now, reliable)

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        # RFC 3261 17.1.3: top Via branch and CSeq method.
        tx = self._client.get((response.via.branch, response.cseq.method))
        if tx is None:
            self._events.append(UnmatchedResponse(response, source))
            return
        tx._handle(_status_trigger(response.status, False), now, response, source)
        if tx.kind is TransactionKind.CLIENT_INVITE and (
            tx.state is TxState.ACCEPTED or tx.state is TxState.COMPLETED
        ):
            _trim(tx)  # the TU got the whole response in its event

    def _receive_request(
        self, request: Request, source: Address, now: float, reliable: bool | None
    ) -> None:
        key, _ = _server_key(request, request.method, request.to.tag)
        tx = self._server.get(key)
        if tx is not None:  # a retransmission: RFC 3261 17.2.1, 17.2.2
            tx._handle(Trigger.RECV_REQUEST, now, request, source)
            return
        if reliable is None:
            reliable = request.via.transport not in _UNRELIABLE
        kind = (
            TransactionKind.SERVER_INVITE
            if request.method == "INVITE"
            else TransactionKind.SERVER_NON_INVITE
        )
        tx = ServerTransaction(kind, request, source, reliable, key, self)
        self._server[key] = tx
        self._note_size()
        self._events.append(RequestReceived(tx, request, source))
        tx._start(now)

    def _receive_ack(self, ack: Request, source: Address, now: float) -> None:
        tx = self._ack_transaction(ack)
        if tx is not None:
            if tx.state is TxState.COMPLETED or tx.state is TxState.CONFIRMED:
                tx._handle(Trigger.RECV_ACK, now, ack, source)  # absorbed (17.2.1)
                return
            if tx.state is TxState.ACCEPTED:
                tx._handle(Trigger.RECV_ACK, now, ack, source)  # reported by PASS_ACK
                return
            # Proceeding: no final response yet, so this ACK acknowledges nothing here.
        # An ACK for a 2xx is a transaction of its own (RFC 3261 17); RFC 3261 13.3.1.4.
        waiting = self._accepted.get((ack.call_id, ack.cseq.seq, ack.from_.tag, ack.to.tag))
        if waiting is not None:
            waiting._handle(Trigger.RECV_ACK, now, ack, source)
        else:
            self._events.append(AckReceived(ack, source, None))

    def _ack_transaction(self, ack: Request) -> ServerTransaction | None:
        """The INVITE server transaction an ACK belongs to (RFC 3261 17.2.3)."""
        key, rfc3261 = _server_key(ack, "INVITE", ack.to.tag)
        tx = self._server.get(key)
        if rfc3261:
            return tx
        if tx is None:  # RFC 2543: the INVITE of a new dialog had no To tag
            tx = self._server.get(_server_key(ack, "INVITE", None)[0])
        # RFC 2543: the ACK's To tag must be the tag of the response we sent.
        if tx is None or tx.last_response is None or tx.last_response.to.tag != ack.to.tag:
            return None
        return tx

    # -- output ----------------------------------------------------------------------------

    def send_request(
        self, request: Request, destination: Address, reliable: bool, now: float
    ) -> ClientTransaction:
        """Start a client transaction for ``request`` and queue it for ``destination``.

        The top Via must carry a branch with the magic cookie (see :func:`make_branch`).
        ACK is not sent in a transaction: use :meth:`send_stateless`.
        """
        method = request.method
        if method == "ACK":
            raise TransactionError("ACK is not a transaction: use send_stateless")
        branch = request.via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError(f"top Via branch {branch!r} lacks the RFC 3261 magic cookie")
        key = (branch, method)
        if key in self._client:
            raise TransactionError(f"a client transaction with branch {branch} is running")
        kind = (
            TransactionKind.CLIENT_INVITE
            if method == "INVITE"
            else TransactionKind.CLIENT_NON_INVITE
        )
        tx = ClientTransaction(kind, request, destination, reliable, key, self)
        self._client[key] = tx
        self._note_size()
        tx._data = bytes(request)  # serialized once; retransmissions reuse the bytes
        self._datagrams.append((tx._data, destination))
        tx._start(now)
        if method == "CANCEL":
            self._cancelling(branch, now)
        return tx

    def _cancelling(self, branch: str, now: float) -> None:
        """RFC 3261 9.1: without a final response 64*T1 after the CANCEL, the INVITE client
        transaction is destroyed (reported as a timeout, so the TU acts as on a 408)."""
        invite = self._client.get((branch, "INVITE"))
        if (
            invite is not None
            and invite.state in (TxState.CALLING, TxState.PROCEEDING)
            and Trigger.TIMER_CANCEL not in invite._timers
        ):
            self._arm(invite, Trigger.TIMER_CANCEL, now + 64 * self.settings.t1)

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send a response from the TU on a server transaction.

        Raises :class:`TransactionError` when the transaction's state does not allow it
        (e.g. a second final response, or any response once terminated).
        """
        transaction._handle(_status_trigger(response.status, True), now, response)
        state = transaction.state
        if state is TxState.ACCEPTED:
            if not transaction.acked:
                req = transaction.request
                key = (req.call_id, req.cseq.seq, req.from_.tag, response.to.tag)
                self._accepted[key] = transaction
            _trim(transaction)
        elif state is TxState.COMPLETED:
            if transaction.is_invite:
                _trim(transaction)
            else:
                # Timer J keeps the transaction 32 s only to resend the response bytes
                # (kept serialized): nothing else is held (ServerTransaction._compact).
                transaction._compact()
                self._spool_response(transaction)

    def _spool_response(self, tx: ServerTransaction) -> None:
        """Move the response bytes of a compacted transaction into the spool.

        During a registration storm tens of thousands of them wait for Timer J at once.
        As one small object each, they would be spread among the objects that live on
        (bindings), and the allocator could give none of that memory back once they end
        (CPython returns an arena only when it is entirely free). In the spool they share
        anonymous mappings, each unmapped once the last of its transactions is freed.
        """
        data = tx._data
        if len(data) > _SPOOL_SIZE // 8:
            return  # rare big responses keep their own bytes
        spool = self._spool
        if spool is None or not spool.add(tx.key, data):
            try:
                spool = _Spool(_SPOOL_SIZE)
            except OSError:  # no mapping available: keep the bytes where they are
                return
            self._spool = spool
            spool.add(tx.key, data)
        tx._spooled(spool)

    def send_stateless(self, message: Message | bytes, destination: Address) -> None:
        """Queue a message (or its bytes) outside any transaction (ACK for a 2xx, replies)."""
        data = message if isinstance(message, bytes) else bytes(message)
        self._datagrams.append((data, destination))

    def transport_error(self, transaction: Transaction, now: float) -> None:
        """Report that sending for ``transaction`` failed (RFC 3261 17.1.4, 17.2.4)."""
        if not transaction.terminated:
            transaction._handle(Trigger.TRANSPORT_ERROR, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Every (bytes, destination) queued since the last call, in order."""
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Every event not yet taken, in order."""
        out = list(self._events)
        self._events.clear()
        return out

    # -- timers ----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction, or None."""
        heap = self._heap
        when = self._next_timer_j()
        while heap:
            _, token, tx, timer = heap[0]
            if tx._timers.get(timer) == token:
                return heap[0][0] if heap[0][0] < when else when
            heapq.heappop(heap)  # stale: disarmed or re-armed since
        return None if when == _NEVER else when

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is not after ``now``, earliest first."""
        heap = self._heap
        queue = self._timer_j
        while True:
            when = self._next_timer_j()
            if heap and heap[0][0] <= now and heap[0][0] <= when:
                _, token, tx, timer = heapq.heappop(heap)
                if tx._timers.get(timer) != token:
                    continue
                del tx._timers[timer]
                self._live -= 1
                tx._handle(timer, now)
            elif when <= now:
                queue.popleft()._handle(_TIMER_J, now)
            else:
                return

    def _next_timer_j(self) -> float:
        """The deadline at the head of the Timer J queue (dropping ended transactions)."""
        queue = self._timer_j
        while queue:
            tx = queue[0]
            if tx.state is _COMPLETED:
                return tx._interval
            queue.popleft()  # ended otherwise since (a transport error): stale
        return _NEVER

    # -- Host protocol, called by the transactions -------------------------------------------

    def _send(self, data: bytes, destination: Address) -> None:
        self._datagrams.append((data, destination))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _arm(self, tx: Transaction, timer: Trigger, deadline: float) -> None:
        if timer is _TIMER_J:
            # RFC 3261 17.2.2: Timer J holds a completed non-INVITE server transaction 64*T1
            # on UDP, the same for every one: during a registration storm tens of thousands
            # wait on it at once. Deadlines come in arming order (the clock only goes
            # forward), so a queue of the transactions, each with its deadline, replaces a
            # heap entry, a token and a timer table per transaction. Completed is the only
            # state with Timer J and is left only through it or a transport error.
            tx._interval = deadline
            self._timer_j.append(tx)
            return
        timers = tx._timers
        if timers is NO_TIMERS:
            timers = tx._timers = {}
        self._token += 1
        if timer not in timers:
            self._live += 1
        timers[timer] = self._token
        heap = self._heap
        heapq.heappush(heap, (deadline, self._token, tx, timer))
        if len(heap) > 2 * self._live + 256:
            # Lazy deletion leaves stale entries (and the transactions they hold); drop them.
            heap[:] = [e for e in heap if e[2]._timers.get(e[3]) == e[1]]
            heapq.heapify(heap)

    def _disarm(self, tx: Transaction, timer: Trigger) -> None:
        if tx._timers.pop(timer, None) is not None:
            self._live -= 1

    def _note_size(self) -> None:
        count = len(self._client) + len(self._server)
        if count > self._peak:
            self._peak = count

    def _compact_tables(self) -> None:
        """A dict keeps the table of its largest size: after a burst (a registration storm)
        copy the few transactions left into right-sized ones and let the big tables go."""
        self._client = dict(self._client)
        self._server = dict(self._server)
        self._accepted = dict(self._accepted)
        self._peak = self.transaction_count
        if not self._server:
            self._spool = None  # its transactions are gone: unmapped unless one is held

    def _removed(self, tx: Transaction) -> None:
        if tx._timers:
            self._live -= len(tx._timers)
            tx._timers.clear()
        table: dict[Hashable, ClientTransaction] | dict[Hashable, ServerTransaction]
        table = self._client if isinstance(tx, ClientTransaction) else self._server
        if table.get(tx.key) is tx:
            del table[tx.key]
            count = self.transaction_count
            peak = self._peak
            if (peak > _COMPACT_ABOVE and count * 8 < peak) or (count == 0 and peak > 8):
                self._compact_tables()
        if tx.kind is TransactionKind.SERVER_INVITE and tx.last_response is not None:
            req = tx.request
            key = (req.call_id, req.cseq.seq, req.from_.tag, tx.last_response.to.tag)
            if self._accepted.get(key) is tx:
                del self._accepted[key]
        # Whoever still holds the transaction (a call, for its lifetime) needs only what
        # identifies its messages; the parsed bodies and the wire bytes can go. A compacted
        # one keeps its response bytes: they are all it has left.
        if tx._parts is None:
            tx.request = tx.request.essentials()
            if tx._last_response is not None:
                tx.last_response = tx._last_response.essentials()
            tx._data = b""
        self._events.append(TransactionTerminated(tx))


class _Spool:
    """Response bytes of compacted server transactions, one after another in a private
    anonymous mapping (see ``TransactionLayer._spool_response``).

    Each transaction holds the spool its bytes are in and finds them by its key: the key
    objects are kept here and compared by identity (a later transaction with an equal key
    is another one). The mapping is unmapped when the spool is freed, i.e. when the
    layer moved on to another one and no transaction in it is left (a transaction that
    someone keeps long after it ended keeps the whole mapping: the PBX keeps none).
    """

    __slots__ = ("_ends", "_keys", "_map", "_used")

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, size)
        self._keys: list[Hashable] = []
        self._ends = array("I")
        self._used = 0

    def add(self, key: Hashable, data: bytes) -> bool:
        """Store ``data`` for ``key``; False when it does not fit."""
        start = self._used
        end = start + len(data)
        if end > len(self._map):
            return False
        self._map[start:end] = data
        self._used = end
        self._keys.append(key)
        self._ends.append(end)
        return True

    def get(self, key: Hashable) -> bytes:
        """The bytes stored for ``key`` (this very object)."""
        for i, known in enumerate(self._keys):
            if known is key:
                return self._map[self._ends[i - 1] if i else 0 : self._ends[i]]
        raise KeyError(key)


def _trim(tx: Transaction) -> None:
    """A final response went out (or came in) on an INVITE transaction: from here on it
    only resends bytes and matches ACKs and retransmissions, so its messages keep just
    the headers that identify them (bodies and the rest go: timers H, L, M and D hold
    the transaction 32 s)."""
    tx.request = tx.request.essentials()
    response = tx._last_response
    if response is not None:
        tx.last_response = response.essentials()


def _server_key(request: Request, method: str, to_tag: str | None) -> tuple[Hashable, bool]:
    """The server transaction key of RFC 3261 17.2.3 and whether it is the RFC 3261 kind.

    ``method`` is the method of the transaction sought (INVITE for ACK and for the CANCEL
    lookup). ``to_tag`` is used by the RFC 2543 fallback only.
    """
    via = request.via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        host = via.host
        lower = host.lower()
        return (branch, host if lower == host else lower, via.port, method), True
    # RFC 2543 (RFC 3261 17.2.3): Request-URI, To tag, From tag, Call-ID, CSeq, top Via.
    return (
        str(request.uri),
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        method,
        str(via),
    ), False
