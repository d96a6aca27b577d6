"""What the PBX needs from the outside world, as small typed Protocols.

The registrar and the authenticator read users through :class:`UserLookup`; the store
implements it with its in-memory ``UserDirectory``. :class:`StaticUsers` is a trivial
implementation for tests and tools.

A looked-up user is typed as the read-only :class:`User` protocol rather than one concrete
class, so the store's own frozen ``UserRecord`` (with ``id`` instead of ``user_id``)
satisfies it as it is: nothing here reads a user id. :class:`UserRecord` is the concrete
record of this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from minipbx.sip.digest import Algorithm, compute_ha1

DEFAULT_DOMAIN = "default"
DEFAULT_REALM = "minipbx"


class User(Protocol):
    """The facts about a user that registration and authentication read."""

    @property
    def tenant_id(self) -> int:
        """The tenant the user belongs to."""
        ...

    @property
    def domain(self) -> str:
        """The tenant's SIP domain."""
        ...

    @property
    def realm(self) -> str:
        """The tenant's digest realm (the HA1 values are computed with it)."""
        ...

    @property
    def extension(self) -> str:
        """The SIP user part, also the digest username."""
        ...

    @property
    def display_name(self) -> str:
        """A human name, possibly empty."""
        ...

    @property
    def ha1_md5(self) -> str:
        """MD5(extension:realm:password), hex (RFC 7616 3.4.2)."""
        ...

    @property
    def ha1_sha256(self) -> str:
        """SHA-256(extension:realm:password), hex (RFC 8760)."""
        ...

    @property
    def enabled(self) -> bool:
        """False: the user exists but may not register or call (answered like unknown)."""
        ...


def ha1_for(user: User, algorithm: Algorithm) -> str:
    """The stored HA1 of ``user`` for ``algorithm`` (``-sess`` variants use the base one)."""
    return user.ha1_md5 if algorithm.hash_name == "md5" else user.ha1_sha256


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user (extension) with the tenant facts the call path needs; satisfies :class:`User`."""

    user_id: int
    tenant_id: int
    domain: str
    realm: str
    extension: str
    display_name: str
    ha1_md5: str
    ha1_sha256: str
    enabled: bool = True


class UserLookup(Protocol):
    """Where the PBX finds users; lookups never block (served from memory)."""

    def lookup(self, domain: str, extension: str) -> User | None:
        """The user ``extension`` of the tenant serving ``domain``, or None.

        A domain no tenant serves (the server's IP address, an unknown host name) means the
        default tenant. Disabled users are returned too (``enabled`` False).
        """
        ...

    def realm_for(self, domain: str) -> str:
        """The digest realm of the tenant serving ``domain`` (unknown: the default tenant's).

        Must always answer, even for a domain nobody serves and with no default tenant
        (then any fixed realm): challenges may not reveal whether a domain is served.
        """
        ...


@dataclass(frozen=True, slots=True)
class _Tenant:
    tenant_id: int
    domain: str
    realm: str


class StaticUsers:
    """An in-memory :class:`UserLookup` for tests and tools.

    Starts with one default tenant (id 1, domain ``default``, realm ``minipbx``) that answers
    for every domain no other tenant serves.
    """

    def __init__(
        self,
        users: Iterable[UserRecord] = (),
        *,
        default_domain: str = DEFAULT_DOMAIN,
        default_realm: str = DEFAULT_REALM,
    ) -> None:
        """Hold ``users``; their tenants must be added with :meth:`add_tenant` (or be 1)."""
        self._default = _Tenant(1, default_domain.lower(), default_realm)
        self._tenants: dict[str, _Tenant] = {self._default.domain: self._default}
        self._users: dict[tuple[int, str], UserRecord] = {}
        for user in users:
            self.put(user)

    def add_tenant(self, domain: str, realm: str | None = None) -> int:
        """Create a tenant serving ``domain`` (realm defaults to the domain); return its id."""
        tenant = _Tenant(len(self._tenants) + 1, domain.lower(), realm or domain.lower())
        self._tenants[tenant.domain] = tenant
        return tenant.tenant_id

    def add_user(
        self,
        extension: str,
        password: str,
        *,
        domain: str | None = None,
        display_name: str = "",
        enabled: bool = True,
    ) -> UserRecord:
        """Create a user in the tenant serving ``domain`` (default tenant when None)."""
        tenant = self._tenant(domain)
        user = UserRecord(
            user_id=len(self._users) + 1,
            tenant_id=tenant.tenant_id,
            domain=tenant.domain,
            realm=tenant.realm,
            extension=extension,
            display_name=display_name,
            ha1_md5=compute_ha1(extension, tenant.realm, password, Algorithm.MD5),
            ha1_sha256=compute_ha1(extension, tenant.realm, password, Algorithm.SHA_256),
            enabled=enabled,
        )
        self.put(user)
        return user

    def put(self, user: UserRecord) -> None:
        """Add or replace a user record."""
        self._users[(user.tenant_id, user.extension)] = user

    def remove(self, tenant_id: int, extension: str) -> None:
        """Forget a user (no error when absent)."""
        self._users.pop((tenant_id, extension), None)

    def _tenant(self, domain: str | None) -> _Tenant:
        if domain is None:
            return self._default
        return self._tenants.get(domain.lower().removesuffix("."), self._default)

    def lookup(self, domain: str, extension: str) -> UserRecord | None:
        """The user ``extension`` of the tenant serving ``domain`` (default when unknown)."""
        return self._users.get((self._tenant(domain).tenant_id, extension))

    def realm_for(self, domain: str) -> str:
        """The realm of the tenant serving ``domain`` (the default tenant's when unknown)."""
        return self._tenant(domain).realm
