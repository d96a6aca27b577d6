"""RequestAuthenticator: challenges, MD5 and SHA-256, failures, no enumeration, stale nonces."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from minipbx.pbx.auth import AuthOutcome, RequestAuthenticator
from minipbx.pbx.ports import StaticUsers
from minipbx.sip import Response
from minipbx.sip import digest as digest_module
from minipbx.sip.digest import Algorithm, DigestAuthenticator
from tests.pbx.sipmsg import (
    PASSWORD,
    PBX,
    PHONE,
    SECRET,
    Stack,
    authorization,
    challenges_of,
    fake_entropy,
    invite_bytes,
    make_stack,
    received,
    register_bytes,
)

NOW = 1_700_000_000.0


def check_register(stack: Stack, data: bytes, now: float = NOW) -> AuthOutcome:
    return stack.auth.check(received(data), proxy=False, source_ip=PHONE, now=now)


def challenge(stack: Stack, now: float = NOW, **kw: Any) -> Response:
    outcome = check_register(stack, register_bytes(**kw), now)
    assert outcome.response is not None
    return outcome.response


def answered(stack: Stack, *, password: str = PASSWORD, username: str = "100", **kw: Any) -> bytes:
    """A REGISTER answering a fresh challenge (user in To/From is ``kw['user']``)."""
    first = challenge(stack, **kw)
    request = received(register_bytes(**kw))
    line = authorization(first, request, username=username, password=password)
    return register_bytes(cseq=2, extra=[line], **kw)


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    stack = make_stack()
    response = challenge(stack)
    assert response.status == 401
    assert response.to.tag
    found = challenges_of(response)
    assert [c.algorithm for c in found] == ["SHA-256", "MD5"]  # RFC 8760 2.4
    assert {c.nonce for c in found} == {found[0].nonce}
    assert all(c.realm == "minipbx" and c.qop == ("auth",) and not c.stale for c in found)
    assert "Proxy-Authenticate" not in response.headers


def test_proxy_challenge_is_407() -> None:
    stack = make_stack()
    outcome = stack.auth.check(received(invite_bytes()), proxy=True, source_ip=PHONE, now=NOW)
    assert outcome.response is not None and outcome.response.status == 407
    assert len(challenges_of(outcome.response)) == 2
    assert "WWW-Authenticate" not in outcome.response.headers


@pytest.mark.parametrize("algorithm", [Algorithm.SHA_256, Algorithm.MD5])
def test_register_succeeds(algorithm: Algorithm) -> None:
    stack = make_stack()
    first = challenge(stack)
    line = authorization(first, received(register_bytes()), algorithm=algorithm)
    outcome = check_register(stack, register_bytes(cseq=2, extra=[line]))
    assert outcome.ok and outcome.response is None
    assert outcome.user == stack.alice


@pytest.mark.parametrize("algorithm", [Algorithm.SHA_256, Algorithm.MD5])
def test_invite_succeeds_with_proxy_authorization(algorithm: Algorithm) -> None:
    stack = make_stack()
    request = received(invite_bytes())
    first = stack.auth.check(request, proxy=True, source_ip=PHONE, now=NOW).response
    assert first is not None
    line = authorization(first, request, algorithm=algorithm)
    second = received(invite_bytes(cseq=2, extra=[line]))
    outcome = stack.auth.check(second, proxy=True, source_ip=PHONE, now=NOW + 1)
    assert outcome.user == stack.alice


def test_credentials_in_the_wrong_header_are_not_seen() -> None:
    stack = make_stack()
    request = received(invite_bytes())
    first = stack.auth.check(request, proxy=True, source_ip=PHONE, now=NOW).response
    assert first is not None
    line = authorization(first, request).replace("Proxy-Authorization", "Authorization")
    second = received(invite_bytes(cseq=2, extra=[line]))
    outcome = stack.auth.check(second, proxy=True, source_ip=PHONE, now=NOW)
    assert outcome.response is not None and outcome.response.status == 407


def test_wrong_password_is_403_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack()
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        outcome = check_register(stack, answered(stack, password="wrong"))
    assert outcome.response is not None and outcome.response.status == 403
    assert "WWW-Authenticate" not in outcome.response.headers
    [record] = [r for r in caplog.records if "event=auth_failed" in r.getMessage()]
    line = record.getMessage()
    assert f"src={PHONE} user=100 method=REGISTER reason=bad_credentials" in line
    assert "\n" not in line


def _masked(response: Response) -> bytes:
    """The response with tags, nonces and the username normalised."""
    text = bytes(response).decode()
    text = re.sub(r"tag=[0-9a-f]+", "tag=T", text)
    text = re.sub(r'nonce="[^"]+"', 'nonce="N"', text)
    return text.replace("sip:999@", "sip:100@").encode()


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Count the digest hashes (the constructor table, which the compiled SIP core reads on
    # every hash too, where a patched module function would not be seen).
    calls: list[bytes] = []

    def counting(real: Any) -> Any:
        def hashing(data: bytes = b"") -> Any:
            calls.append(data)
            return real(data)

        return hashing

    for name, real in list(digest_module._HASH_NEW.items()):
        monkeypatch.setitem(digest_module._HASH_NEW, name, counting(real))
    stack = make_stack()
    # Challenges do not depend on the user at all.
    assert _masked(challenge(stack, user="999")) == _masked(challenge(stack))
    wrong_password = answered(stack, password="wrong")
    unknown_user = answered(stack, user="999", username="999")
    calls.clear()
    known = check_register(stack, wrong_password).response
    known_hashes = len(calls)
    calls.clear()
    unknown = check_register(stack, unknown_user).response
    assert known is not None and unknown is not None
    assert known.status == unknown.status == 403
    assert _masked(known) == _masked(unknown)
    # The same hashing: the unknown user's response was checked against a dummy HA1.
    assert len(calls) == known_hashes > 0


def test_disabled_user_is_answered_like_an_unknown_one() -> None:
    stack = make_stack()
    stack.users.add_user("102", "pw-102", enabled=False)
    outcome = check_register(stack, answered(stack, user="102", username="102", password="pw-102"))
    assert outcome.response is not None and outcome.response.status == 403


def test_stale_nonce_with_right_password_rechallenges_with_stale_true() -> None:
    stack = make_stack()
    data = answered(stack)
    later = NOW + stack.digest.nonce_lifetime + 1
    outcome = check_register(stack, data, now=later)
    assert outcome.response is not None and outcome.response.status == 401
    found = challenges_of(outcome.response)
    assert all(c.stale for c in found) and len(found) == 2
    assert stack.guard.tracked_sources == 0  # not counted as a failure


def test_stale_nonce_with_wrong_password_is_403() -> None:
    stack = make_stack()
    data = answered(stack, password="wrong")
    outcome = check_register(stack, data, now=NOW + 1000)
    assert outcome.response is not None and outcome.response.status == 403


def test_username_must_be_the_from_user_of_an_invite(caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack()
    request = received(invite_bytes(from_user="101"))
    first = stack.auth.check(request, proxy=True, source_ip=PHONE, now=NOW).response
    assert first is not None
    line = authorization(first, request, username="100")  # right password of 100
    second = received(invite_bytes(from_user="101", cseq=2, extra=[line]))
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        outcome = stack.auth.check(second, proxy=True, source_ip=PHONE, now=NOW)
    assert outcome.response is not None and outcome.response.status == 403
    assert "reason=username_mismatch" in caplog.text


def test_username_must_be_the_to_user_of_a_register() -> None:
    stack = make_stack()
    # From is 100 (whose password is used) but To is 101: a third-party registration.
    data = answered(stack, user="101", from_user="100", username="100")
    outcome = check_register(stack, data)
    assert outcome.response is not None and outcome.response.status == 403


def test_foreign_nonce_gets_a_fresh_challenge_not_a_failure() -> None:
    stack = make_stack()
    other = make_stack()
    other.auth.digest = DigestAuthenticator(
        b"another secret of 32 bytes......", entropy=fake_entropy()
    )
    first = other.auth.check(
        received(register_bytes()), proxy=False, source_ip=PHONE, now=NOW
    ).response
    assert first is not None
    line = authorization(first, received(register_bytes()))
    outcome = check_register(stack, register_bytes(cseq=2, extra=[line]))
    assert outcome.response is not None and outcome.response.status == 401
    assert stack.guard.tracked_sources == 0


def test_malformed_credentials_are_400() -> None:
    stack = make_stack()
    outcome = check_register(stack, register_bytes(extra=["Authorization: Digest username"]))
    assert outcome.response is not None and outcome.response.status == 400


def test_credentials_for_another_realm_are_ignored() -> None:
    stack = make_stack()
    first = challenge(stack)
    line = authorization(first, received(register_bytes())).replace(
        'realm="minipbx"', 'realm="elsewhere"'
    )
    outcome = check_register(stack, register_bytes(cseq=2, extra=[line]))
    assert outcome.response is not None and outcome.response.status == 401


def test_repeated_failures_ban_the_source(caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack()
    limit = stack.guard.config.max_auth_failures
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        for _ in range(limit):
            check_register(stack, answered(stack, password="wrong"))
    assert stack.guard.is_banned(PHONE, NOW)
    bans = [r.getMessage() for r in caplog.records if "event=ban" in r.getMessage()]
    assert bans == [f"event=ban src={PHONE} reason=auth_failures count={limit} duration=600"]


def test_tenant_realm_comes_from_the_request_domain() -> None:
    users = StaticUsers()
    users.add_tenant("pbx.example.com", "example-realm")
    users.add_user("200", "pw-200", domain="pbx.example.com")
    digest = DigestAuthenticator(SECRET, entropy=fake_entropy())
    auth = RequestAuthenticator(digest, users, entropy=fake_entropy())
    data = register_bytes(user="200", domain="pbx.example.com")
    response = auth.check(received(data), proxy=False, source_ip=PHONE, now=NOW).response
    assert response is not None
    assert {c.realm for c in challenges_of(response)} == {"example-realm"}
    line = authorization(response, received(data), username="200", password="pw-200")
    ok = auth.check(
        received(register_bytes(user="200", domain="pbx.example.com", cseq=2, extra=[line])),
        proxy=False,
        source_ip=PHONE,
        now=NOW,
    )
    assert ok.user is not None and ok.user.extension == "200"
    # The server's IP is served by the default tenant, whose realm differs.
    other = auth.check(received(register_bytes(domain=PBX)), proxy=False, source_ip=PHONE, now=NOW)
    assert other.response is not None
    assert {c.realm for c in challenges_of(other.response)} == {"minipbx"}


def test_outcome_needs_exactly_one_field() -> None:
    with pytest.raises(ValueError):
        AuthOutcome()
