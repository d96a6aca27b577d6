"""The PBX registering itself to SIP providers (registering trunks), sans-IO.

One :class:`TrunkRegistration` per trunk keeps its registration up (RFC 3261 10.2): one
Call-ID per boot and increasing CSeq, digest answers to 401/407 (once per challenge: a
second challenge after an answer means the credentials are wrong), 423 Interval Too Brief
raises the interval to the provider's Min-Expires, refresh at 80% of the granted time, and
after a failure (a refusal, a timeout, a transport error) a retry with exponential back-off
from 30 s to 10 minutes, with jitter so many trunks do not retry in step. ``stop`` sends
``Expires: 0``.

:class:`TrunkRegistrations` holds them all and speaks to the transaction layer like the
B2BUA does: the core hands it responses and timeouts of its client transactions
(``on_response``/``on_timeout`` return True when they were ours) and calls ``tick``.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from minipbx.pbx.auth import answer_response
from minipbx.pbx.call import Network
from minipbx.sip.dialog import make_tag
from minipbx.sip.headers import NameAddr
from minipbx.sip.message import Request, Response, build_request
from minipbx.sip.transaction import ClientTransaction, TransactionLayer, make_branch
from minipbx.sip.uri import SipUri
from minipbx.transport.address import Address

log = logging.getLogger("minipbx.trunks")

RETRY_MIN = 30.0
RETRY_MAX = 600.0
REFRESH_SHARE = 0.8


class RegState(enum.Enum):
    """Where a trunk registration is."""

    IDLE = "idle"  # not started, or unregistered
    REGISTERING = "registering"  # a REGISTER is out
    REGISTERED = "registered"
    FAILED = "failed"  # waiting for the next try


@dataclass(frozen=True, slots=True)
class TrunkAccount:
    """What a registering trunk needs: where, who, and for how long."""

    name: str
    registrar: Address  # where REGISTER goes (resolved by the glue)
    domain: str  # host part of the AOR (the provider's domain)
    username: str
    password: str
    auth_username: str = ""  # digest user when not the AOR user
    expires: int = 3600


@dataclass(frozen=True, slots=True)
class TrunkStatus:
    """What the console and logs show about one trunk's registration."""

    name: str
    state: RegState
    registered_until: float | None  # on the layer's (monotonic) clock
    last_status: int
    last_error: str
    next_try: float | None
    failures: int


class TrunkRegistration:
    """One trunk's registration state machine (sans-IO; times are the layer's clock)."""

    def __init__(
        self,
        account: TrunkAccount,
        network: Network,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.account = account
        self._network = network
        self._entropy = entropy
        self.state = RegState.IDLE
        self.call_id = f"{make_tag(entropy)}{make_tag(entropy)}@minipbx"
        self._from_tag = make_tag(entropy)
        self._cseq = 0
        self._expires = account.expires
        self._answered_nonce: str | None = None
        self._unregister = False
        self.due: float | None = None  # next refresh or retry
        self.registered_until: float | None = None
        self.last_status = 0
        self.last_error = ""
        self.failures = 0

    # -- requests -------------------------------------------------------------------------

    def _aor(self) -> SipUri:
        return SipUri(self.account.domain, self.account.username)

    def request(self, extra: Iterable[tuple[str, str]] = ()) -> Request:
        """The next REGISTER (new branch, next CSeq)."""
        acct = self.account
        dest = acct.registrar
        self._cseq += 1
        ours = self._network.contact(dest)
        contact_uri = ours.uri
        if isinstance(contact_uri, SipUri):
            contact_uri = replace(contact_uri, user=acct.username)
        expires = 0 if self._unregister else self._expires
        port = dest.port if dest.port not in (5060, None) else None
        return build_request(
            "REGISTER",
            SipUri(acct.domain, None, None, port),
            via=self._network.via(dest, make_branch(self._entropy)),
            from_=NameAddr(self._aor(), None, {"tag": self._from_tag}),
            to=NameAddr(self._aor()),
            call_id=self.call_id,
            cseq=self._cseq,
            headers=[
                ("Contact", str(NameAddr(contact_uri))),
                ("Expires", str(expires)),
                *extra,
            ],
        )

    # -- events ---------------------------------------------------------------------------

    def on_response(self, sent: Request, response: Response, now: float) -> Request | None:
        """A final response to ``sent``; returns the REGISTER to send next, if any."""
        status = response.status
        self.last_status = status
        if status in (401, 407):
            return self._challenged(sent, response, now)
        if status == 423:
            minimum = _int(response.headers.get("Min-Expires"))
            if minimum and minimum > self._expires and minimum <= 86400:
                self._expires = minimum
                self._answered_nonce = None  # a new request: its challenge is a new one
                return self.request()
            self._fail(now, "423 without a usable Min-Expires")
            return None
        if 200 <= status < 300:
            self._registered(response, now)
            return None
        self._fail(now, f"{status} {response.reason}")
        return None

    def on_timeout(self, now: float) -> None:
        """The REGISTER got no answer (Timer F) or could not be sent."""
        self.last_status = 408
        self._fail(now, "no answer from the registrar")

    def _challenged(self, sent: Request, response: Response, now: float) -> Request | None:
        acct = self.account
        try:
            answer = answer_response(
                response,
                method="REGISTER",
                uri=str(sent.uri),
                username=acct.auth_username or acct.username,
                password=acct.password,
                entropy=self._entropy,
            )
        except ValueError as exc:
            self._fail(now, f"bad challenge: {exc}")
            return None
        if answer is None:
            self._fail(now, "no digest challenge we can answer")
            return None
        challenge, header = answer
        if self._answered_nonce is not None and not challenge.stale:
            self._fail(now, "credentials refused (challenged again)")
            return None
        self._answered_nonce = challenge.nonce
        return self.request([header])

    def _registered(self, response: Response, now: float) -> None:
        self._answered_nonce = None
        if self._unregister:
            self.state, self.due, self.registered_until = RegState.IDLE, None, None
            log.info("event=trunk_unregistered trunk=%s", self.account.name)
            return
        granted = self._granted(response)
        if granted <= 0:
            self._fail(now, "registrar removed our binding")
            return
        if self.state is not RegState.REGISTERED or self.failures:
            log.info("event=trunk_registered trunk=%s expires=%d", self.account.name, granted)
        self.state = RegState.REGISTERED
        self.failures = 0
        self.last_error = ""
        self.registered_until = now + granted
        self.due = now + max(granted * REFRESH_SHARE, min(granted, 5.0))

    def _granted(self, response: Response) -> int:
        """The expiry the registrar granted our contact (RFC 3261 10.2.4)."""
        user = self.account.username
        for contact in response.contacts:
            uri = contact.sip_uri
            if uri is not None and uri.user == user:
                value = _int(contact.params.get("expires"))
                if value is not None:
                    return value
        header = response.expires
        return header if header is not None else self._expires

    def _fail(self, now: float, error: str) -> None:
        self._answered_nonce = None
        self.failures += 1
        backoff = min(RETRY_MIN * 2 ** (self.failures - 1), RETRY_MAX)
        jitter = 0.5 + self._entropy(1)[0] / 510.0  # 0.5 .. 1.0
        self.due = now + backoff * jitter
        if self.registered_until is not None and self.registered_until <= now:
            self.registered_until = None
        self.state = RegState.FAILED
        if error != self.last_error or self.failures == 1:
            log.warning(
                "event=trunk_registration_failed trunk=%s error=%s retry_in=%.0fs",
                self.account.name,
                error,
                self.due - now,
            )
        self.last_error = error

    def start(self, now: float) -> Request:
        """Begin (or refresh) the registration now."""
        if self.state is not RegState.REGISTERED:  # a refresh stays REGISTERED meanwhile
            self.state = RegState.REGISTERING
        self.due = None
        return self.request()

    def stop(self) -> Request | None:
        """The REGISTER with ``Expires: 0`` (None when not registered)."""
        if self.registered_until is None:
            self.state, self.due = RegState.IDLE, None
            return None
        self._unregister = True
        self.due = None
        return self.request()

    def status(self) -> TrunkStatus:
        """A snapshot for the console and logs."""
        return TrunkStatus(
            self.account.name,
            self.state,
            self.registered_until,
            self.last_status,
            self.last_error,
            self.due,
            self.failures,
        )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class TrunkRegistrations:
    """Every registering trunk, driven by the core (like the B2BUA)."""

    def __init__(
        self,
        layer: TransactionLayer,
        network: Network,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.layer = layer
        self.network = network
        self._entropy = entropy
        self.trunks: dict[str, TrunkRegistration] = {}
        self._pending: dict[ClientTransaction, TrunkRegistration] = {}

    def configure(self, accounts: Iterable[TrunkAccount], now: float) -> None:
        """Make ``accounts`` the registering trunks: new ones start, gone ones unregister,
        changed ones start over."""
        wanted = {a.name: a for a in accounts}
        for name, reg in list(self.trunks.items()):
            if wanted.get(name) != reg.account:
                del self.trunks[name]
                self._send(reg, reg.stop(), now)
        for name, account in wanted.items():
            if name not in self.trunks:
                reg = TrunkRegistration(account, self.network, self._entropy)
                self.trunks[name] = reg
                self._send(reg, reg.start(now), now)

    def _send(self, reg: TrunkRegistration, request: Request | None, now: float) -> None:
        if request is None:
            return
        dest = reg.account.registrar
        tx = self.layer.send_request(request, dest, self.network.reliable(dest), now)
        self._pending[tx] = reg

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> bool:
        """A response to one of our REGISTERs (True) or not ours (False)."""
        reg = self._pending.get(tx)
        if reg is None:
            return False
        if response.status >= 200:
            del self._pending[tx]
            self._send(reg, reg.on_response(tx.request, response, now), now)
        return True

    def on_timeout(self, tx: ClientTransaction, now: float) -> bool:
        """A REGISTER of ours timed out or failed to send (True), or not ours."""
        reg = self._pending.pop(tx, None)
        if reg is None:
            return False
        reg.on_timeout(now)
        return True

    def tick(self, now: float) -> None:
        """Refreshes and retries that are due."""
        for reg in self.trunks.values():
            if reg.due is not None and reg.due <= now:
                self._send(reg, reg.start(now), now)

    def next_deadline(self) -> float | None:
        """The earliest refresh or retry."""
        dues = [r.due for r in self.trunks.values() if r.due is not None]
        return min(dues) if dues else None

    def stop_all(self, now: float) -> None:
        """Unregister every trunk (shutdown)."""
        for reg in self.trunks.values():
            self._send(reg, reg.stop(), now)

    def statuses(self) -> list[TrunkStatus]:
        """Every trunk's registration status, by name."""
        return [self.trunks[name].status() for name in sorted(self.trunks)]
