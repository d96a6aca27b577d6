"""Message waiting indication: the message-summary event package (RFC 3842) over
SIP-specific event notification (RFC 6665), sans-IO.

Phones subscribe to their own mailbox with ``SUBSCRIBE`` / ``Event: message-summary`` and
get a ``NOTIFY`` with an ``application/simple-message-summary`` body (RFC 3842 5.2) at once
and on every change; phones that do not subscribe get an unsolicited NOTIFY (a setting).

:class:`MessageWaiting` is driven by the core like the B2BUA: ``subscribe`` for an
out-of-dialog SUBSCRIBE, ``on_in_dialog`` for refreshes and unsubscriptions,
``on_response`` / ``on_timeout`` for our NOTIFY transactions, ``handle_timer`` at
``next_deadline()`` for expiries. The voicemail store tells it of changes with
:meth:`MessageWaiting.changed` and answers :class:`MessageCounts` for the first NOTIFY of a
subscription.

Decisions:

- Authentication: a SUBSCRIBE is digest-authenticated like any request of a user, answered
  401 / ``WWW-Authenticate`` (the PBX is the UAS that serves the subscription, RFC 3261
  22.1; chan_sip did the same). The Request-URI user must be the authenticated user's own
  extension: anything else is 403 (RFC 3842 3.7, RFC 6665 4.2.1.1 authorization).
  Refreshes inside the dialog are not challenged again (as BYE is not for calls): the
  dialog's Call-ID and random tags identify the subscriber.
- One NOTIFY in flight per subscription: a change while one is pending is sent, with the
  newest counts, when it is answered (CSeq order is then arrival order, RFC 3261 12.2.2).
- Any NOTIFY failure (an error response, no answer, a transport error) removes the
  subscription without a further NOTIFY (RFC 6665 4.2.2); the phone subscribes again.
- A new subscription for the mailbox from the same Contact as an existing one replaces it
  (a rebooted phone has forgotten the old dialog); beyond ``max_per_user`` /
  ``max_total`` subscriptions a SUBSCRIBE is answered 503 with Retry-After.
- Unsolicited NOTIFY (not in RFC 3842 or 6665; a widespread practice): out of dialog (no
  To tag, a new Call-ID), to every registered contact of the user that has no subscription
  (``location.target_of``: NATed phones are reached at the REGISTER's source), with
  ``Event: message-summary`` and ``Subscription-State: terminated``. "terminated" because
  no subscription exists that the phone could keep; it is also what Asterisk's
  res_pjsip_mwi sends (``send_unsolicited_mwi_notify_to_contact``), and phones that expect
  unsolicited MWI accept it. No ``reason`` parameter: nothing ended.
- The ``Message-Account`` of a subscription is the Request-URI the phone subscribed to
  with the user part set to the extension; for unsolicited NOTIFY it is ``sip:ext@domain``
  (the tenant domain when the caller of :meth:`changed` gives one, else our own address
  towards the phone).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from minipbx.pbx.auth import RequestAuthenticator
from minipbx.pbx.call import Network
from minipbx.pbx.location import Aor, Binding, target_of
from minipbx.pbx.ports import DEFAULT_DOMAIN
from minipbx.pbx.security import log_value
from minipbx.sip.dialog import Dialog, DialogId, dialog_id_of, make_tag
from minipbx.sip.errors import ParseError, TransactionError
from minipbx.sip.headers import NameAddr, Token
from minipbx.sip.message import Request, Response, build_request
from minipbx.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
    make_branch,
)
from minipbx.sip.uri import SipUri, Uri
from minipbx.transport.address import DEFAULT_PORTS, Address

log = logging.getLogger("minipbx.mwi")

EVENT = "message-summary"  # RFC 3842 3.1
CONTENT_TYPE = "application/simple-message-summary"  # RFC 3842 3.5
_ACCEPTABLE = frozenset({CONTENT_TYPE, "application/*", "*/*"})
_NO_423_FROM = 3600  # RFC 6665 4.2.1.1: 423 only for intervals shorter than one hour
RETRY_AFTER = 300  # seconds, on a 503 for too many subscriptions


class BoxCounts(Protocol):
    """The numbers of one mailbox (``minipbx.pbx.voicemail.Counts`` is one)."""

    @property
    def new(self) -> int:
        """Messages not heard yet."""
        ...

    @property
    def old(self) -> int:
        """Messages heard (kept as old or saved)."""
        ...


@dataclass(frozen=True, slots=True)
class Counts:
    """A :class:`BoxCounts` of our own."""

    new: int
    old: int


class MessageCounts(Protocol):
    """Where the numbers of a mailbox come from: the voicemail store's memory copy
    (``minipbx.voicemail.SqlMailboxes`` is one)."""

    def cached_counts(self, tenant_id: int, extension: str) -> BoxCounts:
        """The messages of the mailbox of ``extension``; synchronous, never blocks."""
        ...


class Bindings(Protocol):
    """The registered contacts of a user (the :class:`~minipbx.pbx.registrar.Registrar`)."""

    def lookup(self, aor: Aor, now: float) -> list[Binding]:
        """The live bindings of ``aor`` at wall-clock ``now``."""
        ...


class NoMessages:
    """Every mailbox empty: the counts until the voicemail store is wired in."""

    def cached_counts(self, tenant_id: int, extension: str) -> Counts:
        """No messages."""
        return Counts(0, 0)


@dataclass(frozen=True, slots=True)
class MwiSettings:
    """Message waiting behaviour of one server.

    ``unsolicited``: NOTIFY registered phones that do not subscribe. Expires of a SUBSCRIBE
    (seconds): ``default_expires`` when it has none (RFC 3842 3.4: one hour), at most
    ``max_expires`` (RFC 6665 4.2.1.1 lets the notifier shorten it), below ``min_expires``
    423. ``max_per_user`` / ``max_total``: subscriptions held, beyond them 503.
    """

    unsolicited: bool = True
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600
    max_per_user: int = 8
    max_total: int = 20000

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= self.max_expires:
            raise ValueError("MwiSettings needs 1 <= min_expires <= max_expires")
        if self.default_expires < 1:
            raise ValueError("MwiSettings.default_expires must be at least 1")
        if self.max_per_user < 1 or self.max_total < 1:
            raise ValueError("MwiSettings.max_per_user and max_total must be at least 1")


def summary_body(new: int, old: int, account: str) -> bytes:
    """An ``application/simple-message-summary`` body (RFC 3842 5.2): voice messages only,
    no urgent ones; "Messages-Waiting: yes" while there are new messages."""
    return (
        f"Messages-Waiting: {'yes' if new > 0 else 'no'}\r\n"
        f"Message-Account: {account}\r\n"
        f"Voice-Message: {new}/{old} (0/0)\r\n"
    ).encode()


@dataclass(slots=True, eq=False)
class Subscription:
    """One message-summary subscription: a dialog (RFC 6665 4.1) with its own state."""

    mailbox: Aor
    dialog: Dialog
    dest: Address  # where NOTIFY goes: the last SUBSCRIBE's real source (force_rport)
    account: str  # Message-Account (RFC 3842 5.2)
    event: str  # the Event value of our NOTIFYs (with the subscriber's id, RFC 6665 8.2.1)
    expires_at: float
    counts: tuple[int, int]
    ending: str | None = None  # set: the subscription is over, "terminated;reason=" this
    pending: ClientTransaction | None = None  # the NOTIFY in flight
    dirty: bool = False  # changed while a NOTIFY was in flight: send again when answered
    done: bool = False  # the terminated NOTIFY went out


class MessageWaiting:
    """Every message-summary subscription, driven by the core (see the module docstring)."""

    def __init__(
        self,
        layer: TransactionLayer,
        network: Network,
        bindings: Bindings,
        authenticator: RequestAuthenticator,
        wall_clock: Callable[[], float],
        settings: MwiSettings | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        counts: MessageCounts | None = None,
    ) -> None:
        """``wall_clock`` is the clock of nonces and registrations; every ``now`` passed to
        the methods is the layer's (monotonic) clock."""
        self.layer = layer
        self.network = network
        self.bindings = bindings
        self.authenticator = authenticator
        self.settings = settings or MwiSettings()
        self.counts: MessageCounts = counts or NoMessages()
        self._wall = wall_clock
        self._entropy = entropy
        self._subs: dict[DialogId, Subscription] = {}
        self._by_mailbox: dict[Aor, list[Subscription]] = {}
        self._clients: dict[ClientTransaction, Subscription | Aor] = {}  # NOTIFYs out
        self._heap: list[tuple[float, DialogId]] = []  # expiries; stale entries skipped

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._subs)

    def subscriptions(self, tenant_id: int, extension: str) -> list[Subscription]:
        """The live subscriptions of one mailbox (for the console and tests)."""
        return list(self._by_mailbox.get((tenant_id, extension), ()))

    # -- SUBSCRIBE -------------------------------------------------------------------------

    def subscribe(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> None:
        """An out-of-dialog SUBSCRIBE: answer it, and create the subscription (RFC 6665
        4.2.1.1) and send the first NOTIFY (RFC 6665 4.2.2) when it is accepted."""
        event = self._event(tx, request, now)
        if event is None:
            return
        outcome = self.authenticator.check(
            request, proxy=False, source_ip=source.host, now=self._wall()
        )
        if outcome.user is None:
            assert outcome.response is not None
            self._respond(tx, outcome.response, now)
            return
        user = outcome.user
        target = request.uri.user if isinstance(request.uri, SipUri) else None
        if target != user.extension:  # RFC 3842 3.7: only the owner reads a mailbox
            log.warning(
                "event=mwi_forbidden src=%s user=%s mailbox=%s",
                source.host,
                log_value(user.extension),
                log_value(target or ""),
            )
            self._refuse(tx, request, 403, now)
            return
        if not request.contacts:  # RFC 6665 4.1.2.1 (a dialog-creating request)
            self._refuse(tx, request, 400, now, reason="Missing Contact")
            return
        expires = self._expires(tx, request, now)
        if expires is None:
            return
        mailbox = (user.tenant_id, user.extension)
        if expires and not self._room(mailbox, request, source):
            self._refuse(tx, request, 503, now, [("Retry-After", str(RETRY_AFTER))])
            return
        self._accept(tx, request, source, event, mailbox, expires, now)

    def _accept(
        self,
        tx: ServerTransaction,
        request: Request,
        source: Address,
        event: Token,
        mailbox: Aor,
        expires: int,
        now: float,
    ) -> None:
        ok = self._ok(request, source, expires, make_tag(self._entropy))
        dialog = Dialog.from_uas(request, ok, tls=source.transport == "tls")
        self._respond(tx, ok, now)
        sub = Subscription(
            mailbox=mailbox,
            dialog=dialog,
            dest=source,
            account=_account(request.uri, mailbox[1]),
            event=_event_value(event),
            expires_at=now + expires,
            counts=self._counts_of(mailbox),
        )
        if expires:
            self._add(sub)
        else:
            sub.ending = "timeout"  # RFC 6665 4.4.3: a fetch; one NOTIFY with the state
        log.info(
            "event=mwi_subscribed src=%s tenant=%d ext=%s expires=%d call_id=%s",
            source.host,
            mailbox[0],
            log_value(mailbox[1]),
            expires,
            log_value(request.call_id),
        )
        self._notify(sub, now)

    def on_in_dialog(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> bool:
        """A SUBSCRIBE inside one of our subscriptions: a refresh, or with ``Expires: 0``
        the end of it (RFC 6665 4.2.1.2). False when the dialog is not ours."""
        if request.method != "SUBSCRIBE":
            return False
        sub = self._subs.get(dialog_id_of(request))
        if sub is None:
            return False
        verdict = sub.dialog.receive_request(request)
        if not verdict.ok:
            self._refuse(tx, request, verdict.status, now, reason=verdict.reason)
            return True
        event = self._event(tx, request, now)
        if event is None:
            return True
        if _event_value(event) != sub.event:  # another subscription of the dialog (8.2.1)
            self._refuse(tx, request, 481, now)
            return True
        expires = self._expires(tx, request, now)
        if expires is None:
            return True
        ok = self._ok(request, source, expires, None)
        sub.dialog.sent_response(request, ok)  # a target refresh (RFC 6665 4.1.2.2)
        self._respond(tx, ok, now)
        sub.dest = source
        if not expires:
            log.info("event=mwi_unsubscribed %s", _fields(sub))
            self._end(sub, "timeout", now)  # RFC 6665 4.2.1.2: as an expiry
            return True
        sub.expires_at = now + expires
        self._schedule(sub)
        sub.counts = self._counts_of(sub.mailbox)
        log.debug("event=mwi_refreshed %s expires=%d", _fields(sub), expires)
        self._notify(sub, now)  # RFC 6665 4.2.1.2: the state after each refresh too
        return True

    def _event(self, tx: ServerTransaction, request: Request, now: float) -> Token | None:
        """The Event of a SUBSCRIBE we serve, or None after answering 400/489/406."""
        try:
            event = request.token("Event")
        except ParseError:
            event = None
        if event is None:
            self._refuse(tx, request, 400, now, reason="Missing or Bad Event")
            return None
        if event.value.lower() != EVENT:  # RFC 6665 4.2.1.1, 8.3.2
            self._refuse(tx, request, 489, now, [("Allow-Events", EVENT)])
            return None
        if not _accepts(request):  # RFC 3842 3.5, RFC 6665 4.2.1.1
            self._refuse(tx, request, 406, now, [("Accept", CONTENT_TYPE)])
            return None
        return event

    def _expires(self, tx: ServerTransaction, request: Request, now: float) -> int | None:
        """The duration granted (RFC 6665 4.2.1.1: never longer than asked), or None after
        answering 423 Interval Too Brief."""
        settings = self.settings
        asked = request.expires
        if asked is None:
            asked = settings.default_expires  # RFC 3842 3.4
        if 0 < asked < settings.min_expires and asked < _NO_423_FROM:
            self._refuse(tx, request, 423, now, [("Min-Expires", str(settings.min_expires))])
            return None
        return min(asked, settings.max_expires)

    def _room(self, mailbox: Aor, request: Request, source: Address) -> bool:
        """Whether one more subscription fits; a stale one from the same Contact goes."""
        contact = str(request.contacts[0].uri)
        for old in list(self._by_mailbox.get(mailbox, ())):
            if str(old.dialog.remote_target) == contact:
                log.info("event=mwi_replaced %s src=%s", _fields(old), source.host)
                self._remove(old)
        held = len(self._by_mailbox.get(mailbox, ()))
        if held < self.settings.max_per_user and len(self._subs) < self.settings.max_total:
            return True
        log.warning(
            "event=mwi_refused src=%s tenant=%d ext=%s held=%d total=%d",
            source.host,
            mailbox[0],
            log_value(mailbox[1]),
            held,
            len(self._subs),
        )
        return False

    def _ok(self, request: Request, source: Address, expires: int, tag: str | None) -> Response:
        # RFC 6665 4.2.1.1: the 200 carries the duration granted; it creates the dialog,
        # so it has a Contact (RFC 3261 12.1.1).
        return request.response(
            200,
            to_tag=tag,
            headers=[
                ("Contact", str(self.network.contact(source))),
                ("Expires", str(expires)),
                ("Allow-Events", EVENT),
            ],
        )

    def _counts_of(self, mailbox: Aor) -> tuple[int, int]:
        counts = self.counts.cached_counts(*mailbox)
        return (counts.new, counts.old)

    # -- NOTIFY ----------------------------------------------------------------------------

    def mailbox_changed(
        self, tenant_id: int, extension: str, now: float, *, domain: str = ""
    ) -> None:
        """:meth:`changed` with the counts of :attr:`counts` (for the voicemail store's
        ``on_change(tenant_id, extension)``, called once its memory copy is up to date)."""
        new, old = self._counts_of((tenant_id, extension))
        self.changed(tenant_id, extension, new, old, now, domain=domain)

    def changed(
        self,
        tenant_id: int,
        extension: str,
        new: int,
        old: int,
        now: float,
        *,
        domain: str = "",
    ) -> None:
        """The mailbox of ``extension`` now holds ``new`` new and ``old`` old messages.

        NOTIFY every subscription of it (RFC 3842 3.8) and, with unsolicited MWI on, every
        registered contact of the user without one. ``domain`` (the tenant's SIP domain)
        names the account in unsolicited NOTIFYs. The caller sends what the transaction
        layer queued (``datagrams_to_send``) and re-arms the timer.
        """
        if new < 0 or old < 0:
            raise ValueError(f"message counts cannot be negative: {new}/{old}")
        mailbox = (tenant_id, extension)
        subs = list(self._by_mailbox.get(mailbox, ()))
        for sub in subs:
            sub.counts = (new, old)
            self._notify(sub, now)
        sent = 0
        if self.settings.unsolicited:
            sent = self._unsolicited(mailbox, (new, old), domain, subs, now)
        log.info(
            "event=mwi_changed tenant=%d ext=%s new=%d old=%d subscriptions=%d unsolicited=%d",
            tenant_id,
            log_value(extension),
            new,
            old,
            len(subs),
            sent,
        )

    def _notify(self, sub: Subscription, now: float) -> None:
        """Send the subscription's state (RFC 6665 4.2.2), or note it for later while a
        NOTIFY is in flight."""
        if sub.done:
            return
        if sub.pending is not None:
            sub.dirty = True
            return
        sub.dirty = False
        if sub.ending is not None:
            state = f"terminated;reason={sub.ending}"
        else:  # RFC 6665 4.2.2: "expires" tells the subscriber the time left
            state = f"active;expires={max(1, math.ceil(sub.expires_at - now))}"
        dest = sub.dest
        try:
            notify = sub.dialog.create_request(
                "NOTIFY",
                via=self.network.via(dest, make_branch(self._entropy)),
                contact=self.network.contact(dest),
                headers=[("Event", sub.event), ("Subscription-State", state)],
                body=summary_body(*sub.counts, sub.account),
                content_type=CONTENT_TYPE,
            )
        except TransactionError as exc:  # CSeq exhausted: give up on the subscription
            log.warning("event=mwi_notify_impossible %s error=%s", _fields(sub), exc)
            self._remove(sub)
            sub.done = True
            return
        if sub.ending is not None:
            sub.dialog.terminate()
            sub.done = True
        tx = self.layer.send_request(notify, dest, self.network.reliable(dest), now)
        sub.pending = tx
        self._clients[tx] = sub

    def _unsolicited(
        self,
        mailbox: Aor,
        counts: tuple[int, int],
        domain: str,
        subs: Sequence[Subscription],
        now: float,
    ) -> int:
        """An out-of-dialog NOTIFY to each registered contact without a subscription."""
        sent = 0
        for binding in self.bindings.lookup(mailbox, self._wall()):
            try:
                uri = binding.uri
            except ParseError:
                continue
            dest = target_of(binding)
            if any(_same_phone(sub, uri, dest) for sub in subs):
                continue
            account = self._unsolicited_account(mailbox[1], domain, dest)
            tag = make_tag(self._entropy)
            notify = build_request(
                "NOTIFY",
                uri,
                via=self.network.via(dest, make_branch(self._entropy)),
                from_=NameAddr(account, None, {"tag": tag}),
                to=NameAddr(account),
                call_id=f"{tag}{make_tag(self._entropy)}",
                cseq=1,
                headers=[
                    *(("Route", path) for path in binding.path),
                    ("Contact", str(self.network.contact(dest))),
                    ("Event", EVENT),
                    ("Subscription-State", "terminated"),
                ],
                body=summary_body(*counts, str(account)),
                content_type=CONTENT_TYPE,
            )
            tx = self.layer.send_request(notify, dest, self.network.reliable(dest), now)
            self._clients[tx] = mailbox
            sent += 1
        return sent

    def _unsolicited_account(self, extension: str, domain: str, dest: Address) -> SipUri:
        if domain and domain != DEFAULT_DOMAIN:
            return SipUri(domain, extension)
        ours = self.network.contact(dest).uri
        if isinstance(ours, SipUri):
            return SipUri(ours.host, extension, None, ours.port, ours.scheme)
        return SipUri(dest.host, extension)  # not reached: our Contact is a SIP URI

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> bool:
        """A response to one of our NOTIFYs (True), or not ours (False)."""
        owner = self._clients.get(tx)
        if owner is None:
            return False
        if response.status < 200:
            return True
        del self._clients[tx]
        if not isinstance(owner, Subscription):
            log.debug("event=mwi_unsolicited_answered ext=%s status=%d", owner[1], response.status)
            return True
        owner.pending = None
        if not response.success:  # RFC 6665 4.2.2: a failed NOTIFY ends the subscription
            log.info("event=mwi_notify_failed %s status=%d", _fields(owner), response.status)
            self._remove(owner)
            owner.done = True
            return True
        owner.dialog.receive_response(tx.request, response)
        if owner.dirty:
            self._notify(owner, now)
        return True

    def on_timeout(self, tx: ClientTransaction, now: float) -> bool:
        """One of our NOTIFYs got no answer or could not be sent (True), or not ours."""
        owner = self._clients.pop(tx, None)
        if owner is None:
            return False
        if isinstance(owner, Subscription):  # RFC 6665 4.2.2: Timer F removes it
            log.info("event=mwi_notify_timeout %s", _fields(owner))
            owner.pending = None
            self._remove(owner)
            owner.done = True
        else:
            log.debug("event=mwi_unsolicited_timeout ext=%s", owner[1])
        return True

    # -- time ------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """End the subscriptions that expired (RFC 6665 4.2.1.2: NOTIFY terminated,
        reason=timeout)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            sub = self._subs.get(key)
            if sub is None or sub.expires_at != due:
                continue  # ended or refreshed since: a stale entry
            log.info("event=mwi_expired %s", _fields(sub))
            self._end(sub, "timeout", now)

    def next_deadline(self) -> float | None:
        """The earliest expiry of a subscription."""
        heap = self._heap
        while heap:
            due, key = heap[0]
            sub = self._subs.get(key)
            if sub is not None and sub.expires_at == due:
                return due
            heapq.heappop(heap)
        return None

    def stop_all(self, now: float) -> None:
        """End every subscription (shutdown): NOTIFY terminated, reason=deactivated, so
        phones subscribe again at once (RFC 6665 4.2.2)."""
        for sub in list(self._subs.values()):
            self._end(sub, "deactivated", now)

    # -- bookkeeping -----------------------------------------------------------------------

    def _add(self, sub: Subscription) -> None:
        self._subs[sub.dialog.id] = sub
        self._by_mailbox.setdefault(sub.mailbox, []).append(sub)
        self._schedule(sub)

    def _schedule(self, sub: Subscription) -> None:
        heapq.heappush(self._heap, (sub.expires_at, sub.dialog.id))
        if len(self._heap) > 2 * len(self._subs) + 1024:  # refreshes leave stale entries
            self._heap = [(s.expires_at, key) for key, s in self._subs.items()]
            heapq.heapify(self._heap)

    def _remove(self, sub: Subscription) -> None:
        """Forget ``sub`` (no NOTIFY); a NOTIFY in flight still reaches it."""
        if self._subs.pop(sub.dialog.id, None) is None:
            return
        subs = self._by_mailbox.get(sub.mailbox)
        if subs is not None:
            subs.remove(sub)
            if not subs:
                del self._by_mailbox[sub.mailbox]

    def _end(self, sub: Subscription, reason: str, now: float) -> None:
        self._remove(sub)
        sub.ending = reason
        self._notify(sub, now)

    def _refuse(
        self,
        tx: ServerTransaction,
        request: Request,
        status: int,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        *,
        reason: str | None = None,
    ) -> None:
        tag = make_tag(self._entropy) if request.to.tag is None else None
        self._respond(
            tx, request.response(status, reason or None, to_tag=tag, headers=headers), now
        )

    def _respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        try:
            self.layer.send_response(tx, response, now)
        except TransactionError as exc:  # the subscriber's transaction is already over
            log.debug("event=response_dropped status=%d error=%s", response.status, exc)


def _accepts(request: Request) -> bool:
    """Whether the subscriber takes our body type (no Accept header: the package's
    default, RFC 3842 3.5)."""
    lines = request.headers.get_all("Accept")
    if not lines:
        return True
    types = [item.partition(";")[0].strip().lower() for line in lines for item in line.split(",")]
    return not any(types) or any(t in _ACCEPTABLE for t in types)


def _event_value(event: Token) -> str:
    """The Event of our NOTIFYs: the package and the subscriber's ``id`` (RFC 6665 8.2.1)."""
    ident = event.param("id")
    return EVENT if ident is None else f"{EVENT};id={ident}"


def _account(uri: Uri, extension: str) -> str:
    """The Message-Account of a subscription: the URI subscribed to, user = extension."""
    if isinstance(uri, SipUri):
        return str(dataclasses.replace(uri, user=extension, password=None, params={}, headers=()))
    return f"sip:{extension}@invalid"  # not reached: only SIP Request-URIs get here


def _hostport(uri: Uri) -> tuple[str, int] | None:
    if not isinstance(uri, SipUri):
        return None
    transport = uri.transport or ("tls" if uri.secure else "udp")
    return (uri.host.lower(), uri.port or DEFAULT_PORTS.get(transport, 5060))


def _same_phone(sub: Subscription, contact: SipUri, dest: Address) -> bool:
    """Whether ``sub`` reaches the phone registered with ``contact`` at ``dest``."""
    if sub.dest.remote == dest.remote:
        return True
    ours = _hostport(sub.dialog.remote_target)
    return ours is not None and ours == _hostport(contact)


def _fields(sub: Subscription) -> str:
    return (
        f"tenant={sub.mailbox[0]} ext={log_value(sub.mailbox[1])} "
        f"call_id={log_value(sub.dialog.call_id)}"
    )
