"""Signed session tokens and CSRF tokens (pure functions of a secret and the clock).

A session token is ``s1.<claims>.<mac>``: base64url JSON claims (admin id, issue and expiry
time, a nonce, a fingerprint of the admin's password hash) and an HMAC-SHA256 over them.
Nothing is stored on the server: a token is valid until it expires, the admin is disabled
or removed, or its password changes (the fingerprint no longer matches). The same token
travels in the console's session cookie and, from ``POST /api/v1/auth/login``, as a
bearer token. API tokens (``minipbx token create``) are random strings stored as SHA-256
and never start with ``s1.``.

The CSRF token of a session is an HMAC of its nonce: a form (hidden ``csrf_token`` field)
or a script (``X-CSRF-Token`` header) proves it read a page of this origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

PREFIX = "s1."
_SESSION = b"minipbx web session"
_CSRF = b"minipbx web csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def fingerprint(password_hash: str) -> str:
    """A short digest of a password hash: sessions die when the password changes."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Session:
    """The verified claims of a session token."""

    admin_id: int
    issued_at: float
    expires_at: float
    nonce: str
    password: str  # fingerprint() of the password hash when it was issued


def issue(secret: bytes, admin_id: int, password_hash: str, now: float, lifetime: float) -> str:
    """A new session token for an admin, valid ``lifetime`` seconds from ``now``."""
    claims = {
        "a": admin_id,
        "i": int(now),
        "e": int(now + lifetime),
        "n": secrets.token_urlsafe(12),
        "p": fingerprint(password_hash),
    }
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(_key(secret, _SESSION), body.encode(), hashlib.sha256).digest()
    return f"{PREFIX}{body}.{_b64(mac)}"


def verify(secret: bytes, token: str, now: float) -> Session | None:
    """The claims of a well-signed, unexpired token; None for anything else."""
    if not token.startswith(PREFIX) or len(token) > 1024:
        return None
    body, _, mac = token[len(PREFIX) :].partition(".")
    expected = hmac.new(_key(secret, _SESSION), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        claims = json.loads(_unb64(body))
        session = Session(
            admin_id=int(claims["a"]),
            issued_at=float(claims["i"]),
            expires_at=float(claims["e"]),
            nonce=str(claims["n"]),
            password=str(claims["p"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_at > now else None


def csrf_token(secret: bytes, session: Session) -> str:
    """The CSRF token of a session (stable for the session's life)."""
    mac = hmac.new(_key(secret, _CSRF), session.nonce.encode(), hashlib.sha256).digest()
    return _b64(mac)


def csrf_ok(secret: bytes, session: Session, token: str | None) -> bool:
    """True when ``token`` is the session's CSRF token."""
    return bool(token) and hmac.compare_digest(
        csrf_token(secret, session).encode(), str(token).encode()
    )
