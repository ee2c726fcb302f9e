"""market-reference-ingest against the Kraken and CoinGecko simulators and the real Kafka and
PostgreSQL: the prices it publishes, and where each edge case of the source policy
(docs/reference-prices.md) leaves the events,
`/state` and `/healthz`.

Scenarios are driven by the simulators' faults and scripted prices and awaited as events on
`ref.market_price`; CoinGecko is polled by `POST /refresh` (the scheduled poll is an hour apart
unless a test says otherwise), so nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.control import socket_path
from daemons.core.runtime import serve
from daemons.market_reference_ingest.service import MarketReferenceIngest
from daemons.market_reference_ingest.settings import MarketReferenceSettings
from simulators.coingecko import CoinGeckoSimulator
from simulators.kraken import KrakenSimulator
from tests.conftest import Stack, TopicTail, eventually

KEY = "CG-test-key-not-real"
TOPIC = "ref.market_price"
RATE = Decimal("0.998912")  # the simulator's EURe/EUR: fresh and within 1 %, so applied


@pytest.fixture
async def kraken_sim() -> AsyncIterator[KrakenSimulator]:
    sim = KrakenSimulator(heartbeat_interval_s=0.05, tick_interval_s=0.02, random_walk=False)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def cg_sim() -> AsyncIterator[CoinGeckoSimulator]:
    sim = CoinGeckoSimulator(api_key=KEY, plan="demo", cache_s=60, random_walk=False)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "coingecko.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def ws_url(sim: KrakenSimulator) -> str:
    return sim.base_url.replace("http://", "ws://") + "/v2"


async def sim_post(base_url: str, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


class Harness:
    """One running daemon, its tail on `ref.market_price` and its control socket."""

    def __init__(self, service: MarketReferenceIngest, tail: TopicTail) -> None:
        self.service = service
        self.tail = tail
        self.instance = service.producer_id.instance

    async def control(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        sock = socket_path(self.service.settings.control_dir, self.service.name)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            async with session.request(method, f"http://x{path}", json=json) as resp:
                return resp.status, await resp.json()

    async def state(self) -> dict[str, Any]:
        status, body = await self.control("GET", "/state")
        assert status == 200
        return body

    async def price(self, predicate: Callable[[Any], bool], what: str, count: int = 1) -> Any:
        """The `count`-th of this daemon's prices matching `predicate` from now on."""
        start = len(self.tail.events)

        def ours(e: Any) -> bool:
            return e.producer.instance == self.instance and predicate(e.payload)

        matches = await self.tail.wait_for(
            lambda e: ours(e) and self.tail.events.index(e) >= start, count, timeout=20, what=what
        )
        return matches[count - 1]


@pytest.fixture
def run_daemon(
    stack: Stack, control_dir: Path, kraken_sim: KrakenSimulator, cg_sim: CoinGeckoSimulator, key_file: Path, tail: Any
) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Harness]:
        options: dict[str, Any] = {
            "kafka_bootstrap": stack.kafka_bootstrap,
            "database_url": stack.database_url,
            "control_dir": control_dir,
            "instance": f"t-{uuid.uuid4().hex[:8]}",
            "kraken_ws_url": ws_url(kraken_sim),
            "coingecko_url": f"{cg_sim.base_url}/api/v3",
            "coingecko_api_key_file": key_file,
            "market_kraken_backoff_initial_s": 0.05,
            "market_kraken_backoff_max_s": 0.2,
            "market_coingecko_poll_interval_s": 3600,
            "market_coingecko_timeout_s": 1.0,
            "market_emit_interval_s": 0.2,
            "market_evaluate_interval_s": 0.02,
        }
        service = MarketReferenceIngest(MarketReferenceSettings(**(options | overrides)))
        t = await tail(TOPIC)
        task = asyncio.create_task(serve(service, handle_signals=False))
        harness = Harness(service, t)
        try:
            yield harness
        finally:
            service.request_drain()
            assert await asyncio.wait_for(task, timeout=30) == 0

    return start


def primary(p: Any) -> bool:
    return p.source == "kraken" and p.decisionable and p.coingecko_fresh


async def test_kraken_is_primary_with_side_specific_rates_and_a_steady_interval(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon() as d:
        first = (await d.price(primary, "a decisionable Kraken price")).payload
        # the startup grace: Kraken's first snapshot is awaited, no CoinGecko fallback flickers first
        ours = [e for e in d.tail.events if e.producer.instance == d.instance]
        assert ours[0].payload.source == "kraken"
        # BUY_BTC from the bid, SELL_BTC from the ask, each ÷ the checked EURe/EUR rate
        assert (first.bid, first.ask, first.mid) == (Decimal("60000.0"), Decimal("60000.1"), Decimal("60000.05"))
        assert (first.eure_basis, first.eure_eur_rate, first.eure_state) == ("sanity_checked", RATE, "ok")
        assert first.fair_rate_buy_btc == Decimal("60065.35110199")
        assert first.fair_rate_sell_btc == Decimal("60065.45121092")
        assert not first.fallback_used and first.kraken_state == "ok" and first.freshness_ms is not None
        assert first.coingecko_price == Decimal("60000.123456789") and first.coingecko_age_ms is not None
        assert first.cross_check_divergence_pct is not None and first.cross_check_divergence_pct < Decimal("0.01")

        # a change is published as it happens
        await sim_post(kraken_sim.base_url, "/_sim/prices", {"path": [["60100.0", "60100.2"]]})
        moved = await d.price(lambda p: p.bid == Decimal("60100.0"), "the moved price")
        assert moved.payload.fair_rate_buy_btc == Decimal("60165.46002050")  # 60100.0 / 0.998912, down
        assert moved.occurred_at == moved.payload.source_time  # source time in the envelope

        # and without a change, again at the steady interval, with the age growing
        same = [(await d.price(lambda p: p.bid == Decimal("60100.0"), "a steady repeat", n)).payload for n in (2, 3)]
        assert [s.fair_rate_buy_btc for s in same] == [moved.payload.fair_rate_buy_btc] * 2
        assert same[1].kraken_age_ms > moved.payload.kraken_age_ms

        state = await d.state()
        assert state["connected"] == {"kraken": True, "coingecko": True, "kafka": True}
        assert state["authoritative"] is True and state["blocked_reason"] is None
        assert state["fallback_in_use"] is False and state["source"] == "kraken"
        assert state["kraken"]["latest"]["bid"] == "60100.0" and state["kraken"]["fresh"] is True
        assert state["coingecko"]["latest"]["btc_eur"] == "60000.123456789"
        assert state["eure"] == {
            "basis": "sanity_checked",
            "rate": "0.998912",
            "state": "ok",
            "observed": "0.998912",
            "tolerance_pct": "1.0",
        }
        assert state["price"]["fair_rate_sell_btc"] == "60165.66023834"  # 60100.2 / 0.998912, up
        assert state["last_success_at"] is not None and state["counts"]["published"] >= 4
        status, health = await d.control("GET", "/healthz")
        assert status == 200 and health == {"healthy": True, "reasons": []}


async def test_a_tick_with_ask_not_above_bid_is_discarded_and_counted(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        path = [["60050.0", "60050.0"], ["60051.0", "60050.5"], ["60060.0", "60060.1"]]
        await sim_post(kraken_sim.base_url, "/_sim/prices", {"path": path})
        await d.price(lambda p: p.bid == Decimal("60060.0"), "the valid tick after the bad ones")
        assert not [
            e
            for e in d.tail.events
            if e.producer.instance == d.instance and e.payload.bid in (Decimal("60050.0"), Decimal("60051.0"))
        ]
        state = await d.state()
        assert state["kraken"]["discarded_ticks"] == {"locked": 1, "crossed": 1, "non_positive": 0}


async def test_kraken_disconnect_falls_back_to_coingecko_and_back(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        port = kraken_sim.port
        await kraken_sim.stop()  # the venue is gone, not just one socket
        fallback = (await d.price(lambda p: p.source == "coingecko", "the fallback price")).payload
        assert fallback.fallback_used and fallback.decisionable and fallback.status_reason is None
        assert fallback.kraken_state == "disconnected" and not fallback.kraken_fresh
        assert fallback.bid == Decimal("60000.0")  # Kraken's last quote, kept for the record with its age
        # 60000.123456789 widened by 0.1 % each way, ÷ 0.998912
        assert fallback.fair_rate_buy_btc == Decimal("60005.40921856")
        assert fallback.fair_rate_sell_btc == Decimal("60125.54016795")
        state = await d.state()
        assert state["fallback_in_use"] is True and state["connected"]["kraken"] is False
        assert state["kraken"]["state"] == "disconnected" and state["authoritative"] is True
        assert (await d.control("GET", "/healthz"))[0] == 200  # degraded but decisionable

        back = KrakenSimulator(port=port, heartbeat_interval_s=0.05, tick_interval_s=0.02, random_walk=False)
        await back.start()
        try:
            again = (await d.price(lambda p: p.source == "kraken", "Kraken primary again")).payload
            assert not again.fallback_used and again.decisionable and again.kraken_state == "ok"
            assert (await d.state())["fallback_in_use"] is False
        finally:
            await back.stop()


async def test_starting_without_kraken_falls_back_after_the_grace(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    await kraken_sim.stop()
    async with run_daemon(market_startup_grace_s=0.3) as d:
        p = (await d.price(lambda p: p.decisionable, "a decisionable price")).payload
        assert p.source == "coingecko" and p.fallback_used and p.kraken_state == "disconnected"
        assert p.bid is None and p.kraken_age_ms is None


async def test_a_silent_subscription_falls_back_until_data_flows(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon(market_kraken_data_timeout_s=0.5) as d:
        await sim_post(kraken_sim.base_url, "/_sim/prices", {"random_walk": True})
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "silent_subscription", "on": True})
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "disconnect", "count": 1})
        # acked, heartbeats flowing, no data: Kraken is not a price
        silent = (await d.price(lambda p: p.kraken_state == "no_data", "Kraken subscribed but silent")).payload
        assert silent.source == "coingecko" and silent.fallback_used and silent.decisionable
        state = await d.state()
        assert state["connected"]["kraken"] is True and state["fallback_in_use"] is True
        assert state["kraken"]["client"]["subscriptions"][0]["status"] == "subscribed"

        # the client's remedy (re-subscribe, then reconnect) brings data back once the venue sends it
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "silent_subscription", "on": False})
        await d.price(lambda p: p.source == "kraken" and p.decisionable, "Kraken primary again")
        errors = (await d.state())["kraken"]["client"]["errors"]
        assert errors.get("resubscribe", 0) + errors.get("silent_subscription", 0) >= 1


async def test_kraken_maintenance_falls_back_and_back(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "maintenance", "on": True})
        down = (await d.price(lambda p: p.kraken_state == "system_maintenance", "Kraken in maintenance")).payload
        assert down.source == "coingecko" and down.fallback_used and down.decisionable
        state = await d.state()
        assert state["connected"]["kraken"] is True  # connected, but not a fair price (docs/kraken.md §11)
        assert state["kraken"]["client"]["system_status"] == "maintenance" and state["fallback_in_use"] is True

        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "maintenance", "on": False})
        await d.price(lambda p: p.source == "kraken" and p.kraken_state == "ok", "Kraken online again")


async def test_fallback_disabled_is_not_decisionable(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon(market_allow_fallback=False) as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "maintenance", "on": True})
        p = (await d.price(lambda p: not p.decisionable, "not decisionable")).payload
        assert (p.source, p.status_reason, p.fair_rate_buy_btc) == (None, "FALLBACK_DISABLED", None)
        assert p.coingecko_fresh
        status, health = await d.control("GET", "/healthz")
        assert status == 503 and health["reasons"] == ["not_decisionable: FALLBACK_DISABLED"]


async def test_coingecko_timeout_keeps_the_last_price_and_says_so(
    run_daemon: Callable[..., Any], cg_sim: CoinGeckoSimulator
) -> None:
    async with run_daemon(market_coingecko_timeout_s=0.3) as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(cg_sim.base_url, "/_sim/fault", {"name": "timeout", "count": 1})
        status, body = await d.control("POST", "/refresh", {"operator": "erin"})
        assert status == 502 and body["result"] == "failed" and body["error"].startswith("timeout")
        p = (await d.price(lambda p: p.coingecko_poll_error == "timeout", "the timeout on the event")).payload
        # the previous CoinGecko price is still fresh by its own last_updated_at: still cross-checked
        assert p.decisionable and p.source == "kraken" and p.coingecko_fresh
        assert p.cross_check_divergence_pct is not None
        state = await d.state()
        assert state["connected"]["coingecko"] is False and state["coingecko"]["poll_error"] == "timeout"
        assert state["coingecko"]["client"]["errors"]["timeout"] == 1

        status, body = await d.control("POST", "/refresh")
        assert status == 200 and body["result"] == "ok" and body["coingecko"]["btc_eur"] == "60000.123456789"
        await d.price(lambda p: p.coingecko_poll_error is None, "the poll error cleared")


async def test_coingecko_429_is_honoured_by_the_poller_and_by_refresh(
    run_daemon: Callable[..., Any], cg_sim: CoinGeckoSimulator, pool: asyncpg.Pool
) -> None:
    async with run_daemon(market_coingecko_poll_interval_s=0.2, market_coingecko_rate_limit_backoff_s=120) as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(cg_sim.base_url, "/_sim/fault", {"name": "rate_limit", "count": 1})
        p = (await d.price(lambda p: p.coingecko_poll_error == "rate_limited", "the 429 on the event")).payload
        assert p.decisionable and p.source == "kraken"  # the cross-check source is throttled, not the price
        state = await eventually(lambda: _next_poll_after_429(d), what="poller rescheduled after the 429")
        retry = datetime.fromisoformat(state["coingecko"]["retry_not_before"])
        assert state["coingecko"]["rate_limited"] is True
        assert datetime.fromisoformat(state["coingecko"]["next_poll_at"]) >= retry
        assert (retry - datetime.fromisoformat(state["coingecko"]["last_poll_at"])).total_seconds() > 100

        requests = _requests(cg_sim)
        erin = f"erin-{uuid.uuid4()}"
        status, body = await d.control("POST", "/refresh", {"operator": erin, "reason": "check"})
        assert status == 429 and body["polled"] is False and body["result"] == "rate_limited"
        assert datetime.fromisoformat(body["retry_not_before"]) == retry
        assert _requests(cg_sim) == requests  # nothing was sent while cooling off
        row = await eventually(
            lambda: pool.fetchrow(
                "SELECT action, outcome FROM control_actions WHERE service = 'market-reference-ingest'"
                " AND operator = $1",
                erin,
            ),
            what="refresh audited",
        )
        assert tuple(row) == ("refresh", "rate_limited")


async def _next_poll_after_429(d: Harness) -> dict[str, Any] | None:
    state = await d.state()
    cg = state["coingecko"]
    if cg["retry_not_before"] and cg["next_poll_at"] and cg["next_poll_at"] >= cg["retry_not_before"]:
        return state
    return None


def _requests(sim: CoinGeckoSimulator) -> int:
    return sum(1 for s in sim.seen if s["kind"] == "request")


async def test_both_stale_is_not_decisionable_and_unhealthy(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator, cg_sim: CoinGeckoSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        # CoinGecko stops updating bitcoin: its last_updated_at is 20 minutes old
        await sim_post(cg_sim.base_url, "/_sim/prices", {"last_updated_at": {"bitcoin": int(time.time()) - 1200}})
        assert (await d.control("POST", "/refresh"))[0] == 200
        await d.price(lambda p: p.coingecko_state == "stale" and p.decisionable, "CoinGecko stale, Kraken fine")
        # and Kraken goes quiet: subscribed, no data
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "silent_subscription", "on": True})
        await sim_post(kraken_sim.base_url, "/_sim/fault", {"name": "disconnect", "count": 1})
        p = (await d.price(lambda p: p.status_reason == "BOTH_STALE", "both stale")).payload
        assert (p.source, p.decisionable, p.fair_rate_buy_btc, p.fair_rate_sell_btc) == (None, False, None, None)
        assert not p.kraken_fresh and not p.coingecko_fresh and p.coingecko_age_ms >= 1_200_000
        status, health = await d.control("GET", "/healthz")
        assert status == 503 and health["reasons"] == ["not_decisionable: BOTH_STALE"]
        state = await d.state()
        assert state["authoritative"] is False and state["blocked_reason"] == "BOTH_STALE"
        assert state["kraken"]["fresh"] is False and state["coingecko"]["fresh"] is False
        # steady events keep saying so
        await d.price(lambda p: p.status_reason == "BOTH_STALE", "both stale, repeated", count=2)

        # CoinGecko updates again: the fallback makes the price decisionable
        await sim_post(cg_sim.base_url, "/_sim/prices", {"unpin": ["bitcoin"]})
        assert (await d.control("POST", "/refresh"))[0] == 200
        back = (await d.price(lambda p: p.decisionable, "decisionable on the fallback")).payload
        assert back.source == "coingecko" and back.fallback_used
        assert (await d.control("GET", "/healthz"))[0] == 200


async def test_conflicting_sources_are_not_decisionable_until_they_agree(
    run_daemon: Callable[..., Any], cg_sim: CoinGeckoSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(cg_sim.base_url, "/_sim/prices", {"prices": {"bitcoin": "63000"}, "publish_now": True})
        assert (await d.control("POST", "/refresh"))[0] == 200
        p = (await d.price(lambda p: p.status_reason == "SOURCE_CONFLICT", "the conflict")).payload
        assert p.source_conflict and not p.decisionable and p.source == "kraken"
        assert p.cross_check_divergence_pct == Decimal("4.761826")  # |60000.05 - 63000| / 63000, up
        assert p.coingecko_price == Decimal("63000")
        status, health = await d.control("GET", "/healthz")
        assert status == 503 and health["reasons"] == ["not_decisionable: SOURCE_CONFLICT"]
        state = await d.state()
        assert state["conflict"]["active"] is True and state["conflict"]["since"] is not None
        assert state["blocked_reason"] == "SOURCE_CONFLICT"

        # closer but outside the clear band (0.75 %): still a conflict
        await sim_post(cg_sim.base_url, "/_sim/prices", {"prices": {"bitcoin": "60540"}, "publish_now": True})
        assert (await d.control("POST", "/refresh"))[0] == 200
        p = (await d.price(lambda p: p.coingecko_price == Decimal("60540"), "the closer price")).payload
        assert p.status_reason == "SOURCE_CONFLICT"

        await sim_post(cg_sim.base_url, "/_sim/prices", {"prices": {"bitcoin": "60100"}, "publish_now": True})
        assert (await d.control("POST", "/refresh"))[0] == 200
        agreed = (await d.price(lambda p: p.coingecko_price == Decimal("60100"), "agreement")).payload
        assert agreed.decisionable and not agreed.source_conflict and agreed.status_reason is None
        assert (await d.state())["conflict"]["active"] is False


async def test_eure_outside_tolerance_blocks_and_records_both_rates(
    run_daemon: Callable[..., Any], cg_sim: CoinGeckoSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        await sim_post(
            cg_sim.base_url, "/_sim/prices", {"prices": {"monerium-eur-money-2": "0.95"}, "publish_now": True}
        )
        assert (await d.control("POST", "/refresh"))[0] == 200
        p = (await d.price(lambda p: p.eure_state == "out_of_tolerance", "EURe off its peg")).payload
        assert (p.decisionable, p.status_reason) == (False, "EURE_EUR_OUT_OF_TOLERANCE")
        # the rate applied (exactly 1, the observed quote never moves the price) and the rate seen
        assert (p.eure_eur_rate, p.eure_basis, p.eure_eur_observed) == (1, "assumed_1_to_1", Decimal("0.95"))
        assert (p.fair_rate_buy_btc, p.fair_rate_sell_btc) == (Decimal("60000.0"), Decimal("60000.1"))
        status, health = await d.control("GET", "/healthz")
        assert status == 503 and health["reasons"] == ["not_decisionable: EURE_EUR_OUT_OF_TOLERANCE"]
        assert (await d.state())["eure"]["state"] == "out_of_tolerance"

        await sim_post(
            cg_sim.base_url, "/_sim/prices", {"prices": {"monerium-eur-money-2": "1.001"}, "publish_now": True}
        )
        assert (await d.control("POST", "/refresh"))[0] == 200
        ok = (await d.price(lambda p: p.eure_eur_observed == Decimal("1.001"), "EURe back on its peg")).payload
        assert ok.decisionable and (ok.eure_basis, ok.eure_eur_rate) == ("sanity_checked", Decimal("1.001"))


async def test_pause_stops_publishing_and_resume_publishes_the_current_price(
    run_daemon: Callable[..., Any], kraken_sim: KrakenSimulator
) -> None:
    async with run_daemon() as d:
        await d.price(primary, "a decisionable Kraken price")
        status, body = await d.control("POST", "/pause", {"operator": "erin"})
        assert status == 200 and body["paused"] is True
        await eventually(lambda: d.service.parked, what="pause in effect")
        suppressed = d.service.counts["suppressed_while_paused"]
        published = d.service.counts["published"]
        await sim_post(kraken_sim.base_url, "/_sim/prices", {"path": [["60200.0", "60200.1"]]})
        await eventually(
            lambda: d.service.current is not None and d.service.current.bid == Decimal("60200.0"),
            what="the new price evaluated",
        )
        await eventually(lambda: d.service.counts["suppressed_while_paused"] > suppressed, what="suppressed")
        state = await d.state()
        assert state["paused"] is True and state["authoritative"] is False
        assert state["kraken"]["latest"]["bid"] == "60200.0"  # still observable while paused
        assert d.service.counts["published"] == published

        assert (await d.control("POST", "/resume", {"operator": "erin"}))[0] == 200
        after = await d.price(lambda p: p.bid == Decimal("60200.0"), "the price published on resume")
        assert after.payload.decisionable


async def test_an_unreadable_key_file_leaves_kraken_pricing_and_says_why(
    run_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text(KEY)
    loose.chmod(0o644)
    async with run_daemon(coingecko_api_key_file=loose) as d:
        p = (await d.price(lambda p: p.source == "kraken" and p.decisionable, "Kraken alone")).payload
        assert p.coingecko_state == "no_data"
        status, health = await d.control("GET", "/healthz")
        assert status == 503 and "mode 0644" in health["reasons"][0]
        status, body = await d.control("POST", "/refresh")
        assert status == 409 and "CoinGecko is unavailable" in body["error"]
