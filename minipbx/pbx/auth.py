"""Digest authentication of requests against the users of a tenant (RFC 3261 22).

:class:`RequestAuthenticator` wraps the sans-IO :class:`DigestAuthenticator` of the SIP core
and a :class:`UserLookup`. One call, :meth:`RequestAuthenticator.check`, either returns the
authenticated user or the response to send:

- no credentials for our realm: 401 (registrar, ``WWW-Authenticate``) or 407 (proxy,
  ``Proxy-Authenticate``) with one challenge per algorithm, SHA-256 first (RFC 8760 2.4);
- right password, expired nonce: the same with ``stale=true`` (RFC 7616 3.3);
- a nonce that is not ours (a restarted server with a new secret): a fresh challenge;
- anything else (wrong password, unknown or disabled user, replayed ``nc``, username not
  the From user or, for REGISTER, the To user): 403, logged and counted by the guard.

No enumeration: unknown and known users get byte-identical responses apart from nonces and
tags, after the same hashing (``verify`` hashes with a dummy HA1 for an unknown user).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from minipbx.pbx.ports import User, UserLookup, ha1_for
from minipbx.pbx.security import Guard, log_value
from minipbx.sip import ParseError, Request, Response, SipUri
from minipbx.sip.digest import (
    Algorithm,
    AuthResult,
    Challenge,
    Credentials,
    DigestAuthenticator,
    answer_challenge,
    make_cnonce,
    parse_challenge,
    parse_credentials,
    select_challenge,
)

log = logging.getLogger("minipbx.security")

Entropy = Callable[[int], bytes]

# The verdict reason DigestAuthenticator gives for a nonce it did not make (tested).
_BAD_NONCE = "bad nonce"


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """Either ``user`` (authenticated) or ``response`` (send it and stop)."""

    user: User | None = None
    response: Response | None = None

    def __post_init__(self) -> None:
        if (self.user is None) == (self.response is None):
            raise ValueError("AuthOutcome needs exactly one of user and response")

    @property
    def ok(self) -> bool:
        """True when the request is authenticated."""
        return self.user is not None


def new_tag(entropy: Entropy) -> str:
    """A To tag: 64 random bits as hex (RFC 3261 19.3 asks for at least 32)."""
    return entropy(8).hex()


def identity_of(request: Request) -> SipUri | None:
    """The URI whose user must authenticate: To for REGISTER, else From (RFC 3261 10.3, 22)."""
    name_addr = request.to if request.method == "REGISTER" else request.from_
    return name_addr.sip_uri


def domain_of(request: Request) -> str:
    """The domain whose tenant serves ``request``: host of the identity, else Request-URI."""
    return _domain(request, identity_of(request))


def _domain(request: Request, identity: SipUri | None) -> str:
    if identity is not None:
        return identity.host
    uri = request.uri
    return uri.host if isinstance(uri, SipUri) else ""


class RequestAuthenticator:
    """Checks digest credentials of requests; see the module docstring.

    ``guard``, when given, is told of every failure (bans after repeated ones) and success.
    ``entropy`` makes To tags (tests pass a deterministic one).
    """

    def __init__(
        self,
        digest: DigestAuthenticator,
        users: UserLookup,
        *,
        guard: Guard | None = None,
        entropy: Entropy = secrets.token_bytes,
    ) -> None:
        """Authenticate against ``users`` with ``digest``'s nonces and algorithms."""
        self.digest = digest
        self.users = users
        self.guard = guard
        self._entropy = entropy

    def check(self, request: Request, *, proxy: bool, source_ip: str, now: float) -> AuthOutcome:
        """Authenticate ``request`` from ``source_ip`` at ``now``.

        ``proxy`` False: registrar style, ``Authorization`` / 401 / ``WWW-Authenticate``
        (REGISTER). True: proxy style, ``Proxy-Authorization`` / 407 /
        ``Proxy-Authenticate`` (INVITE and other requests), RFC 3261 22.3.
        """
        identity = identity_of(request)
        domain = _domain(request, identity)
        realm = self.users.realm_for(domain)
        try:
            creds = self._credentials(request, realm, proxy)
        except ParseError:
            response = request.response(400, "Malformed Credentials", to_tag=self._tag())
            return AuthOutcome(response=response)
        if creds is None:
            return self._challenge(request, realm, proxy, now, stale=False)
        claimed = identity.user if identity is not None else None
        # The username must be the identity the request claims: no one authenticates as
        # someone else (for REGISTER this is the authorization of RFC 3261 10.3 step 4).
        if creds.userhash or creds.username != claimed:
            return self._fail(request, creds, source_ip, now, "username_mismatch", "")
        return self._verify(request, creds, domain, realm, proxy, source_ip, now)

    # --- steps ------------------------------------------------------------------------------

    def _credentials(self, request: Request, realm: str, proxy: bool) -> Credentials | None:
        """The credentials for ``realm`` (RFC 3261 22.4: one per realm), or None."""
        name = "Proxy-Authorization" if proxy else "Authorization"
        for value in request.headers.get_all(name):
            creds = parse_credentials(value)
            if creds.realm == realm:
                return creds
        return None

    def _verify(
        self,
        request: Request,
        creds: Credentials,
        domain: str,
        realm: str,
        proxy: bool,
        source_ip: str,
        now: float,
    ) -> AuthOutcome:
        user = self.users.lookup(domain, creds.username)
        if user is not None and not user.enabled:
            user = None  # a disabled user is answered exactly like an unknown one
        algorithm = Algorithm.from_name(creds.algorithm)
        ha1 = ha1_for(user, algorithm) if user is not None and algorithm is not None else None
        verdict = self.digest.verify_detailed(
            creds,
            method=request.method,
            request_uri=str(request.uri),
            ha1=ha1,
            now=now,
            realm=realm,
        )
        if verdict.result is AuthResult.OK and user is not None:
            if self.guard is not None:
                self.guard.auth_succeeded(source_ip)
            return AuthOutcome(user=user)
        if verdict.result is AuthResult.STALE:
            return self._challenge(request, realm, proxy, now, stale=True)
        if verdict.reason == _BAD_NONCE:
            # Not a password guess: the nonce is not ours (a restart with a new secret, or a
            # nonce for another realm). A fresh challenge lets the phone recover at once.
            return self._challenge(request, realm, proxy, now, stale=False)
        return self._fail(request, creds, source_ip, now, "bad_credentials", verdict.reason)

    def _challenge(
        self, request: Request, realm: str, proxy: bool, now: float, *, stale: bool
    ) -> AuthOutcome:
        """401/407 with one challenge per algorithm sharing a fresh nonce (RFC 8760 2.4)."""
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = self.digest.challenge_headers(realm, now, stale=stale)
        response = request.response(
            407 if proxy else 401,
            to_tag=self._tag(),
            headers=[(header, challenge) for challenge in challenges],
        )
        return AuthOutcome(response=response)

    def _fail(
        self,
        request: Request,
        creds: Credentials,
        source_ip: str,
        now: float,
        reason: str,
        detail: str,
    ) -> AuthOutcome:
        """403, the same for every cause; logged with the source IP and the claimed user.

        ``detail`` (e.g. "unknown user") goes to the log only, never to the peer.
        """
        banned = False
        if self.guard is not None:
            self.guard.auth_failed(source_ip, now)
            banned = self.guard.is_banned(source_ip, now)
        log.warning(
            "event=auth_failed src=%s user=%s method=%s reason=%s detail=%s banned=%s",
            source_ip,
            log_value(creds.username),
            log_value(request.method),
            reason,
            log_value(detail),
            "yes" if banned else "no",
        )
        return AuthOutcome(response=request.response(403, to_tag=self._tag()))

    def _tag(self) -> str:
        return new_tag(self._entropy)


def answer_response(
    response: Response,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    entropy: Entropy,
    body: bytes = b"",
) -> tuple[Challenge, tuple[str, str]] | None:
    """The PBX as a client answering a 401/407 (RFC 3261 22.2): the challenge chosen
    (SHA-256 over MD5, RFC 8760) and the Authorization or Proxy-Authorization header to add.

    None when no challenge can be answered; ValueError (ParseError) for an unreadable one.
    """
    proxy = response.status == 407
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    challenge = select_challenge(parse_challenge(v) for v in response.headers.get_all(name))
    if challenge is None:
        return None
    credentials = answer_challenge(
        challenge,
        method=method,
        uri=uri,
        username=username,
        password=password,
        nc=1,
        cnonce=make_cnonce(entropy),
        body=body,
    )
    return challenge, ("Proxy-Authorization" if proxy else "Authorization", str(credentials))
