"""Instant messages between users (SIP MESSAGE, RFC 3428), relayed statefully.

An authenticated MESSAGE for a user of the sender's tenant goes to that user's preferred
contact with a new Via, Call-ID and tags of ours (as the B2BUA does for calls); the final
response comes back to the sender. Pager-mode only: no session, no storage when the user
is offline (480).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from minipbx.pbx.call import Network, TargetLookup
from minipbx.pbx.ports import User
from minipbx.pbx.routing import number_of
from minipbx.sip.dialog import make_tag
from minipbx.sip.errors import TransactionError
from minipbx.sip.headers import NameAddr
from minipbx.sip.message import Request, Response, build_request
from minipbx.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
    make_branch,
)

MAX_BODY = 8192  # RFC 3428 7: pager-mode messages stay small (1300 octets advised)


class MessageRelay:
    """Forwards MESSAGE requests to the called user and relays the answer back."""

    def __init__(
        self,
        layer: TransactionLayer,
        network: Network,
        router: TargetLookup,
        entropy: Callable[[int], bytes],
    ) -> None:
        self.layer = layer
        self.network = network
        self.router = router
        self._entropy = entropy
        self._pending: dict[ClientTransaction, ServerTransaction] = {}

    def handle(self, tx: ServerTransaction, request: Request, sender: User, now: float) -> None:
        """Relay an authenticated MESSAGE of ``sender``."""
        if len(request.body) > MAX_BODY:
            self._answer(tx, request.response(413, to_tag=make_tag(self._entropy)), now)
            return
        route = self.router.targets(sender.tenant_id, sender.domain, number_of(request.uri))
        if not route.targets:
            status = route.status or 404
            self._answer(tx, request.response(status, to_tag=make_tag(self._entropy)), now)
            return
        target = route.targets[0]
        dest = target.destination
        headers = [("Route", path) for path in target.path]
        for name in ("Date", "Subject", "Priority"):
            headers += [(name, value) for value in request.headers.get_all(name)]
        out = build_request(
            "MESSAGE",
            target.uri,
            via=self.network.via(dest, make_branch(self._entropy)),
            from_=NameAddr(
                request.from_.uri, request.from_.display, {"tag": make_tag(self._entropy)}
            ),
            to=NameAddr(request.to.uri, request.to.display),
            call_id=make_tag(self._entropy) + make_tag(self._entropy),
            cseq=1,
            max_forwards=max((request.max_forwards or 70) - 1, 0),
            headers=headers,
            body=request.body,
            content_type=request.headers.get("Content-Type") or "text/plain",
        )
        client = self.layer.send_request(out, dest, self.network.reliable(dest), now)
        self._pending[client] = tx

    def on_response(self, client: ClientTransaction, response: Response, now: float) -> bool:
        """Relay the final answer; False when the transaction is not ours."""
        tx = self._pending.get(client)
        if tx is None:
            return False
        if response.status >= 200:
            del self._pending[client]
            relayed = tx.request.response(
                response.status, response.reason, to_tag=make_tag(self._entropy)
            )
            self._answer(tx, relayed, now)
        return True

    def on_timeout(self, client: ClientTransaction, now: float) -> bool:
        """The user's phone did not answer: 408 to the sender."""
        tx = self._pending.pop(client, None)
        if tx is None:
            return False
        self._answer(tx, tx.request.response(408, to_tag=make_tag(self._entropy)), now)
        return True

    def _tag(self) -> str:
        return make_tag(self._entropy)

    def _answer(self, tx: ServerTransaction, response: Response, now: float) -> None:
        with contextlib.suppress(TransactionError):  # the sender's transaction may be over
            self.layer.send_response(tx, response, now)
