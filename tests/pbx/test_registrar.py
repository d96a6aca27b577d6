"""Registrar: RFC 3261 10.3 with real REGISTER messages, a fake clock and an in-memory location."""

from __future__ import annotations

from typing import Any

import pytest

from minipbx.pbx.location import Binding, target_of
from minipbx.pbx.registrar import RegistrarConfig
from minipbx.sip import Request, Response
from minipbx.transport.address import Address
from tests.pbx.sipmsg import (
    PHONE,
    PHONE_SRC,
    Stack,
    authorization,
    make_stack,
    received,
    register_bytes,
)

NOW = 1_700_000_000.0
AOR = (1, "100")
CONTACT = f"<sip:100@{PHONE}:5060>"


def apply(stack: Stack, now: float = NOW, source: Address = PHONE_SRC, **kw: Any) -> Response:
    """An already authenticated REGISTER of alice (100)."""
    request = received(register_bytes(**kw), source)
    return stack.registrar.apply(request, stack.alice, source, now)


def contacts(response: Response) -> list[str]:
    return response.headers.values("Contact")


def bindings(stack: Stack, now: float = NOW) -> list[Binding]:
    return stack.registrar.lookup(AOR, now)


# --- the whole exchange --------------------------------------------------------------------


def test_register_with_digest_then_200() -> None:
    stack = make_stack()
    first = stack.registrar.handle(received(register_bytes()), PHONE_SRC, NOW)
    assert first.status == 401
    assert stack.location.count() == 0
    line = authorization(first, received(register_bytes()))
    ok = stack.registrar.handle(received(register_bytes(cseq=2, extra=[line])), PHONE_SRC, NOW)
    assert ok.status == 200
    assert ok.to.tag
    assert contacts(ok) == [f"{CONTACT};expires=3600"]
    [b] = bindings(stack)
    assert b.contact == f"sip:100@{PHONE}:5060" and b.cseq == 2 and not b.nat
    assert b.expires_at == NOW + 3600 and b.registered_at == NOW
    assert b.user_agent == "TestPhone/1.0" and b.call_id == "reg-1@192.0.2.10"
    assert stack.changes == [(AOR, (b,))]


def test_wrong_password_registers_nothing() -> None:
    stack = make_stack()
    first = stack.registrar.handle(received(register_bytes()), PHONE_SRC, NOW)
    line = authorization(first, received(register_bytes()), password="nope")
    response = stack.registrar.handle(
        received(register_bytes(cseq=2, extra=[line])), PHONE_SRC, NOW
    )
    assert response.status == 403
    assert stack.location.count() == 0 and stack.changes == []


def test_handle_refuses_other_methods() -> None:
    stack = make_stack()
    request = received(register_bytes())
    request.method = "OPTIONS"
    with pytest.raises(ValueError):
        stack.registrar.handle(request, PHONE_SRC, NOW)


# --- refresh, unregister, fetch ------------------------------------------------------------


def test_refresh_updates_the_binding() -> None:
    stack = make_stack()
    apply(stack, cseq=1)
    response = apply(stack, now=NOW + 1800, cseq=2, expires=600)
    assert contacts(response) == [f"{CONTACT};expires=600"]
    [b] = bindings(stack, NOW + 1800)
    assert b.expires_at == NOW + 1800 + 600 and b.cseq == 2
    assert len(stack.changes) == 2


def test_unregister_one_contact_with_expires_zero() -> None:
    stack = make_stack()
    apply(stack, contacts=[CONTACT, "<sip:100@192.0.2.10:5070>"])
    response = apply(stack, cseq=2, contacts=[f"{CONTACT};expires=0"])
    assert contacts(response) == ["<sip:100@192.0.2.10:5070>;expires=3600"]
    assert [b.contact for b in bindings(stack)] == ["sip:100@192.0.2.10:5070"]


def test_unregister_with_expires_header_zero() -> None:
    stack = make_stack()
    apply(stack)
    response = apply(stack, cseq=2, expires=0)
    assert response.status == 200 and contacts(response) == []
    assert stack.location.count() == 0
    assert stack.changes[-1] == (AOR, ())


def test_star_removes_every_binding() -> None:
    stack = make_stack()
    apply(stack, contacts=[CONTACT, "<sip:100@192.0.2.10:5070>"])
    response = apply(stack, cseq=2, contacts=["*"], expires=0)
    assert response.status == 200 and contacts(response) == []
    assert stack.location.count() == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"contacts": ["*"]},  # no Expires
        {"contacts": ["*"], "expires": 60},
        {"contacts": ["*", CONTACT], "expires": 0},
    ],
)
def test_star_needs_expires_zero_and_no_other_contact(kw: dict[str, Any]) -> None:
    stack = make_stack()
    apply(stack)
    response = apply(stack, cseq=2, **kw)
    assert response.status == 400
    assert stack.location.count() == 1


def test_star_with_an_old_cseq_fails_and_keeps_everything() -> None:
    stack = make_stack()
    apply(stack, cseq=5)
    assert apply(stack, cseq=5, contacts=["*"], expires=0).status == 400
    assert apply(stack, cseq=4, contacts=["*"], expires=0).status == 400
    assert stack.location.count() == 1
    # RFC 3261 10.3 step 6: a binding of another Call-ID is removed whatever the CSeq.
    response = apply(stack, cseq=1, call_id="other@192.0.2.10", contacts=["*"], expires=0)
    assert response.status == 200 and stack.location.count() == 0


def test_fetch_lists_bindings_without_changing_them() -> None:
    stack = make_stack()
    apply(stack, contacts=[CONTACT])
    stack.changes.clear()
    response = apply(stack, now=NOW + 100, cseq=2, contacts=[])
    assert contacts(response) == [f"{CONTACT};expires=3500"]
    assert stack.changes == []
    assert bindings(stack)[0].cseq == 1


# --- intervals ------------------------------------------------------------------------------


def test_too_brief_is_423_with_min_expires() -> None:
    stack = make_stack()
    response = apply(stack, expires=30)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert stack.location.count() == 0
    assert apply(stack, cseq=2, contacts=[f"{CONTACT};expires=59"]).status == 423
    assert apply(stack, cseq=3, contacts=[f"{CONTACT};expires=60"]).status == 200


def test_intervals_are_capped_and_defaulted() -> None:
    stack = make_stack(
        config=RegistrarConfig(min_expires=120, max_expires=1800, default_expires=900)
    )
    assert contacts(apply(stack, expires=7200)) == [f"{CONTACT};expires=1800"]
    assert contacts(apply(stack, cseq=2)) == [f"{CONTACT};expires=900"]
    response = apply(stack, cseq=3, expires=1000, contacts=[f"{CONTACT};expires=300"])
    assert contacts(response) == [f"{CONTACT};expires=300"]  # the param wins over the header
    assert apply(stack, cseq=4, expires=100).status == 423


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RegistrarConfig(min_expires=600, default_expires=300)
    with pytest.raises(ValueError):
        RegistrarConfig(min_expires=7200, default_expires=7200, max_expires=7200)
    with pytest.raises(ValueError):
        RegistrarConfig(max_contacts=0)


# --- CSeq ordering (RFC 3261 10.3 step 7) -----------------------------------------------------


@pytest.mark.parametrize("cseq", [5, 4])
def test_same_call_id_needs_a_higher_cseq(cseq: int) -> None:
    stack = make_stack()
    apply(stack, cseq=5, expires=600)
    response = apply(stack, cseq=cseq, expires=1200)
    assert response.status == 400 and response.reason == "Invalid CSeq Number"
    [b] = bindings(stack)
    assert b.cseq == 5 and b.expires_at == NOW + 600
    assert len(stack.changes) == 1


def test_a_failed_contact_aborts_the_whole_update() -> None:
    stack = make_stack()
    apply(stack, cseq=5)
    response = apply(stack, cseq=3, contacts=["<sip:100@192.0.2.10:5070>", CONTACT])
    assert response.status == 400
    assert [b.contact for b in bindings(stack)] == [f"sip:100@{PHONE}:5060"]


def test_another_call_id_replaces_whatever_the_cseq() -> None:
    stack = make_stack()
    apply(stack, cseq=50)
    response = apply(stack, cseq=1, call_id="rebooted@192.0.2.10")
    assert response.status == 200
    [b] = bindings(stack)
    assert b.call_id == "rebooted@192.0.2.10" and b.cseq == 1


# --- several contacts, q, params, instance ----------------------------------------------------


def test_several_contacts_in_one_line_and_several_lines() -> None:
    stack = make_stack()
    response = apply(
        stack,
        contacts=[
            "<sip:100@192.0.2.10:5060>;q=0.5, <sip:100@192.0.2.10:5070>;q=1.0",
            "<sip:100@192.0.2.10:5080>",
        ],
    )
    assert response.status == 200 and len(contacts(response)) == 3
    ordered = [b.contact.rsplit(":", 1)[1] for b in bindings(stack)]
    assert ordered[-1] == "5060"  # lowest q last
    assert {b.q for b in bindings(stack)} == {0.5, 1.0, None}


def test_bindings_of_other_phones_are_kept() -> None:
    stack = make_stack()
    apply(stack)
    other = Address("udp", "192.0.2.11", 5060)
    response = apply(
        stack,
        source=other,
        call_id="desk@192.0.2.11",
        contacts=["<sip:100@192.0.2.11:5060>"],
        via="SIP/2.0/UDP 192.0.2.11:5060;rport",
    )
    assert len(contacts(response)) == 2 and stack.location.count() == 2


def test_contact_params_are_kept_and_echoed() -> None:
    stack = make_stack()
    instance = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
    response = apply(
        stack, contacts=[f"<sip:100@{PHONE}:5060;ob>;+sip.instance={instance};reg-id=1;expires=600"]
    )
    [value] = contacts(response)
    assert value == f"<sip:100@{PHONE}:5060;ob>;+sip.instance={instance};reg-id=1;expires=600"
    [b] = bindings(stack)
    assert b.instance_id == "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>" and b.reg_id == 1


def test_same_instance_replaces_a_binding_whose_address_changed() -> None:
    stack = make_stack()
    instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1'
    apply(stack, contacts=[f"<sip:100@{PHONE}:5060>;{instance}"])
    moved = Address("udp", "192.0.2.12", 5060)
    response = apply(
        stack,
        source=moved,
        cseq=2,
        contacts=[f"<sip:100@192.0.2.12:5060>;{instance}"],
        via="SIP/2.0/UDP 192.0.2.12:5060;rport",
    )
    assert len(contacts(response)) == 1
    [b] = bindings(stack)
    assert b.contact == "sip:100@192.0.2.12:5060" and b.received == moved


@pytest.mark.parametrize(
    "contact",
    [
        f"{CONTACT};q=2",
        f"{CONTACT};q=0.12345",
        f"{CONTACT};reg-id=0",
        "<tel:+15550100>",
        "<mailto:alice@example.com>",
    ],
)
def test_bad_contacts_are_400(contact: str) -> None:
    stack = make_stack()
    assert apply(stack, contacts=[contact]).status == 400
    assert stack.location.count() == 0


def test_too_many_contacts_is_403() -> None:
    stack = make_stack(config=RegistrarConfig(max_contacts=2))
    apply(stack, contacts=[CONTACT, "<sip:100@192.0.2.10:5070>"])
    response = apply(stack, cseq=2, contacts=["<sip:100@192.0.2.10:5080>"])
    assert response.status == 403
    assert stack.location.count() == 2


# --- who may register what ------------------------------------------------------------------


def test_to_must_be_the_authenticated_user() -> None:
    stack = make_stack()
    request = received(register_bytes(user="101"))
    assert stack.registrar.apply(request, stack.alice, PHONE_SRC, NOW).status == 403


def test_to_must_be_a_user_of_the_tenant() -> None:
    stack = make_stack()
    request = received(register_bytes(user="999"))
    assert stack.registrar.apply(request, stack.alice, PHONE_SRC, NOW).status == 404


def test_unknown_required_extension_is_420() -> None:
    stack = make_stack()
    response = apply(stack, extra=["Require: path, foo"])
    assert response.status == 420
    assert response.headers.get("Unsupported") == "foo"


# --- Path (RFC 3327) --------------------------------------------------------------------------

EDGE = Address("udp", "192.0.2.5", 5060)
PATH = "<sip:edge@192.0.2.5;lr>"


def test_path_is_stored_and_echoed_when_supported() -> None:
    stack = make_stack()
    response = apply(
        stack,
        source=EDGE,
        via="SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-edge, SIP/2.0/UDP 192.0.2.10:5060;rport",
        extra=[f"Path: {PATH}", "Supported: path, outbound"],
    )
    assert response.status == 200
    assert response.headers.get_all("Path") == [PATH]
    [b] = bindings(stack)
    assert b.path == (PATH,) and not b.nat  # NAT is the edge proxy's business
    assert target_of(b) == EDGE


def test_path_is_stored_but_not_echoed_without_support() -> None:
    stack = make_stack()
    response = apply(stack, source=EDGE, extra=[f"Path: {PATH}"])
    assert response.status == 200 and "Path" not in response.headers
    assert bindings(stack)[0].path == (PATH,)


# --- NAT ---------------------------------------------------------------------------------------


def test_nated_registration() -> None:
    stack = make_stack()
    public = Address("udp", "192.0.2.200", 40123)
    apply(stack, source=public)  # Via and Contact say 192.0.2.10:5060
    [b] = bindings(stack)
    assert b.nat and b.received == public
    assert target_of(b) == public
    assert stack.registrar.nated_udp_bindings(NOW) == [b]
    assert stack.registrar.nated_udp_bindings(NOW + 4000) == []


def test_same_ip_other_port_is_used_as_given() -> None:
    stack = make_stack()
    apply(stack, contacts=["<sip:100@192.0.2.10:5070>"])
    [b] = bindings(stack)
    assert not b.nat and target_of(b) == Address("udp", PHONE, 5070)
    assert stack.registrar.nated_udp_bindings() == []


def test_nated_tcp_is_not_a_keepalive_target() -> None:
    stack = make_stack()
    conn = Address("tcp", "192.0.2.200", 40123, conn=9)
    apply(
        stack,
        source=conn,
        via="SIP/2.0/TCP 192.0.2.10:5060",
        contacts=["<sip:100@192.0.2.10:5060;transport=tcp>"],
    )
    [b] = bindings(stack)
    assert b.nat and target_of(b) == conn
    assert stack.registrar.nated_udp_bindings() == []


# --- expiry, restore ----------------------------------------------------------------------------


def test_expiry_reports_the_change() -> None:
    stack = make_stack()
    apply(stack, expires=60)
    assert stack.registrar.next_deadline() == NOW + 60
    assert stack.registrar.expire(NOW + 59) == []
    [gone] = stack.registrar.expire(NOW + 60)
    assert gone.aor == AOR
    assert stack.changes[-1] == (AOR, ())
    assert stack.location.count() == 0


def test_expired_bindings_are_not_listed_nor_matched() -> None:
    stack = make_stack()
    apply(stack, cseq=10, expires=60)
    # Not swept yet, but expired: a lower CSeq of the same Call-ID is a new registration.
    response = apply(stack, now=NOW + 61, cseq=1, expires=60)
    assert response.status == 200 and contacts(response) == [f"{CONTACT};expires=60"]


def test_restore_drops_expired_bindings() -> None:
    stack = make_stack()
    live = Binding(AOR, f"sip:100@{PHONE}", NOW + 10, PHONE_SRC, registered_at=NOW - 5)
    dead = Binding((1, "101"), "sip:101@192.0.2.11", NOW - 1, PHONE_SRC)
    assert stack.registrar.restore([live, dead], NOW) == 1
    assert stack.registrar.lookup(AOR, NOW) == [live]
    assert stack.changes == []


def test_handle_passes_local_address_through() -> None:
    stack = make_stack()
    local = Address("udp", "192.0.2.1", 5060)
    request: Request = received(register_bytes())
    stack.registrar.apply(request, stack.alice, PHONE_SRC, NOW, local=local)
    assert bindings(stack)[0].local == local
