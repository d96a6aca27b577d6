"""Routing data from the database into the router, the trunk registrations and the
trusted trunk addresses; and ``minipbx route test``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minipbx.cli import main
from minipbx.pbx.call import CallCounts
from minipbx.pbx.dialplan_router import DialPlanRouter
from minipbx.pbx.trunk_registration import TrunkAccount
from minipbx.routing_loader import RoutingLoader
from minipbx.store import Database, SqlTenantRepo, SqlUserRepo, default_url
from minipbx.store.pbxrecords import DialPlanRule
from minipbx.store.pbxrepos import SqlDialPlanRepo, SqlTrunkRepo, SqlUserSettingsRepo
from minipbx.transport.address import Address


async def _fill(db: Database) -> None:
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    user = await SqlUserRepo(db).add("100", "pw")
    await SqlUserSettingsRepo(db).update_settings(user.id, call_level=2, max_call_seconds=300)
    await SqlTrunkRepo(db).add(
        tenant.id,
        "prov",
        host="127.0.0.1",
        port=5099,
        username="acct",
        password="secret",
        register=True,
        allowed_ips="10.1.0.0/16, 192.0.2.7, 198.51.100.1:5070",
        caller_id="+441234",
        options='{"e164": "44", "uri": "tel", "identity": "rpid", "user_phone": true}',
        codecs="PCMA, G722",
    )
    plans = SqlDialPlanRepo(db)
    plan = await plans.add(tenant.id, "office")
    await plans.replace_rules(
        plan.id,
        [
            DialPlanRule(pattern="_1XX", action="local"),
            DialPlanRule(pattern="0", action="trunk", target="prov", strip=1, prepend="+44"),
            DialPlanRule(pattern="00", action="trunk", target="prov", min_level=3),
            DialPlanRule(pattern="9Q", action="local"),  # stored, but not a valid pattern
        ],
    )
    await plans.set_tenant_plan(tenant.id, plan.id)


async def test_loader_compiles_plans_trunks_and_trusted_sources(tmp_path: Path) -> None:
    db = Database(default_url(tmp_path))
    await _fill(db)
    accounts: list[list[TrunkAccount]] = []
    router = DialPlanRouter(None, lambda: 0.0, CallCounts())  # type: ignore[arg-type]
    loader = RoutingLoader(db, router, accounts.append)
    await loader.load()
    config = router.config
    (plan,) = config.plans.values()
    assert [r.pattern.text for r in plan.rules] == ["_1XX", "0", "00"]
    assert len(config.problems) == 1 and "9Q" in config.problems[0]
    trunk = config.trunks[(1, "prov")]
    assert trunk.destination == Address("udp", "127.0.0.1", 5099)
    assert trunk.auth is not None and trunk.auth.username == "acct"
    assert (trunk.e164, trunk.tel_uri, trunk.identity, trunk.user_phone) == (
        "44",
        True,
        "rpid",
        True,
    )
    assert trunk.codecs == ("PCMA", "G722")
    (registering,) = accounts[-1]
    assert registering.registrar == Address("udp", "127.0.0.1", 5099)
    assert registering.username == "acct" and registering.name == "1/prov"
    assert config.policies[(1, "100")].max_call_seconds == 300
    trusted = [
        Address("udp", "127.0.0.1", 5099),  # the trunk's own host and port
        Address("udp", "10.1.200.3", 5060),  # in 10.1.0.0/16
        Address("udp", "192.0.2.7", 1234),  # any port of a listed host
        Address("udp", "198.51.100.1", 5070),  # exactly this host and port
    ]
    for source in trusted:
        found = loader.trunk_of(source)
        assert found is not None and found.name == "prov", source
    for source in (
        Address("udp", "127.0.0.1", 5060),  # loopback phones are not the trunk
        Address("udp", "198.51.100.1", 5060),
        Address("udp", "10.2.0.1", 5060),
    ):
        assert loader.trunk_of(source) is None, source
    await db.close()


async def test_watch_reloads_after_a_change(tmp_path: Path) -> None:
    db = Database(default_url(tmp_path))
    await _fill(db)
    accounts: list[list[TrunkAccount]] = []
    router = DialPlanRouter(None, lambda: 0.0, CallCounts())  # type: ignore[arg-type]
    loader = RoutingLoader(db, router, accounts.append)
    await loader.load()
    task = asyncio.create_task(loader.watch(0.05))
    try:
        trunks = SqlTrunkRepo(db)
        (trunk,) = await trunks.list_by_tenant(1)
        await trunks.update(trunk.id, register=False)
        for _ in range(100):
            if accounts[-1] == []:
                break
            await asyncio.sleep(0.05)
        assert accounts[-1] == []  # the trunk no longer registers
    finally:
        task.cancel()
    await db.close()


def test_route_test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"

    async def fill() -> None:
        db = Database(default_url(data))
        await _fill(db)
        await db.close()

    asyncio.run(fill())
    code = main(["route", "test", "--from", "100", "--to", "02071234567", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert code == 0
    assert "dial plan 'office'" in out and "rule 2 (0): matches" in out
    assert "via trunk prov, number +442071234567, caller ID +441234" in out
    assert "cut after 300 s" in out and "warning:" in out
    main(["route", "test", "--from", "100", "--to", "0044123", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert "needs call level 3, caller has 2" in out
    code = main(["route", "test", "--from", "999", "--to", "1", "--data-dir", str(data)])
    assert code == 1 and "no user '999'" in capsys.readouterr().err
