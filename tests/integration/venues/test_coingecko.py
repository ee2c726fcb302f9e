"""CoinGeckoClient against CoinGeckoSimulator: prices and key headers, unknown ids, 429 with and
without `retry-after`, timeouts and HTTP errors, staleness by `last_updated_at`, cache windows.

Client and simulator share one fake clock (the simulator's is UNIX seconds), so cool-offs and
cache windows are crossed by moving it, never by waiting. No Kafka or PostgreSQL.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemons.venues.coingecko import (
    CoinGeckoAuthError,
    CoinGeckoClient,
    CoinGeckoConnectionError,
    CoinGeckoHTTPError,
    CoinGeckoRateLimited,
    CoinGeckoTimeout,
    CoinGeckoUnknownId,
)
from simulators.coingecko import CoinGeckoSimulator

KEY = "CG-test-key-not-real"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 18, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[CoinGeckoSimulator]:
    s = CoinGeckoSimulator(api_key=KEY, plan="demo", cache_s=60, clock=clock.unix, random_walk=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "coingecko.key"
    path.write_text(KEY + "\n")
    return path


@pytest.fixture
async def client(sim: CoinGeckoSimulator, clock: FakeClock, key_file: Path) -> AsyncIterator[CoinGeckoClient]:
    c = CoinGeckoClient(f"{sim.base_url}/api/v3", api_key_file=key_file, plan="demo", clock=clock, timeout_s=5)
    yield c
    await c.close()


async def control(sim: CoinGeckoSimulator, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.base_url}{path}", json=body) as response:
        assert response.status == 200
        return await response.json()


def requests(sim: CoinGeckoSimulator) -> list[dict[str, Any]]:
    return [e for e in sim.seen if e["kind"] == "request"]


async def test_batched_quote_with_demo_key(sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock) -> None:
    quote = await client.fetch_quote()
    assert quote.btc_eur.price == Decimal("60000.123456789")
    assert quote.eure_eur is not None and quote.eure_eur.price == Decimal("0.998912")
    window_start = datetime(2026, 5, 18, 12, 0, 0, tzinfo=UTC)  # docs/coingecko.md §3: the cache window's time
    assert quote.btc_eur.last_updated_at == window_start
    assert quote.btc_eur.received_at == clock.now
    assert not client.is_stale(quote.btc_eur)

    [request] = requests(sim)
    assert request["key_header"] == "x-cg-demo-api-key"
    assert request["query"] == {
        "ids": "bitcoin,monerium-eur-money-2",
        "vs_currencies": "eur",
        "include_last_updated_at": "true",
        "precision": "full",
    }
    state = client.state()
    assert state["successes"] == 1 and state["plan"] == "demo" and state["key_configured"]
    assert state["prices"]["bitcoin"]["price"] == "60000.123456789"
    assert KEY not in str(state) and KEY not in repr(client)


async def test_pro_plan_sends_the_pro_header(clock: FakeClock) -> None:
    sim = CoinGeckoSimulator(api_key=KEY, plan="pro", clock=clock.unix, random_walk=False)
    await sim.start()
    try:
        async with CoinGeckoClient(f"{sim.base_url}/api/v3", api_key=KEY, plan="pro", clock=clock) as client:
            price = await client.btc_eur()
            assert price.price == Decimal("60000.123456789")
        assert requests(sim)[0]["key_header"] == "x-cg-pro-api-key"
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("plan", "key", "code"),
    [("demo", "CG-wrong-key", 401), ("public", None, 10002), ("pro", KEY, 10010)],
)
async def test_key_header_is_checked(
    sim: CoinGeckoSimulator, clock: FakeClock, plan: str, key: str | None, code: int
) -> None:
    base = f"{sim.base_url}/api/v3"
    async with CoinGeckoClient(base, api_key=key, plan=plan, clock=clock) as client:  # type: ignore[arg-type]
        with pytest.raises(CoinGeckoAuthError) as info:
            await client.btc_eur()
    assert info.value.status == 401 and info.value.error_code == code
    assert KEY not in str(info.value) and "CG-wrong-key" not in str(info.value)


async def test_unknown_id_is_an_error(sim: CoinGeckoSimulator, client: CoinGeckoClient) -> None:
    with pytest.raises(CoinGeckoUnknownId) as info:
        await client.simple_price(["no-such-coin"])
    assert info.value.missing == ("no-such-coin",)
    assert client.state()["errors"]["unknown_id"] == 1


async def test_missing_eure_degrades_but_missing_bitcoin_raises(
    sim: CoinGeckoSimulator, client: CoinGeckoClient
) -> None:
    await control(sim, "/_sim/prices", {"remove": ["monerium-eur-money-2"]})
    quote = await client.fetch_quote()
    assert quote.btc_eur.price == Decimal("60000.123456789")
    assert quote.eure_eur is None and quote.eure_error and "monerium-eur-money-2" in quote.eure_error

    await control(sim, "/_sim/prices", {"remove": ["bitcoin"]})
    with pytest.raises(CoinGeckoUnknownId):
        await client.fetch_quote()


async def test_429_with_retry_after_seconds(sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock) -> None:
    await control(sim, "/_sim/fault", {"name": "rate_limit", "on": True, "value": {"retry_after": "7"}})
    with pytest.raises(CoinGeckoRateLimited) as info:
        await client.btc_eur()
    assert info.value.source == "retry-after"
    assert client.retry_not_before == clock.now + timedelta(seconds=7)
    assert client.state()["rate_limited"]
    await control(sim, "/_sim/fault", {"name": "rate_limit", "on": False})

    sent = len(requests(sim))
    clock.advance(6)
    with pytest.raises(CoinGeckoRateLimited) as info:
        await client.btc_eur()
    assert info.value.source == "cooling_off"
    assert len(requests(sim)) == sent  # refused locally: the quota is not burned further

    clock.advance(2)
    assert (await client.btc_eur()).price == Decimal("60000.123456789")
    assert client.retry_not_before is None


async def test_429_with_retry_after_http_date(
    sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock
) -> None:
    until = (clock.now + timedelta(seconds=120)).replace(microsecond=0)
    header = {"retry_after": format_datetime(until, usegmt=True)}
    await control(sim, "/_sim/fault", {"name": "rate_limit", "on": True, "value": header})
    with pytest.raises(CoinGeckoRateLimited):
        await client.btc_eur()
    assert client.retry_not_before == until


async def test_429_without_retry_after_waits_at_least_60s(
    sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock
) -> None:
    await control(sim, "/_sim/fault", {"name": "rate_limit", "count": 1})
    with pytest.raises(CoinGeckoRateLimited) as info:
        await client.btc_eur()
    assert info.value.source == "default"
    assert client.retry_not_before is not None
    assert client.retry_not_before - clock.now >= timedelta(seconds=60)
    clock.advance(59)
    with pytest.raises(CoinGeckoRateLimited):
        await client.btc_eur()
    clock.advance(2)
    await client.btc_eur()


async def test_429_in_a_200_body_is_a_rate_limit(
    sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock
) -> None:
    await control(sim, "/_sim/fault", {"name": "rate_limit_body", "count": 1})
    with pytest.raises(CoinGeckoRateLimited):
        await client.btc_eur()
    assert client.retry_not_before is not None and client.retry_not_before > clock.now


async def test_timeout_raises_typed_error(sim: CoinGeckoSimulator, key_file: Path, clock: FakeClock) -> None:
    await control(sim, "/_sim/fault", {"name": "timeout", "count": 1})
    base = f"{sim.base_url}/api/v3"
    async with CoinGeckoClient(base, api_key_file=key_file, plan="demo", clock=clock, timeout_s=0.2) as client:
        with pytest.raises(CoinGeckoTimeout):
            await client.btc_eur()
        assert client.state()["errors"]["timeout"] == 1
        assert (await client.btc_eur()).price == Decimal("60000.123456789")  # the next poll is normal


async def test_http_errors_raise_typed_errors(sim: CoinGeckoSimulator, client: CoinGeckoClient) -> None:
    await control(sim, "/_sim/fault", {"name": "http_500", "count": 1})
    with pytest.raises(CoinGeckoHTTPError) as info:
        await client.btc_eur()
    assert info.value.status == 500
    await control(sim, "/_sim/fault", {"name": "http_status", "on": True, "value": 503})
    with pytest.raises(CoinGeckoHTTPError) as info:
        await client.btc_eur()
    assert info.value.status == 503 and info.value.error_code == 503
    assert client.state()["errors"]["http"] == 2


async def test_connection_refused(clock: FakeClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with CoinGeckoClient(f"http://127.0.0.1:{port}/api/v3", clock=clock) as client:
        with pytest.raises(CoinGeckoConnectionError):
            await client.btc_eur()


async def test_stale_by_last_updated_at(sim: CoinGeckoSimulator, client: CoinGeckoClient, clock: FakeClock) -> None:
    # CoinGecko keeps answering, but this coin's aggregate stopped updating an hour ago
    an_hour_ago = int((clock.now - timedelta(hours=1)).timestamp())
    await control(sim, "/_sim/prices", {"last_updated_at": {"bitcoin": an_hour_ago}})
    quote = await client.fetch_quote()
    assert quote.btc_eur.last_updated_at == datetime.fromtimestamp(an_hour_ago, UTC)
    assert client.is_stale(quote.btc_eur)
    assert quote.eure_eur is not None and not client.is_stale(quote.eure_eur)
    prices = client.state()["prices"]
    assert prices["bitcoin"]["stale"] and prices["bitcoin"]["age_s"] == 3600
    assert not prices["monerium-eur-money-2"]["stale"]


async def test_cache_window_holds_price_and_time(key_file: Path, clock: FakeClock) -> None:
    # the simulator on its own clock, moved through its control route
    sim = CoinGeckoSimulator(api_key=KEY, cache_s=60, random_walk=False)
    await sim.start()
    try:
        # one second into a window, so real time passing during the test cannot cross it
        await control(sim, "/_sim/clock", {"set": 1_779_000_001})
        async with CoinGeckoClient(f"{sim.base_url}/api/v3", api_key_file=key_file, plan="demo") as client:
            first = await client.btc_eur()
            assert first.last_updated_at == datetime.fromtimestamp(1_779_000_000, UTC)
            await control(sim, "/_sim/prices", {"prices": {"bitcoin": "61000.5"}})
            again = await client.btc_eur()
            assert (again.price, again.last_updated_at) == (first.price, first.last_updated_at)

            await control(sim, "/_sim/clock", {"advance": 60})
            moved = await client.btc_eur()
            assert moved.price == Decimal("61000.5")
            assert moved.last_updated_at - first.last_updated_at == timedelta(seconds=60)
    finally:
        await sim.stop()
