"""Helpers for the pbx tests: real SIP messages as bytes, parsed and stamped like the transport.

Addresses are 127.0.0.1 and 192.0.2.x (RFC 5737 documentation range) only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from minipbx.pbx.auth import RequestAuthenticator
from minipbx.pbx.location import Aor, Binding, MemoryLocation
from minipbx.pbx.ports import StaticUsers, UserRecord
from minipbx.pbx.registrar import Registrar, RegistrarConfig
from minipbx.pbx.security import Guard, GuardConfig
from minipbx.sip import Request, Response, parse
from minipbx.sip.digest import (
    Algorithm,
    Challenge,
    DigestAuthenticator,
    answer_challenge,
    parse_challenge,
)
from minipbx.transport.address import Address
from minipbx.transport.routing import stamp_request
from tests.entropy import fake_entropy

SECRET = b"minipbx test secret, 32 bytes!!!"
PBX = "192.0.2.1"
PHONE = "192.0.2.10"
PHONE_SRC = Address("udp", PHONE, 5060)
PASSWORD = "s3cret-100"


def register_bytes(
    *,
    user: str = "100",
    domain: str = PBX,
    contacts: Iterable[str] = (f"<sip:100@{PHONE}:5060>",),
    via: str = f"SIP/2.0/UDP {PHONE}:5060;rport",
    call_id: str = "reg-1@192.0.2.10",
    cseq: int = 1,
    expires: int | None = None,
    extra: Iterable[str] = (),
    from_user: str | None = None,
) -> bytes:
    """A REGISTER as a phone sends it (one Contact header line per item of ``contacts``)."""
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: {via};branch=z9hG4bK-{call_id.partition('@')[0]}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{from_user or user}@{domain}>;tag=ft{cseq}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: TestPhone/1.0",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def invite_bytes(
    *,
    from_user: str = "100",
    to_user: str = "101",
    domain: str = PBX,
    cseq: int = 1,
    extra: Iterable[str] = (),
) -> bytes:
    """An INVITE from ``from_user`` to ``to_user`` (no body)."""
    lines = [
        f"INVITE sip:{to_user}@{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-inv-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@{domain}>;tag=inv-from",
        f"To: <sip:{to_user}@{domain}>",
        "Call-ID: call-1@192.0.2.10",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:{from_user}@{PHONE}:5060>",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def received(data: bytes, source: Address = PHONE_SRC) -> Request:
    """Parse ``data`` and stamp its Via as the transport does for a packet from ``source``."""
    message = parse(data)
    assert isinstance(message, Request)
    stamp_request(message, source)
    return message


def challenges_of(response: Response) -> list[Challenge]:
    """The challenges of a 401 or 407, in order."""
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    return [parse_challenge(v) for v in response.headers.get_all(name)]


def authorization(
    response: Response,
    request: Request,
    *,
    username: str = "100",
    password: str = PASSWORD,
    algorithm: Algorithm = Algorithm.SHA_256,
    nc: int = 1,
) -> str:
    """An ``Authorization``/``Proxy-Authorization`` line answering ``response``'s challenge."""
    challenge = next(c for c in challenges_of(response) if c.algorithm == algorithm.value)
    creds = answer_challenge(
        challenge,
        method=request.method,
        uri=str(request.uri),
        username=username,
        password=password,
        nc=nc,
        cnonce="0a4f113b",
    )
    name = "Proxy-Authorization" if response.status == 407 else "Authorization"
    return f"{name}: {creds}"


@dataclass
class Stack:
    """Users, digest, guard, authenticator, location and registrar wired together."""

    users: StaticUsers
    alice: UserRecord
    bob: UserRecord
    digest: DigestAuthenticator
    guard: Guard
    auth: RequestAuthenticator
    location: MemoryLocation
    registrar: Registrar
    changes: list[tuple[Aor, tuple[Binding, ...]]] = field(default_factory=list)


def make_stack(*, config: RegistrarConfig | None = None, guard: GuardConfig | None = None) -> Stack:
    """A registrar with users 100 (alice) and 101 (bob) in the default tenant."""
    users = StaticUsers()
    alice = users.add_user("100", PASSWORD, display_name="Alice")
    bob = users.add_user("101", "s3cret-101", display_name="Bob")
    digest = DigestAuthenticator(SECRET, nonce_lifetime=300.0, entropy=fake_entropy())
    the_guard = Guard(guard)
    auth = RequestAuthenticator(digest, users, guard=the_guard, entropy=fake_entropy())
    location = MemoryLocation()
    changes: list[tuple[Aor, tuple[Binding, ...]]] = []
    registrar = Registrar(
        location,
        users,
        auth,
        config=config,
        on_change=lambda aor, bindings: changes.append((aor, bindings)),
        entropy=fake_entropy(),
    )
    return Stack(users, alice, bob, digest, the_guard, auth, location, registrar, changes)
