"""Dialog state (RFC 3261 12): identification, in-dialog requests, CSeq order, target refresh.

A :class:`Dialog` is plain state with methods that build or check messages; it does no I/O,
owns no timer and sends nothing. The TU keeps dialogs in a dict keyed by :class:`DialogId`
(``dialog.id``) and finds the dialog of a message with :func:`dialog_id_of`.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from minipbx.sip.errors import ParseError, TransactionError
from minipbx.sip.headers import NameAddr, Via
from minipbx.sip.message import Request, Response, build_request
from minipbx.sip.uri import SipUri, Uri

# Requests that may change the remote target (RFC 3261 12.2, RFC 3311, 6665, 3515).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogState(enum.Enum):
    """RFC 3261 12: a dialog is early until a 2xx, then confirmed, then terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogId(NamedTuple):
    """Call-ID, local tag and remote tag (RFC 3261 12). A missing tag is ``""``."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a request against a dialog; ``status`` is the reply to send."""

    ok: bool
    status: int = 0
    reason: str = ""


ACCEPT = Verdict(True)


def make_tag(entropy: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A From/To tag with 64 random bits from ``entropy`` (RFC 3261 19.3 asks for 32)."""
    return entropy(8).hex()


def dialog_id_of(message: Request | Response, incoming: bool = True) -> DialogId:
    """The id of the dialog ``message`` belongs to, seen from this side (RFC 3261 12).

    An incoming request or an outgoing response has our tag in To; an incoming response
    or an outgoing request has it in From.
    """
    ours_in_from = isinstance(message, Response) == incoming
    local, remote = (message.from_, message.to) if ours_in_from else (message.to, message.from_)
    return DialogId(message.call_id, local.tag or "", remote.tag or "")


def _secure(request: Request, tls: bool) -> bool:
    # RFC 3261 12.1.1, 12.1.2: sent or received over TLS with a SIPS Request-URI.
    return tls and isinstance(request.uri, SipUri) and request.uri.secure


@dataclass(slots=True, eq=False)
class Dialog:
    """The dialog state of RFC 3261 12.

    ``local_seq`` / ``remote_seq`` are None while empty. ``route_set`` holds Route values
    in the order they go into a request. ``invite_seq`` is the CSeq number of the last
    INVITE we sent in the dialog, used by the ACK for its 2xx (RFC 3261 13.2.2.4).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: Uri
    remote_uri: Uri
    local_seq: int | None
    remote_seq: int | None
    remote_target: Uri
    route_set: tuple[NameAddr, ...] = ()
    secure: bool = False
    state: DialogState = DialogState.EARLY
    local_display: str | None = None
    remote_display: str | None = None
    invite_seq: int | None = None

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response, *, tls: bool = False) -> Dialog:
        """The dialog a 1xx (with To tag) or 2xx to our ``request`` creates (RFC 3261 12.1.2).

        Route set: the response's Record-Route reversed; remote target: its Contact (the
        Request-URI when a provisional response has none).
        """
        to_tag = response.to.tag
        if to_tag is None or not 101 <= response.status < 300:
            raise TransactionError(f"a {response.status} without a To tag creates no dialog")
        contacts = response.contacts
        if not contacts and response.status >= 200:
            raise ParseError("2xx without Contact cannot establish a dialog")
        seq = request.cseq.seq
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=to_tag,
            local_uri=request.from_.uri,
            remote_uri=request.to.uri,
            local_seq=seq,
            remote_seq=None,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=tuple(reversed(response.record_routes)),
            secure=_secure(request, tls),
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_display=request.from_.display,
            remote_display=request.to.display,
            invite_seq=seq if request.method == "INVITE" else None,
        )

    @classmethod
    def from_uas(cls, request: Request, response: Response, *, tls: bool = False) -> Dialog:
        """The dialog our ``response`` (1xx or 2xx, with our To tag) creates (RFC 3261 12.1.1).

        Route set: the request's Record-Route in order; remote target: its Contact.
        Raises :class:`ParseError` (400) when the request has no Contact.
        """
        to_tag = response.to.tag
        if to_tag is None or not 101 <= response.status < 300:
            raise TransactionError(f"a {response.status} without a To tag creates no dialog")
        contacts = request.contacts
        if not contacts:
            raise ParseError(f"{request.method} without Contact", status=400, answerable=True)
        return cls(
            call_id=request.call_id,
            local_tag=to_tag,
            remote_tag=request.from_.tag or "",  # RFC 3261 12.1.1: a missing tag is null
            local_uri=request.to.uri,
            remote_uri=request.from_.uri,
            local_seq=None,
            remote_seq=request.cseq.seq,
            remote_target=contacts[0].uri,
            route_set=tuple(request.record_routes),
            secure=_secure(request, tls),
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_display=request.to.display,
            remote_display=request.from_.display,
        )

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag): the key to look the dialog up by."""
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def terminate(self) -> None:
        """Mark the dialog terminated (BYE sent or received, early dialog failed)."""
        self.state = DialogState.TERMINATED

    # -- requests we send ------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        contact: NameAddr | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        max_forwards: int = 70,
        cseq: int | None = None,
    ) -> Request:
        """Build a request within the dialog (RFC 3261 12.2.1.1).

        To/From carry the remote/local URI and tags, the Request-URI and Route follow the
        route set (loose or strict routing), the CSeq is the local sequence number plus one
        (``cseq`` overrides it; an empty local sequence starts at 1). ACK reuses the CSeq
        number of the INVITE (13.2.2.4). CANCEL is not built here: see ``build_cancel``.
        INVITE needs ``contact`` (RFC 3261 8.1.1.8); other target refreshes should have one.
        """
        if self.state is DialogState.TERMINATED:
            raise TransactionError(f"cannot send {method} in a terminated dialog")
        if method == "CANCEL":
            raise TransactionError("CANCEL belongs to the INVITE transaction: use build_cancel")
        if method == "INVITE" and contact is None:
            raise TransactionError("an INVITE needs a Contact (RFC 3261 8.1.1.8)")
        seq = self._next_seq(method, cseq)
        uri, routes = self._request_target()
        lines = [("Route", str(route)) for route in routes]
        if contact is not None:
            lines.append(("Contact", str(contact)))
        lines.extend(headers)
        return build_request(
            method,
            uri,
            via=via,
            from_=NameAddr(self.local_uri, self.local_display, {"tag": self.local_tag}),
            to=NameAddr(
                self.remote_uri,
                self.remote_display,
                {"tag": self.remote_tag} if self.remote_tag else {},
            ),
            call_id=self.call_id,
            cseq=seq,
            max_forwards=max_forwards,
            headers=lines,
            body=body,
            content_type=content_type,
        )

    def _next_seq(self, method: str, cseq: int | None) -> int:
        if method == "ACK":
            if self.invite_seq is None:
                raise TransactionError("no INVITE was sent in this dialog: nothing to ACK")
            return self.invite_seq
        if cseq is None:
            cseq = 1 if self.local_seq is None else self.local_seq + 1
        if cseq >= 2**32:
            raise TransactionError("CSeq number exhausted (RFC 3261 8.1.1.5)")
        self.local_seq = cseq
        if method == "INVITE":
            self.invite_seq = cseq
        return cseq

    def _request_target(self) -> tuple[Uri, tuple[NameAddr, ...]]:
        """Request-URI and Route values (RFC 3261 12.2.1.1)."""
        routes = self.route_set
        if not routes:
            return self.remote_target, ()
        first = routes[0].uri
        if not isinstance(first, SipUri) or "lr" in first.params:
            return self.remote_target, routes  # loose routing
        # Strict router: its URI becomes the Request-URI (minus what a Request-URI may not
        # carry, RFC 3261 19.1.1 table 1) and the remote target goes last in Route.
        params = {k: v for k, v in first.params.items() if k != "method"}
        uri = dataclasses.replace(first, params=params, headers=())
        return uri, (*routes[1:], NameAddr(self.remote_target))

    def receive_response(self, request: Request, response: Response) -> None:
        """Update the dialog from a response to a request we sent in it (RFC 3261 12.2.1.2).

        A 2xx confirms an early dialog (recomputing the route set, 13.2.2.4) and refreshes
        the remote target of a target refresh request; 300-699 to the initial INVITE ends
        an early dialog (12.3); 481 and 408 end the dialog.
        """
        status = response.status
        success = 200 <= status < 300
        if self.state is DialogState.EARLY and request.method == "INVITE":
            if success:
                self.state = DialogState.CONFIRMED
                self.route_set = tuple(reversed(response.record_routes))
            elif status >= 300:
                self.state = DialogState.TERMINATED
        if success and request.method in TARGET_REFRESH:
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
        if status == 481 or status == 408:
            self.state = DialogState.TERMINATED

    # -- requests we receive ---------------------------------------------------------------

    def receive_request(self, request: Request) -> Verdict:
        """Check an incoming in-dialog request (RFC 3261 12.2.2) and note its CSeq.

        A request with a lower CSeq number than the last one is out of order: the verdict
        says to reject it with 500. ACK and CANCEL carry the INVITE's number and are not
        checked. A request for another (or a terminated) dialog gets 481.
        """
        if (
            self.state is DialogState.TERMINATED
            or request.call_id != self.call_id
            or (request.to.tag or "") != self.local_tag
            or (request.from_.tag or "") != self.remote_tag
        ):
            return Verdict(False, 481, "Call/Transaction Does Not Exist")
        method = request.method
        if method == "ACK" or method == "CANCEL":
            return ACCEPT
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return Verdict(False, 500, "CSeq out of order")
        self.remote_seq = seq
        return ACCEPT

    def sent_response(self, request: Request, response: Response) -> None:
        """Update the dialog after we answered an in-dialog request (RFC 3261 12.2.2, 13.3).

        A 2xx confirms an early dialog and refreshes the remote target from the Contact of
        a target refresh request; 300-699 to the initial INVITE ends an early dialog.
        """
        status = response.status
        success = 200 <= status < 300
        if self.state is DialogState.EARLY and request.method == "INVITE":
            if success:
                self.state = DialogState.CONFIRMED
            elif status >= 300:
                self.state = DialogState.TERMINATED
        if success and request.method in TARGET_REFRESH:
            contacts = request.contacts
            if contacts:
                self.remote_target = contacts[0].uri
