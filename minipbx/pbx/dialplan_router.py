"""The dial plan as the B2BUA's router: rules, trunks, limits and the toll-fraud guard.

:class:`RoutingConfig` is an immutable, compiled snapshot of what the store holds (dial
plans, trunks, user call policies); the app swaps in a new one when the data changes, so a
call never waits on the database. :class:`DialPlanRouter` turns a call into a
:class:`~minipbx.pbx.call.Route`:

- calls from users: the user's dial plan (or the tenant's); no plan at all means "dial an
  extension of your tenant" (the behaviour before dial plans existed);
- calls from an IP-authenticated trunk: routed by DID through the tenant's plan, but never
  out to a trunk again (nothing reaches a trunk without an authenticated user whose dial
  plan allows it);
- duration limits: the rule's, the user's and the free account's (60 s by default), the
  shortest wins; concurrent-call limits per user and per trunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from minipbx.pbx.call import Call, CallCounts, LegAuth, Route, Target
from minipbx.pbx.dialplan import (
    Action,
    Decision,
    DialPlan,
    DialPlanError,
    make_rule,
    to_e164,
)
from minipbx.pbx.features import feature_service
from minipbx.pbx.prepaid import Refusal
from minipbx.pbx.prepaid_gate import CardCall, PrepaidGate
from minipbx.pbx.routing import LocalRouter, called_number, number_of
from minipbx.sip.errors import ParseError
from minipbx.sip.headers import NameAddr
from minipbx.sip.offer_answer import restrict_codecs
from minipbx.sip.sdp import SessionDescription
from minipbx.sip.uri import SipUri, TelUri, Uri
from minipbx.store.pbxrecords import TrunkRecord
from minipbx.store.routing_data import CallPolicy, RoutingData, TenantLimits
from minipbx.transport.address import Address

log = logging.getLogger("minipbx.routing")

FREE_ACCOUNT_SECONDS = 60
MAX_FORWARDS = 5  # forwards of one call before it is taken for a loop


@dataclass(frozen=True, slots=True)
class TrunkRoute:
    """A trunk compiled for routing: where INVITEs go and as whom."""

    name: str
    tenant_id: int
    host: str  # Request-URI host (the provider's domain)
    destination: Address | None  # resolved address; None: could not be resolved
    from_domain: str
    caller_id: str | None
    auth: LegAuth | None
    max_calls_out: int | None
    max_calls_in: int | None
    user_phone: bool
    identity: str = "pai"  # how the caller is asserted: "pai" (RFC 3325), "rpid" or "none"
    codecs: tuple[str, ...] = ()  # audio codecs the trunk may be offered (empty: any)
    account: str = ""  # the user we register as: the provider calls sip:<account>@pbx
    e164: str = ""  # country code: numbers and caller IDs sent in E.164 form ("": as is)
    tel_uri: bool = False  # Request-URI and To as tel: URIs (RFC 3966) instead of sip:


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """A compiled snapshot of the routing data (see the module docstring)."""

    plans: Mapping[int, DialPlan] = field(default_factory=dict)
    tenant_plans: Mapping[int, int | None] = field(default_factory=dict)
    trunks: Mapping[tuple[int, str], TrunkRoute] = field(default_factory=dict)
    policies: Mapping[tuple[int, str], CallPolicy] = field(default_factory=dict)
    tenant_limits: Mapping[int, TenantLimits] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # rules that could not be compiled (skipped)
    versions: tuple[int, ...] = ()

    def plan_for(self, tenant_id: int, policy: CallPolicy | None) -> DialPlan | None:
        """The user's own dial plan, else the tenant's, else None."""
        plan_id = policy.dial_plan_id if policy is not None else None
        if plan_id is None:
            plan_id = self.tenant_plans.get(tenant_id)
        return self.plans.get(plan_id) if plan_id is not None else None


def compile_routing(
    data: RoutingData, resolve: Callable[[TrunkRecord], Address | None]
) -> RoutingConfig:
    """Compile ``data``; invalid rules are skipped and listed in ``problems`` (logged)."""
    problems: list[str] = []
    plans: dict[int, DialPlan] = {}
    for plan in data.plans.values():
        rules = []
        for stored in plan.rules:
            try:
                rules.append(
                    make_rule(
                        position=stored.position,
                        pattern=stored.pattern,
                        action=stored.action,
                        target=stored.target,
                        failover=stored.failover_target,
                        caller_pattern=stored.caller_pattern,
                        level=stored.min_level,
                        time_condition=stored.time_condition,
                        strip=stored.strip,
                        prepend=stored.prepend,
                        caller_id=stored.caller_id,
                        reject_status=stored.reject_status,
                        max_seconds=stored.max_seconds,
                        enabled=stored.enabled,
                        id=stored.id,
                    )
                )
            except DialPlanError as exc:
                problems.append(f"dial plan {plan.name!r} rule {stored.position}: {exc}")
        plans[plan.id] = DialPlan(plan.name, tuple(rules), plan.id)
    for problem in problems:
        log.error("event=dial_plan_rule_skipped problem=%s", problem)
    trunks = {
        (t.tenant_id, t.name): _compile_trunk(t, resolve(t)) for t in data.trunks if t.enabled
    }
    policies = {(p.tenant_id, p.extension): p for p in data.policies.values()}
    return RoutingConfig(
        plans,
        dict(data.tenant_plans),
        trunks,
        policies,
        dict(data.tenant_limits),
        tuple(problems),
        data.versions,
    )


def _compile_trunk(trunk: TrunkRecord, destination: Address | None) -> TrunkRoute:
    secret = trunk.password
    user = trunk.auth_username or trunk.username
    options = _options(trunk.options)
    identity = str(options.get("identity", "pai")).lower()
    country = str(options.get("e164", ""))
    return TrunkRoute(
        name=trunk.name,
        tenant_id=trunk.tenant_id,
        host=trunk.host,
        destination=destination,
        from_domain=trunk.from_domain or trunk.host,
        caller_id=trunk.caller_id,
        auth=LegAuth(user, secret) if user and secret else None,
        max_calls_out=trunk.max_calls_out,
        max_calls_in=trunk.max_calls_in,
        user_phone=options.get("user_phone") is True,
        identity=identity if identity in ("pai", "rpid", "none") else "pai",
        codecs=tuple(c.strip() for c in trunk.codecs.split(",") if c.strip()),
        account=trunk.username if trunk.register else "",
        e164=country if country.isdigit() else "",
        tel_uri=options.get("uri") == "tel",
    )


def _options(text: str) -> dict[str, object]:
    """A trunk's JSON options (flags for later features); {} when unreadable."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class DialPlanRouter:
    """Routes calls through the dial plan (the :class:`~minipbx.pbx.call.Router` seam)."""

    def __init__(
        self,
        local: LocalRouter,
        wall_clock: Callable[[], float],
        counts: CallCounts | None = None,
        config: RoutingConfig | None = None,
        free_seconds: int = FREE_ACCOUNT_SECONDS,
    ) -> None:
        self.local = local
        self.config = config or RoutingConfig()
        self.counts = counts or CallCounts()
        self._wall = wall_clock
        self.free_seconds = free_seconds
        self.billing: PrepaidGate | None = None  # rates, prepaid limits (billing_runtime)
        # True while a simultaneous follow-me's steps are routed: they ring beside others.
        self._beside_others = False

    # The MESSAGE relay routes to local users through the same seam.
    def targets(self, tenant_id: int, domain: str, number: str) -> Route:
        """A local user's contacts (MESSAGE and local calls)."""
        return self.local.targets(tenant_id, domain, number)

    def route(self, call: Call) -> Route:
        """The route of a new call (see the module docstring)."""
        cfg = self.config
        number = called_number(call)
        quota = cfg.tenant_limits.get(call.tenant_id)
        most = quota.max_concurrent_calls if quota is not None else None
        if most is not None and self.counts.tenant(call.tenant_id) >= most:
            log.warning("event=call_limit tenant=%d limit=%d", call.tenant_id, most)
            return Route(status=503, reason="Tenant Call Limit", callee=number)
        if call.inbound_trunk is not None:
            return self._inbound(call, cfg, number)
        policy = cfg.policies.get((call.tenant_id, call.caller))
        most = policy.max_concurrent_calls if policy is not None else None
        if most is not None and self.counts.caller(call.tenant_id, call.caller) >= most:
            log.warning("event=call_limit caller=%s limit=%d", call.caller, most)
            return Route(status=403, reason="Too Many Calls", callee=number)
        service = feature_service(number)
        if service is not None:  # *97, *90*N#...: answered by the PBX itself
            return Route(callee=number, kind="service", service=service)
        plan = cfg.plan_for(call.tenant_id, policy)
        limit = self._user_limit(policy, quota)
        if plan is None:
            return self._local(call, number, limit)
        level = policy.call_level if policy is not None else 1
        decision = plan.decide(number, caller=call.caller, level=level, wall=self._wall())
        return self._bill(call, self._follow(call, decision, limit, outbound_allowed=True))

    def _bill(self, call: Call, route: Route) -> Route:
        """A user's call out through a trunk, as billing allows it: rated, cut when the
        prepaid money runs out (the caller warned ``warning_lead`` seconds before:
        ``Route.warn_at``), or refused with a prompt (unrated destination, no money).
        A route a forward made was billed to the forwarding user already."""
        if route.billed_to is not None or route.kind != "trunk" or not route.targets:
            return route
        verdict = self._authorize(call, call.caller, route)
        if not isinstance(verdict, Refusal):
            return verdict
        return Route(
            status=verdict.status,
            reason=verdict.sip_reason,
            callee=route.callee,
            kind="service",
            service=f"prepaid:{verdict.reason.value}",  # says why, then hangs up
        )

    def _bill_forward(self, call: Call, payer: str, route: Route, *, alone: bool) -> Route | None:
        """A trunk route a forward or follow-me step of ``payer`` made: billed to ``payer``
        (whose forward it is), not to the caller, who called an extension. None when
        billing refuses it (no money, unrated destination): the forward is then not
        taken. ``alone``: the route rings by itself; a simultaneous follow-me step rings
        beside others, and one call holds one authorization, so a billed user's external
        steps are left out there."""
        gate = self.billing
        if gate is not None and not alone and gate.bills(call.tenant_id, payer):
            log.warning(
                "event=followme_step_skipped owner=%s to=%s reason=billed_user_simultaneous",
                payer,
                route.callee,
            )
            return None
        verdict = self._authorize(call, payer, route) if alone else route
        if isinstance(verdict, Refusal):
            return None
        return replace(verdict, billed_to=payer)

    def _authorize(self, call: Call, payer: str, route: Route) -> Route | Refusal:
        """Ask billing whether ``payer`` may pay for the trunk ``route``: the route with its
        limits (the money's longest call, the warning time), or the refusal (logged)."""
        gate = self.billing
        if gate is None:
            return route
        gate.release_earlier(call.id)  # a follow-me step's reservation, now superseded
        verdict = gate.authorize(call.id, call.tenant_id, payer, route.callee, wall=self._wall())
        if isinstance(verdict, Refusal):
            log.info(
                "event=call_refused_by_billing caller=%s payer=%s to=%s reason=%s",
                call.caller,
                payer,
                route.callee,
                verdict.reason.value,
            )
            return verdict
        if verdict.max_seconds is None:
            return route
        return _warned(_limited(route, float(verdict.max_seconds)), verdict.warn_at)

    def _inbound(self, call: Call, cfg: RoutingConfig, number: str) -> Route:
        trunk = cfg.trunks.get((call.tenant_id, call.inbound_trunk or ""))
        most = trunk.max_calls_in if trunk is not None else None
        if trunk is not None and most is not None and self._busy(call, trunk.name, most):
            return Route(status=503, reason="Trunk Busy", callee=number)
        if trunk is not None and trunk.account and number == trunk.account:
            # Sent to our registered contact (sip:<account>@pbx): the DID is in To.
            number = number_of(call.invite.to.uri) or number
        plan = cfg.plan_for(call.tenant_id, None)
        if plan is None:  # DID = extension
            return self._local(call, number, None)
        decision = plan.decide(number, caller=call.caller, level=1, wall=self._wall())
        limit = self._user_limit(None, cfg.tenant_limits.get(call.tenant_id))
        return self._follow(call, decision, limit, outbound_allowed=False)

    def _busy(self, call: Call, trunk: str, most: int) -> bool:
        """True (logged) when ``trunk`` already carries ``most`` calls."""
        if self.counts.trunk(call.tenant_id, trunk) < most:
            return False
        log.warning("event=call_limit trunk=%s limit=%d", trunk, most)
        return True

    def _user_limit(self, policy: CallPolicy | None, quota: TenantLimits | None) -> float | None:
        return call_limit(policy, quota, self.free_seconds)

    # -- forwarding (RFC 3261 21.1.3 181; miniSipServer's forward settings) -------------------

    def forward(self, call: Call, why: str, to: str | None = None) -> Route | None:
        """Where a call goes when the user rung is busy or does not answer, or its phone
        redirected it (3xx to ``to``): the user's forward setting, routed through that
        user's dial plan (so external forwards need a plan that allows them). A forward
        out through a trunk is billed to the forwarding user; a new route that is not
        frees what an earlier trunk route of the call held (its legs are replaced)."""
        route = self._forward(call, why, to)
        if route is not None and route.billed_to is None and self.billing is not None:
            self.billing.release_earlier(call.id)
        return route

    def _forward(self, call: Call, why: str, to: str | None) -> Route | None:
        if why == "redirect" and call.route_kind == "trunk":
            # A provider's 3xx is not followed: no user's plan allowed the number it names
            # and no one would pay for it (toll fraud); the caller gets the failure.
            log.warning("event=redirect_refused call=%s to=%s from=trunk", call.id, to)
            return None
        if call.followme_owner is not None and why != "redirect":
            return self._next_followme(call)
        if why == "failed":
            return None
        extension = call.forwarded_to[-1] if call.forwarded_to else call.callee
        policy = self.config.policies.get((call.tenant_id, extension))
        if why == "redirect":
            number = to
        elif policy is None:
            return None
        else:
            number = policy.forward_busy if why == "busy" else policy.forward_no_answer
        if not number:
            if why != "redirect" and policy is not None and policy.voicemail:
                return _voicemail(extension, 486 if why == "busy" else 480, busy=why == "busy")
            return None
        route = self._forward_to(call, extension, policy, number)
        if route is not None and route.targets:
            return route
        if why != "redirect" and policy is not None and policy.voicemail:
            # The forward cannot be taken (a loop, or billing refused it): the mailbox.
            return _voicemail(extension, 486 if why == "busy" else 480, busy=why == "busy")
        return None

    def transfer(self, call: Call, kind: str, target: str) -> Route:
        """Where a service sends a call it answered (see :class:`~minipbx.pbx.call.Router`).

        ``user`` and ``followme``: a local user of the tenant, after its forwarding (input a
        caller typed, e.g. dial-by-extension, never leaves the PBX). ``number``: a number
        the administrator configured (an attendant option), routed through the tenant's
        dial plan, trunks included.
        """
        limit = call.max_seconds
        if kind in ("user", "followme"):
            if not target.isdigit():
                return Route(status=404, callee=target)
            return self._local(call, target, limit)
        if kind != "number":
            return Route(status=501, reason="Service Not Available", callee=target)
        card_call = self.billing.card_call(call.id) if self.billing is not None else None
        if card_call is not None:  # a calling card's call: its plan, cut when money runs out
            return self._card_route(call, card_call, target)
        plan = self.config.plan_for(call.tenant_id, None)
        if plan is None:
            return self._local(call, target, limit)
        decision = plan.decide(target, caller=call.caller, level=1, wall=self._wall())
        route = self._follow(call, decision, limit, outbound_allowed=True)
        if route.service is not None:  # from one service into another: not supported yet
            return Route(status=501, reason="Service Not Available", callee=target)
        return route

    def routed_number(self, tenant_id: int, plan_id: int | None, number: str) -> str:
        """``number`` as the plan ``plan_id`` (else the tenant's) would send it (its rule's
        strip/prepend): what a calling card's call is rated by, before it is placed."""
        plan = self._card_plan(tenant_id, plan_id)
        if plan is None:
            return number
        decision = plan.decide(number, caller="", level=1, wall=self._wall())
        return decision.number if decision.rule is not None else number

    def _card_plan(self, tenant_id: int, plan_id: int | None) -> DialPlan | None:
        """A calling card's own dial plan, else its tenant's."""
        config = self.config
        plan = config.plans.get(plan_id) if plan_id is not None else None
        return plan or config.plan_for(tenant_id, None)

    def _card_route(self, call: Call, card_call: CardCall, number: str) -> Route:
        plan = self._card_plan(call.tenant_id, card_call.dial_plan_id)
        if plan is None:
            return Route(status=404, callee=number)
        decision = plan.decide(number, caller=call.caller, level=1, wall=self._wall())
        limit = float(card_call.max_seconds) if card_call.max_seconds is not None else None
        route = self._follow(call, decision, limit, outbound_allowed=True)
        if route.service is not None:
            return Route(status=404, callee=number)
        return _warned(_limited(route, limit), card_call.warn_at)

    # -- follow-me (pbx/followme.py) ---------------------------------------------------------

    def _start_followme(
        self, call: Call, extension: str, policy: CallPolicy, own: Route
    ) -> Route | None:
        """The first ring of ``extension``'s follow-me; None when nothing can ring (its
        unreachable forward or voicemail then apply)."""
        own_ring = policy.no_answer_seconds
        if policy.followme_mode == "simultaneous":
            targets = list(own.targets)
            self._beside_others = True  # forwards of the steps, nested ones too
            try:
                for step in policy.followme:
                    route = self._forward_to(call, extension, policy, step.number)
                    targets += route.targets if route is not None else ()
            finally:
                self._beside_others = False
            if not targets:
                return None
            longest = max([own_ring if own.targets else 0, *(s.seconds for s in policy.followme)])
            call.followme_owner = extension  # no steps left: its end is the voicemail
            return Route(
                targets=tuple(targets), callee=extension, kind="followme", no_answer=longest
            )
        steps = [(step.number, step.seconds, False) for step in policy.followme]
        mine = (extension, own_ring, True)
        call.followme_left = [mine, *steps] if policy.followme_own_first else [*steps, mine]
        call.followme_owner = extension
        return self._next_followme(call)

    def _next_followme(self, call: Call) -> Route | None:
        """The next follow-me step that can ring; at the end the owner's voicemail."""
        owner = call.followme_owner or ""
        policy = self.config.policies.get((call.tenant_id, owner))
        while call.followme_left:
            number, seconds, own = call.followme_left.pop(0)
            if own:
                route: Route | None = self.local.targets(call.tenant_id, call.domain, number)
            else:
                route = self._forward_to(call, owner, policy, number)
            if route is not None and route.targets:
                return replace(route, no_answer=float(seconds))
        call.followme_owner = None
        if policy is not None and policy.voicemail:
            return _voicemail(owner, 480)
        return None

    def _forward_to(
        self, call: Call, extension: str, policy: CallPolicy | None, number: str
    ) -> Route | None:
        """Route ``number`` for the forwarding user ``extension``, who pays when it leaves
        through a trunk; None on a loop or when billing refuses (``_bill_forward``)."""
        seen = call.forwarded_to
        if (
            len(seen) >= MAX_FORWARDS
            or number in (extension, *seen)
            or (call.inbound_trunk is None and number == call.caller)
        ):
            log.warning("event=forward_loop call=%s from=%s to=%s", call.id, extension, number)
            return None
        seen.append(number)
        limit = call.max_seconds
        plan = self.config.plan_for(call.tenant_id, policy)
        if plan is None:
            return self._local(call, number, limit)
        level = policy.call_level if policy is not None else 1
        decision = plan.decide(number, caller=extension, level=level, wall=self._wall())
        route = self._follow(call, decision, limit, outbound_allowed=True)
        if route.kind != "trunk" or not route.targets or route.billed_to is not None:
            return route  # local (a further forward of it billed itself), or failed
        return self._bill_forward(call, extension, route, alone=not self._beside_others)

    def _local(self, call: Call, extension: str, limit: float | None) -> Route:
        """A local user's phones, after its unconditional and unreachable forwarding; with
        the no-answer time when it forwards on no answer."""
        policy = self.config.policies.get((call.tenant_id, extension))
        if policy is not None and policy.forward_unconditional:
            moved = self._forward_to(call, extension, policy, policy.forward_unconditional)
            if moved is not None and moved.targets:
                return replace(moved, forwarded=True)
        route = self.local.targets(call.tenant_id, call.domain, extension)
        if policy is not None and policy.followme_mode != "off" and policy.followme:
            first = self._start_followme(call, extension, policy, route)
            if first is not None:
                return _limited(first, limit)
        if route.status == 480 and policy is not None and policy.forward_unreachable:
            moved = self._forward_to(call, extension, policy, policy.forward_unreachable)
            if moved is not None and moved.targets:
                return replace(moved, forwarded=True)
        if route.status == 480 and policy is not None and policy.voicemail:
            return _limited(_voicemail(extension, 480), limit)
        if route.targets and policy is not None and (policy.forward_no_answer or policy.voicemail):
            route = replace(route, no_answer=float(policy.no_answer_seconds))
        return _limited(route, limit)

    def _follow(
        self, call: Call, decision: Decision, limit: float | None, *, outbound_allowed: bool
    ) -> Route:
        rule = decision.rule
        number = decision.number
        if rule is None:
            return Route(status=decision.status or 404, callee=number)
        if rule.max_seconds is not None:
            limit = min(limit, float(rule.max_seconds)) if limit else float(rule.max_seconds)
        action = rule.action
        if action is Action.REJECT:
            return Route(status=decision.status, callee=number)
        if action in (Action.LOCAL, Action.FOLLOWME):
            extension = rule.target if action is Action.FOLLOWME else (rule.target or number)
            return self._local(call, extension, limit)
        if action is Action.TRUNK:
            if not outbound_allowed:
                log.warning(
                    "event=toll_fraud_blocked from_trunk=%s to=%s", call.inbound_trunk, number
                )
                return Route(status=403, callee=number)
            return self._trunk_route(
                call, rule.target, rule.failover, number, rule.caller_id, limit
            )
        if rule.target.startswith(SERVICES):
            if call.inbound_trunk is not None and rule.target.startswith(OWN_BOX):
                # The caller's own box opens by its number: a trunk's caller ID proves nothing.
                log.warning("event=service_refused from_trunk=%s to=%s", call.inbound_trunk, number)
                return Route(status=403, callee=number, kind="service")
            return Route(callee=number, kind="service", service=rule.target, max_seconds=limit)
        return Route(status=501, reason="Service Not Available", callee=number, kind="service")

    def _trunk_route(
        self,
        call: Call,
        name: str,
        failover: str | None,
        number: str,
        caller_id: str | None,
        limit: float | None,
    ) -> Route:
        targets = []
        refused = False
        for trunk_name in (name, failover):
            if trunk_name is None:
                continue
            trunk = self.config.trunks.get((call.tenant_id, trunk_name))
            if trunk is None or trunk.destination is None:
                log.warning("event=trunk_unavailable trunk=%s", trunk_name)
                continue
            most = trunk.max_calls_out
            if most is not None and self._busy(call, trunk.name, most):
                continue
            shown = caller_id or trunk.caller_id or call.caller  # rule, trunk, extension
            private = "id" in (call.invite.headers.get("Privacy") or "").lower()
            offer = _offer_for(call, trunk.codecs)
            if offer is None:
                log.info("event=no_common_codec trunk=%s codecs=%s", trunk.name, trunk.codecs)
                refused = True
                continue
            target = _trunk_target(trunk, number, shown, private)
            targets.append((trunk, replace(target, body=offer) if offer else target))
        if not targets:
            if refused:  # RFC 3261 21.4.26: nothing in the offer the trunk may carry
                return Route(status=488, callee=number, kind="trunk")
            return Route(status=503, reason="No Trunk Available", callee=number, kind="trunk")
        (first, target), *rest = targets
        return Route(
            targets=(target,),
            failover=tuple(t for _, t in rest),
            callee=number,
            kind="trunk",
            trunk=first.name,
            max_seconds=limit,
        )


def _offer_for(call: Call, codecs: tuple[str, ...]) -> bytes | None:
    """The caller's SDP offer cut down to the trunk's codecs: b"" to send it unchanged
    (no restriction, no or unreadable SDP: the far end decides), None when nothing is left."""
    body = call.invite.body
    if not codecs or not body:
        return b""
    try:
        offer = SessionDescription.parse(body)
    except ParseError:
        return b""
    restricted = restrict_codecs(offer, codecs)
    if restricted is None:
        return None
    return b"" if restricted == offer else bytes(restricted)


# Dial plan service targets the PBX runs itself (``ivr:<menu name>``).
OWN_BOX = ("vm-main:", "balance:")  # services that trust the caller's number
SERVICES = ("ivr:", "voicemail:", "vm-main:", "vm-any:", "card:", "balance:", "prepaid:")

ANONYMOUS = NameAddr(SipUri("anonymous.invalid", "anonymous"), "Anonymous")


def _trunk_target(trunk: TrunkRoute, number: str, shown: str, private: bool) -> Target:
    """The INVITE's target at a trunk: Request-URI, From (caller ID) and identity headers.

    ``private`` (the caller sent ``Privacy: id``): From is anonymous (RFC 3323 4.1.1.3);
    the asserted identity still goes to the provider, with ``Privacy: id`` asking it to
    withhold it (RFC 3325 9.3); Remote-Party-ID says the same with ``privacy=full``.
    """
    assert trunk.destination is not None
    if trunk.e164:
        number, shown = to_e164(number, trunk.e164), to_e164(shown, trunk.e164)
    params: dict[str, str | None] = {"user": "phone"} if trunk.user_phone else {}
    port = trunk.destination.port if trunk.destination.port != 5060 else None
    identity = NameAddr(SipUri(trunk.from_domain, shown))
    uri: Uri = SipUri(trunk.host, number, None, port, "sip", params)
    if trunk.tel_uri:
        uri = TelUri(number)
    headers: list[tuple[str, str]] = []
    if trunk.identity == "pai":
        headers.append(("P-Asserted-Identity", str(identity)))
        if private:
            headers.append(("Privacy", "id"))
    elif trunk.identity == "rpid":
        privacy = "full" if private else "off"
        headers.append(("Remote-Party-ID", f"{identity};party=calling;privacy={privacy}"))
    return Target(
        uri=uri,
        destination=trunk.destination,
        from_=ANONYMOUS if private else identity,
        auth=trunk.auth,
        headers=tuple(headers),
    )


def _voicemail(extension: str, status: int, *, busy: bool = False) -> Route:
    """The user's voice mailbox (its busy greeting with ``busy``); ``status`` answers the
    caller when no voicemail service can take the call (the user's busy or unreachable)."""
    service = f"voicemail:{extension}" + (":busy" if busy else "")
    return Route(status=status, callee=extension, kind="service", service=service)


def _limited(route: Route, limit: float | None) -> Route:
    if limit is None or not (route.targets or route.service):
        return route
    seconds = min(route.max_seconds, limit) if route.max_seconds else limit
    return replace(route, max_seconds=seconds)


def _warned(route: Route, warn: int | None) -> Route:
    """``route`` with the caller warned ``warn`` seconds after the answer that the money
    runs out; no warning when none is due, nor when the call is cut earlier for another
    reason (a user's or rule's shorter limit)."""
    if warn is None or route.max_seconds is None or warn >= route.max_seconds:
        return route
    return replace(route, warn_at=float(warn))


def call_limit(
    policy: CallPolicy | None, quota: TenantLimits | None, free_seconds: int
) -> float | None:
    """The shortest of the user's, the tenant's and the free tier's call lengths."""
    limits = [
        float(s)
        for s in (
            policy.max_call_seconds if policy else None,
            quota.max_call_seconds if quota else None,
        )
        if s
    ]
    if (policy is not None and policy.free_account) or (quota is not None and quota.free_account):
        limits.append(float(free_seconds))
    return min(limits) if limits else None


def explain(
    config: RoutingConfig, tenant_id: int, caller: str, number: str, wall: float
) -> list[str]:
    """What the router would do with a call, as lines for ``minipbx route test``.

    Dry run: no call is placed; registrations and concurrent-call limits are not looked at.
    """
    policy = config.policies.get((tenant_id, caller))
    plan = config.plan_for(tenant_id, policy)
    level = policy.call_level if policy is not None else 1
    lines = [f"caller {caller} (call level {level}), dialled {number}"]
    if plan is None:
        return [*lines, "no dial plan: the call rings extension " + number + " of the tenant"]
    lines.append(f"dial plan {plan.name!r}")
    decision = plan.decide(number, caller=caller, level=level, wall=wall)
    lines += ["  " + note for note in decision.explanation]
    rule = decision.rule
    if rule is None:
        return [*lines, f"result: rejected with {decision.status}"]
    result = f"result: {rule.action.value}"
    if rule.action is Action.REJECT:
        result += f" with {decision.status}"
    elif rule.action is Action.TRUNK:
        trunk = config.trunks.get((tenant_id, rule.target))
        shown = rule.caller_id or (trunk.caller_id if trunk else None) or caller
        state = "" if trunk and trunk.destination else " (trunk unknown or unresolved!)"
        result += f" via trunk {rule.target}{state}, number {decision.number}, caller ID {shown}"
        if rule.failover:
            result += f", failover trunk {rule.failover}"
    else:
        result += f" {rule.target or decision.number}"
    limit = call_limit(policy, config.tenant_limits.get(tenant_id), FREE_ACCOUNT_SECONDS)
    if rule.max_seconds is not None:
        limit = min(limit, float(rule.max_seconds)) if limit else float(rule.max_seconds)
    if limit:
        result += f", cut after {limit:g} s"
    return [*lines, result]
