"""Calls through the back-to-back user agent (RFC 3261 sections 12-16 as a UAS and UACs).

A :class:`Call` joins the A leg (the caller's INVITE, answered by us as a UAS) to one or
more B legs (our INVITEs to the callee's contacts, forked in parallel). The B legs have
their own Call-ID, tags and CSeq; SDP passes through untouched (media end-to-end).

The :class:`B2BUA` owns every call and is driven by the core with transaction-layer
events and ``now``; it sends through the same :class:`TransactionLayer`. It never touches
sockets or the clock itself.

Seams for later work: a :class:`Router` picks the targets of a call (local user now; dial
plan, trunks and services later), and :class:`CallListener` hears every call end (CDRs,
billing).
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from minipbx.pbx.auth import answer_response
from minipbx.pbx.call import (
    BLeg,
    Call,
    CallCounts,
    CallListener,
    CallSettings,
    CallState,
    Disposition,
    MediaAnchor,
    Network,
    PassThrough,
    Route,
    Router,
    ServiceError,
    ServiceHost,
    Target,
    best_failure,
    disposition_of,
)
from minipbx.pbx.routing import number_of
from minipbx.sip.dialog import Dialog, make_tag
from minipbx.sip.errors import ParseError, TransactionError
from minipbx.sip.headers import NameAddr
from minipbx.sip.message import Request, Response
from minipbx.sip.message import build_request as _build_request
from minipbx.sip.sdp_origin import SdpOrigin
from minipbx.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
    build_cancel,
    make_branch,
)
from minipbx.transport.address import Address

log = logging.getLogger("minipbx.call")

# Headers copied from one leg to the other (besides the body and its Content-Type).
# Supported/Require are not copied: the B2BUA itself does not do 100rel or session timers.
_COPIED = ("Allow", "Reason", "Warning")
_TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


def _reason_of(request: Request) -> str:
    """The Reason header(s) of a BYE or CANCEL (RFC 3326), for the call record."""
    return ", ".join(request.headers.get_all("Reason"))[:255]


def _copied(message: Request | Response) -> list[tuple[str, str]]:
    return [(name, value) for name in _COPIED for value in message.headers.get_all(name)]


def _is_sdp(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == _SDP


_SDP = "application/sdp"


@dataclass(slots=True, eq=False)
class _Relay:
    """An in-dialog request we relayed, waiting for the other leg's answer."""

    call: Call
    server: ServerTransaction | None  # None: our own re-INVITE handing a service's call back
    to_a: bool  # True when we sent it to the caller (it came from the callee)
    resume: bool = False  # our offerless re-INVITE bringing the caller back to its service


class B2BUA:
    """Every call in progress, driven by transaction-layer events from the core."""

    def __init__(
        self,
        layer: TransactionLayer,
        network: Network,
        router: Router,
        listener: CallListener,
        settings: CallSettings | None = None,
        entropy: Callable[[int], bytes] | None = None,
        media: MediaAnchor | None = None,
        services: ServiceHost | None = None,
    ) -> None:
        self.layer = layer
        self.network = network
        self.router = router
        self.listener = listener
        self.settings = settings or CallSettings()
        self.media: MediaAnchor = media or PassThrough()
        self.services = services
        self._entropy = entropy or secrets.token_bytes
        self.calls: dict[str, Call] = {}
        self.counts = CallCounts()  # read by the router for concurrent-call limits
        self._by_invite: dict[ServerTransaction, Call] = {}
        self._by_a: dict[tuple[str, str], Call] = {}  # (A Call-ID, our To tag)
        self._by_b: dict[str, tuple[Call, BLeg]] = {}  # B-leg Call-ID (ours, unique)
        self._clients: dict[ClientTransaction, tuple[Call, BLeg | None, _Relay | None]] = {}
        self._acks: dict[str, tuple[bytes, Address]] = {}  # B Call-ID -> last ACK sent
        self._timers: list[tuple[float, str]] = []  # (due, call id); stale entries skipped

    # -- new calls -------------------------------------------------------------------------

    def new_call(
        self,
        server: ServerTransaction,
        invite: Request,
        source: Address,
        *,
        caller: str,
        tenant_id: int,
        domain: str,
        now: float,
        inbound_trunk: str | None = None,
    ) -> Call | None:
        """Start a call for an authenticated INVITE (from a user, or from the trusted
        ``inbound_trunk``); answers it itself when it cannot ring."""
        to_tag = make_tag(self._entropy)
        if len(self.calls) >= self.settings.max_calls:
            self.layer.send_response(server, invite.response(503, to_tag=to_tag), now)
            log.warning("event=call_rejected reason=max_calls call_id=%s", invite.call_id)
            return None
        call = Call(
            id=make_tag(self._entropy) + make_tag(self._entropy),
            invite=invite,
            server=server,
            source=source,
            caller=caller,
            tenant_id=tenant_id,
            domain=domain,
            started=now,
            to_tag=to_tag,
            ring_deadline=now + self.settings.ring_timeout,
            user_agent=invite.headers.get("User-Agent") or "",
            inbound_trunk=inbound_trunk,
        )
        self.layer.send_response(server, invite.response(100), now)
        route = self.router.route(call)
        self._take_route(call, route, now)
        if route.service is not None:
            failed = self._serve(call, route, now)
            if failed is None:
                return call
            route = failed
        if not route.targets:
            self._fail(call, route.status or 404, now, route.reason)
            call.hangup_by = "system"
            log.info(
                "event=call_end call=%s from=%s to=%s disposition=%s status=%d",
                call.id,
                caller,
                call.callee,
                call.disposition.value if call.disposition else "",
                call.final_status,
            )
            self.listener.call_ended(call)  # nothing to hold: the failure already went out
            return call
        self._track(call)
        forwards = (invite.max_forwards if invite.max_forwards is not None else 70) - 1
        self._ring(call, route, max(forwards, 0), now)
        log.info(
            "event=call_start call=%s from=%s to=%s legs=%d",
            call.id,
            caller,
            call.callee,
            len(call.legs),
        )
        return call

    def sizes(self) -> dict[str, int]:
        """How much call state is held (operators' state dump, leak checks)."""
        return {
            "calls": len(self.calls),
            "calls_by_invite": len(self._by_invite),
            "calls_by_dialog": len(self._by_a),
            "legs": len(self._by_b),
            "call_transactions": len(self._clients),
            "acks_kept": len(self._acks),
            "call_timers": len(self._timers),
        }

    def _track(self, call: Call) -> None:
        """Count the call and find it by its INVITE and by its dialog with the caller (early
        dialog: a BYE may come before the answer, RFC 3261 15)."""
        self.calls[call.id] = call
        self.counts.add(call)
        self._by_invite[call.server] = call
        self._by_a[(call.invite.call_id, call.to_tag)] = call

    def _take_route(self, call: Call, route: Route, now: float) -> None:
        """Make ``route`` the call's: who is rung, its limits and timers."""
        counted = call.id in self.calls
        if counted:  # the trunk may change: count the call under its new route
            self.counts.remove(call)
        call.callee, call.route_kind, call.trunk = route.callee, route.kind, route.trunk
        call.max_seconds = route.max_seconds
        call.warn_at = route.warn_at
        call.failover = route.failover
        call.failover_at = now + self.settings.failover_timeout if route.failover else None
        call.no_answer_at = now + route.no_answer if route.no_answer else None
        if counted:
            self.counts.add(call)

    def _ring(self, call: Call, route: Route, forwards: int, now: float) -> None:
        """Send the route's INVITEs (earlier legs no longer count: superseded)."""
        for old in call.legs:
            old.superseded = True
        self.media.prepare(call, route.targets)
        if route.forwarded and call.service is None:  # RFC 3261 21.1.3: 181 Call Is Being Forwarded
            self._respond(call.server, call.invite.response(181, to_tag=call.to_tag), now)
        heapq.heappush(self._timers, (call.due, call.id))
        for target in route.targets:
            self._send_leg(call, target, forwards, now)

    def _forward(
        self, call: Call, why: str, now: float, forwards: int, to: str | None = None
    ) -> bool:
        """Ask the router where the call goes now; True when new legs were sent."""
        route = self.router.forward(call, why, to)
        if route is None:
            return False
        if route.service is not None and call.service is None and call.winner is None:
            return self._forward_to_service(call, why, route, now)  # voicemail, typically
        if not route.targets:
            return False
        log.info("event=call_forwarded call=%s why=%s to=%s", call.id, why, route.callee)
        route = replace(route, forwarded=True)
        self._take_route(call, route, now)
        # Each forward (or follow-me step) rings for its own time, up to a fresh ring timeout.
        call.ring_deadline = max(call.ring_deadline, now + self.settings.ring_timeout)
        self._ring(call, route, forwards, now)
        return True

    def _forward_to_service(self, call: Call, why: str, route: Route, now: float) -> bool:
        """The callee's forward is a PBX service: stop ringing, answer the caller with it.
        False (the caller gets the callee's failure) when the service cannot take it."""
        if self._serve(call, route, now) is not None:
            return False
        log.info("event=call_forwarded call=%s why=%s to=%s", call.id, why, route.service)
        for leg in call.legs:
            if leg.final == 0 and not leg.superseded:
                leg.superseded = True
                self._cancel_leg(leg, now)
        self._take_route(call, route, now)
        return True

    def _send_leg(self, call: Call, target: Target, forwards: int, now: float) -> None:
        a = call.invite
        caller = target.from_ or NameAddr(a.from_.uri, a.from_.display)
        from_ = NameAddr(caller.uri, caller.display, {"tag": make_tag(self._entropy)})
        call_id = f"{make_tag(self._entropy)}{make_tag(self._entropy)}"
        request = self._leg_invite(call, target, forwards, from_, call_id, 1)
        dest = target.destination
        tx = self.layer.send_request(request, dest, self.network.reliable(dest), now)
        leg = BLeg(target=target, transaction=tx, request=request, forwards=forwards)
        call.legs.append(leg)
        self._clients[tx] = (call, leg, None)
        self._by_b[call_id] = (call, leg)

    def _leg_invite(
        self,
        call: Call,
        target: Target,
        forwards: int,
        from_: NameAddr,
        call_id: str,
        cseq: int,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Request:
        a = call.invite
        dest = target.destination
        headers = [("Route", path) for path in target.path]
        headers.append(("Contact", str(self.network.contact(dest))))
        headers += _copied(a)
        headers += target.headers
        headers += extra
        body = a.body if target.body is None else target.body
        if call.service is not None:  # a service's transfer: the callee offers (RFC 3725 4)
            body = b""
        elif body:
            body = self._to_b(call, body, a.headers.get("Content-Type"))
        return _build_request(
            "INVITE",
            target.uri,
            via=self.network.via(dest, make_branch(self._entropy)),
            from_=from_,
            to=NameAddr(a.to.uri, a.to.display) if target.from_ is None else NameAddr(target.uri),
            call_id=call_id,
            cseq=cseq,
            max_forwards=forwards,
            headers=headers,
            body=body,
            content_type=a.headers.get("Content-Type") if body else None,
        )

    def _answer_challenge(self, call: Call, leg: BLeg, response: Response, now: float) -> bool:
        """Resend a leg's INVITE with credentials for its 401/407 (RFC 3261 22.2), once."""
        auth = leg.target.auth
        if auth is None or leg.authenticated or call.state is CallState.ENDED:
            return False
        old = leg.request
        try:
            answer = answer_response(
                response,
                method="INVITE",
                uri=str(old.uri),
                username=auth.username,
                password=auth.password,
                entropy=self._entropy,
                body=call.invite.body,
            )
        except ValueError as exc:  # ParseError too: a challenge we cannot read or answer
            log.warning("event=bad_challenge call=%s error=%s", call.id, exc)
            return False
        if answer is None:
            return False
        header = answer[1]
        request = self._leg_invite(
            call, leg.target, leg.forwards, old.from_, old.call_id, old.cseq.seq + 1, [header]
        )
        dest = leg.target.destination
        tx = self.layer.send_request(request, dest, self.network.reliable(dest), now)
        leg.request, leg.transaction, leg.authenticated = request, tx, True
        leg.provisional = False
        self._clients[tx] = (call, leg, None)
        return True

    # -- responses from the callee's side --------------------------------------------------

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        """A response to one of our requests (B-leg INVITE, CANCEL, relayed or probe)."""
        entry = self._clients.get(tx)
        if entry is None:
            return
        call, leg, relay = entry
        if relay is not None and relay.server is None:
            self._hand_back_response(relay, tx, response, now)
        elif relay is not None:
            self._relay_response(relay, tx, response, now)
        elif leg is not None and tx.request.method == "INVITE":
            self._leg_response(call, leg, response, now)
        elif tx.request.method == "OPTIONS" and response.status in (408, 481):
            self.hangup(call, now, "dead_peer")  # dead-peer probe answered "gone"

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        """A client transaction timed out: act as on a 408 (RFC 3261 8.1.3.1)."""
        entry = self._clients.get(tx)
        if entry is None:
            return
        call, leg, relay = entry
        if relay is not None and relay.server is None:  # the caller did not take our re-INVITE
            self.hangup(call, now, "dead_peer")
        elif relay is not None:
            server = relay.server
            if server is not None and not server.final_sent:
                self._respond(server, server.request.response(408), now)
        elif leg is not None and tx.request.method == "INVITE":
            self._leg_final(call, leg, 408, now)
        elif tx.request.method in ("OPTIONS", "BYE") and call.state is CallState.ANSWERED:
            self.hangup(call, now, "dead_peer")

    def forget(self, tx: ClientTransaction) -> None:
        """The transaction ended; late responses for it are strays from now on."""
        self._clients.pop(tx, None)

    def _leg_response(self, call: Call, leg: BLeg, response: Response, now: float) -> None:
        leg.heard = True
        status = response.status
        if status < 200:
            if status > 100:
                self._leg_provisional(call, leg, response, now)
            return
        if status < 300:
            self._leg_answered(call, leg, response, now)
            return
        self._leg_final(call, leg, status, now, response)

    def _leg_provisional(self, call: Call, leg: BLeg, response: Response, now: float) -> None:
        leg.provisional = True
        if leg.cancel_pending:  # RFC 3261 9.1: CANCEL waits for a provisional response
            self._cancel_leg(leg, now)
            return
        if call.state in (CallState.ROUTING, CallState.EARLY) and call.winner is None:
            call.state = CallState.EARLY
            ctype = response.headers.get("Content-Type") if response.body else None
            body = self._to_a(call, response.body, ctype)
            a_resp = call.invite.response(
                response.status,
                response.reason,
                to_tag=call.to_tag,
                headers=[("Contact", str(self.network.contact(call.source)))],
                body=body,
                content_type=ctype,
            )
            self._respond(call.server, a_resp, now)

    def _leg_answered(self, call: Call, leg: BLeg, response: Response, now: float) -> None:
        b_call_id = leg.request.call_id
        if call.winner is leg:  # a retransmitted 2xx: our ACK was lost (RFC 3261 13.2.2.4)
            sent = self._acks.get(b_call_id)
            if sent is not None:
                self.layer.send_stateless(*sent)
            return
        try:
            dialog = Dialog.from_uac(leg.request, response)
        except (ParseError, TransactionError) as exc:  # a broken 2xx must not crash the PBX
            log.warning("event=bad_answer call=%s error=%s", call.id, exc)
            return
        leg.dialog = dialog
        leg.final = response.status
        if call.winner is not None or call.state is CallState.ENDED or leg.superseded:
            # Another fork answered first, the caller gave up, or a forward, follow-me step
            # or failover replaced this leg (its 2xx crossed our CANCEL): ACK and hang up
            # this one. A replaced leg never wins: the call's limits and billing are its
            # current route's (RFC 3261 9.1 lets a 2xx cross a CANCEL).
            self._ack_leg(leg, b"", None)
            self._bye(dialog, leg.target.destination, now, call)
            return
        call.winner = leg
        if call.service is not None:
            self._hand_back(call, leg, response, now)
            return
        if call.invite.body:  # early offer: the 2xx carries the answer, ACK at once
            self._ack_leg(leg, b"", None)
        for other in call.legs:
            if other is not leg and other.final == 0:
                self._cancel_leg(other, now)
        ctype = response.headers.get("Content-Type") if response.body else None
        a_resp = call.invite.response(
            response.status,
            response.reason,
            to_tag=call.to_tag,
            headers=[("Contact", str(self.network.contact(call.source))), *_copied(response)],
            body=self._to_a(call, response.body, ctype),
            content_type=ctype,
        )
        self._respond(call.server, a_resp, now)
        try:
            call.a_dialog = Dialog.from_uas(call.invite, a_resp)
        except ParseError as exc:  # the caller's INVITE had no Contact
            log.warning("event=no_caller_dialog call=%s error=%s", call.id, exc)
            self.hangup(call, now, "bad_caller_contact")
            return
        call.state = CallState.ANSWERED
        call.answered = now
        call.invite = call.invite.essentials()  # answered: keep what identifies it
        call.final_status = response.status
        call.probe_due = now + self.settings.probe_interval
        heapq.heappush(self._timers, (call.due, call.id))
        log.info("event=call_answered call=%s to=%s", call.id, call.callee)

    def _leg_final(
        self, call: Call, leg: BLeg, status: int, now: float, response: Response | None = None
    ) -> None:
        if (
            status in (401, 407)
            and response is not None
            and call.winner is None
            and self._answer_challenge(call, leg, response, now)
        ):
            return
        leg.final = status
        if call.winner is not None or call.state is CallState.ENDED or leg.superseded:
            return
        current = [other for other in call.legs if not other.superseded]
        if any(other.final == 0 for other in current):
            return  # other forks still ringing
        if call.failover and all(o.final == 408 or o.final >= 500 for o in current):
            targets, call.failover, call.failover_at = call.failover, (), None
            log.info("event=call_failover call=%s status=%d", call.id, status)
            for old in current:
                old.superseded = True
            for target in targets:
                self._send_leg(call, target, leg.forwards, now)
            return
        best = best_failure([other.final for other in current])
        if self._forward_on_failure(call, leg, best, now, response):
            return
        if call.service is not None:  # the transfer failed: the caller stays with the service
            self._transferred(call, best, now)
            return
        reason = response.reason if response is not None and response.status == best else None
        self._fail(call, best, now, reason)
        self._end(call, now, "callee" if best in (486, 600, 603) else "system")

    def _forward_on_failure(
        self, call: Call, leg: BLeg, best: int, now: float, response: Response | None
    ) -> bool:
        """Busy, no answer or a phone's redirect (3xx): the callee's forwarding, if any."""
        if response is not None and 300 <= response.status < 400:  # RFC 3261 8.1.3.4
            contact = next(iter(response.contacts), None)
            uri = contact.uri if contact is not None else None
            number = number_of(uri) if uri is not None else ""
            return bool(number) and self._forward(call, "redirect", now, leg.forwards, number)
        if best in (486, 600):
            return self._forward(call, "busy", now, leg.forwards)
        if best in (408, 480):
            return self._forward(call, "no_answer", now, leg.forwards)
        return self._forward(call, "failed", now, leg.forwards)  # follow-me moves on

    def _fail(self, call: Call, status: int, now: float, reason: str | None = None) -> None:
        """Answer the caller's INVITE with a final failure."""
        if not call.server.final_sent:
            resp = call.invite.response(status, reason, to_tag=call.to_tag)
            self._respond(call.server, resp, now)
        call.final_status = call.final_status or status
        call.disposition = call.disposition or disposition_of(status)
        call.state = CallState.ENDED
        call.ended = call.ended or now

    def _ack_leg(self, leg: BLeg, body: bytes, content_type: str | None) -> None:
        if leg.dialog is None:
            return
        dest = leg.target.destination
        ack = leg.dialog.create_request(
            "ACK",
            via=self.network.via(dest, make_branch(self._entropy)),
            body=body,
            content_type=content_type,
        )
        data = bytes(ack)
        self.layer.send_stateless(data, dest)
        self._acks[leg.request.call_id] = (data, dest)
        leg.request = leg.request.essentials()  # the full INVITE is not needed any more

    def _cancel_leg(self, leg: BLeg, now: float) -> None:
        if leg.final:
            return
        if not leg.provisional:
            leg.cancel_pending = True
            return
        leg.cancel_pending = False
        cancel = build_cancel(leg.request)
        dest = leg.target.destination
        try:
            self.layer.send_request(cancel, dest, self.network.reliable(dest), now)
        except TransactionError as exc:  # a CANCEL already runs for this branch
            log.debug("event=cancel_skipped error=%s", exc)

    # -- requests from either side ---------------------------------------------------------

    def call_of(self, invite_tx: ServerTransaction) -> Call | None:
        """The call the caller's INVITE transaction belongs to (None once it ended)."""
        return self._by_invite.get(invite_tx)

    def on_cancel(
        self, invite_tx: ServerTransaction, now: float, cancel: Request | None = None
    ) -> bool:
        """The caller cancelled its INVITE (the core already answered the CANCEL 200).

        Returns False when no call belongs to that INVITE.
        """
        call = self._by_invite.get(invite_tx)
        if call is None:
            return False
        if cancel is not None:
            call.reason = call.reason or _reason_of(cancel)
        if call.state in (CallState.ROUTING, CallState.EARLY) and call.winner is None:
            for leg in call.legs:
                self._cancel_leg(leg, now)
            call.disposition = Disposition.CANCELLED
            self._fail(call, 487, now)  # RFC 3261 9.2: the INVITE gets 487
            self._end(call, now, "caller")
        return True

    def find(self, request: Request) -> tuple[Call, BLeg | None] | None:
        """The call an in-dialog request belongs to, and the B leg it came from (None: A)."""
        to_tag = request.to.tag
        if to_tag is None:
            return None
        call = self._by_a.get((request.call_id, to_tag))
        if call is not None:
            return call, None
        entry = self._by_b.get(request.call_id)
        if entry is not None and entry[0].state is CallState.ANSWERED:
            return entry
        return None

    def on_in_dialog(
        self, tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> bool:
        """An in-dialog request (To tag present). False when no call knows it (answer 481)."""
        found = self.find(request)
        if found is None:
            return False
        call, from_leg = found
        own = call.a_dialog if from_leg is None else from_leg.dialog
        if own is None:
            if from_leg is None and request.method == "BYE":  # caller gives up while ringing
                self._respond(tx, request.response(200), now)
                self.on_cancel(call.server, now)
                return True
            return False
        verdict = own.receive_request(request)
        if not verdict.ok:
            self._respond(tx, request.response(verdict.status, verdict.reason), now)
            return True
        method = request.method
        if method == "BYE":
            if from_leg is not None and from_leg is call.winner and call.come_back is not None:
                self._come_back(call, from_leg, tx, request, now)  # the caller stays
                return True
            call.held = (tx, request.response(200))  # sent by _end or recorded()
            call.reason = call.reason or _reason_of(request)
            self._hangup_other(call, from_leg, now, request)
            self._end(call, now, "caller" if from_leg is None else "callee")
            return True
        if method == "OPTIONS" and not request.body:
            self._respond(tx, request.response(200, headers=[("Allow", ALLOW)]), now)
            return True
        if call.service is not None and from_leg is None and call.winner is None:
            self._service_request(call, tx, request, now)
            return True
        self._relay_request(call, from_leg, tx, request, now)
        return True

    def on_ack(self, ack: Request, now: float) -> None:
        """An ACK for a 2xx we sent to the caller: carries the answer of a late offer."""
        found = self.find(ack)
        if found is None or found[1] is not None:
            return
        call = found[0]
        leg = call.winner
        ctype = ack.headers.get("Content-Type") if ack.body else None
        if call.service is not None and leg is None:
            if self.services is not None:  # the answer to the service's offer, if it made one
                try:
                    self.services.acked(call, ack.body)
                except ServiceError as exc:
                    log.info("event=service_media_refused call=%s error=%s", call.id, exc)
                    self.hangup(call, now, "bad_sdp")
            return
        if leg is not None and leg.request.call_id not in self._acks:
            self._ack_leg(leg, self._to_b(call, ack.body, ctype), ctype)

    def _relay_request(
        self,
        call: Call,
        from_leg: BLeg | None,
        tx: ServerTransaction,
        request: Request,
        now: float,
    ) -> None:
        to_a = from_leg is not None
        dialog = call.a_dialog if to_a else (call.winner.dialog if call.winner else None)
        dest = call.source if to_a else (call.winner.target.destination if call.winner else None)
        if dialog is None or dest is None:
            self._respond(tx, request.response(481), now)
            return
        if request.method == "INVITE":
            if call.reinviting:
                self._respond(tx, request.response(491), now)  # RFC 3261 14.2: glare
                return
            call.reinviting = True
        ctype = request.headers.get("Content-Type") if request.body else None
        body = (
            self._to_a(call, request.body, ctype) if to_a else self._to_b(call, request.body, ctype)
        )
        out = dialog.create_request(
            request.method,
            via=self.network.via(dest, make_branch(self._entropy)),
            contact=self.network.contact(dest) if request.method in _TARGET_REFRESH else None,
            headers=_copied(request),
            body=body,
            content_type=ctype,
        )
        client = self.layer.send_request(out, dest, self.network.reliable(dest), now)
        self._clients[client] = (call, None, _Relay(call, tx, to_a))

    def _to_a(self, call: Call, body: bytes, content_type: str | None) -> bytes:
        """SDP from the callee's side as the caller gets it: through the media anchor, and
        under the origin the caller knows when a service answered it (RFC 3264 8)."""
        if not body or not _is_sdp(content_type):
            return body
        body = self.media.sdp(call, body, from_a=False)
        origin = call.a_origin
        return origin.rewrite(body) if origin is not None else body

    def _to_b(self, call: Call, body: bytes, content_type: str | None) -> bytes:
        """SDP from the caller as the callee gets it (through the media anchor)."""
        if not body or not _is_sdp(content_type):
            return body
        return self.media.sdp(call, body, from_a=True)

    def _relay_response(
        self, relay: _Relay, tx: ClientTransaction, response: Response, now: float
    ) -> None:
        call = relay.call
        status = response.status
        dialog = call.a_dialog if relay.to_a else (call.winner.dialog if call.winner else None)
        if dialog is not None:
            dialog.receive_response(tx.request, response)
        if tx.request.method == "INVITE" and 200 <= status < 300 and dialog is not None:
            dest = call.source if relay.to_a else call.winner.target.destination  # type: ignore[union-attr]
            # the re-INVITE's 2xx is ACKed at once
            via = self.network.via(dest, make_branch(self._entropy))
            self.layer.send_stateless(dialog.create_request("ACK", via=via), dest)
        if status >= 200 and tx.request.method == "INVITE":
            call.reinviting = False
        server = relay.server
        if status == 100 or server is None or server.final_sent:
            return
        server_req = server.request
        headers = _copied(response)
        if server_req.method in _TARGET_REFRESH and 200 <= status < 300:
            peer = call.source if not relay.to_a else call.winner.target.destination  # type: ignore[union-attr]
            headers.append(("Contact", str(self.network.contact(peer))))
        ctype = response.headers.get("Content-Type") if response.body else None
        if relay.to_a:  # the caller answered: the callee gets it
            body = self._to_b(call, response.body, ctype)
        else:
            body = self._to_a(call, response.body, ctype)
        out = server_req.response(
            status, response.reason, headers=headers, body=body, content_type=ctype
        )
        self._respond(server, out, now)

    # -- services: calls the PBX answers itself, then hands on (RFC 3725 4) -----------------

    def _serve(self, call: Call, route: Route, now: float) -> Route | None:
        """Answer the call with the route's service; None when it runs, else the failure."""
        services, invite = self.services, call.invite
        service = route.service or ""
        if services is None:
            return replace(route, status=route.status or 501)
        try:
            sdp = services.start(call, service, invite.body)
            call.a_origin = SdpOrigin(sdp)
        except ServiceError as exc:  # a route's own failure status (e.g. 480) wins
            log.info("event=service_refused call=%s service=%s error=%s", call.id, service, exc)
            return replace(route, status=route.status or exc.status, reason=str(exc))
        except ParseError as exc:  # our own SDP: a bug, but not one that may crash the PBX
            log.error("event=service_bad_sdp call=%s error=%s", call.id, exc)
            services.stop(call)
            return replace(route, status=500)
        a_resp = invite.response(
            200,
            to_tag=call.to_tag,
            headers=[("Contact", str(self.network.contact(call.source))), ("Allow", ALLOW)],
            body=sdp,
            content_type=_SDP,
        )
        try:
            call.a_dialog = Dialog.from_uas(invite, a_resp)
        except ParseError as exc:  # the caller's INVITE had no Contact
            services.stop(call)
            return replace(route, status=400, reason=f"Bad Request ({exc})")
        call.service = service
        self._respond(call.server, a_resp, now)
        call.state = CallState.ANSWERED
        call.answered = now
        call.final_status = 200
        call.invite = invite.essentials()
        call.probe_due = now + self.settings.probe_interval
        if call.id not in self.calls:  # a new call (a forwarded one is tracked already)
            self._track(call)
        heapq.heappush(self._timers, (call.due, call.id))
        log.info("event=call_service call=%s from=%s service=%s", call.id, call.caller, service)
        return None

    def transfer(
        self, call: Call, kind: str, target: str, now: float, come_back: bool = False
    ) -> None:
        """A service hands its caller on: ring the router's choice for ``kind``/``target``
        with no offer; the answer's offer goes to the caller in a re-INVITE, its answer to
        the callee in the ACK (RFC 3725 4, flow I). The outcome comes back through
        ``ServiceHost.transferred``.

        ``come_back``: when the callee of the answered transfer hangs up, the caller goes
        back to the service (:meth:`_come_back`, ``ServiceHost.resume``) instead of the
        call ending. The caller's BYE, and the transfer's duration limit, still end the
        whole call."""
        services = self.services
        if services is None:
            return
        if (
            call.state is not CallState.ANSWERED
            or call.service is None
            or call.winner is not None
            or call.transfer_at is not None
        ):
            services.transferred(call, 491)  # not now: the call is not idle in a service
            return
        route = self.router.transfer(call, kind, target)
        if not route.targets:
            log.info("event=transfer_failed call=%s to=%s status=%d", call.id, target, route.status)
            services.transferred(call, route.status or 404)
            return
        previous = call.max_seconds
        self._take_route(call, route, now)
        # The route's limit counts from the new party's answer (the service keeps its own).
        call.transfer_limit, call.max_seconds = call.max_seconds, previous
        call.no_answer_at = call.failover_at = None  # the service decides what happens next
        call.transfer_at = now + (route.no_answer or self.settings.ring_timeout)
        call.come_back = call.service if come_back else None
        log.info("event=call_transfer call=%s kind=%s to=%s", call.id, kind, route.callee)
        self._ring(call, route, 69, now)  # the anchor sees the warning: relays the call
        # The warning (a card call's money running out) counts from the answer too.
        call.transfer_warn, call.warn_at = call.warn_at, None

    def _hand_back(self, call: Call, leg: BLeg, response: Response, now: float) -> None:
        """The transfer's callee answered with its offer: re-INVITE the caller with it."""
        for other in call.legs:
            if other is not leg and other.final == 0:
                self._cancel_leg(other, now)
        call.transfer_at = None
        ctype = response.headers.get("Content-Type") if response.body else None
        dialog = call.a_dialog
        if not response.body or not _is_sdp(ctype) or dialog is None:
            # RFC 3261 13.2.1: a 2xx to an INVITE without an offer must carry one.
            log.warning("event=transfer_no_offer call=%s", call.id)
            self._drop_winner(call, leg, now)
            self._transferred(call, 488, now)
            return
        self._reinvite_caller(call, dialog, self._to_a(call, response.body, ctype), now)

    def _reinvite_caller(
        self, call: Call, dialog: Dialog, body: bytes, now: float, resume: bool = False
    ) -> None:
        """Our own re-INVITE to the caller: with the transfer callee's offer (hand-back),
        or without a body (``resume``: the caller offers, :meth:`_resumed`)."""
        out = dialog.create_request(
            "INVITE",
            via=self.network.via(call.source, make_branch(self._entropy)),
            contact=self.network.contact(call.source),
            body=body,
            content_type=_SDP if body else None,
        )
        call.reinviting = True
        dest = call.source
        client = self.layer.send_request(out, dest, self.network.reliable(dest), now)
        self._clients[client] = (call, None, _Relay(call, None, True, resume=resume))

    def _hand_back_response(
        self, relay: _Relay, tx: ClientTransaction, response: Response, now: float
    ) -> None:
        """The caller's answer to the hand-back re-INVITE: ACK both sides, or give up."""
        call = relay.call
        status = response.status
        dialog = call.a_dialog
        if dialog is not None:
            dialog.receive_response(tx.request, response)
        if status < 200:
            return
        call.reinviting = False
        if relay.resume:  # our offerless re-INVITE of a call coming back
            self._resumed(call, response, now)
            return
        leg = call.winner
        if 200 <= status < 300 and dialog is not None:
            via = self.network.via(call.source, make_branch(self._entropy))
            self.layer.send_stateless(dialog.create_request("ACK", via=via), call.source)
        if leg is None or call.state is CallState.ENDED:
            return
        ctype = response.headers.get("Content-Type") if response.body else None
        if 200 <= status < 300 and response.body and _is_sdp(ctype):
            self._ack_leg(leg, self._to_b(call, response.body, ctype), ctype)
            self._transferred(call, 200, now)
            return
        log.info("event=transfer_refused_by_caller call=%s status=%d", call.id, status)
        self._drop_winner(call, leg, now)
        self._transferred(call, status if status >= 300 else 488, now)

    def _drop_winner(self, call: Call, leg: BLeg, now: float) -> None:
        """A transfer's callee that cannot be joined after all: ACK it, then BYE."""
        self._ack_leg(leg, b"", None)
        if leg.dialog is not None:
            self._bye(leg.dialog, leg.target.destination, now, call)
        call.winner = None

    def _transfer_timeout(self, call: Call, now: float) -> None:
        """Nobody answered the transfer in time: stop ringing, tell the service."""
        call.transfer_at = None
        for leg in call.legs:
            if leg.final == 0 and not leg.superseded:
                leg.superseded = True
                self._cancel_leg(leg, now)
        self._transferred(call, 480, now)

    def _transferred(self, call: Call, status: int, now: float) -> None:
        if status == 200:
            log.info("event=call_handed_back call=%s to=%s", call.id, call.callee)
            call.service = None
            call.service_limit = call.max_seconds  # the service's own, should it come back
            limit, call.transfer_limit = call.transfer_limit, None
            warn, call.transfer_warn = call.transfer_warn, None
            if call.answered is not None and (limit is not None or warn is not None):
                # The transfer's limit and warning count from now, not from the service's
                # answer.
                since = now - call.answered
                if limit is not None:
                    call.max_seconds = limit + since
                if warn is not None:
                    call.warn_at = warn + since
                heapq.heappush(self._timers, (call.due, call.id))
        else:
            call.transfer_at = call.transfer_limit = call.transfer_warn = None
            call.come_back = None
        if self.services is not None:
            self.services.transferred(call, status)

    def _come_back(
        self, call: Call, leg: BLeg, tx: ServerTransaction, request: Request, now: float
    ) -> None:
        """The callee of a transfer that asked to come back hung up: answer its BYE at
        once (the call goes on, no record to wait for), forget the leg, give the call back
        to its service and re-INVITE the caller without an offer: it offers in its 2xx and
        the service answers in our ACK (RFC 3261 14.1, RFC 3264 5; :meth:`_resumed`)."""
        self._respond(tx, request.response(200), now)
        if leg.dialog is not None:
            leg.dialog.terminate()
        leg.superseded = True  # a stray retransmitted 2xx of it must not win again
        b_call_id = leg.request.call_id
        self._by_b.pop(b_call_id, None)
        self._acks.pop(b_call_id, None)
        call.winner = None
        call.service, call.come_back = call.come_back, None
        # The transfer's limit (and warning) no longer apply: the service's own again.
        call.max_seconds, call.service_limit = call.service_limit, None
        call.warn_at = None
        call.returned_at = now
        heapq.heappush(self._timers, (call.due, call.id))
        log.info("event=call_came_back call=%s from=%s", call.id, call.callee)
        dialog = call.a_dialog
        if dialog is None or self.services is None:
            self.hangup(call, now, "come_back_failed")
            return
        self._reinvite_caller(call, dialog, b"", now, resume=True)

    def _resumed(self, call: Call, response: Response, now: float) -> None:
        """The caller's final answer to the offerless re-INVITE of :meth:`_come_back`: its
        2xx carries its offer, the service's answer goes in the ACK (RFC 3264 5; every 2xx
        is ACKed, RFC 3261 13.2.2.4). A refusal, a 2xx without an offer or a service that
        cannot take the call back ends the call (the re-INVITE's timeout: ``on_timeout``)."""
        dialog, services = call.a_dialog, self.services
        status = response.status
        if call.state is CallState.ENDED or dialog is None:
            return
        answer = b""
        ctype = response.headers.get("Content-Type") if response.body else None
        if 200 <= status < 300 and response.body and _is_sdp(ctype) and services is not None:
            try:
                answer = services.resume(call, response.body)
            except ServiceError as exc:
                log.info("event=come_back_refused call=%s error=%s", call.id, exc)
        if 200 <= status < 300:
            origin = call.a_origin
            body = origin.rewrite(answer) if answer and origin is not None else answer
            ack = dialog.create_request(
                "ACK",
                via=self.network.via(call.source, make_branch(self._entropy)),
                body=body,
                content_type=_SDP if body else None,
            )
            self.layer.send_stateless(ack, call.source)
        if not answer:
            log.info("event=come_back_failed call=%s status=%d", call.id, status)
            self.hangup(call, now, "come_back_failed")

    def _service_request(
        self, call: Call, tx: ServerTransaction, request: Request, now: float
    ) -> None:
        """A request from the caller while a service answers it: DTMF INFO, or new SDP."""
        services = self.services
        if services is None:
            self._respond(tx, request.response(481), now)
            return
        if request.method == "INFO":
            self._respond(tx, request.response(services.info(call, request)), now)
            return
        if request.method not in _TARGET_REFRESH:
            self._respond(tx, request.response(405, headers=[("Allow", ALLOW)]), now)
            return
        ctype = request.headers.get("Content-Type") if request.body else None
        if request.body and not _is_sdp(ctype):
            self._respond(tx, request.response(415, headers=[("Accept", _SDP)]), now)
            return
        try:
            sdp = services.media_update(call, request.body)
        except ServiceError as exc:
            self._respond(tx, request.response(exc.status, str(exc)), now)
            return
        contact = [("Contact", str(self.network.contact(call.source)))]
        if sdp is None:
            self._respond(tx, request.response(200, headers=contact), now)
            return
        origin = call.a_origin
        body = origin.rewrite(sdp) if origin is not None else sdp
        self._respond(tx, request.response(200, headers=contact, body=body, content_type=_SDP), now)

    # -- ending calls ----------------------------------------------------------------------

    def hangup(
        self, call: Call, now: float, reason: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """End a call from the PBX side (limits, admin action, shutdown, dead peer).

        ``headers`` go on both BYEs (a Reason header, RFC 3326).
        """
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.ANSWERED:
            leg = call.winner
            if leg is not None and leg.dialog is not None:
                self._bye(leg.dialog, leg.target.destination, now, call, extra=headers)
            if call.service is not None:  # a service's transfer may be ringing
                for ringing in call.legs:
                    self._cancel_leg(ringing, now)
            if call.a_dialog is not None:
                self._bye(call.a_dialog, call.source, now, call, extra=headers)
        else:
            for leg in call.legs:
                self._cancel_leg(leg, now)
            self._fail(call, 480 if reason == "no_answer" else 500, now)
        call.reason = call.reason or reason
        self._end(call, now, "system")

    def _hangup_other(
        self, call: Call, from_leg: BLeg | None, now: float, bye: Request | None
    ) -> None:
        """Send BYE to the side that did not hang up."""
        if from_leg is None:  # the caller hung up: BYE the callee
            leg = call.winner
            if leg is not None and leg.dialog is not None:
                self._bye(leg.dialog, leg.target.destination, now, call, bye)
        elif call.a_dialog is not None:
            self._bye(call.a_dialog, call.source, now, call, bye)

    def _bye(
        self,
        dialog: Dialog,
        dest: Address,
        now: float,
        call: Call,
        cause: Request | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        headers = [*(_copied(cause) if cause is not None else []), *extra]
        try:
            bye = dialog.create_request(
                "BYE", via=self.network.via(dest, make_branch(self._entropy)), headers=headers
            )
        except TransactionError:
            return  # the dialog is already over
        dialog.terminate()
        tx = self.layer.send_request(bye, dest, self.network.reliable(dest), now)
        self._clients[tx] = (call, None, None)

    def _end(self, call: Call, now: float, by: str) -> None:
        """Forget the call everywhere and tell the listener (once)."""
        if call.id not in self.calls:
            return
        del self.calls[call.id]
        self.counts.remove(call)
        if call.service is not None:
            for leg in call.legs:  # a transfer still ringing
                self._cancel_leg(leg, now)
        if self.services is not None and call.a_origin is not None:
            self.services.stop(call)
        self.media.release(call)
        self._by_invite.pop(call.server, None)
        self._by_a.pop((call.invite.call_id, call.to_tag), None)
        for leg in call.legs:
            self._by_b.pop(leg.request.call_id, None)
            self._acks.pop(leg.request.call_id, None)
        call.state = CallState.ENDED
        call.ended = call.ended or now
        call.hangup_by = call.hangup_by or by
        if call.disposition is None:
            call.disposition = Disposition.ANSWERED if call.answered else Disposition.FAILED
        log.info(
            "event=call_end call=%s disposition=%s status=%d by=%s duration=%.1f",
            call.id,
            call.disposition.value,
            call.final_status,
            call.hangup_by,
            call.duration,
        )
        if not self.listener.call_ended(call):
            self.recorded(call, now)

    def recorded(self, call: Call, now: float) -> None:
        """The listener made the call's record durable: send the held answer (if any)."""
        held, call.held = call.held, None
        if held is not None:
            self._respond(held[0], held[1], now)

    def _respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        try:
            self.layer.send_response(tx, response, now)
        except TransactionError as exc:  # e.g. the caller's transaction already ended
            log.debug("event=response_dropped status=%d error=%s", response.status, exc)

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Ring timeouts and dead-peer probes that are due."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, call_id = heapq.heappop(timers)
            call = self.calls.get(call_id)
            if call is None or call.due != due:
                continue  # ended, or rescheduled: a stale entry
            if call.state is CallState.ANSWERED:
                if call.transfer_at is not None and call.transfer_at <= now:
                    self._transfer_timeout(call, now)
                limit = call.limit_at
                if limit is not None and limit <= now:
                    call.reason = "max_duration"
                    self.hangup(call, now, "max_duration", [("Reason", LIMIT_REASON)])
                    continue
                warn, answered = call.warn_at, call.answered
                if warn is not None and answered is not None and answered + warn <= now:
                    call.warn_at = None  # once
                    played = self.media.warn(call)
                    log.info("event=call_warned call=%s played=%d", call.id, played)
                if call.probe_due <= now:
                    call.probe_due = now + self.settings.probe_interval
                    self._probe(call, now)
                heapq.heappush(timers, (call.due, call.id))
            elif call.no_answer_at is not None and call.no_answer_at <= now < call.ring_deadline:
                call.no_answer_at = None
                self._no_answer_forward(call, now)
                heapq.heappush(timers, (call.due, call.id))
            elif call.failover_at is not None and call.failover_at <= now < call.ring_deadline:
                call.failover_at = None
                heapq.heappush(timers, (call.due, call.id))
                for leg in list(call.legs):  # failover appends new legs
                    if not leg.heard and leg.final == 0:  # silent trunk: as a 408
                        self._leg_final(call, leg, 408, now)
            elif call.winner is None and self._no_answer_forward(call, now):
                heapq.heappush(timers, (call.due, call.id))  # rung somewhere else (voicemail)
            else:
                call.disposition = Disposition.NO_ANSWER
                self.hangup(call, now, "no_answer")

    def _no_answer_forward(self, call: Call, now: float) -> bool:
        """The callee let it ring its no-answer time (or the ring timeout): stop ringing
        it, ring the forward; False when there is none."""
        ringing = [leg for leg in call.legs if not leg.superseded and leg.final == 0]
        forwards = ringing[0].forwards if ringing else 69
        if call.winner is not None or not self._forward(call, "no_answer", now, forwards):
            return False
        for leg in ringing:
            self._cancel_leg(leg, now)
        return True

    def _probe(self, call: Call, now: float) -> None:
        """In-dialog OPTIONS to both legs: a 408/481 or timeout ends the call."""
        legs: list[tuple[Dialog | None, Address]] = [(call.a_dialog, call.source)]
        if call.winner is not None:
            legs.append((call.winner.dialog, call.winner.target.destination))
        for dialog, dest in legs:
            if dialog is None:
                continue
            options = dialog.create_request(
                "OPTIONS", via=self.network.via(dest, make_branch(self._entropy))
            )
            tx = self.layer.send_request(options, dest, self.network.reliable(dest), now)
            self._clients[tx] = (call, None, None)

    def next_deadline(self) -> float | None:
        """The earliest ring timeout or probe among the calls."""
        timers = self._timers
        while timers:
            due, call_id = timers[0]
            call = self.calls.get(call_id)
            if call is not None and call.due == due:
                return due
            heapq.heappop(timers)
        return None


# RFC 3326 Reason of the BYEs that end a call at its duration limit (Q.850 16: normal
# clearing; the text says why).
LIMIT_REASON = 'Q.850;cause=16;text="Call duration limit reached"'

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, REFER, NOTIFY, SUBSCRIBE"
