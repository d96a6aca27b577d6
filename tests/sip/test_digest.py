"""Tests for minipbx.sip.digest: deterministic, fake clock, fake entropy."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipbx.sip.digest import (
    Algorithm,
    AuthResult,
    Challenge,
    Credentials,
    DigestAuthenticator,
    answer_challenge,
    compute_ha1,
    compute_response,
    make_cnonce,
    parse_challenge,
    parse_credentials,
    select_challenge,
)
from minipbx.sip.errors import ParseError
from tests.entropy import fake_entropy

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "pbx.example.com"
RURI = "sip:pbx.example.com"


def make_auth(**options: object) -> DigestAuthenticator:
    return DigestAuthenticator(SECRET, entropy=fake_entropy(), **options)  # type: ignore[arg-type]


def answer(
    challenge: Challenge,
    *,
    password: str = "secret",
    nc: int = 1,
    uri: str = RURI,
    username: str = "alice",
) -> Credentials:
    return answer_challenge(
        challenge,
        method="REGISTER",
        uri=uri,
        username=username,
        password=password,
        nc=nc,
        cnonce="c0ffee",
    )


def ha1_for(creds: Credentials, password: str = "secret") -> str:
    algorithm = Algorithm.from_name(creds.algorithm)
    assert algorithm is not None
    return compute_ha1("alice", creds.realm, password, algorithm)


def verify(
    auth: DigestAuthenticator, creds: Credentials, now: float, *, uri: str = RURI
) -> AuthResult:
    return auth.verify(creds, method="REGISTER", request_uri=uri, ha1=ha1_for(creds), now=now)


# --- RFC worked examples ---------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_CREDENTIALS = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_section_3_5_md5() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm is None and Algorithm.from_name(None) is Algorithm.MD5
    expected = parse_credentials(RFC2617_CREDENTIALS)
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", Algorithm.MD5)
    response = compute_response(
        ha1,
        algorithm=Algorithm.MD5,
        nonce=challenge.nonce,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1" == expected.response
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        nc=1,
        cnonce="0a4f113b",
    )
    assert creds == expected  # qop=auth chosen over auth-int, opaque echoed


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: str, response: str) -> None:
    challenge = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        nc=1,
        cnonce=RFC7616_CNONCE,
    )
    rfc_text = (
        f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", nc=00000001, '
        f'cnonce="{RFC7616_CNONCE}", qop=auth, response="{response}", opaque="{RFC7616_OPAQUE}"'
    )
    assert creds.response == response
    assert creds == parse_credentials(rfc_text)


def test_session_variants_use_rfc7616_3_4_2_ha1() -> None:
    ha1 = compute_ha1("Mufasa", "r", "pw", Algorithm.SHA_256_SESS)
    assert ha1 == compute_ha1("Mufasa", "r", "pw", Algorithm.SHA_256)  # same stored value
    session = hashlib.sha256(f"{ha1}:n:c".encode()).hexdigest()
    ha2 = hashlib.sha256(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.sha256(f"{session}:n:00000001:c:auth:{ha2}".encode()).hexdigest()
    got = compute_response(
        ha1,
        algorithm=Algorithm.SHA_256_SESS,
        nonce="n",
        method="REGISTER",
        uri="sip:r",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )
    assert got == expected


def test_rfc2069_response_without_qop() -> None:
    ha1 = compute_ha1("u", "r", "p", Algorithm.MD5)
    ha2 = hashlib.md5(b"INVITE:sip:bob@r").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    challenge = Challenge(realm="r", nonce="n")
    creds = answer_challenge(
        challenge, method="INVITE", uri="sip:bob@r", username="u", password="p", nc=1, cnonce="x"
    )
    assert creds.response == expected
    assert creds.qop is None and creds.nc is None and creds.cnonce is None


# --- Server round trips ----------------------------------------------------------------------


def test_challenges_follow_rfc8760_order_and_round_trip() -> None:
    auth = make_auth()
    challenges = auth.challenges(REALM, 1000.0)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and not c.stale and c.opaque is None for c in challenges)
    for challenge in challenges:
        assert parse_challenge(str(challenge)) == challenge
    assert 'qop="auth"' in str(challenges[0]) and "algorithm=SHA-256" in str(challenges[0])
    assert auth.challenges(REALM, 1000.0)[0].nonce != challenges[0].nonce  # fresh salt
    stale = auth.challenges(REALM, 1000.0, stale=True)
    assert all(c.stale for c in stale) and "stale=true" in str(stale[0])


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("use_opaque", [False, True])
@pytest.mark.parametrize("realm", [REALM, 'odd "realm" \\ with escapes'])
def test_challenge_headers_are_the_challenges_written(
    stale: bool, use_opaque: bool, realm: str
) -> None:
    # Same entropy on both sides: the same nonce, so the texts must match exactly.
    objects = make_auth(use_opaque=use_opaque).challenges(realm, 1000.0, stale=stale)
    texts = make_auth(use_opaque=use_opaque).challenge_headers(realm, 1000.0, stale=stale)
    assert texts == [str(c) for c in objects]
    with pytest.raises(ValueError):
        make_auth().challenge_headers("bad\x01realm", 0.0)


def test_configurable_algorithm_order() -> None:
    auth = make_auth(algorithms=[Algorithm.MD5, Algorithm.SHA_256_SESS])
    assert [c.algorithm for c in auth.challenges(REALM, 0.0)] == ["MD5", "SHA-256-sess"]


@pytest.mark.parametrize("index", [0, 1])
def test_round_trip_ok(index: int) -> None:
    now = 1000.0
    auth = make_auth()
    challenge = parse_challenge(str(auth.challenges(REALM, now)[index]))
    now += 1.5
    creds = parse_credentials(str(answer(challenge)))
    assert verify(auth, creds, now) is AuthResult.OK


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_algorithm_round_trips(algorithm: Algorithm) -> None:
    auth = make_auth(algorithms=[algorithm])
    creds = answer(auth.challenges(REALM, 0.0)[0])
    assert creds.algorithm == algorithm.value
    assert verify(auth, creds, 10.0) is AuthResult.OK


def test_select_challenge_prefers_sha256() -> None:
    auth = make_auth(algorithms=[Algorithm.MD5, Algorithm.SHA_256])
    md5, sha = auth.challenges(REALM, 0.0)
    assert select_challenge([md5, sha]) is sha
    assert select_challenge([md5]) is md5
    odd = Challenge(realm=REALM, nonce="n", algorithm="SHA-512-256", qop=("auth",))
    int_only = Challenge(realm=REALM, nonce="n", qop=("auth-int",))
    unknown_qop = Challenge(realm=REALM, nonce="n", qop=("x-auth",))
    assert select_challenge([odd, md5]) is md5
    assert select_challenge([odd, unknown_qop]) is None
    assert select_challenge([int_only]) is int_only
    assert select_challenge([]) is None
    with pytest.raises(ValueError):
        answer(odd)


def test_wrong_password_fails() -> None:
    auth = make_auth()
    creds = answer(auth.challenges(REALM, 0.0)[0], password="guess")
    assert verify(auth, creds, 1.0) is AuthResult.FAILED


def test_unknown_user_fails_like_a_wrong_password() -> None:
    auth = make_auth()
    creds = answer(auth.challenges(REALM, 0.0)[0], username="mallory")
    verdict = auth.verify_detailed(creds, method="REGISTER", request_uri=RURI, ha1=None, now=1.0)
    assert verdict.result is AuthResult.FAILED
    # Unknown user with a stale nonce: FAILED too, like a wrong password would be.
    result = auth.verify(creds, method="REGISTER", request_uri=RURI, ha1=None, now=1000.0)
    assert result is AuthResult.FAILED


def test_stale_nonce() -> None:
    now = 1000.0
    auth = make_auth()
    challenge = auth.challenges(REALM, now)[0]
    now += 301
    assert verify(auth, answer(challenge), now) is AuthResult.STALE
    # Stale only for the right password (RFC 7616 3.3); a wrong one is plain FAILED.
    assert verify(auth, answer(challenge, password="guess"), now) is AuthResult.FAILED
    fresh = auth.challenges(REALM, now, stale=True)[0]
    assert verify(auth, answer(fresh), now) is AuthResult.OK


def test_nonce_from_the_future_is_stale() -> None:
    auth = make_auth()
    challenge = auth.challenges(REALM, 1000.0)[0]
    assert verify(auth, answer(challenge), 990.0) is AuthResult.OK  # small skew tolerated
    challenge = auth.challenges(REALM, 5000.0)[0]
    assert verify(auth, answer(challenge), 1000.0) is AuthResult.STALE


def test_tampered_nonce_fails() -> None:
    auth = make_auth()
    challenge = auth.challenges(REALM, 0.0)[0]
    nonce = challenge.nonce
    flipped = nonce[:10] + ("A" if nonce[10] != "A" else "B") + nonce[11:]
    for bad in (flipped, nonce[:-1], nonce + "A", "dcd98b7102dd2f0e8b11d0f600bfb0c093", ""):
        creds = answer(dataclasses.replace(challenge, nonce=bad))
        assert verify(auth, creds, 1.0) is AuthResult.FAILED
    other = DigestAuthenticator(b"another secret, 32 bytes long!!!", entropy=fake_entropy())
    assert verify(other, answer(challenge), 1.0) is AuthResult.FAILED


def test_nonce_from_another_realm_fails() -> None:
    auth = make_auth()
    challenge = auth.challenges("tenant-a.example.com", 0.0)[0]
    moved = dataclasses.replace(challenge, realm="tenant-b.example.com")
    assert verify(auth, answer(moved), 1.0) is AuthResult.FAILED
    # The caller may also pin the realm it expects.
    creds = answer(challenge)
    pinned = auth.verify(
        creds,
        method="REGISTER",
        request_uri=RURI,
        ha1=ha1_for(creds),
        now=1.0,
        realm="tenant-b.example.com",
    )
    assert pinned is AuthResult.FAILED
    assert verify(auth, creds, 1.0) is AuthResult.OK


def test_nonce_count_must_increase() -> None:
    now = 1000.0
    auth = make_auth()
    challenge = auth.challenges(REALM, now)[0]
    assert verify(auth, answer(challenge, nc=1), now) is AuthResult.OK
    now += 1
    assert verify(auth, answer(challenge, nc=1), now) is AuthResult.FAILED  # replay
    assert verify(auth, answer(challenge, nc=2), now) is AuthResult.OK
    assert verify(auth, answer(challenge, nc=5), now) is AuthResult.OK  # gaps are fine
    assert verify(auth, answer(challenge, nc=4), now) is AuthResult.FAILED
    assert verify(auth, answer(challenge, nc=6), now) is AuthResult.OK


def test_failed_attempts_do_not_advance_the_count() -> None:
    auth = make_auth()
    challenge = auth.challenges(REALM, 0.0)[0]
    assert verify(auth, answer(challenge, nc=9, password="x"), 1.0) is AuthResult.FAILED
    assert verify(auth, answer(challenge, nc=1), 1.0) is AuthResult.OK


def test_uri_mismatch_fails() -> None:
    auth = make_auth()
    challenge = auth.challenges(REALM, 0.0)[0]
    creds = answer(challenge, uri="sip:other.example.com")
    assert verify(auth, creds, 1.0) is AuthResult.FAILED
    # Trivial normalisation: scheme case and surrounding blanks only.
    creds = answer(challenge, uri="SIP:pbx.example.com")
    assert verify(auth, creds, 1.0, uri=" sip:pbx.example.com ") is AuthResult.OK
    creds = answer(challenge, uri="sip:PBX.example.com", nc=2)
    assert verify(auth, creds, 1.0) is AuthResult.FAILED


def test_algorithm_not_offered_fails() -> None:
    auth = make_auth(algorithms=[Algorithm.SHA_256])
    challenge = auth.challenges(REALM, 0.0)[0]
    md5 = answer(dataclasses.replace(challenge, algorithm="MD5"))
    assert verify(auth, md5, 1.0) is AuthResult.FAILED
    odd = dataclasses.replace(answer(challenge), algorithm="SHA-512-256")
    result = auth.verify(odd, method="REGISTER", request_uri=RURI, ha1="00", now=1.0)
    assert result is AuthResult.FAILED


def test_qop_rules() -> None:
    auth = make_auth()
    challenge = auth.challenges(REALM, 0.0)[0]
    auth_int = answer(dataclasses.replace(challenge, qop=("auth-int",)))
    assert auth_int.qop == "auth-int"
    assert verify(auth, auth_int, 1.0) is AuthResult.FAILED  # never offered
    good = answer(challenge)
    no_nc = dataclasses.replace(good, nc=None)
    assert verify(auth, no_nc, 1.0) is AuthResult.FAILED


def test_rfc2069_clients_within_lifetime() -> None:
    now = 1000.0
    auth = make_auth()
    challenge = dataclasses.replace(auth.challenges(REALM, now)[1], qop=())
    creds = answer(challenge)
    assert creds.qop is None
    assert verify(auth, creds, now) is AuthResult.OK
    assert verify(auth, creds, now + 10) is AuthResult.OK  # weaker: no counter without qop
    now += 301
    assert verify(auth, creds, now) is AuthResult.STALE
    strict = make_auth(allow_rfc2069=False)
    challenge = dataclasses.replace(strict.challenges(REALM, 0.0)[1], qop=())
    assert verify(strict, answer(challenge), 1.0) is AuthResult.FAILED


def test_opaque_is_checked_when_enabled() -> None:
    auth = make_auth(use_opaque=True)
    challenge = auth.challenges(REALM, 0.0)[0]
    assert challenge.opaque
    assert verify(auth, answer(challenge), 1.0) is AuthResult.OK
    forged = answer(dataclasses.replace(challenge, opaque="x"), nc=2)
    assert verify(auth, forged, 1.0) is AuthResult.FAILED
    missing = answer(dataclasses.replace(challenge, opaque=None), nc=3)
    assert verify(auth, missing, 1.0) is AuthResult.FAILED


def test_replay_table_is_bounded_and_pruned() -> None:
    now = 1000.0
    auth = make_auth(max_tracked_nonces=2)
    first, second, third = (auth.challenges(REALM, now + i)[0] for i in range(3))
    now += 5
    for challenge in (first, second, third):
        assert verify(auth, answer(challenge), now) is AuthResult.OK
    assert auth.tracked_nonces == 2
    # The oldest count was evicted: a replay of it cannot be told apart, so STALE.
    assert verify(auth, answer(first, nc=1), now) is AuthResult.STALE
    assert verify(auth, answer(third, nc=1), now) is AuthResult.FAILED
    assert verify(auth, answer(third, nc=2), now) is AuthResult.OK
    now += 400
    fresh = auth.challenges(REALM, now)[0]
    assert verify(auth, answer(fresh), now) is AuthResult.OK
    assert auth.tracked_nonces == 1  # expired nonces were forgotten


def test_userhash_answer() -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",), userhash=True)
    assert parse_challenge(str(challenge)) == challenge
    creds = answer_challenge(
        challenge, method="REGISTER", uri="sip:r", username="u", password="p", nc=1, cnonce="c"
    )
    assert creds.userhash and creds.username == hashlib.sha256(b"u:r").hexdigest()
    assert "userhash=true" in str(creds)


def test_make_cnonce() -> None:
    assert make_cnonce(lambda n: b"\xff" * n) == "_____________________w"


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(b"short")
    with pytest.raises(ValueError):
        DigestAuthenticator(SECRET, 0)
    with pytest.raises(ValueError):
        DigestAuthenticator(SECRET, algorithms=[])
    with pytest.raises(ValueError):
        Credentials("u", "r", "n", "sip:r", "x", nc="1")
    with pytest.raises(ValueError):
        Challenge(realm="bad\r\nrealm", nonce="n")
    with pytest.raises(ValueError):
        Challenge(realm="r", nonce="n", params=(("Realm", "x"),))


# --- Parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="a, nonce="b"',  # unterminated quote
        'Digest realm="a", nonce="b\\',
        'Digest realm="a" nonce="b"',  # missing comma
        'Digest realm="a", nonce="b", REALM="c"',  # duplicated, any case
        'Digest realm="a"',  # missing nonce
        'Digest realm="a", nonce="b", ',  # trailing comma
        'Digest realm="a",, nonce="b"',
        'Digest realm="a", nonce="b" trailing',
        'Digest realm="a", nonce=',
        'Digest realm="a", nonce',
        'Digest realm=a b, nonce="b"',
        'Basic realm="a", nonce="b"',
        'Digestrealm="a", nonce="b"',
        "Digest",
        "",
        'Digest realm="a\x01", nonce="b"',
        'Digest realm="a\r\n", nonce="b"',
        'Digest realm="a", nonce="b", algorithm="MD 5"',
    ],
)
def test_challenge_parse_errors(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_challenge(value)
    assert info.value.status == 400


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_credentials_missing_params(missing: str) -> None:
    params = {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:r", "response": "0"}
    del params[missing]
    with pytest.raises(ParseError, match=missing):
        parse_credentials("Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items()))


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="0", nc=1',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="0", nc=0000000g',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="0", qop="a b"',
        'Digest username="u", username="v", realm="r", nonce="n", uri="sip:r", response="0"',
        'Digest username="u, realm="r", nonce="n", uri="sip:r", response="0"',
    ],
)
def test_credentials_parse_errors(value: str) -> None:
    with pytest.raises(ParseError):
        parse_credentials(value)


def test_quoted_string_escapes_and_commas() -> None:
    challenge = parse_challenge(
        r'Digest realm="a \"quoted\", back\\slash", nonce="x,y", domain="sip:a sip:b"'
    )
    assert challenge.realm == 'a "quoted", back\\slash'
    assert challenge.nonce == "x,y"
    assert challenge.domain == ("sip:a", "sip:b")
    assert parse_challenge(str(challenge)) == challenge


def test_unknown_params_are_kept() -> None:
    challenge = parse_challenge(
        'Digest realm="a", nonce="b", charset=UTF-8, X-Note="two words", Stale=TRUE'
    )
    assert challenge.params == (("charset", "UTF-8"), ("X-Note", "two words"))
    assert challenge.stale is True
    assert str(challenge).endswith(', charset=UTF-8, X-Note="two words"')
    assert parse_challenge(str(challenge)) == challenge


LINPHONE = (
    'Digest realm="sip.linphone.org", nonce="3Yo4ggAAAAA3MJ4pAABnE4yRBLAAAAAA", '
    'algorithm=MD5, opaque="+GNywA==", username="alice",  uri="sip:sip.linphone.org", '
    'response="bd6b5ba1bb7b6bcd6fe3bafbfc2ab3c0", cnonce="Pt6WNFK6fq7UWsuN", nc=00000001, '
    "qop=auth"
)
BARESIP = (
    'Digest username="1001",realm="asterisk",nonce="4b3d9f0a",uri="sip:192.0.2.10;transport=udp",'
    'response="e5e0b4a4d1f13bd3a4d8e8b2a6b5f0c1",cnonce="74c8b5c1a0",qop=auth,nc=00000002,'
    "algorithm=MD5"
)
SLOPPY = (
    'digest   username = "bob" ,realm="pbx"\r\n\t, nonce= "n1" , uri ="sip:pbx" ,'
    ' response="ab12",ALGORITHM = "SHA-256", QOP="auth", nc="0000000a", cnonce=c1'
)


def test_real_world_authorization_headers() -> None:
    linphone = parse_credentials(LINPHONE)
    assert (linphone.username, linphone.opaque, linphone.nc) == ("alice", "+GNywA==", "00000001")
    assert linphone.algorithm == "MD5" and linphone.qop == "auth"
    baresip = parse_credentials(BARESIP)
    assert baresip.uri == "sip:192.0.2.10;transport=udp" and baresip.nc == "00000002"
    sloppy = parse_credentials(SLOPPY)
    assert sloppy == Credentials(
        username="bob",
        realm="pbx",
        nonce="n1",
        uri="sip:pbx",
        response="ab12",
        algorithm="SHA-256",
        cnonce="c1",
        qop="auth",
        nc="0000000a",
    )
    assert Algorithm.from_name(sloppy.algorithm) is Algorithm.SHA_256
    for value in (LINPHONE, BARESIP, SLOPPY):
        creds = parse_credentials(value)
        assert parse_credentials(str(creds)) == creds


def test_real_world_challenges() -> None:
    asterisk = parse_challenge('Digest  algorithm=MD5, realm="asterisk", nonce="1b2d8c5e"')
    assert asterisk.algorithm == "MD5" and asterisk.qop == ()
    kamailio = parse_challenge(
        'Digest realm="voip.example.net", nonce="Zl4y0WZeMaWo0Ugqv3VVqQPDtJ0=", qop="auth"'
    )
    assert kamailio.qop == ("auth",)
    assert select_challenge([asterisk, kamailio]) is asterisk  # both MD5: first wins


# --- Properties ------------------------------------------------------------------------------

GRAMMAR_ALPHABET = st.sampled_from(
    [
        *list(
            "Digest realm nonce uri qop nc response algorithm stale ,=\"\\ \t\r\nAaZz09-.!%*_+`'~"
        ),
        "\x00",
        "\x7f",
        "é",
        "�",
        "Digest ",
        'realm="',
        '", ',
        "nc=00000001",
        "qop=auth",
    ]
)


@given(st.text())
def test_parsers_raise_only_parse_error_on_any_text(text: str) -> None:
    for parser in (parse_challenge, parse_credentials):
        with contextlib.suppress(ParseError):
            parser(text)


@given(st.lists(GRAMMAR_ALPHABET).map("".join))
def test_parsers_raise_only_parse_error_on_near_grammar_text(text: str) -> None:
    for parser in (parse_challenge, parse_credentials):
        try:
            parsed = parser(text)
        except ParseError:
            continue
        assert parser(str(parsed)) == parsed


TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"))
QUOTABLE = TEXT.filter(lambda s: all(c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F) for c in s))
TOKEN = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]+", fullmatch=True)
OPTIONAL_QUOTABLE = st.none() | QUOTABLE


@given(
    st.builds(
        Credentials,
        username=QUOTABLE,
        realm=QUOTABLE,
        nonce=QUOTABLE,
        uri=QUOTABLE,
        response=QUOTABLE,
        algorithm=st.none() | TOKEN,
        cnonce=OPTIONAL_QUOTABLE,
        opaque=OPTIONAL_QUOTABLE,
        qop=st.none() | TOKEN,
        nc=st.none() | st.from_regex(r"[0-9a-fA-F]{8}", fullmatch=True),
        userhash=st.booleans(),
        params=st.just(()) | st.tuples(st.tuples(st.just("x-extra"), QUOTABLE)),
    )
)
def test_credentials_round_trip(creds: Credentials) -> None:
    assert parse_credentials(str(creds)) == creds


@given(
    st.builds(
        Challenge,
        realm=QUOTABLE,
        nonce=QUOTABLE,
        opaque=OPTIONAL_QUOTABLE,
        stale=st.booleans(),
        algorithm=st.none() | TOKEN,
        qop=st.lists(TOKEN, max_size=3).map(tuple),
        domain=st.lists(st.from_regex(r"sip:[a-z.]+", fullmatch=True), max_size=3).map(tuple),
        userhash=st.booleans(),
        params=st.just(()) | st.tuples(st.tuples(st.just("charset"), TOKEN)),
    )
)
def test_challenge_round_trip(challenge: Challenge) -> None:
    assert parse_challenge(str(challenge)) == challenge
