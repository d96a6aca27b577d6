"""The dial plan as router, in memory: local, trunk, reject, levels, limits, inbound DIDs."""

from __future__ import annotations

import dataclasses

from minipbx.pbx.call import InboundTrunk, LegAuth
from minipbx.pbx.dialplan import DialPlan, make_rule
from minipbx.pbx.dialplan_router import DialPlanRouter, RoutingConfig, TrunkRoute
from minipbx.pbx.routing import LocalRouter
from minipbx.store.routing_data import CallPolicy, TenantLimits
from tests.pbx.phones import Net, Phone, sdp
from tests.pbx.test_trunk_calls import Provider
from tests.sip.test_sdp import OFFER_MANY

PLAN = 7


def _policy(ext: str, **kw: object) -> CallPolicy:
    values: dict[str, object] = {
        "user_id": int(ext),
        "tenant_id": 1,
        "extension": ext,
        "dial_plan_id": None,
        "call_level": 1,
        "max_call_seconds": None,
        "free_account": False,
        "max_concurrent_calls": None,
    }
    values.update(kw)
    return CallPolicy(**values)  # type: ignore[arg-type]


def _setup(*rules: dict[str, object], **policy: object) -> tuple[Net, Phone, Phone, Provider]:
    net = Net()
    provider = Provider(net, 5090)
    trunk = TrunkRoute(
        name="prov",
        tenant_id=1,
        host="voip.example.net",
        destination=provider.address,
        from_domain="voip.example.net",
        caller_id=None,
        auth=LegAuth("pbx-account", "tr-pw"),
        max_calls_out=None,
        max_calls_in=None,
        user_phone=True,
    )
    plan = DialPlan(
        "office",
        tuple(make_rule(position=i, **r) for i, r in enumerate(rules, 1)),
        PLAN,  # type: ignore[arg-type]
    )
    config = RoutingConfig(
        plans={PLAN: plan},
        tenant_plans={1: PLAN},
        trunks={(1, "prov"): trunk},
        policies={(1, "100"): _policy("100", **policy)},
    )
    b2bua = net.core.b2bua
    local = LocalRouter(net.users, net.registrar, lambda: net.clock.wall)
    b2bua.router = DialPlanRouter(local, lambda: net.clock.wall, b2bua.counts, config)
    alice = net.phone("100", 5071)
    bob = net.phone("101", 5072)
    assert alice.register().status == 200 and bob.register().status == 200
    return net, alice, bob, provider


OUT = {"pattern": "0", "action": "trunk", "target": "prov", "strip": 1, "prepend": "+44"}
LOCAL = {"pattern": "_1XX", "action": "local"}


def test_local_and_trunk_rules() -> None:
    net, alice, _, provider = _setup(LOCAL, {**OUT, "caller_id": "+441234"})
    alice.invite("101")
    assert alice.responses[-1].status == 200
    alice.invite("02071234567")
    assert alice.responses[-1].status == 200
    sent = provider.invites[-1]
    assert str(sent.uri) == "sip:+442071234567@voip.example.net:5090;user=phone"
    assert sent.from_.uri.user == "+441234"
    calls = {c.callee: c for c in net.core.calls}
    assert calls["+442071234567"].route_kind == "trunk"
    assert calls["+442071234567"].trunk == "prov"


def test_unrouted_and_rejected_numbers() -> None:
    _, alice, _, provider = _setup(
        LOCAL, {"pattern": "0900", "action": "reject", "reject_status": 403}
    )
    alice.invite("0900123")
    assert alice.responses[-1].status == 403
    alice.invite("0207")  # no rule: no trunk either
    assert alice.responses[-1].status == 404
    assert provider.invites == []


def test_call_level_gates_rules() -> None:
    _, alice, _, provider = _setup(LOCAL, {**OUT, "level": 2})
    alice.invite("02071234567")
    assert alice.responses[-1].status == 404 and provider.invites == []


def test_duration_limits_user_rule_and_free_account() -> None:
    net, alice, _, _ = _setup(LOCAL, {**OUT, "max_seconds": 120}, free_account=True)
    alice.invite("101")
    alice.invite("02071234567")
    limits = sorted(c.max_seconds or 0 for c in net.core.calls)
    assert limits == [60, 60]  # the free account's 60 s beats the rule's 120 s


def test_concurrent_call_limit_per_user() -> None:
    net, alice, _, _ = _setup(LOCAL, max_concurrent_calls=1)
    alice.invite("101")
    assert alice.responses[-1].status == 200
    alice.invite("101")
    assert alice.responses[-1].status == 403
    assert len(list(net.core.calls)) == 1


def test_inbound_did_routes_locally_and_never_out_again() -> None:
    net, _, bob, provider = _setup({"pattern": "5551000", "action": "local", "target": "101"}, OUT)
    trunk = InboundTrunk("prov", 1, "default")
    caller = net.phone("+4420999", 5095)
    net.core._trunk_of = lambda source: trunk if source == caller.addr else None
    caller.invite("5551000", authenticate=False)
    assert caller.responses[-1].status == 200
    assert any(r.method == "INVITE" for r in bob.requests)
    caller.invite("02071234567", authenticate=False)  # tries to dial out through us
    assert caller.responses[-1].status == 403
    assert provider.invites == []
    caller.invite("5559999", authenticate=False)  # unknown DID
    assert caller.responses[-1].status == 404


def test_tenant_quotas_concurrent_calls_and_free_tier() -> None:
    net, alice, _, _ = _setup(LOCAL)
    router = net.core.b2bua.router
    assert isinstance(router, DialPlanRouter)
    limits = {1: TenantLimits(max_concurrent_calls=1, free_account=True)}
    router.config = dataclasses.replace(router.config, tenant_limits=limits)
    alice.invite("101")
    assert alice.responses[-1].status == 200
    (call,) = net.core.calls
    assert call.max_seconds == 60  # the tenant is on the free tier
    alice.invite("101")
    assert alice.responses[-1].status == 503  # the tenant's one call is up


def test_asserted_identity_and_privacy_toward_the_trunk() -> None:
    _, alice, _, provider = _setup(LOCAL, {**OUT, "caller_id": "+441234"})
    alice.invite("02071234567")
    sent = provider.invites[-1]
    assert sent.headers.get("P-Asserted-Identity") == "<sip:+441234@voip.example.net>"
    assert sent.headers.get("Privacy") is None
    private = alice._request(
        "INVITE",
        "02071234567",
        "02071234567",
        body=sdp(4071),
        content_type="application/sdp",
    )
    private.headers.set("Privacy", "id")
    alice.send(private)
    alice.send(alice._retry_with_auth(private, alice.responses[-1]))
    hidden = provider.invites[-1]
    assert hidden.from_.uri.user == "anonymous" and hidden.from_.display == "Anonymous"
    assert hidden.headers.get("P-Asserted-Identity") == "<sip:+441234@voip.example.net>"
    assert hidden.headers.get("Privacy") == "id"


def test_inbound_caller_is_the_asserted_identity() -> None:
    net, _, _, _ = _setup({"pattern": "5551000", "action": "local", "target": "101"})
    trunk = InboundTrunk("prov", 1, "default")
    caller = net.phone("gateway", 5095)
    net.core._trunk_of = lambda source: trunk if source == caller.addr else None
    invite = caller._request(
        "INVITE",
        "5551000",
        "5551000",
        body=sdp(4095),
        content_type="application/sdp",
    )
    identity = '"Bob" <sip:+4420777@carrier.example>, <tel:+4420777>'
    invite.headers.set("P-Asserted-Identity", identity)
    caller.send(invite)
    assert caller.responses[-1].status == 200
    (call,) = net.core.calls
    assert call.caller == "+4420777"


def test_trunk_codecs_restrict_the_offer() -> None:
    net, alice, _, provider = _setup(LOCAL, OUT)
    router = net.core.b2bua.router
    assert isinstance(router, DialPlanRouter)
    trunk = router.config.trunks[(1, "prov")]
    trunks = {(1, "prov"): dataclasses.replace(trunk, codecs=("PCMA",))}
    router.config = dataclasses.replace(router.config, trunks=trunks)
    offer = OFFER_MANY.encode()
    invite = alice._request("INVITE", "0207", "0207", body=offer, content_type="application/sdp")
    alice.send(invite)
    alice.send(alice._retry_with_auth(invite, alice.responses[-1]))
    sent = provider.invites[-1].body.decode()
    assert "m=audio 4000 RTP/AVP 8 101" in sent and "PCMU" not in sent
    only_g722 = {(1, "prov"): dataclasses.replace(trunk, codecs=("G722",))}
    router.config = dataclasses.replace(router.config, trunks=only_g722)
    count = len(provider.invites)
    alice.invite("0207")  # PCMU only: nothing the trunk may carry
    assert alice.responses[-1].status == 488 and len(provider.invites) == count


def test_trunk_e164_and_tel_uri_options() -> None:
    net, alice, _, provider = _setup(
        LOCAL,
        {
            "pattern": "9",
            "action": "trunk",
            "target": "prov",
            "strip": 1,
            "caller_id": "01632960001",
        },
    )
    router = net.core.b2bua.router
    assert isinstance(router, DialPlanRouter)
    trunk = dataclasses.replace(router.config.trunks[(1, "prov")], e164="44", tel_uri=True)
    router.config = dataclasses.replace(router.config, trunks={(1, "prov"): trunk})
    alice.invite("902071234567")
    sent = provider.invites[-1]
    assert str(sent.uri) == "tel:+442071234567"
    assert sent.from_.uri.user == "+441632960001"  # the caller ID too


def test_inbound_to_the_registered_account_takes_the_did_from_to() -> None:
    net, _, bob, _ = _setup({"pattern": "5551000", "action": "local", "target": "101"})
    router = net.core.b2bua.router
    assert isinstance(router, DialPlanRouter)
    trunk = dataclasses.replace(router.config.trunks[(1, "prov")], account="pbx-account")
    router.config = dataclasses.replace(router.config, trunks={(1, "prov"): trunk})
    caller = net.phone("+4420999", 5095)
    net.core._trunk_of = lambda source: (
        InboundTrunk("prov", 1, "default") if source == caller.addr else None
    )
    invite = caller._request(
        "INVITE", "pbx-account", "5551000", body=sdp(4095), content_type="application/sdp"
    )
    caller.send(invite)
    assert caller.responses[-1].status == 200
    assert any(r.method == "INVITE" for r in bob.requests)
