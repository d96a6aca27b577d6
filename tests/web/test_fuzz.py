"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis).

Every operation gets valid and invalid requests (random bodies, queries and ids, and ids
of objects that exist), as a system admin and as a tenant admin; no answer may be a 5xx.
Requests run through httpx's ASGI transport on one event loop that also owns the database,
so the app sees the same conditions as under uvicorn. Bounded: a few examples per operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipbx.store import Database, default_url
from minipbx.web import StaticLiveState, WebContext, create_app
from minipbx.web.passwords import Passwords
from tests.web.conftest import make_admin

EXAMPLES = 12
BASE = "http://pbx.test"


@dataclass
class Lab:
    """The app under test, its loop, and the bearer headers of two admins."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    schema: Any
    as_root: dict[str, str]
    as_tenant: dict[str, str]

    def send(self, kwargs: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """Send a serialized schemathesis case with ``headers``."""
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "params": kwargs.get("params"),
            "headers": {**(kwargs.get("headers") or {}), **headers},
        }
        cookies = kwargs.get("cookies") or {}
        if cookies:
            request["headers"]["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif isinstance(kwargs.get("data"), str | bytes):
            request["content"] = kwargs["data"]
        elif kwargs.get("data") is not None:
            request["data"] = kwargs["data"]
        if kwargs.get("files"):
            request["files"] = kwargs["files"]
        return self.loop.run_until_complete(self.client.request(**request))


async def _fill(ctx: WebContext) -> tuple[str, str]:
    """Objects with small ids for the fuzzer to hit; the tokens of two admins."""
    await ctx.tenants.ensure_default()
    tenant = await ctx.tenants.create("a.example")
    root = await make_admin(ctx, "root", None)
    alice = await make_admin(ctx, "alice", tenant.id)
    user = await ctx.users.add("200", "pw", domain="a.example")
    await ctx.trunks.add(tenant.id, "carrier", host="sip.example.com")
    plan = await ctx.dial_plans.add(tenant.id, "main")
    table = await ctx.rates.add(tenant.id, "retail")
    await ctx.rates.add_rate(table.id, "33", "0.01")
    await ctx.cards.add(tenant.id, "55500", "1234", balance=1)
    await ctx.voicemail.add(user.id, "vm/1.wav", datetime(2026, 1, 1, tzinfo=UTC))
    await ctx.dial_plans.set_tenant_plan(tenant.id, plan.id)
    return root, alice


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    loop = asyncio.new_event_loop()
    data = Path(tmp_path_factory.mktemp("fuzz")) / "data"
    db = Database(default_url(data))
    loop.run_until_complete(db.upgrade())
    ctx = WebContext(
        db=db,
        live=StaticLiveState(),
        secret=b"f" * 32,
        data_dir=data,
        passwords=Passwords(fast=True),
    )
    root, alice = loop.run_until_complete(_fill(ctx))
    ctx.limiter.limit = 10**9  # the fuzzer logs in wrongly a lot
    app = create_app(ctx)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE
    )
    document = loop.run_until_complete(client.get("/api/v1/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    yield Lab(
        loop,
        client,
        schema,
        {"Authorization": f"Bearer {root}"},
        {"Authorization": f"Bearer {alice}"},
    )
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(db.close())
    loop.close()


def _operations(lab: Lab) -> list[Any]:
    """Every operation; deletions last, and last of all those that can remove the fuzzer's
    own credentials (its tenant, its admin account, its token)."""
    operations = [result.ok() for result in lab.schema.get_all_operations()]

    def order(operation: Any) -> tuple[bool, bool]:
        deleting = operation.method.upper() == "DELETE"
        own = operation.path.split("/")[3] in ("tenants", "admins", "tokens")
        return deleting, deleting and own

    return sorted(operations, key=order)


def _strategy(operation: Any) -> st.SearchStrategy[Any]:
    path_ids = {name: 1 for name in ("row_id", "rate_id") if f"{{{name}}}" in operation.path}
    strategies = [
        operation.as_strategy(),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    ]
    if path_ids:
        strategies.append(operation.as_strategy(path_parameters=path_ids))
    return st.one_of(strategies)


def _fuzz(lab: Lab, operation: Any, failures: list[str]) -> None:
    """Run :data:`EXAMPLES` generated requests against ``operation``."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation), as_root=st.booleans())
    def run(case: Any, as_root: bool) -> None:
        kwargs = case.as_transport_kwargs(base_url=BASE)
        response = lab.send(kwargs, lab.as_root if as_root else lab.as_tenant)
        if response.status_code >= 500:
            failures.append(
                f"{operation.label}: {response.status_code} for "
                f"{kwargs['method']} {kwargs['url']} params={kwargs.get('params')} "
                f"body={kwargs.get('json', kwargs.get('data'))!r}: {response.text[:300]}"
            )

    run()


def test_fuzz_finds_no_server_error(lab: Lab) -> None:
    operations = _operations(lab)
    assert len(operations) > 40
    failures: list[str] = []
    for operation in operations:
        _fuzz(lab, operation, failures)
    assert not failures, "\n".join(failures[:20])
