"""The registrar: REGISTER processing of RFC 3261 10.3, with Path (RFC 3327) and RFC 5626 ids.

:meth:`Registrar.handle` is the whole job for the core: it authenticates the REGISTER with
the :class:`RequestAuthenticator` it was given (401/403 come back from there) and then
applies it with :meth:`Registrar.apply`, which the core may also call itself for a
REGISTER it already authenticated. Both return the response to send; nothing is sent here.

Every change of an AOR's bindings (register, refresh, unregister, expiry) is reported to
the ``on_change(aor, bindings)`` listener with the AOR's complete set afterwards (empty when
it has none left), so the store can persist registrations write-through; at start the core
reloads them with :meth:`Registrar.restore`.

Decisions beyond the RFC text:
- An out-of-order REGISTER (same Call-ID, CSeq not higher than a binding's, RFC 3261 10.3
  steps 6 and 7: "the update MUST be aborted and the request fails") is answered
  400 "Invalid CSeq Number", nothing changed (Kamailio's answer; the RFC names no code).
- A Contact with ``+sip.instance`` is matched by (instance-id, reg-id) instead of by URI
  (RFC 5626 6), so a phone whose address changed replaces its old binding.
- Only SIP/SIPS contacts are accepted (400 otherwise): the PBX can route nothing else.
- At most ``max_contacts`` bindings per AOR (403 beyond: bounded memory).
- Path is stored; it is echoed in the 200 when the UA sent ``Supported: path``
  (RFC 3327 5.3; Kamailio's "lazy" mode).
- :meth:`Registrar.handle` authenticates before checking Require (RFC 3261 10.3 lists
  step 2, Require, before step 3, authentication): an unauthenticated peer learns nothing.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from minipbx.pbx.auth import Entropy, RequestAuthenticator, new_tag
from minipbx.pbx.location import Aor, Binding, Location, detect_nat
from minipbx.pbx.ports import User, UserLookup
from minipbx.pbx.security import log_value
from minipbx.sip import NameAddr, ParseError, Request, Response, SipUri
from minipbx.sip.headers import unquote
from minipbx.sip.uri import format_params
from minipbx.transport.address import Address

log = logging.getLogger(__name__)

OnChange = Callable[[Aor, tuple[Binding, ...]], None]

_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 3261 25.1 qvalue
_ONE_HOUR = 3600  # RFC 3261 10.3 step 7: 423 only for intervals shorter than an hour
_MAX_USER_AGENT = 200
SUPPORTED = ("path",)  # option tags the registrar understands (RFC 3261 10.3 step 2)


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Registration intervals (seconds) and limits.

    ``default_expires`` is used when neither the Contact nor the request gives one;
    intervals are capped at ``max_expires`` and shorter ones than ``min_expires`` refused
    with 423 (RFC 3261 10.3 step 7). ``max_contacts`` bounds the bindings of one AOR.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 1 <= min_expires <= default_expires <= max_expires")
        if self.min_expires > _ONE_HOUR:  # a registrar may shorten, never lengthen (10.3)
            raise ValueError("min_expires may not exceed 3600 (RFC 3261 10.3 step 7)")
        if self.max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")


class RegisterError(Exception):
    """A REGISTER refused: carries the status, reason phrase and headers of the answer."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(f"{status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.headers = list(headers)


@dataclass(slots=True)
class _Context:
    """What every binding made from one REGISTER shares (read-only; not frozen: it is
    built for every REGISTER, and a frozen dataclass costs several times more to build)."""

    aor: Aor
    source: Address
    local: Address | None
    now: float
    call_id: str
    cseq: int
    header_expires: int | None
    path: tuple[str, ...]
    user_agent: str


class Registrar:
    """REGISTER processing over a :class:`Location`; see the module docstring."""

    def __init__(
        self,
        location: Location,
        users: UserLookup,
        authenticator: RequestAuthenticator,
        *,
        config: RegistrarConfig | None = None,
        on_change: OnChange | None = None,
        entropy: Entropy = secrets.token_bytes,
    ) -> None:
        """Keep bindings in ``location`` for the users of ``users``."""
        self.location = location
        self.users = users
        self.authenticator = authenticator
        self.config = config or RegistrarConfig()
        self.on_change = on_change
        self._entropy = entropy

    # --- REGISTER ---------------------------------------------------------------------------

    def handle(
        self, request: Request, source: Address, now: float, *, local: Address | None = None
    ) -> Response:
        """Authenticate and apply a REGISTER from ``source`` (RFC 3261 10.3 steps 1-8).

        ``source`` is the packet's real origin (``Inbound.source``), ``local`` the listener it
        arrived on. Returns 401/403/400 from authentication, else what :meth:`apply` returns.
        """
        if request.method != "REGISTER":
            raise ValueError(f"Registrar.handle got a {request.method}")
        outcome = self.authenticator.check(request, proxy=False, source_ip=source.host, now=now)
        if outcome.user is None:
            assert outcome.response is not None
            return outcome.response
        return self.apply(request, outcome.user, source, now, local=local)

    def apply(
        self,
        request: Request,
        user: User,
        source: Address,
        now: float,
        *,
        local: Address | None = None,
    ) -> Response:
        """Apply an authenticated REGISTER of ``user``: 200 listing the bindings, or an error.

        Nothing changes unless every Contact is acceptable (RFC 3261 10.3 step 7: the
        update is all or nothing).
        """
        try:
            aor = self._check(request, user)
            current = self.location.lookup(aor, now)
            if request.star_contact:
                updated: list[Binding] | None = self._unregister_all(request, current)
            elif request.contacts:
                context = self._context(request, aor, source, local, now)
                updated = self._update(request, current, context)
            else:
                updated = None  # RFC 3261 10.2.3: no Contact is a query
        except RegisterError as exc:
            return self._reply(request, exc.status, exc.reason, exc.headers)
        except ParseError as exc:
            return self._reply(request, exc.status, None, [])
        if updated is not None:
            self._store(aor, updated, log_action="unregister" if not updated else "register")
            current = updated
        return self._ok(request, current, now)

    def _check(self, request: Request, user: User) -> Aor:
        """RFC 3261 10.3 steps 1-5: Request-URI, Require, To names the authenticated user."""
        if not isinstance(request.uri, SipUri):
            raise RegisterError(416)  # step 1
        unknown = [tag for tag in request.tokens("Require") if tag.lower() not in SUPPORTED]
        if unknown:  # step 2 (RFC 3261 8.2.2.3)
            raise RegisterError(420, headers=[("Unsupported", ", ".join(unknown))])
        to = request.to.sip_uri
        if to is None or to.user is None:
            raise RegisterError(400, "To Must Be A SIP URI With A User")
        # Steps 4-5: the authenticated user may only change its own bindings (no third-party
        # registration), and the To AOR must be a user of the tenant serving its domain.
        found = self.users.lookup(to.host, to.user)
        if found is None:
            raise RegisterError(404)
        if (found.tenant_id, found.extension) != (user.tenant_id, user.extension):
            raise RegisterError(403)
        return (user.tenant_id, user.extension)

    def _context(
        self, request: Request, aor: Aor, source: Address, local: Address | None, now: float
    ) -> _Context:
        path = tuple(request.headers.values("Path"))  # RFC 3327 5.3: kept in order
        for value in path:
            NameAddr.parse(value, "Path")  # ParseError (400) when malformed
        return _Context(
            aor=aor,
            source=source,
            local=local,
            now=now,
            call_id=request.call_id,
            cseq=request.cseq.seq,
            header_expires=request.expires,
            path=path,
            user_agent=_shared((request.headers.get("User-Agent") or "")[:_MAX_USER_AGENT]),
        )

    def _unregister_all(self, request: Request, current: list[Binding]) -> list[Binding]:
        """``Contact: *`` (RFC 3261 10.3 step 6): remove every binding, or fail as a whole."""
        if request.expires != 0 or len(request.headers.values("Contact")) != 1:
            raise RegisterError(400, "Invalid Wildcard Contact")
        call_id, cseq = request.call_id, request.cseq.seq
        for binding in current:
            # Step 6: a binding of another Call-ID is removed; of the same Call-ID only when
            # the CSeq is higher, "otherwise, the update MUST be aborted and the request fails".
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise RegisterError(400, "Invalid CSeq Number")
        return []

    def _update(self, request: Request, current: list[Binding], context: _Context) -> list[Binding]:
        """RFC 3261 10.3 step 7: add, refresh or remove the binding of each Contact."""
        bindings = list(current)
        touched: list[Binding] = []  # made by this request: later duplicates just replace
        for contact in request.contacts:
            new, uri, expires = self._binding(request, contact, context)
            index = _find(bindings, new, uri)
            if index is not None:
                old = bindings[index]
                fresh = any(old is b for b in touched)
                # Step 7: same Call-ID needs a higher CSeq, else the whole update is aborted.
                if not fresh and old.call_id == new.call_id and new.cseq <= old.cseq:
                    raise RegisterError(400, "Invalid CSeq Number")
                del bindings[index]
            if expires > 0:
                bindings.append(new)
                touched.append(new)
        if len(bindings) > self.config.max_contacts:
            raise RegisterError(403, "Too Many Registered Contacts")
        return bindings

    def _binding(
        self, request: Request, contact: NameAddr, context: _Context
    ) -> tuple[Binding, SipUri, int]:
        """The binding a Contact asks for, its URI and its granted interval (0: remove)."""
        uri = contact.sip_uri
        if uri is None:
            raise RegisterError(400, "Contact Must Be A SIP URI")
        expires = self._expires(contact, context.header_expires)
        params = contact.params
        q = _qvalue(params.get("q"))
        instance = unquote(params.get("+sip.instance"))
        reg_id = _reg_id(params.get("reg-id"))
        kept = {k: v for k, v in params.items() if k != "expires"}
        # RFC 3327 5.3 / Kamailio: with a Path, NAT is the edge proxy's business.
        nat = not context.path and detect_nat(request.via, uri, context.source)
        binding = Binding(
            aor=context.aor,
            contact=str(uri),
            expires_at=context.now + expires,
            received=context.source,
            params=format_params(kept),
            nat=nat,
            path=context.path,
            call_id=context.call_id,
            cseq=context.cseq,
            user_agent=context.user_agent,
            instance_id=instance,
            reg_id=reg_id,
            q=q,
            registered_at=context.now,
            local=context.local,
        )
        return binding, uri, expires

    def _expires(self, contact: NameAddr, header: int | None) -> int:
        """RFC 3261 10.3 step 7: Contact ``expires``, else Expires, else the default; bounded."""
        value = contact.params.get("expires")
        requested = int(value) if value is not None else header  # the parser checked it
        if requested is None:
            requested = self.config.default_expires
        if requested == 0:
            return 0
        minimum = self.config.min_expires
        # "If and only if the requested expiration interval is greater than zero AND smaller
        # than one hour AND less than a registrar-configured minimum" -> 423.
        if requested < minimum and requested < _ONE_HOUR:
            raise RegisterError(423, headers=[("Min-Expires", str(minimum))])
        return min(requested, self.config.max_expires)

    def _ok(self, request: Request, bindings: list[Binding], now: float) -> Response:
        """RFC 3261 10.3 step 8: 200 with every current binding and its remaining interval."""
        headers = [("Contact", b.header_value(now)) for b in bindings]
        if "path" in (tag.lower() for tag in request.tokens("Supported")):
            # RFC 3327 5.3: echo the Path of this request to a UA that supports it.
            headers += [("Path", value) for value in request.headers.values("Path")]
        return self._reply(request, 200, None, headers)

    def _reply(
        self, request: Request, status: int, reason: str | None, headers: list[tuple[str, str]]
    ) -> Response:
        return request.response(status, reason, to_tag=new_tag(self._entropy), headers=headers)

    def _store(self, aor: Aor, bindings: list[Binding], *, log_action: str) -> None:
        self.location.replace(aor, bindings)
        if log.isEnabledFor(logging.DEBUG):  # log_value costs more than the rest here
            log.debug(
                "event=%s tenant=%d aor=%s contacts=%d",
                log_action,
                aor[0],
                log_value(aor[1]),
                len(bindings),
            )
        if self.on_change is not None:
            self.on_change(aor, tuple(bindings))

    # --- queries and maintenance -----------------------------------------------------------

    def lookup(self, aor: Aor, now: float) -> list[Binding]:
        """The live bindings of ``aor``, highest q first (absent q counts as 1.0), then newest."""
        bindings = self.location.lookup(aor, now)
        bindings.sort(key=lambda b: (-(1.0 if b.q is None else b.q), -b.registered_at))
        return bindings

    def expire(self, now: float) -> list[Binding]:
        """Drop expired bindings and report each touched AOR to ``on_change``; return them."""
        removed = self.location.expire(now)
        if self.on_change is not None:
            for aor in dict.fromkeys(b.aor for b in removed):
                self.on_change(aor, tuple(self.location.lookup(aor, now)))
        return removed

    def next_deadline(self) -> float | None:
        """When to call :meth:`expire` next (None: nothing registered)."""
        return self.location.next_expiry()

    def nated_udp_bindings(self, now: float | None = None) -> list[Binding]:
        """NATed UDP bindings (live at ``now`` when given): targets of keepalive OPTIONS."""
        return [
            b
            for b in self.location.bindings()
            if b.nat and b.received.transport == "udp" and (now is None or b.expires_at > now)
        ]

    def restore(self, bindings: Iterable[Binding], now: float) -> int:
        """Load persisted bindings at start, dropping expired ones; return how many were kept.

        Does not call ``on_change`` (the store already holds them). Bindings beyond
        ``max_contacts`` for one AOR are dropped, oldest first.
        """
        by_aor: dict[Aor, list[Binding]] = {}
        for binding in bindings:
            if binding.expires_at > now:
                by_aor.setdefault(binding.aor, []).append(binding)
        kept = 0
        for aor, group in by_aor.items():
            group.sort(key=lambda b: b.registered_at)
            group = group[-self.config.max_contacts :]
            self.location.replace(aor, group)
            kept += len(group)
        return kept


_USER_AGENTS: dict[str, str] = {}  # one string per User-Agent text, kept by many bindings


def _shared(user_agent: str) -> str:
    """The one copy of ``user_agent`` the bindings share (a bounded table)."""
    known = _USER_AGENTS.get(user_agent)
    if known is None:
        if len(_USER_AGENTS) >= 1024:
            _USER_AGENTS.clear()
        known = _USER_AGENTS[user_agent] = user_agent
    return known


def _find(bindings: list[Binding], new: Binding, uri: SipUri) -> int | None:
    """Index of the binding ``new`` (whose URI is ``uri``) updates, or None.

    RFC 5626 6: a Contact with ``+sip.instance`` and ``reg-id`` names the binding by the
    pair (without ``reg-id``, by the instance-id alone); otherwise, and when no binding has
    them, RFC 3261 10.3 step 7 compares URIs with the rules of 19.1.4.
    """
    if not bindings:
        return None
    if new.instance_id is not None:
        for i, b in enumerate(bindings):
            if b.instance_id == new.instance_id and b.reg_id == new.reg_id:
                return i
    for i, b in enumerate(bindings):
        if b.uri.matches(uri):
            return i
    return None


def _qvalue(value: str | None) -> float | None:
    if value is None:
        return None
    if _QVALUE.fullmatch(value) is None:
        raise RegisterError(400, "Invalid Contact q Value")
    return float(value)


def _reg_id(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isdigit() and value.isascii()) or not 1 <= int(value) <= 2**31 - 1:
        raise RegisterError(400, "Invalid Contact reg-id")  # RFC 5626 4.2: 1 to 2^31-1
    return int(value)
