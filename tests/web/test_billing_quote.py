"""``GET /rate-tables/{id}/quote``: the rate of a number and what a call costs."""

from __future__ import annotations

import httpx

from tests.web.conftest import API, loc


async def _table(client: httpx.AsyncClient) -> str:
    r = await client.post(f"{API}/rate-tables", json={"name": "retail", "currency": "USD"})
    assert r.status_code == 201, r.text
    base = f"{API}/rate-tables/{r.json()['id']}"
    for rate in (
        {"prefix": "49", "price_per_minute": "0.60", "connection_fee": "0.10"},
        {"prefix": "4915", "price_per_minute": "0.12", "first_increment": 30, "next_increment": 6},
        {
            "prefix": "33",
            "price_per_minute": "0.30",
            "valid_from": "2030-01-01T00:00:00+00:00",
        },
    ):
        assert (await client.post(f"{base}/rates", json=rate)).status_code == 201
    return base


async def test_quote_prices_a_call(alice: httpx.AsyncClient) -> None:
    base = await _table(alice)
    r = await alice.get(f"{base}/quote", params={"number": "+4930123", "seconds": 65})
    assert r.status_code == 200, r.text
    quote = r.json()
    assert quote["rate"]["prefix"] == "49"
    assert (quote["billed_seconds"], quote["fee"], quote["duration_cost"], quote["total"]) == (
        120,
        "0.1000",
        "1.2000",
        "1.3000",
    )
    assert (quote["currency"], quote["max_seconds"]) == ("USD", None)
    r = await alice.get(f"{base}/quote", params={"number": "4915112", "seconds": 31})
    assert (r.json()["rate"]["prefix"], r.json()["billed_seconds"]) == ("4915", 36)


async def test_quote_with_a_balance_gives_the_longest_call(alice: httpx.AsyncClient) -> None:
    base = await _table(alice)
    r = await alice.get(f"{base}/quote", params={"number": "4930", "balance": "1.30"})
    assert r.json()["max_seconds"] == 120
    r = await alice.get(f"{base}/quote", params={"number": "4930", "balance": "0.05"})
    assert r.json()["max_seconds"] == -1


async def test_unrated_numbers_and_validity_dates(alice: httpx.AsyncClient) -> None:
    base = await _table(alice)
    r = await alice.get(f"{base}/quote", params={"number": "44207"})
    assert r.status_code == 404 and "covers 44207" in r.text
    before = {"number": "3312", "at": "2029-12-31T23:59:59"}
    assert (await alice.get(f"{base}/quote", params=before)).status_code == 404
    after = {"number": "3312", "at": "2030-01-01T00:00:00Z"}
    assert (await alice.get(f"{base}/quote", params=after)).json()["rate"]["prefix"] == "33"


async def test_quote_checks_its_input_and_the_tenant(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    base = await _table(alice)
    assert loc(await alice.get(f"{base}/quote", params={"number": "49a"}))[-1] == "number"
    r = await alice.get(f"{base}/quote", params={"number": "49", "seconds": -1})
    assert loc(r)[-1] == "seconds"
    r = await alice.get(f"{base}/quote", params={"number": "49", "balance": "0.0000001"})
    assert loc(r)[-1] == "balance"
    assert (await bob.get(f"{base}/quote", params={"number": "4930"})).status_code == 404
