"""Call forwarding through the dial plan router, in memory: unconditional, unreachable,
busy, no answer, a phone's 3xx, loops, and external forwards only where the plan allows."""

from __future__ import annotations

from minipbx.pbx.call import LegAuth
from minipbx.pbx.dialplan import DialPlan, make_rule
from minipbx.pbx.dialplan_router import DialPlanRouter, RoutingConfig, TrunkRoute
from minipbx.pbx.followme import parse_followme
from minipbx.pbx.routing import LocalRouter
from minipbx.sip import Request
from minipbx.sip.transaction import ServerTransaction
from tests.pbx.phones import Net, Phone
from tests.pbx.test_dialplan_router import _policy
from tests.pbx.test_services import FakeServices
from tests.pbx.test_trunk_calls import Provider


def _net(policies: dict[str, dict[str, object]], *rules: dict[str, object]) -> tuple[Net, Provider]:
    net = Net()
    provider = Provider(net, 5090)
    trunk = TrunkRoute(
        "prov",
        1,
        "voip.example.net",
        provider.address,
        "voip.example.net",
        None,
        LegAuth("pbx-account", "tr-pw"),
        None,
        None,
        False,
    )
    plans = {}
    if rules:
        plans = {
            7: DialPlan("p", tuple(make_rule(position=i, **r) for i, r in enumerate(rules, 1)), 7)
        }  # type: ignore[arg-type]
    config = RoutingConfig(
        plans=plans,
        tenant_plans={1: 7} if rules else {},
        trunks={(1, "prov"): trunk},
        policies={(1, ext): _policy(ext, **kw) for ext, kw in policies.items()},
    )
    b2bua = net.core.b2bua
    local = LocalRouter(net.users, net.registrar, lambda: net.clock.wall)
    b2bua.router = DialPlanRouter(local, lambda: net.clock.wall, b2bua.counts, config)
    return net, provider


def _phones(net: Net, *exts: str) -> dict[str, Phone]:
    phones = {ext: net.phone(ext, 5070 + int(ext) - 99) for ext in exts}
    for phone in phones.values():
        assert phone.register().status == 200
    return phones


def _invites(phone: Phone) -> int:
    return sum(1 for r in phone.requests if r.method == "INVITE")


def _statuses(phone: Phone) -> list[int]:
    return [r.status for r in phone.responses if r.cseq.method == "INVITE"]


def test_unconditional_forward_rings_the_target_with_181() -> None:
    net, _ = _net({"101": {"forward_unconditional": "102"}})
    p = _phones(net, "100", "101", "102")
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200 and 181 in _statuses(p["100"])
    assert _invites(p["101"]) == 0 and _invites(p["102"]) == 1
    (call,) = net.core.calls
    assert call.callee == "102" and call.forwarded_to == ["102"]


def test_unreachable_forward() -> None:
    net, _ = _net({"101": {"forward_unreachable": "102"}})
    p = _phones(net, "100", "102")
    net.phone("101", 5072)  # a user, not registered
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200 and _invites(p["102"]) == 1


def test_busy_forward() -> None:
    net, _ = _net({"101": {"forward_busy": "102"}})
    p = _phones(net, "100", "101", "102")
    p["101"].answer = Phone.busy
    p["100"].invite("101")
    statuses = _statuses(p["100"])
    assert statuses[-1] == 200 and 181 in statuses and 486 not in statuses
    assert _invites(p["102"]) == 1


def test_no_answer_forward_cancels_and_rings_the_next() -> None:
    net, _ = _net({"101": {"forward_no_answer": "102", "no_answer_seconds": 5}})
    p = _phones(net, "100", "101", "102")
    p["101"].answer = Phone.ring_only
    p["102"].answer = Phone.ring_only
    p["100"].invite("101")
    net.advance(4.5)
    assert _invites(p["102"]) == 0
    net.advance(1.0)
    assert any(r.method == "CANCEL" for r in p["101"].requests)
    assert _invites(p["102"]) == 1
    assert 181 in _statuses(p["100"])
    (call,) = net.core.calls  # still ringing 102, not failed with 487
    assert call.callee == "102"


def test_phone_redirect_is_followed() -> None:
    net, _ = _net({})
    p = _phones(net, "100", "101", "102")

    def redirect(phone: Phone, tx: ServerTransaction, request: Request) -> None:
        contact = [("Contact", "<sip:102@127.0.0.1:5999>")]
        response = request.response(302, to_tag=phone.to_tag, headers=contact)
        phone.layer.send_response(tx, response, phone.net.clock.now)

    p["101"].answer = redirect
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200 and _invites(p["102"]) == 1


def test_forward_loops_end() -> None:
    net, _ = _net(
        {"101": {"forward_unconditional": "102"}, "102": {"forward_unconditional": "101"}}
    )
    p = _phones(net, "100", "101", "102")
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200  # the loop is cut; one of them rings
    (call,) = net.core.calls
    assert len(call.forwarded_to) <= 5


def test_external_forward_only_where_the_plan_allows() -> None:
    local_only = {"pattern": "_1XX", "action": "local"}
    out = {"pattern": "0", "action": "trunk", "target": "prov"}
    net, provider = _net({"101": {"forward_unconditional": "0207"}}, local_only)
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    assert _invites(p["101"]) == 1 and provider.invites == []  # not allowed: rings 101
    net, provider = _net({"101": {"forward_unconditional": "0207"}}, local_only, out)
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    assert _invites(p["101"]) == 0 and provider.invites
    assert _statuses(p["100"])[-1] == 200
    (call,) = net.core.calls
    assert call.route_kind == "trunk" and call.trunk == "prov"


# --- voicemail: what the user misses goes to its mailbox (a PBX service) ---------------------


def _with_voicemail(
    policies: dict[str, dict[str, object]], services: object = None
) -> tuple[Net, dict[str, Phone], FakeServices]:
    net, _ = _net(policies)
    host = services if isinstance(services, FakeServices) else FakeServices()
    net.core.b2bua.services = host
    return net, _phones(net, "100", "101"), host


def test_busy_user_with_voicemail_gets_the_caller_into_the_mailbox() -> None:
    net, p, host = _with_voicemail({"101": {"voicemail": True}})
    p["101"].answer = Phone.busy
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 200 and host.started[0][0] == "voicemail:101:busy"
    (call,) = net.core.calls
    assert call.service == "voicemail:101:busy" and call.route_kind == "service"


def test_unanswered_call_goes_to_voicemail_after_the_ring_time() -> None:
    net, p, host = _with_voicemail({"101": {"voicemail": True, "no_answer_seconds": 5}})
    p["101"].answer = Phone.ring_only
    p["100"].invite("101")
    assert not host.started
    net.advance(6)
    assert host.started and host.started[0][0] == "voicemail:101"
    assert any(r.method == "CANCEL" for r in p["101"].requests)
    assert _statuses(p["100"])[-1] == 200


def test_unreachable_user_goes_to_voicemail() -> None:
    net, p, host = _with_voicemail({"102": {"voicemail": True}})
    net.phone("102", 5073)  # not registered
    p["100"].invite("102")
    assert _statuses(p["100"])[-1] == 200 and host.started[0][0] == "voicemail:102"


def test_without_a_voicemail_service_the_caller_hears_the_failure() -> None:
    net, p, _ = _with_voicemail({"101": {"voicemail": True}}, FakeServices(refuse=404))
    p["101"].answer = Phone.busy
    p["100"].invite("101")
    assert _statuses(p["100"])[-1] == 486
    net.phone("102", 5073)
    net.core.b2bua.router.config.policies[(1, "102")] = _policy("102", voicemail=True)
    p["100"].invite("102")
    assert _statuses(p["100"])[-1] == 480


def test_forward_setting_wins_over_voicemail() -> None:
    net, p, host = _with_voicemail({"101": {"voicemail": True, "forward_busy": "102"}})
    p.update(_phones(net, "102"))
    p["101"].answer = Phone.busy
    p["100"].invite("101")
    assert not host.started and _invites(p["102"]) == 1
    assert _statuses(p["100"])[-1] == 200


# --- follow-me ----------------------------------------------------------------------------------


def _followme(mode: str, steps: str, **extra: object) -> dict[str, object]:
    return {
        "followme_mode": mode,
        "followme": parse_followme(steps),
        "no_answer_seconds": 10,
        **extra,
    }


def test_sequential_followme_rings_own_phones_then_each_destination() -> None:
    net, p, host = _with_voicemail({"101": _followme("sequential", "102:15, 103:15")})
    p.update(_phones(net, "102", "103"))
    for ext in ("101", "102"):
        p[ext].answer = Phone.ring_only
    p["100"].invite("101")
    assert _invites(p["101"]) == 1 and _invites(p["102"]) == 0
    net.advance(11)  # own phones' no-answer time
    assert _invites(p["102"]) == 1 and _invites(p["103"]) == 0
    assert any(r.method == "CANCEL" for r in p["101"].requests)
    net.advance(16)
    assert _invites(p["103"]) == 1 and _statuses(p["100"])[-1] == 200  # 103 answers
    (call,) = net.core.calls
    assert call.callee == "103" and not host.started


def test_sequential_followme_busy_step_moves_on_at_once_and_ends_in_voicemail() -> None:
    net, p, host = _with_voicemail(
        {"101": _followme("sequential", "102:15", followme_own_first=False, voicemail=True)}
    )
    p.update(_phones(net, "102"))
    p["102"].answer = Phone.busy
    p["101"].answer = Phone.ring_only
    p["100"].invite("101")
    assert _invites(p["102"]) == 1 and _invites(p["101"]) == 1  # busy: the owner's phones next
    net.advance(11)
    assert host.started and host.started[0][0] == "voicemail:101"
    assert _statuses(p["100"])[-1] == 200


def test_simultaneous_followme_rings_everyone_first_answer_wins() -> None:
    net, p, _ = _with_voicemail({"101": _followme("simultaneous", "102:15, 103:25")})
    p.update(_phones(net, "102", "103"))
    p["101"].answer = Phone.ring_only
    p["103"].answer = Phone.ring_only
    p["100"].invite("101")
    assert all(_invites(p[e]) == 1 for e in ("101", "102", "103"))
    assert _statuses(p["100"])[-1] == 200
    assert any(r.method == "CANCEL" for r in p["103"].requests)


def test_simultaneous_followme_without_answer_goes_to_voicemail_after_the_longest_ring() -> None:
    net, p, host = _with_voicemail(
        {"101": _followme("simultaneous", "102:15, 103:25", voicemail=True)}
    )
    p.update(_phones(net, "102", "103"))
    for ext in ("101", "102", "103"):
        p[ext].answer = Phone.ring_only
    p["100"].invite("101")
    net.advance(20)
    assert not host.started
    net.advance(6)
    assert host.started and host.started[0][0] == "voicemail:101"


def test_followme_off_keeps_the_list_unused() -> None:
    net, p, _ = _with_voicemail({"101": _followme("off", "102:15")})
    p.update(_phones(net, "102"))
    p["100"].invite("101")
    assert _invites(p["102"]) == 0 and _statuses(p["100"])[-1] == 200


def test_followme_to_an_external_number_goes_through_the_plan() -> None:
    net, provider = _net(
        {"101": _followme("sequential", "0441234:15", followme_own_first=False)},
        {"pattern": "0", "action": "trunk", "target": "prov"},
        {"pattern": "1", "action": "local"},
    )
    p = _phones(net, "100", "101")
    p["100"].invite("101")
    assert provider.invites and _invites(p["101"]) == 0


def test_ring_timeout_before_the_no_answer_time_still_reaches_voicemail() -> None:
    net, p, host = _with_voicemail({"101": {"voicemail": True, "no_answer_seconds": 45}})
    p["101"].answer = Phone.ring_only
    p["100"].invite("101")
    net.advance(31)  # the harness's ring timeout is 30 s
    assert host.started and host.started[0][0] == "voicemail:101"
    assert _statuses(p["100"])[-1] == 200
