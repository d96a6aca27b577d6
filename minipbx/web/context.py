"""What the web layer works with: the database, its repositories and the PBX's live state.

:class:`WebContext` is built once by the composition root (``App.start``) and handed to
:func:`minipbx.web.create_app`; tests build one over a scratch database and a
:class:`StaticLiveState`. The web layer reads live state (registrations, calls, trunk
registrations, CDR shipping) only through the :class:`LiveState` protocol, from the same
objects the PBX uses, in the same process and on the same event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

from minipbx.pbx.cdr_writer import ShippingStatus
from minipbx.pbx.location import Binding
from minipbx.pbx.trunk_registration import TrunkStatus
from minipbx.store import (
    Database,
    SqlAdminRepo,
    SqlCardRepo,
    SqlDialPlanRepo,
    SqlLedgerRepo,
    SqlRateRepo,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlTrunkRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
)
from minipbx.store.webrepos import SqlWebRepo
from minipbx.web.passwords import Passwords
from minipbx.web.ratelimit import LoginLimiter


@dataclass(frozen=True, slots=True)
class CallView:
    """A snapshot of a call in progress, as the API shows it (wall-clock times)."""

    id: str
    tenant_id: int
    domain: str
    caller: str
    callee: str
    state: str
    started_at: float
    answered_at: float | None
    route_kind: str
    trunk: str | None
    inbound_trunk: str | None
    source: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class TrunkView:
    """A trunk registration's state; ``tenant_id`` and ``name`` identify the trunk, times
    are wall-clock."""

    tenant_id: int
    name: str
    state: str
    registered_until: float | None
    last_status: int
    last_error: str
    next_try: float | None
    failures: int


class LiveState(Protocol):
    """The running PBX as the web layer sees it (all calls happen on the PBX's loop)."""

    started_at: float
    """Wall-clock time the PBX started."""

    def bindings(self) -> Iterable[Binding]:
        """Every registered contact (expired ones not yet swept included)."""
        ...

    def calls(self) -> list[CallView]:
        """Every call in progress."""
        ...

    def hangup(self, call_id: str) -> bool:
        """End a call from the PBX side (BYE or CANCEL to both legs); False if unknown."""
        ...

    def trunks(self) -> list[TrunkView]:
        """The registration state of every registering trunk."""
        ...

    async def cdr_shipping(self) -> ShippingStatus | None:
        """CDR shipping to the MySQL mirror (None: no mirror configured)."""
        ...


@dataclass(slots=True)
class StaticLiveState:
    """A :class:`LiveState` holding fixed lists (tests, and the web app without a PBX)."""

    started_at: float = field(default_factory=time.time)
    registered: list[Binding] = field(default_factory=list)
    active: list[CallView] = field(default_factory=list)
    trunk_views: list[TrunkView] = field(default_factory=list)
    shipping: ShippingStatus | None = None
    hung_up: list[str] = field(default_factory=list)

    def bindings(self) -> Iterable[Binding]:
        """The bindings given."""
        return list(self.registered)

    def calls(self) -> list[CallView]:
        """The calls given (less the ones hung up)."""
        return list(self.active)

    def hangup(self, call_id: str) -> bool:
        """Forget the call and remember that it was hung up."""
        for call in self.active:
            if call.id == call_id:
                self.active.remove(call)
                self.hung_up.append(call_id)
                return True
        return False

    def trunks(self) -> list[TrunkView]:
        """The trunk states given."""
        return list(self.trunk_views)

    async def cdr_shipping(self) -> ShippingStatus | None:
        """The shipping status given."""
        return self.shipping


def trunk_view(status: TrunkStatus, wall_offset: float) -> TrunkView:
    """A :class:`TrunkView` of a registration named ``<tenant id>/<trunk name>``.

    ``wall_offset`` turns the registration's monotonic times into wall-clock ones.
    """
    tenant, _, name = status.name.partition("/")

    def wall(at: float | None) -> float | None:
        return None if at is None else at + wall_offset

    return TrunkView(
        tenant_id=int(tenant) if tenant.isdigit() else 0,
        name=name or status.name,
        state=status.state.value,
        registered_until=wall(status.registered_until),
        last_status=status.last_status,
        last_error=status.last_error,
        next_try=wall(status.next_try),
        failures=status.failures,
    )


@dataclass
class WebContext:
    """Everything a request handler may use; one per web application.

    ``secret`` signs session cookies and CSRF tokens (32 random bytes kept in the data
    directory, so sessions survive a restart); ``data_dir`` holds voicemail audio.
    """

    db: Database
    live: LiveState
    secret: bytes
    data_dir: Path
    passwords: Passwords = field(default_factory=Passwords)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    session_seconds: float = 12 * 3600.0
    clock: Callable[[], float] = time.time
    token_touched: dict[int, float] = field(default_factory=dict)

    @cached_property
    def tenants(self) -> SqlTenantRepo:
        """Tenants by domain (create, rename, quotas)."""
        return SqlTenantRepo(self.db)

    @cached_property
    def users(self) -> SqlUserRepo:
        """Users by extension and domain."""
        return SqlUserRepo(self.db)

    @cached_property
    def user_settings(self) -> SqlUserSettingsRepo:
        """Users' service settings."""
        return SqlUserSettingsRepo(self.db)

    @cached_property
    def admins(self) -> SqlAdminRepo:
        """Admin accounts and API tokens."""
        return SqlAdminRepo(self.db)

    @cached_property
    def trunks(self) -> SqlTrunkRepo:
        """SIP trunks."""
        return SqlTrunkRepo(self.db)

    @cached_property
    def dial_plans(self) -> SqlDialPlanRepo:
        """Dial plans and their rules."""
        return SqlDialPlanRepo(self.db)

    @cached_property
    def rates(self) -> SqlRateRepo:
        """Rate tables and rates."""
        return SqlRateRepo(self.db)

    @cached_property
    def cards(self) -> SqlCardRepo:
        """Calling cards."""
        return SqlCardRepo(self.db)

    @cached_property
    def ledger(self) -> SqlLedgerRepo:
        """Balance changes of users and cards."""
        return SqlLedgerRepo(self.db)

    @cached_property
    def voicemail(self) -> SqlVoicemailRepo:
        """Voicemail messages."""
        return SqlVoicemailRepo(self.db)

    @cached_property
    def settings(self) -> SqlSettingsRepo:
        """Key/value settings (system-wide and per tenant)."""
        return SqlSettingsRepo(self.db)

    @cached_property
    def web(self) -> SqlWebRepo:
        """Tenants and users by id, voicemail and CDR searches."""
        return SqlWebRepo(self.db)
