"""Everything call routing reads, loaded in one transaction for the PBX's memory cache.

The router must not wait on the database, so the server keeps a snapshot of dial plans,
rules, trunks and per-user call policies in memory and reloads it when one of the change
counters (``users_version``, ``trunks_version``, ``dial_plans_version``) moves:
:func:`routing_versions` is the cheap poll, :func:`load_routing_data` the reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from minipbx.pbx.followme import FollowStep, parse_followme
from minipbx.store.crud import to_record
from minipbx.store.db import Database
from minipbx.store.models import (
    DIAL_PLANS_VERSION,
    TRUNKS_VERSION,
    USERS_VERSION,
    DialPlan,
    Meta,
    Tenant,
    Trunk,
    User,
)
from minipbx.store.models import DialPlanRule as RuleRow
from minipbx.store.pbxrecords import DialPlanRule, TrunkRecord

_COUNTERS = (USERS_VERSION, TRUNKS_VERSION, DIAL_PLANS_VERSION)


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """A user's limits and routing choices as the router needs them."""

    user_id: int
    tenant_id: int
    extension: str
    dial_plan_id: int | None
    call_level: int
    max_call_seconds: int | None
    free_account: bool
    max_concurrent_calls: int | None
    forward_unconditional: str | None = None
    forward_busy: str | None = None
    forward_no_answer: str | None = None
    forward_unreachable: str | None = None
    no_answer_seconds: int = 20
    media_relay: str = "auto"  # the user's own relay setting: auto, always, never
    voicemail: bool = False  # calls it misses go to its voice mailbox
    followme_mode: str = "off"  # off, sequential, simultaneous (pbx/followme.py)
    followme: tuple[FollowStep, ...] = ()
    followme_own_first: bool = True


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A hosted tenant's call quotas (None: no limit)."""

    max_concurrent_calls: int | None = None
    max_call_seconds: int | None = None
    free_account: bool = False


@dataclass(frozen=True, slots=True)
class PlanData:
    """A dial plan with its rules in position order."""

    id: int
    tenant_id: int
    name: str
    rules: tuple[DialPlanRule, ...]


@dataclass(frozen=True, slots=True)
class RoutingData:
    """The snapshot: plans by id, each tenant's default plan, trunks, user policies."""

    versions: tuple[int, ...]
    plans: dict[int, PlanData]
    tenant_plans: dict[int, int | None]
    tenant_domains: dict[int, str]
    tenant_limits: dict[int, TenantLimits]
    trunks: tuple[TrunkRecord, ...]
    policies: dict[int, CallPolicy]  # by user id


def _steps(text: str | None) -> tuple[FollowStep, ...]:
    """A stored follow-me list (checked when written; a bad one is ignored, not fatal)."""
    try:
        return parse_followme(text or "")
    except ValueError:
        return ()


async def routing_versions(db: Database) -> tuple[int, ...]:
    """The change counters the snapshot depends on (one small read)."""
    async with db.read("read routing versions") as session:
        return await _versions(session)


async def _versions(session: AsyncSession) -> tuple[int, ...]:
    stmt = select(Meta.name, Meta.version).where(Meta.name.in_(_COUNTERS))
    rows = {name: version for name, version in (await session.execute(stmt)).all()}
    return tuple(int(rows.get(name) or 0) for name in _COUNTERS)


async def load_routing_data(db: Database) -> RoutingData:
    """Read the whole snapshot in one transaction (consistent with its versions)."""
    async with db.read("load routing data") as session:
        versions = await _versions(session)
        tenants = list(await session.scalars(select(Tenant)))
        rules: dict[int, list[DialPlanRule]] = {}
        stmt = select(RuleRow).order_by(RuleRow.dial_plan_id, RuleRow.position)
        for row in await session.scalars(stmt):
            rules.setdefault(row.dial_plan_id, []).append(to_record(DialPlanRule, row))
        plans = {
            p.id: PlanData(p.id, p.tenant_id, p.name, tuple(rules.get(p.id, ())))
            for p in await session.scalars(select(DialPlan))
        }
        trunks = tuple(to_record(TrunkRecord, row) for row in await session.scalars(select(Trunk)))
        policies = {
            u.id: CallPolicy(
                u.id,
                u.tenant_id,
                u.extension,
                u.dial_plan_id,
                u.call_level,
                u.max_call_seconds,
                u.free_account,
                u.max_concurrent_calls,
                u.forward_unconditional or None,
                u.forward_busy or None,
                u.forward_no_answer or None,
                u.forward_unreachable or None,
                u.no_answer_seconds,
                u.media_relay or "auto",
                bool(u.voicemail_enabled),
                u.followme_mode or "off",
                _steps(u.followme),
                bool(u.followme_own_first),
            )
            for u in await session.scalars(select(User))
        }
    return RoutingData(
        versions=versions,
        plans=plans,
        tenant_plans={t.id: t.dial_plan_id for t in tenants},
        tenant_domains={t.id: t.domain for t in tenants},
        tenant_limits={
            t.id: TenantLimits(t.max_concurrent_calls, t.max_call_seconds, t.free_account)
            for t in tenants
        },
        trunks=trunks,
        policies=policies,
    )
