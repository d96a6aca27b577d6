"""The location service: bindings of an address-of-record to contacts (RFC 3261 10).

A :class:`Binding` is one registered contact with everything needed to reach it: where the
REGISTER really came from (``received``), whether the contact is behind NAT, the Path
(RFC 3327) and the RFC 5626 instance. :class:`Location` is the storage interface (memory
now, Redis later, like Kamailio's ``usrloc`` behind its ``registrar``); :class:`MemoryLocation`
keeps everything in dictionaries with an expiry heap.

Clock: every ``now`` / ``expires_at`` here is on the caller's clock. Use wall-clock seconds
(``time.time()``) so persisted bindings keep their meaning across a restart.

NAT (see :func:`detect_nat`): a binding is NATed when the top Via sent-by host or the
Contact host differs from the packet's source IP, or, over UDP, the Via port differs from
the source port (RFC 3581). A Contact on the source's own IP with another port is a
registration made on behalf of another process (RFC 3261 10.2) and is used as given.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from minipbx.sip import ParseError, SipUri, Via, parse_uri
from minipbx.transport.address import DEFAULT_PORTS, STREAM_TRANSPORTS, Address, is_ip_literal
from minipbx.transport.routing import same_ip

#: An address-of-record inside the PBX: (tenant id, extension).
Aor = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact registered for an address-of-record (RFC 3261 10.3).

    ``contact`` is the Contact URI text; ``params`` the Contact header parameters as text
    (``;q=0.5;+sip.instance="<urn:...>"``) without ``expires``, which ``expires_at``
    replaces. ``received`` is the REGISTER's real source (its connection for TCP/TLS),
    ``local`` the listener it arrived on. ``path`` holds the Path values (RFC 3327) in
    order; ``instance_id`` (unquoted ``+sip.instance``) and ``reg_id`` come from RFC 5626.
    """

    aor: Aor
    contact: str
    expires_at: float
    received: Address
    params: str = ""
    nat: bool = False
    path: tuple[str, ...] = ()
    call_id: str = ""
    cseq: int = 0
    user_agent: str = ""
    instance_id: str | None = None
    reg_id: int | None = None
    q: float | None = None
    registered_at: float = 0.0
    local: Address | None = None

    def expires_in(self, now: float) -> int:
        """Whole seconds left, rounded, never negative (the Contact ``expires`` value)."""
        return max(0, int(self.expires_at - now + 0.5))

    @property
    def uri(self) -> SipUri:
        """The contact as a parsed SIP URI (the registrar stores only SIP/SIPS contacts)."""
        uri = parse_uri(self.contact)
        if not isinstance(uri, SipUri):
            raise ParseError(f"binding contact is not a SIP URI: {self.contact!r}")
        return uri

    def header_value(self, now: float) -> str:
        """The Contact value listing this binding in a 200 to REGISTER (RFC 3261 10.3 step 8)."""
        return f"<{self.contact}>{self.params};expires={self.expires_in(now)}"


class Location(Protocol):
    """Storage of bindings, keyed by address-of-record."""

    def lookup(self, aor: Aor, now: float) -> list[Binding]:
        """The bindings of ``aor`` that have not expired at ``now``."""
        ...

    def replace(self, aor: Aor, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the whole set of ``aor`` (empty: remove the AOR)."""
        ...

    def remove(self, aor: Aor) -> list[Binding]:
        """Remove every binding of ``aor``; return them."""
        ...

    def expire(self, now: float) -> list[Binding]:
        """Remove every binding expired at ``now``; return them."""
        ...

    def next_expiry(self) -> float | None:
        """When :meth:`expire` may next have work (a deadline for the caller's timer)."""
        ...

    def bindings(self) -> Iterator[Binding]:
        """Every binding held (expired ones not yet removed included)."""
        ...

    def count(self) -> int:
        """How many bindings are held."""
        ...


class MemoryLocation:
    """A :class:`Location` in process memory.

    Bindings live in a dictionary by AOR: the binding itself when the AOR has one (most
    have: a tuple around each would add 64 bytes to every registration), else a tuple.
    A heap of ``(earliest expiry, aor)`` drives :meth:`expire`. Heap entries left behind
    by refreshes are skipped when popped and the heap is rebuilt once they outnumber the
    AORs, so memory stays proportional to the bindings held.
    """

    __slots__ = ("_aors", "_count", "_heap")

    def __init__(self) -> None:
        """Start empty."""
        self._aors: dict[Aor, Binding | tuple[Binding, ...]] = {}
        self._heap: list[tuple[float, Aor]] = []
        self._count = 0

    def lookup(self, aor: Aor, now: float) -> list[Binding]:
        """The bindings of ``aor`` not expired at ``now``."""
        held = self._aors.get(aor)
        if held is None:
            return []
        if isinstance(held, Binding):
            return [held] if held.expires_at > now else []
        return [b for b in held if b.expires_at > now]

    def replace(self, aor: Aor, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the whole set of ``aor`` (empty: remove it)."""
        for binding in bindings:
            if binding.aor != aor:
                raise ValueError(f"binding for {binding.aor} stored under {aor}")
        old = self._aors.pop(aor, None)
        if old is not None:
            self._count -= 1 if isinstance(old, Binding) else len(old)
        if not bindings:
            return
        self._aors[aor] = bindings[0] if len(bindings) == 1 else tuple(bindings)
        self._count += len(bindings)
        heapq.heappush(self._heap, (min(b.expires_at for b in bindings), aor))
        if len(self._heap) > 2 * len(self._aors) + 1024:
            self._rebuild_heap()

    def remove(self, aor: Aor) -> list[Binding]:
        """Remove every binding of ``aor``; return them."""
        held = self._aors.pop(aor, None)
        if held is None:
            return []
        old = _as_tuple(held)
        self._count -= len(old)
        return list(old)

    def expire(self, now: float) -> list[Binding]:
        """Remove the bindings expired at ``now`` (``expires_at <= now``); return them."""
        removed: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, aor = heapq.heappop(heap)
            held = self._aors.get(aor)
            if held is None:
                continue  # removed or replaced since: a stale entry
            current = _as_tuple(held)
            keep = tuple(b for b in current if b.expires_at > now)
            if len(keep) == len(current):
                continue  # refreshed since: its own entry is further down the heap
            removed.extend(b for b in current if b.expires_at <= now)
            self._count -= len(current) - len(keep)
            if keep:
                self._aors[aor] = keep[0] if len(keep) == 1 else keep
                heapq.heappush(heap, (min(b.expires_at for b in keep), aor))
            else:
                del self._aors[aor]
        return removed

    def next_expiry(self) -> float | None:
        """The earliest expiry in the heap (possibly of a stale entry: then expire is a no-op)."""
        return self._heap[0][0] if self._heap else None

    def bindings(self) -> Iterator[Binding]:
        """Every binding held."""
        for held in list(self._aors.values()):
            yield from _as_tuple(held)

    def aors(self) -> Iterator[Aor]:
        """Every address-of-record with at least one binding."""
        return iter(list(self._aors))

    def count(self) -> int:
        """How many bindings are held."""
        return self._count

    def __len__(self) -> int:
        return self._count

    def _rebuild_heap(self) -> None:
        self._heap = [
            (min(b.expires_at for b in _as_tuple(held)), aor) for aor, held in self._aors.items()
        ]
        heapq.heapify(self._heap)


def _as_tuple(held: Binding | tuple[Binding, ...]) -> tuple[Binding, ...]:
    """The bindings :class:`MemoryLocation` keeps for an AOR, as a tuple."""
    return (held,) if isinstance(held, Binding) else held


# --- NAT detection and targets -------------------------------------------------------------


def _via_port(via: Via) -> int:
    """The Via sent-by port, or the default of its transport (RFC 3261 18.2.2)."""
    if via.port is not None:
        return via.port
    return DEFAULT_PORTS.get(via.transport.lower(), 5060)


def detect_nat(via: Via, contact: SipUri, source: Address) -> bool:
    """True when a REGISTER from ``source`` comes from behind a NAT.

    NATed when the top Via sent-by host differs from the source IP (RFC 3261 18.2.1), when,
    over UDP, the sent-by port differs from the source port (RFC 3581 4; over TCP/TLS the
    source port is an ephemeral one by design, RFC 3261 18.2.2), or when the Contact host
    differs from the source IP. A Contact on the source IP with another port is a
    registration on behalf of another process (RFC 3261 10.2): not NAT.
    """
    source_ip = source.host.partition("%")[0]
    if not same_ip(via.host, source_ip):
        return True
    if source.transport == "udp" and _via_port(via) != source.port:
        return True
    return not same_ip(contact.host, source_ip)


def contact_transport(uri: SipUri) -> str | None:
    """The transport requests to ``uri`` use: ``transport`` param, else tls for sips, else udp.

    None for a transport the PBX cannot send on (ws, wss, sctp...).
    """
    transport = uri.transport or ("tls" if uri.secure else "udp")
    return transport if transport in DEFAULT_PORTS else None


def contact_address(binding: Binding) -> Address | None:
    """The Contact as given, as a transport address; None when it names no IP literal.

    RFC 3261 19.1.2 default ports (5060, 5061 for TLS). The caller resolves host names.
    """
    try:
        uri = binding.uri
    except ParseError:
        return None
    transport = contact_transport(uri)
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    if transport is None or not is_ip_literal(host):
        return None
    return Address(transport, host, uri.port or DEFAULT_PORTS[transport])


def target_of(binding: Binding) -> Address:
    """Where requests to ``binding`` go.

    The REGISTER's source (``received``, with its connection for TCP/TLS) for NATed
    bindings, stream transports (RFC 5626 5.3 style connection reuse) and bindings with a
    Path (the edge proxy that relayed the REGISTER: RFC 3327 5.3, NAT is its business);
    otherwise the Contact as given (RFC 3261 10.2: maybe another process on that host).
    Requests to a binding with a Path also carry the Path values as Route headers.
    """
    received = binding.received
    if binding.nat or binding.path or received.transport in STREAM_TRANSPORTS:
        return received
    address = contact_address(binding)
    return received if address is None else address
