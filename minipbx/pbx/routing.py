"""Where a call goes. For now: the called extension of the caller's own tenant.

This is the :class:`minipbx.pbx.b2bua.Router` seam: the dial plan (follow-me, trunks,
services, number rewriting) replaces :class:`LocalRouter` without touching the B2BUA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from minipbx.pbx.call import Call, Route, Target
from minipbx.pbx.location import target_of
from minipbx.pbx.ports import UserLookup
from minipbx.pbx.registrar import Registrar
from minipbx.sip.errors import ParseError
from minipbx.sip.uri import SipUri, TelUri, Uri, parse_uri

log = logging.getLogger("minipbx.routing")


def number_of(uri: Uri) -> str:
    """The user part of a SIP URI or the number of a tel URI ("" for anything else)."""
    if isinstance(uri, SipUri):
        return uri.user or ""
    return uri.number if isinstance(uri, TelUri) else ""


def called_number(call: Call) -> str:
    """The number as dialed: the Request-URI user (or tel number), else the To user."""
    return number_of(call.invite.uri) or number_of(call.invite.to.uri)


class LocalRouter:
    """Rings every registered contact of the called user of the caller's tenant."""

    def __init__(
        self, users: UserLookup, registrar: Registrar, wall_clock: Callable[[], float]
    ) -> None:
        self.users = users
        self.registrar = registrar
        self._wall = wall_clock

    def route(self, call: Call) -> Route:
        """Targets for the call, or the status to answer (404 unknown, 480 offline)."""
        return self.targets(call.tenant_id, call.domain, called_number(call))

    def forward(self, call: Call, why: str, to: str | None = None) -> Route | None:
        """No forwarding without the dial plan router."""
        return None

    def transfer(self, call: Call, kind: str, target: str) -> Route:
        """A service's transfer rings a local user (no dial plan: nothing else exists)."""
        if kind not in ("user", "number", "followme"):
            return Route(status=501, callee=target)
        return self.targets(call.tenant_id, call.domain, target)

    def targets(self, tenant_id: int, domain: str, number: str) -> Route:
        """The contacts of user ``number`` in the caller's tenant (calls and MESSAGE)."""
        user = self.users.lookup(domain, number) if number else None
        if user is None or user.tenant_id != tenant_id or not user.enabled:
            return Route(status=404, callee=number)  # only after authentication (no enumeration)
        bindings = self.registrar.lookup((user.tenant_id, user.extension), self._wall())
        targets: list[Target] = []
        for binding in sorted(bindings, key=lambda b: -(b.q if b.q is not None else 1.0)):
            try:
                uri = parse_uri(binding.contact)
            except ParseError:
                log.warning("event=bad_contact aor=%s contact=%r", user.extension, binding.contact)
                continue
            destination = target_of(binding)
            targets.append(Target(uri, destination, binding.path, nat=binding.nat))
        if not targets:
            return Route(status=480, callee=number)  # RFC 3261 21.4.18: not registered now
        return Route(targets=tuple(targets), callee=number)
