"""Plain records the repositories return, and the input checks they share.

Records are frozen dataclasses, detached from any database session, so the PBX can keep them
in memory caches and tests can build them by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from minipbx.sip.digest import Algorithm, compute_ha1
from minipbx.store.errors import InvalidInputError
from minipbx.store.models import DOMAIN_LEN, EMAIL_LEN, EXTENSION_LEN, NAME_LEN

DEFAULT_DOMAIN = "default"
DEFAULT_REALM = "minipbx"
PASSWORD_MAX_LEN = 128

# A conservative subset of the SIP user part (RFC 3261 25.1): it is also the digest username,
# typed on phone keypads and used in file names (voicemail), so no quotes, spaces or ';'.
_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]*")
# A host name, an IPv4 address, or the name of the default tenant; lower-case.
_DOMAIN = re.compile(r"[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant: a SIP domain with its fixed digest realm."""

    id: int
    name: str
    domain: str
    realm: str
    is_default: bool
    created_at: datetime
    max_users: int | None = None  # quotas (None: no limit)
    max_concurrent_calls: int | None = None
    max_call_seconds: int | None = None
    free_account: bool = False  # free tier: calls are cut after the free-call length


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user (extension) with the tenant facts the call path needs (domain, realm)."""

    id: int
    tenant_id: int
    domain: str
    realm: str
    extension: str
    display_name: str
    email: str | None
    ha1_md5: str
    ha1_sha256: str
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def ha1(self, algorithm: Algorithm) -> str:
        """The stored HA1 for a digest algorithm (``-sess`` variants use the base one)."""
        return self.ha1_md5 if algorithm.hash_name == "md5" else self.ha1_sha256


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """One binding of an AOR to a contact, as the registrar persists it.

    ``expires_at`` and ``updated_at`` are aware UTC datetimes; ``updated_at`` None means
    "now" when saved. ``received_*`` is where the REGISTER came from (its real source, for
    NAT), ``local`` the listener it arrived on, ``path`` the Path header values (RFC 3327).
    """

    user_id: int
    aor: str
    contact: str
    expires_at: datetime
    received_transport: str
    received_host: str
    received_port: int
    params: str = ""
    local: str = ""
    nat: bool = False
    path: str = ""
    call_id: str = ""
    cseq: int = 0
    user_agent: str = ""
    instance_id: str | None = None
    reg_id: int | None = None
    q: float | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("RegistrationRecord.expires_at must be an aware UTC datetime")
        if self.updated_at is not None and self.updated_at.tzinfo is None:
            raise ValueError("RegistrationRecord.updated_at must be an aware UTC datetime")
        if not self.aor or not self.contact:
            raise ValueError("RegistrationRecord needs an aor and a contact")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The two digest HA1 values of a password (RFC 7616 3.4.2, RFC 8760)."""

    ha1_md5: str
    ha1_sha256: str

    @classmethod
    def from_password(cls, extension: str, realm: str, password: str) -> Credentials:
        """Hash ``extension:realm:password`` with MD5 and SHA-256."""
        return cls(
            ha1_md5=compute_ha1(extension, realm, password, Algorithm.MD5),
            ha1_sha256=compute_ha1(extension, realm, password, Algorithm.SHA_256),
        )


def normalize_domain(domain: str) -> str:
    """Return ``domain`` lower-cased without a trailing dot; InvalidInputError if malformed."""
    value = domain.strip().lower().removesuffix(".")
    if not value or len(value) > DOMAIN_LEN or _DOMAIN.fullmatch(value) is None:
        raise InvalidInputError(
            f"invalid domain {domain!r} (expected a host name like pbx.example.com)"
        )
    return value


def check_extension(extension: str) -> str:
    """Return ``extension`` if valid: letters, digits and ``._+-``, at most 64 characters."""
    if not extension or len(extension) > EXTENSION_LEN or _EXTENSION.fullmatch(extension) is None:
        raise InvalidInputError(
            f"invalid extension {extension!r} (letters, digits and . _ + - only, "
            f"at most {EXTENSION_LEN} characters)"
        )
    return extension


def check_password(password: str) -> str:
    """Return ``password`` if acceptable: 1 to 128 characters, no control characters."""
    if not password:
        raise InvalidInputError("missing password")
    if len(password) > PASSWORD_MAX_LEN:
        raise InvalidInputError(f"password longer than {PASSWORD_MAX_LEN} characters")
    if _CONTROL.search(password):
        raise InvalidInputError("password contains a control character")
    return password


def check_name(name: str) -> str:
    """Return the display name stripped; InvalidInputError if too long or with controls."""
    value = name.strip()
    if len(value) > NAME_LEN or _CONTROL.search(value):
        raise InvalidInputError(f"invalid name {name!r}")
    return value


def check_email(email: str | None) -> str | None:
    """Return the e-mail address stripped (None when empty); InvalidInputError if malformed."""
    if email is None or not email.strip():
        return None
    value = email.strip()
    if len(value) > EMAIL_LEN or _EMAIL.fullmatch(value) is None:
        raise InvalidInputError(f"invalid email {email!r}")
    return value
