"""Location service: MemoryLocation, NAT detection, targets, memory per binding."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from minipbx.pbx.location import (
    Binding,
    MemoryLocation,
    contact_address,
    detect_nat,
    target_of,
)
from minipbx.sip import SipUri, Via
from minipbx.sip.headers import clear_parse_caches
from minipbx.sip.uri import parse_uri
from minipbx.transport.address import Address
from tests.pbx.sipmsg import PHONE, Stack, make_stack, received, register_bytes

SRC = Address("udp", PHONE, 5060)


def binding(
    ext: str = "100",
    contact: str = f"sip:100@{PHONE}:5060",
    expires_at: float = 100.0,
    received: Address = SRC,
    **kw: object,
) -> Binding:
    return Binding((1, ext), contact, expires_at, received, **kw)  # type: ignore[arg-type]


# --- MemoryLocation ------------------------------------------------------------------------


def test_replace_lookup_remove() -> None:
    loc = MemoryLocation()
    a, b = binding(expires_at=100.0), binding(contact="sip:100@192.0.2.11", expires_at=50.0)
    loc.replace((1, "100"), [a, b])
    assert loc.count() == len(loc) == 2
    assert loc.lookup((1, "100"), 0.0) == [a, b]
    assert loc.lookup((1, "100"), 60.0) == [a]  # expired ones are not returned
    assert loc.lookup((1, "101"), 0.0) == []
    loc.replace((1, "100"), [a])
    assert loc.count() == 1
    assert loc.remove((1, "100")) == [a]
    assert loc.count() == 0 and loc.remove((1, "100")) == []


def test_replace_with_nothing_removes_the_aor() -> None:
    loc = MemoryLocation()
    loc.replace((1, "100"), [binding()])
    loc.replace((1, "100"), [])
    assert loc.count() == 0 and list(loc.aors()) == []


def test_replace_refuses_a_binding_of_another_aor() -> None:
    with pytest.raises(ValueError):
        MemoryLocation().replace((1, "101"), [binding()])


def test_expire_returns_what_it_removed() -> None:
    loc = MemoryLocation()
    short, long = binding(expires_at=10.0), binding(contact="sip:100@192.0.2.11", expires_at=20.0)
    other = binding("101", "sip:101@192.0.2.12", expires_at=10.0)
    loc.replace((1, "100"), [short, long])
    loc.replace((1, "101"), [other])
    assert loc.next_expiry() == 10.0
    assert loc.expire(9.9) == []
    assert sorted(loc.expire(10.0), key=lambda b: b.contact) == [short, other]
    assert loc.count() == 1 and list(loc.bindings()) == [long]
    assert loc.expire(20.0) == [long]
    assert loc.count() == 0
    assert loc.expire(1000.0) == []


def test_refreshed_bindings_do_not_expire_early() -> None:
    loc = MemoryLocation()
    loc.replace((1, "100"), [binding(expires_at=10.0)])
    fresh = binding(expires_at=110.0)
    loc.replace((1, "100"), [fresh])
    assert loc.expire(50.0) == []
    assert loc.lookup((1, "100"), 50.0) == [fresh]


def test_a_lone_binding_is_kept_without_a_tuple() -> None:
    loc = MemoryLocation()
    a, b = binding(expires_at=100.0), binding(contact="sip:100@192.0.2.11", expires_at=50.0)
    loc.replace((1, "100"), [a])
    assert loc._aors[(1, "100")] is a  # most AORs: one phone, no tuple around it
    loc.replace((1, "100"), [a, b])
    assert loc._aors[(1, "100")] == (a, b)
    assert loc.expire(50.0) == [b]
    assert loc._aors[(1, "100")] is a and loc.count() == 1
    assert list(loc.bindings()) == [a] and loc.lookup((1, "100"), 0.0) == [a]
    assert loc.lookup((1, "100"), 100.0) == []  # expired, not yet removed
    assert loc.expire(100.0) == [a] and loc.count() == 0


def test_heap_stays_bounded_under_refreshes() -> None:
    loc = MemoryLocation()
    for i in range(20_000):
        loc.replace((1, "100"), [binding(expires_at=1000.0 + i)])
    assert loc.count() == 1
    assert len(loc._heap) <= 2 * 1 + 1025


# --- NAT detection (RFC 3581, RFC 3261 10.2) ------------------------------------------------


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def via(text: str) -> Via:
    return Via.parse(text)


def test_not_nated_when_everything_matches() -> None:
    assert not detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip(f"sip:100@{PHONE}:5060"), SRC)
    assert not detect_nat(via(f"SIP/2.0/UDP {PHONE}"), sip(f"sip:100@{PHONE}"), SRC)


def test_nated_when_the_via_host_differs() -> None:
    source = Address("udp", "192.0.2.200", 5060)
    assert detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip(f"sip:100@{PHONE}:5060"), source)


def test_nated_when_the_via_port_differs_over_udp() -> None:
    source = Address("udp", PHONE, 40123)
    assert detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip(f"sip:100@{PHONE}:5060"), source)


def test_nated_when_the_contact_host_differs() -> None:
    assert detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip("sip:100@192.0.2.99:5060"), SRC)
    assert detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip("sip:100@phone.invalid"), SRC)


def test_same_ip_other_port_is_not_nat() -> None:
    # RFC 3261 10.2: a registration made on behalf of another process on the same host.
    assert not detect_nat(via(f"SIP/2.0/UDP {PHONE}:5060"), sip(f"sip:100@{PHONE}:5070"), SRC)


def test_tcp_source_port_is_ephemeral_and_not_nat() -> None:
    source = Address("tcp", PHONE, 51234, conn=7)
    assert not detect_nat(
        via(f"SIP/2.0/TCP {PHONE}:5060"), sip(f"sip:100@{PHONE}:5060;transport=tcp"), source
    )


# --- targets ---------------------------------------------------------------------------------


def test_target_of_a_nated_binding_is_the_source() -> None:
    public = Address("udp", "192.0.2.200", 40123)
    b = binding(contact="sip:100@192.0.2.10:5060", received=public, nat=True)
    assert target_of(b) == public


def test_target_of_a_plain_binding_is_the_contact() -> None:
    b = binding(contact=f"sip:100@{PHONE}:5070")  # same IP, other port: used as given
    assert target_of(b) == Address("udp", PHONE, 5070)
    assert target_of(binding(contact=f"sip:100@{PHONE}")) == Address("udp", PHONE, 5060)
    tcp = binding(contact=f"sip:100@{PHONE}:5080;transport=tcp")
    assert target_of(tcp) == Address("tcp", PHONE, 5080)
    assert contact_address(binding(contact=f"sips:100@{PHONE}")) == Address("tls", PHONE, 5061)


def test_target_of_a_stream_binding_is_its_connection() -> None:
    conn = Address("tcp", PHONE, 51234, conn=3)
    b = binding(contact=f"sip:100@{PHONE}:5060;transport=tcp", received=conn)
    assert target_of(b) == conn


def test_target_of_a_binding_with_path_is_the_edge_proxy() -> None:
    edge = Address("udp", "192.0.2.5", 5060)
    b = binding(received=edge, path=("<sip:edge@192.0.2.5;lr>",))
    assert target_of(b) == edge


def test_contact_with_a_host_name_or_ws_falls_back_to_the_source() -> None:
    assert contact_address(binding(contact="sip:100@phone.invalid")) is None
    ws = binding(contact=f"sip:100@{PHONE};transport=ws")
    assert contact_address(ws) is None and target_of(ws) == SRC


# --- memory ------------------------------------------------------------------------------------


def _traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``build()`` returns (what it built and kept), and the result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def _fill(count: int) -> MemoryLocation:
    """``count`` NATed bindings as the registrar makes them: every string a fresh object."""
    loc = MemoryLocation()
    for i in range(count):
        ext = str(1000 + i)
        phone = f"192.0.2.{2 + i % 250}"
        b = Binding(
            aor=(1, ext),
            contact=f"sip:{ext}@{phone}:5060;transport=udp;ob",
            expires_at=1_700_000_000.0 + 3600 + i,
            received=Address("udp", f"192.0.2.{200 + i % 50}", 1024 + i),
            params=f';+sip.instance="<urn:uuid:00000000-0000-1000-8000-{i:012x}>";reg-id=1',
            nat=True,
            call_id=f"{i:08x}-5d1c-4a7e-9b2a-7f3c1e2d4b6a",
            cseq=20 + i,
            user_agent=f"TestPhone/1.0 build {i % 10}",
            instance_id=f"<urn:uuid:00000000-0000-1000-8000-{i:012x}>",
            reg_id=1,
            registered_at=1_700_000_000.0 + i,
            local=Address("udp", "192.0.2.1", 5060),
        )
        loc.replace(b.aor, [b])
    return loc


def test_memory_per_binding_is_under_2_kb() -> None:
    count = 10_000
    used, loc = _traced_bytes(lambda: _fill(count))
    assert isinstance(loc, MemoryLocation) and loc.count() == count
    assert used / count < 2048, f"{used / count:.0f} bytes per binding"


def _register_many(stack: Stack, count: int) -> None:
    for i in range(count):
        ext = str(1000 + i)
        user = stack.users.lookup("192.0.2.1", ext)
        assert user is not None
        phone = f"192.0.2.{2 + i % 250}"
        data = register_bytes(
            user=ext,
            contacts=[
                f'<sip:{ext}@{phone}:5060;transport=udp;ob>;+sip.instance="<urn:uuid:'
                f'00000000-0000-1000-8000-{i:012x}>";reg-id=1'
            ],
            via=f"SIP/2.0/UDP {phone}:5060;rport",
            call_id=f"{i:08x}-5d1c-4a7e-9b2a-7f3c1e2d4b6a",
            cseq=20 + i,
        )
        source = Address("udp", "192.0.2.200", 1024 + i)
        response = stack.registrar.apply(received(data, source), user, source, 0.0)
        assert response.status == 200


def test_registrar_keeps_under_2_kb_per_registration() -> None:
    # End to end (parse + apply) under tracemalloc is slow: fewer registrations here.
    count = 1000
    stack = make_stack()
    for i in range(count):
        stack.users.add_user(str(1000 + i), f"pw-{i}")
    stack.registrar.on_change = None  # the test listener would keep every tuple
    # The parser's shared parses (URIs, name-addrs) are bounded, not per registration.
    used, _ = _traced_bytes(lambda: (_register_many(stack, count), clear_parse_caches()))
    assert stack.location.count() == count
    assert all(b.nat for b in stack.location.bindings())
    assert used / count < 2048, f"{used / count:.0f} bytes per registration"
