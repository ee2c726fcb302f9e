"""KrakenClient against KrakenSimulator: snapshot and updates, status gate, error acks, reconnect
with re-subscribe, both clocks (silence; silent subscription) and the reconnect budget.

The client's clock is a fake that tests move, so the 5 s / 30 s clocks fire without waiting;
only the simulator's cadence and the backoff use tiny real intervals. No Kafka or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from daemons.venues.backoff import Backoff
from daemons.venues.kraken import KrakenClient, KrakenTick
from simulators.kraken import KrakenSimulator
from tests.conftest import eventually


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 18, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def sim() -> AsyncIterator[KrakenSimulator]:
    s = KrakenSimulator(heartbeat_interval_s=0.05, tick_interval_s=0.02, random_walk=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def ws_url(sim: KrakenSimulator, path: str = "/v2") -> str:
    return sim.base_url.replace("http://", "ws://") + path


def make_client(url: str, clock: FakeClock, **overrides: Any) -> KrakenClient:
    options: dict[str, Any] = {
        "silence_timeout_s": 5.0,
        "data_timeout_s": 30.0,
        "check_interval_s": 0.01,
        "ping_interval_s": None,
        "backoff": Backoff(initial_s=0.01, max_s=0.05),
        "clock": clock,
    }
    return KrakenClient(url, **(options | overrides))


async def control(sim: KrakenSimulator, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.base_url}{path}", json=body) as response:
        assert response.status == 200
        return await response.json()


async def next_tick(client: KrakenClient, ticks: AsyncIterator[KrakenTick]) -> KrakenTick:
    return await asyncio.wait_for(anext(ticks), timeout=10)


def received(sim: KrakenSimulator, method: str, channel: str | None = None) -> list[dict[str, Any]]:
    return [
        e["message"]
        for e in sim.seen
        if e["kind"] == "recv"
        and e.get("message", {}).get("method") == method
        and (channel is None or e["message"].get("params", {}).get("channel") == channel)
    ]


def ticker_status(client: KrakenClient) -> str:
    return str(client.state()["subscriptions"][0]["status"])


def connects(sim: KrakenSimulator) -> int:
    return sum(1 for e in sim.seen if e["kind"] == "connect")


async def test_snapshot_then_scripted_updates(sim: KrakenSimulator, clock: FakeClock) -> None:
    seen_by_callback: list[KrakenTick] = []
    async with make_client(ws_url(sim), clock, on_tick=seen_by_callback.append) as client:
        ticks = client.ticks()
        first = await next_tick(client, ticks)
        assert first.snapshot and first.symbol == "BTC/EUR"
        assert (first.bid, first.ask) == (Decimal("60000.0"), Decimal("60000.1"))
        assert isinstance(first.bid_qty, Decimal) and first.bid_qty > 0
        assert first.source_time is not None and first.source_time.tzinfo is not None
        assert first.received_at == clock.now

        await control(sim, "/_sim/prices", {"path": [["60001.5", "60001.6"], ["60002.0", "60002.25"]]})
        second, third = await next_tick(client, ticks), await next_tick(client, ticks)
        assert not second.snapshot
        assert (second.bid, second.ask) == (Decimal("60001.5"), Decimal("60001.6"))
        assert (third.bid, third.ask) == (Decimal("60002.0"), Decimal("60002.25"))
        assert seen_by_callback[:3] == [first, second, third]

        subscribe = received(sim, "subscribe", "ticker")[0]
        assert subscribe["params"] == {
            "channel": "ticker",
            "symbol": ["BTC/EUR"],
            "event_trigger": "bbo",
            "snapshot": True,
        }
        assert isinstance(subscribe["req_id"], int)

        state = client.state()
        assert state["connected"] and state["system_status"] == "online"
        assert not state["degraded"] and state["degraded_reason"] is None
        assert state["subscriptions"] == [
            {
                "channel": "ticker",
                "symbol": "BTC/EUR",
                "status": "subscribed",
                "req_id": subscribe["req_id"],
                "error": None,
            }
        ]
        assert state["last_data_at"]["BTC/EUR"] == clock.now.isoformat()
        assert state["connection_id"] == "13834774380200032777"
        assert client.latest == third


async def test_root_path_and_ticker_without_timestamp(clock: FakeClock) -> None:
    sim = KrakenSimulator(heartbeat_interval_s=0.05, tick_interval_s=0.02, random_walk=False, include_timestamp=False)
    await sim.start()
    try:
        async with make_client(ws_url(sim, "/"), clock) as client:
            tick = await next_tick(client, client.ticks())
            assert tick.source_time is None and tick.received_at == clock.now
    finally:
        await sim.stop()


async def test_status_not_online_degrades_and_recovers(sim: KrakenSimulator, clock: FakeClock) -> None:
    async with make_client(ws_url(sim), clock) as client:
        await next_tick(client, client.ticks())
        assert not client.state()["degraded"]

        await control(sim, "/_sim/fault", {"name": "maintenance", "on": True})
        state = await eventually(lambda: (s := client.state())["system_status"] == "maintenance" and s, timeout=10)
        assert state["degraded"] and state["degraded_reason"] == "system_maintenance"

        await control(sim, "/_sim/fault", {"name": "maintenance", "on": True, "value": "cancel_only"})
        await eventually(lambda: client.state()["degraded_reason"] == "system_cancel_only", timeout=10)

        await control(sim, "/_sim/fault", {"name": "maintenance", "on": False})
        await eventually(lambda: client.state()["system_status"] == "online", timeout=10)
        assert not client.state()["degraded"]


async def test_error_ack_marks_subscription_rejected(sim: KrakenSimulator, clock: FakeClock) -> None:
    async with make_client(ws_url(sim), clock, symbol="FOO/BAR") as client:
        state = await eventually(lambda: ticker_status(client) == "rejected" and client.state(), timeout=10)
        assert "Currency pair not supported" in state["subscriptions"][0]["error"]
        assert state["errors"]["error_ack"] == 1
        assert state["degraded"] and state["degraded_reason"] == "subscription_rejected"
        assert state["connected"]  # a rejection is not a transport failure


@pytest.mark.parametrize("mode", [None, "abort"])
async def test_disconnect_reconnects_and_resubscribes(sim: KrakenSimulator, clock: FakeClock, mode: str | None) -> None:
    async with make_client(ws_url(sim), clock) as client:
        ticks = client.ticks()
        assert (await next_tick(client, ticks)).snapshot

        await control(sim, "/_sim/fault", {"name": "disconnect_abort" if mode == "abort" else "disconnect", "count": 1})
        await eventually(lambda: connects(sim) >= 2, timeout=10)

        # a fresh snapshot on the new connection: Kraken does not restore subscriptions (docs/kraken.md §10)
        again = await next_tick(client, ticks)
        while connects(sim) < 2 or not again.snapshot:
            again = await next_tick(client, ticks)
        assert len(received(sim, "subscribe", "ticker")) >= 2
        state = await eventually(lambda: (s := client.state())["connected"] and s, timeout=10)
        assert state["connects"] >= 2 and state["reconnects_in_window"] >= 1
        expected = "connection_lost" if mode == "abort" else "closed_by_peer"
        assert state["last_disconnect_reason"].startswith(expected)
        assert state["subscriptions"][0]["status"] == "subscribed"


async def test_silence_closes_and_reconnects(sim: KrakenSimulator, clock: FakeClock) -> None:
    async with make_client(ws_url(sim), clock, silence_timeout_s=5.0) as client:
        ticks = client.ticks()
        await next_tick(client, ticks)
        # nothing unsolicited flows any more: no heartbeats and (random walk off) no updates
        await control(sim, "/_sim/fault", {"name": "stop_heartbeats", "on": True})
        assert client.evaluate() == "ok"

        clock.advance(6)
        assert client.evaluate() == "reconnect_silence"
        await eventually(lambda: connects(sim) >= 2, timeout=10)
        tick = await next_tick(client, ticks)
        assert tick.snapshot
        state = client.state()
        assert state["errors"]["silence"] == 1
        assert state["last_disconnect_reason"] == "silence"
        assert state["connected"] and not state["degraded"]


async def test_silent_subscription_resubscribes_then_reconnects(sim: KrakenSimulator, clock: FakeClock) -> None:
    await control(sim, "/_sim/fault", {"name": "silent_subscription", "on": True})
    # the silence clock is pushed out of the way: heartbeats keep flowing, only data is missing
    async with make_client(ws_url(sim), clock, silence_timeout_s=3600, data_timeout_s=30) as client:
        state = await eventually(lambda: ticker_status(client) == "subscribed" and client.state(), timeout=10)
        assert state["degraded_reason"] == "no_data"

        clock.advance(31)
        await eventually(lambda: len(received(sim, "subscribe", "ticker")) == 2, timeout=10)
        assert len(received(sim, "unsubscribe", "ticker")) == 1
        assert connects(sim) == 1  # first remedy: re-subscribe on the same connection
        assert client.state()["errors"]["resubscribe"] == 1

        await control(sim, "/_sim/fault", {"name": "silent_subscription", "on": False})
        clock.advance(31)
        tick = await next_tick(client, client.ticks())
        assert tick.snapshot and connects(sim) == 2
        state = client.state()
        assert state["errors"]["silent_subscription"] == 1
        assert state["last_disconnect_reason"] == "silent_subscription"
        assert not state["degraded"]
        assert state["backoff_attempts"] == 0  # data proved the new connection good


async def test_reconnect_budget_is_visible_in_state(clock: FakeClock) -> None:
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backoff = Backoff(initial_s=0.01, max_s=0.02, budget=3, window_s=600)
    client = make_client(f"ws://127.0.0.1:{port}/v2", clock, backoff=backoff)
    client.start()
    try:

        def waiting_for_window() -> dict[str, Any] | None:
            # out of budget: the next attempt waits for the window to free a slot
            s = client.state()
            at = s["next_attempt_at"]
            return s if at and datetime.fromisoformat(at) - clock.now > timedelta(seconds=500) else None

        state = await eventually(waiting_for_window, timeout=10)
        assert state["budget_exhausted"]
        assert state["reconnects_in_window"] > state["reconnect_budget"] == 3
        assert state["errors"]["connect_failed"] == 4  # three paced attempts, then the wait
        assert state["connects"] == 0 and state["degraded_reason"] == "disconnected"
    finally:
        await client.close()


async def test_ping_gets_pong(sim: KrakenSimulator, clock: FakeClock) -> None:
    async with make_client(ws_url(sim), clock, ping_interval_s=0.02) as client:
        state = await eventually(lambda: (s := client.state())["last_pong_at"] and s, timeout=10)
        assert state["ping_rtt_ms"] is not None
        ping = received(sim, "ping")[0]
        assert set(ping) == {"method", "req_id"} and isinstance(ping["req_id"], int)


async def test_book_checksum_verified_and_mismatch_resubscribes(sim: KrakenSimulator, clock: FakeClock) -> None:
    async with make_client(ws_url(sim), clock, book_depth=10) as client:
        await eventually(lambda: client.state()["book"]["synced"], timeout=10)
        book_sub = received(sim, "subscribe", "book")[0]
        assert book_sub["params"] == {"channel": "book", "symbol": ["BTC/EUR"], "depth": 10, "snapshot": True}

        await control(sim, "/_sim/prices", {"path": [["60010.0", "60010.3"]]})
        await eventually(lambda: client.state()["book"]["best_bid"] == "60010.0", timeout=10)
        assert "checksum_mismatch" not in client.state()["errors"]

        await control(sim, "/_sim/fault", {"name": "bad_checksum", "count": 1})
        await control(sim, "/_sim/prices", {"path": [["60011.0", "60011.2"]]})
        await eventually(lambda: len(received(sim, "subscribe", "book")) == 2, timeout=10)
        assert len(received(sim, "unsubscribe", "book")) == 1
        state = await eventually(lambda: (s := client.state())["book"]["synced"] and s, timeout=10)
        assert state["errors"]["checksum_mismatch"] == 1
        assert state["book"]["best_bid"] == "60011.0" and state["book"]["best_ask"] == "60011.2"
        assert connects(sim) == 1  # a book resync is not a reconnect


async def test_a_failing_callback_is_not_a_venue_failure(sim: KrakenSimulator, clock: FakeClock) -> None:
    def broken(_tick: KrakenTick) -> None:
        raise RuntimeError("consumer bug")

    async with make_client(ws_url(sim), clock, on_tick=broken) as client:
        ticks = client.ticks()
        await next_tick(client, ticks)
        await control(sim, "/_sim/prices", {"path": [["60003.0", "60003.1"]]})
        assert (await next_tick(client, ticks)).bid == Decimal("60003.0")
        state = client.state()
        assert state["errors"]["on_tick"] == 2
        assert state["connected"] and state["connects"] == 1
