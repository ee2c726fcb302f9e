"""inventory-sync against the NEAR RPC and POA bridge simulators (sharing one simulated verifier)
and the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.bus import EventProducer
from daemons.core.control import socket_path
from daemons.core.events import Envelope, LiquidityAction, Producer, TradeResult, new_event, now_utc
from daemons.core.runtime import serve
from daemons.core.settings import CoreSettings
from daemons.inventory_sync.service import InventorySync, InventorySyncSettings
from simulators.near_rpc import NearRpcSimulator
from simulators.poa_bridge import PoaBridgeSimulator, SimClock
from simulators.verifier import VerifierState
from tests.conftest import Stack, TopicTail, eventually

E = 10**18
CHAIN = "eth:100"
PRODUCER = Producer(service="test", instance="inventory-test")
SNAPSHOTS = "state.intent_inventory"


@dataclass
class Venues:
    verifier: VerifierState
    rpc: NearRpcSimulator
    bridge: PoaBridgeSimulator
    account: str

    def deposit(self, tx: str, amount: int, *, credit_after_s: float = 60) -> None:
        """A transfer lands on the account's EURe deposit address; the bridge credits it once the
        test advances its clock past `credit_after_s`."""
        self.bridge.add_deposit(self.account, CHAIN, EURE_ID, amount, tx_hash=tx, credit_after_s=credit_after_s)


@pytest.fixture
async def venues() -> AsyncIterator[Venues]:
    verifier = VerifierState()
    rpc = NearRpcSimulator(verifier)
    bridge = PoaBridgeSimulator(
        verifier.deposit, clock=SimClock(frozen=True), chain=verifier.chain
    )  # credits only when a test says
    await rpc.start()
    await bridge.start()
    yield Venues(verifier, rpc, bridge, f"solver-{uuid.uuid4().hex[:10]}.near")
    await bridge.stop()
    await rpc.stop()


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="inventory-test")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def since() -> datetime:
    # liquidity actions of earlier tests (and earlier runs on this stack) stay out of this one
    return now_utc()


def _settings(stack: Stack, control_dir: Path, venues: Venues, since: datetime, **extra: Any) -> InventorySyncSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "database_url": stack.database_url,
        "control_dir": control_dir,
        "near_rpc_url": venues.rpc.base_url,
        "poa_bridge_url": venues.bridge.base_url + "/rpc",
        "signer_account_id": venues.account,
        "inventory_group": f"inventory-test-{uuid.uuid4()}",
        "inventory_liquidity_since": since,
        "inventory_rpc_timeout_s": 2.0,
        "inventory_bridge_timeout_s": 2.0,
        # no interval readings unless a test asks: every snapshot below has a cause the test made
        "inventory_interval_s": 600.0,
        "inventory_fresh_ms": 900_000,
        # one reading per cause, so each snapshot names the cause the test made (the default gap
        # merges causes arriving within 3.5 s; the burst test sets its own)
        "inventory_min_gap_ms": 200,
        # readings this close together need more than the production budget (36/min, burst 5);
        # the simulated node still limits the client (120/min), and one test keeps the defaults
        "near_rpc_budget_per_min": 110,
        "near_rpc_budget_burst": 20,
    }
    return InventorySyncSettings(**(values | extra))


class Running:
    def __init__(self, service: InventorySync) -> None:
        self.service = service
        self.task = asyncio.create_task(serve(service, handle_signals=False))

    async def stop(self) -> None:
        self.service.request_drain()
        assert await asyncio.wait_for(self.task, timeout=30) == 0

    async def control(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        sock = socket_path(self.service.settings.control_dir, self.service.name)
        await eventually(sock.exists, what="control socket")
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            async with session.request(method, f"http://x{path}", json=json) as resp:
                return resp.status, await resp.json()


@pytest.fixture
async def start(
    stack: Stack, control_dir: Path, venues: Venues, since: datetime
) -> AsyncIterator[Callable[..., Running]]:
    running: list[Running] = []

    def make(**extra: Any) -> Running:
        r = Running(InventorySync(_settings(stack, control_dir, venues, since, **extra)))
        running.append(r)
        return r

    yield make
    for r in running:
        if not r.task.done():
            await r.stop()


def mine(venues: Venues, check: Callable[[Any], bool] = lambda p: True) -> Callable[[Envelope[Any]], bool]:
    return lambda e: e.payload.account_id == venues.account and check(e.payload)


def asset(payload: Any, asset_id: str) -> Any:
    return next(a for a in payload.assets if a.asset_id == asset_id)


async def publish_action(producer: EventProducer, **fields: Any) -> Envelope[Any]:
    event = new_event(LiquidityAction(**fields), producer=PRODUCER, pair="BTC/EURe")
    await producer.publish(event)
    return event


async def latest(t: TopicTail, venues: Venues, check: Callable[[Any], bool], what: str) -> Any:
    try:
        return (await t.wait_for(mine(venues, check), what=what))[-1].payload
    except AssertionError:
        for e in t.events:
            if e.payload.account_id == venues.account:  # what was published instead, for the failure report
                print("snapshot", e.payload.trigger, e.payload.stale, e.payload.pending, e.payload.assets)
        raise


# --- tests -------------------------------------------------------------------------------------


async def test_credited_is_spendable_and_pending_movements_are_reported_apart(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    venues.verifier.deposit(venues.account, NBTC_ID, 5_000_000)
    venues.verifier.deposit(venues.account, EURE_ID, 1000 * E)
    venues.deposit("0x" + "e1" * 32, 40 * E)  # seen by the bridge, not recorded by anyone
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    funding = str(uuid.uuid4())
    await publish_action(
        producer,
        liquidity_action_id=funding,
        kind="funding",
        status="notified",
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=25 * E,
        tx_hash="0x" + "F1" * 32,
    )
    # a withdrawal not yet burned (still inside the credited balance) and one already burned
    await publish_action(
        producer,
        liquidity_action_id=str(uuid.uuid4()),
        kind="withdrawal",
        status="requested",
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=100 * E,
        address="0xdest",
    )
    await publish_action(
        producer,
        liquidity_action_id=str(uuid.uuid4()),
        kind="withdrawal",
        status="pending",
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=50 * E,
        tx_hash="BurnTx1",
    )
    # started after the actions: its first snapshot waits for the liquidity history, so every
    # snapshot must hold them (one started before could read and publish before they exist)
    svc = start()
    # the burned withdrawal stays reserved until a reading whose head block came after the burn
    # was reported (a `final` read trails the chain): wait for that covering reading
    snap = await latest(
        t,
        venues,
        lambda p: p.pending_complete and len(p.pending) == 4 and asset(p, EURE_ID).reserved_out == 100 * E,
        "all four movements, the burn covered",
    )
    assert all(asset(e.payload, EURE_ID).reserved_out >= 100 * E for e in t.events if mine(venues)(e))
    btc, eure = asset(snap, NBTC_ID), asset(snap, EURE_ID)
    assert (btc.credited, btc.spendable, btc.pending_in, btc.pending_out, btc.decimals) == (
        5_000_000,
        5_000_000,
        0,
        0,
        8,
    )
    assert (eure.credited, eure.reserved_out, eure.spendable) == (1000 * E, 100 * E, 900 * E)
    assert (eure.pending_in, eure.pending_out) == (65 * E, 150 * E)
    sources = sorted((m.direction, m.source, m.amount) for m in snap.pending)
    assert sources == [
        ("in", "bridge", 40 * E),
        ("in", "liquidity_action", 25 * E),
        ("out", "liquidity_action", 50 * E),
        ("out", "liquidity_action", 100 * E),
    ]
    assert next(m for m in snap.pending if m.source == "liquidity_action" and m.direction == "in").tx_hash == (
        "0x" + "f1" * 32
    )  # normalised: the bridge's list and the record name it the same way
    assert snap.stale is False and snap.age_ms is not None and snap.block_height and snap.synced_at
    assert snap.reconciliation_status == "awaiting_credit"
    assert [(r.liquidity_action_id, r.status) for r in snap.reconciliation] == [(funding, "awaiting_credit")]
    status, health = await svc.control("GET", "/healthz")
    assert status == 200 and health["healthy"] is True
    status, state = await svc.control("GET", "/state")
    assert state["authoritative"] is True and state["stale"] is False and state["connected"]["verifier"] is True
    assert state["liquidity_history"]["caught_up"] is True and state["last_sync"]["block_height"] == snap.block_height
    assert {a["asset_id"]: a["spendable"] for a in state["inventory"]} == {NBTC_ID: "5000000", EURE_ID: str(900 * E)}


async def test_a_deposit_seen_externally_stays_pending_until_credited(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 10 * E)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start()
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    venues.deposit("0xabc1", 7 * E)  # nobody recorded this one
    venues.deposit("0xabc2", 4 * E)  # liquidity-manager recorded this one and saw it at the bridge
    recorded = str(uuid.uuid4())
    await publish_action(
        producer,
        liquidity_action_id=recorded,
        kind="funding",
        status="pending",
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=4 * E,
        tx_hash="0xABC2",
    )
    await latest(t, venues, lambda p: p.trigger == "liquidity_action", "the recorded funding")
    for _ in range(2):  # as many readings as you like: seen, not credited, not spendable, each counted once
        status, answer = await svc.control("POST", "/refresh", {"operator": "erin"})
        assert status == 200 and answer["synced"] is True
        snap = await latest(t, venues, lambda p, i=answer["inventory_id"]: p.inventory_id == i, "refresh snapshot")
        eure = asset(snap, EURE_ID)
        assert (eure.credited, eure.spendable, eure.pending_in) == (10 * E, 10 * E, 11 * E)
        assert sorted((m.source, m.tx_hash, m.status) for m in snap.pending) == [
            ("bridge", "0xabc1", "PENDING"),
            ("liquidity_action", "0xabc2", "pending"),
        ]
    venues.bridge.advance(60)  # the bridge credits both into the verifier
    await venues.verifier.settled()  # a `final` read sees the credit only once its block is final
    status, answer = await svc.control("POST", "/refresh")
    snap = await latest(t, venues, lambda p, i=answer["inventory_id"]: p.inventory_id == i, "after the credit")
    eure = asset(snap, EURE_ID)
    # credited, so spendable and no longer pending, before liquidity-manager has even said so
    assert (eure.credited, eure.spendable, eure.pending_in, snap.pending) == (21 * E, 21 * E, 0, [])


async def test_credited_lower_than_expected_is_flagged_with_both_figures(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 3 * E)
    venues.deposit("0xbbb2", 20 * E, credit_after_s=60)  # recorded as 20; 20 arrives
    venues.deposit("0xaaa1", 90 * E, credit_after_s=120)  # the operator will record 100; 90 arrives
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start()
    short, exact = str(uuid.uuid4()), str(uuid.uuid4())
    for action_id, tx, amount in ((short, "0xaaa1", 100 * E), (exact, "0xbbb2", 20 * E)):
        await publish_action(
            producer,
            liquidity_action_id=action_id,
            kind="funding",
            status="pending",
            asset_id=EURE_ID,
            chain=CHAIN,
            amount=amount,
            tx_hash=tx,
        )
    snap = await latest(t, venues, lambda p: len(p.reconciliation) == 2, "both awaiting")
    assert {r.status for r in snap.reconciliation} == {"awaiting_credit"}
    assert asset(snap, EURE_ID).pending_in == 120 * E and asset(snap, EURE_ID).spendable == 3 * E

    def resolved(action_id: str) -> Callable[[Any], bool]:
        return lambda p: any(
            r.liquidity_action_id == action_id and r.status != "awaiting_credit" for r in p.reconciliation
        )

    venues.bridge.advance(60)  # the exact one is credited
    await venues.verifier.settled()
    await svc.control("POST", "/refresh")  # sees the credit; compares on the reading that follows at once
    snap = await latest(t, venues, resolved(exact), "the exact credit reconciled")
    ok = next(r for r in snap.reconciliation if r.liquidity_action_id == exact)
    assert (ok.status, ok.baseline, ok.expected, ok.credited, ok.shortfall) == ("ok", 3 * E, 23 * E, 23 * E, None)
    # the reading that compares follows the one that saw the credit; that one is the refresh's,
    # or an earlier one already owed (then the refresh names the comparing reading)
    assert snap.trigger in ("credit_observed", "refresh") and snap.reconciliation_status == "awaiting_credit"

    venues.bridge.advance(60)  # now the short one
    await venues.verifier.settled()
    await svc.control("POST", "/refresh")
    snap = await latest(t, venues, resolved(short), "the short credit reconciled")
    flagged = next(r for r in snap.reconciliation if r.liquidity_action_id == short)
    assert flagged.status == "credited_lower_than_expected" and flagged.amount == 100 * E
    assert (flagged.baseline, flagged.expected, flagged.credited, flagged.shortfall) == (
        23 * E,
        123 * E,
        113 * E,
        10 * E,
    )
    assert flagged.window_action_ids == [short] and flagged.credited_read_at and flagged.baseline_read_at
    assert snap.reconciliation_status == "credited_lower_than_expected"
    assert asset(snap, EURE_ID).credited == 113 * E and asset(snap, EURE_ID).pending_in == 0
    status, state = await svc.control("GET", "/state")
    assert state["reconciliation_status"] == "credited_lower_than_expected"
    assert {r["liquidity_action_id"]: r["status"] for r in state["reconciliation"]} == {
        short: "credited_lower_than_expected",
        exact: "ok",
    }


async def test_stale_when_the_verifier_stops_answering_and_recovery(
    venues: Venues, start: Callable[..., Running], tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 5 * E)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start(inventory_interval_s=0.1, inventory_fresh_ms=400)
    fresh = await latest(t, venues, lambda p: not p.stale, "a fresh snapshot")
    with capture_logs() as logs:
        venues.rpc.faults.set("http_500", on=True)
        venues.verifier.deposit(venues.account, EURE_ID, 1 * E)  # a change nobody can read now
        stale = await latest(t, venues, lambda p: p.stale, "a stale snapshot")
        # the last reading, kept and marked stale: nothing invented, nothing dropped
        assert stale.trigger == "staleness_change" and stale.assets and asset(stale, EURE_ID).credited == 5 * E
        assert stale.sync_id is not None and stale.age_ms is not None and stale.age_ms > 400
        assert stale.freshness_bound_ms == 400 and stale.stale_since is not None and stale.synced_at is not None
        assert stale.stale_since > stale.synced_at and "HTTP 500" in (stale.stale_reason or "")
        status, health = await svc.control("GET", "/healthz")
        assert status == 503 and any(r.startswith("inventory_stale") for r in health["reasons"])
        status, state = await svc.control("GET", "/state")
        assert state["stale"] is True and state["authoritative"] is False and state["connected"]["verifier"] is False
        assert state["stale_since"] and "HTTP 500" in state["stale_reason"] and state["consecutive_failures"] >= 1
        status, err = await svc.control("POST", "/refresh")
        assert status == 502 and "HTTP 500" in err["error"]
        venues.rpc.faults.set("http_500", on=False)
        back = await latest(
            t,
            venues,
            lambda p: not p.stale and p.sync_id != fresh.sync_id and asset(p, EURE_ID).credited == 6 * E,
            "recovered",
        )
        assert back.age_ms is not None and back.stale_reason is None
        status, health = await svc.control("GET", "/healthz")
        assert status == 200
    events = [e["event"] for e in logs]
    assert "verifier_unavailable" in events and "inventory_stale" in events
    assert "inventory_fresh" in events and "verifier_recovered" in events
    assert events.index("inventory_stale") < events.index("inventory_fresh")


async def test_a_429_storm_degrades_to_visible_staleness_and_recovers_by_itself(
    venues: Venues, start: Callable[..., Running], tail: Any
) -> None:
    """The node answers 429 with Retry-After to everything for a while: inventory goes stale,
    saying why, the client honours the Retry-After instead of hammering, and readings come back
    by themselves when the storm ends. Production budget and bounds, only the interval short."""
    venues.verifier.deposit(venues.account, EURE_ID, 5 * E)
    await venues.verifier.settled()
    t = await tail(SNAPSHOTS)
    svc = start(
        inventory_interval_s=1.0,
        inventory_fresh_ms=4000,
        inventory_min_gap_ms=3_500,
        near_rpc_budget_per_min=36,
        near_rpc_budget_burst=5,
    )
    await latest(t, venues, lambda p: not p.stale, "a fresh snapshot")
    venues.rpc.faults.set("http_429", on=True, value=2)  # Retry-After: 2 s
    stale = await latest(t, venues, lambda p: p.stale, "stale in the storm")
    assert "429" in (stale.stale_reason or "") or "rate-limited" in (stale.stale_reason or "")
    status, state = await svc.control("GET", "/state")
    usage = state["near_rpc"]["endpoints"][0]
    assert usage["rate_limited_total"] >= 1 and state["stale"] is True
    asked_in_storm = venues.rpc.rate_limited
    venues.rpc.faults.set("http_429", on=False)
    await venues.verifier.settled()
    back = await latest(t, venues, lambda p: not p.stale and p.synced_at > stale.synced_at, "recovered")
    assert asset(back, EURE_ID).credited == 5 * E
    # the storm lasted ~4 s (the stale bound): with Retry-After honoured, a handful of tries, not
    # one per interval per second of backoff-free retrying
    assert asked_in_storm <= 8


async def test_verifier_down_from_the_start_publishes_nothing_until_a_real_reading(
    venues: Venues, start: Callable[..., Running], tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 5 * E)
    venues.rpc.faults.set("http_500", on=True)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start(inventory_interval_s=0.1, inventory_fresh_ms=400)
    await eventually(
        lambda: svc.service.stale is True and svc.service.consecutive_failures >= 2,
        what="stale verdict, readings failing",
    )
    status, health = await svc.control("GET", "/healthz")
    assert status == 503 and "no successful verifier reading since start" in health["reasons"][0]
    status, state = await svc.control("GET", "/state")
    assert state["stale"] is True and state["age_ms"] is None and state["inventory"] == []
    assert state["stale_since"] and "HTTP 500" in state["stale_reason"]
    venues.rpc.faults.set("http_500", on=False)
    snap = await latest(t, venues, lambda p: not p.stale, "first reading")
    assert asset(snap, EURE_ID).credited == 5 * E
    # nothing was published for this account while there was no reading: no invented balances
    assert all(not e.payload.stale for e in t.events if e.payload.account_id == venues.account)


async def test_a_settled_trade_of_ours_triggers_a_reading_at_once(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 50 * E)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start()  # the interval is ten minutes: only the trade can explain a new reading
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    venues.verifier.withdraw(venues.account, EURE_ID, 8 * E)  # what the settled answer gave away
    await venues.verifier.settled("optimistic")  # the relay reports a fill once its block is produced
    quote_id = str(uuid.uuid4())

    def result(status: str) -> Envelope[Any]:
        return new_event(
            TradeResult(execution_id=str(uuid.uuid4()), command_id=str(uuid.uuid4()), quote_id=quote_id, status=status),
            producer=PRODUCER,
            pair="BTC/EURe",
        )  # type: ignore[arg-type]

    ack, settled = result("acknowledged"), result("settled")
    await producer.publish_many([ack, settled])
    [event] = await t.wait_for(mine(venues, lambda p: p.trigger == "trade_settled"), what="the re-sync")
    assert event.causation_id == settled.event_id and event.correlation_id == quote_id
    assert asset(event.payload, EURE_ID).credited == 42 * E
    assert not [e for e in t.events if e.causation_id == ack.event_id]
    assert svc.service.counts["trades_settled"] == 1


async def test_a_snapshot_covers_a_settlement_only_from_a_block_that_holds_it(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    """A fill, its settled result, then readings: a `final` read trails the chain head, so the
    first reading after the result can predate the fill. Judged from the chain's side: every
    snapshot whose `results_through` passes the result was read at a block at or past the one the
    fill executed in, and shows the balance the verifier holds after it."""
    venues.verifier.deposit(venues.account, EURE_ID, 50 * E)
    await venues.verifier.settled()
    t = await tail(SNAPSHOTS)
    svc = start(inventory_min_gap_ms=0, inventory_finality_wait_ms=0)  # as eager as it gets
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    venues.verifier.withdraw(venues.account, EURE_ID, 8 * E)  # what the settled answer gave away
    fill_height = venues.verifier.chain.pending_height()
    await venues.verifier.settled("optimistic")  # the relay reports a fill once its block is produced
    settled = new_event(
        TradeResult(
            execution_id=str(uuid.uuid4()), command_id=str(uuid.uuid4()), quote_id=str(uuid.uuid4()), status="settled"
        ),
        producer=PRODUCER,
        pair="BTC/EURe",
    )
    placed = await producer.publish(settled)

    def covers(p: Any) -> bool:
        return p.results_through is not None and p.results_through.get(placed.partition, 0) > placed.offset

    snap = await latest(t, venues, covers, "a snapshot covering the settlement")
    assert asset(snap, EURE_ID).credited == 42 * E and snap.block_height >= fill_height
    mine_ = [e.payload for e in t.events if mine(venues)(e)]
    for p in mine_:
        if covers(p):
            assert p.block_height >= fill_height and asset(p, EURE_ID).credited == 42 * E
        # heights never go back
    heights = [p.block_height for p in mine_]
    assert heights == sorted(heights)
    # the eager reading right after the result read `final` before it reached the head: it did not
    # cover the settlement, whatever balance it saw
    assert svc.service.counts["finality_short"] >= 1
    assert [covers(p) for p in mine_ if p.trigger == "trade_settled"] == [False]


async def test_an_expiry_by_relay_silence_makes_the_next_reading_a_covering_one(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    """An answer expired for want of a quote_status may have executed unseen (a relay that broke
    its delivery guarantee): its hold waits for a snapshot that covers the expiry. No reading of
    its own (one per unpicked answer would spend the NEAR RPC budget): the next interval's reading
    is a covering one, and holds the fill the relay never reported."""
    venues.verifier.deposit(venues.account, EURE_ID, 50 * E)
    await venues.verifier.settled()
    t = await tail(SNAPSHOTS)
    svc = start(inventory_interval_s=1.0)
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    venues.verifier.withdraw(venues.account, EURE_ID, 8 * E)  # the fill nobody reported
    await venues.verifier.settled("optimistic")

    def expired(resolved_by: str) -> Envelope[Any]:
        return new_event(
            TradeResult(
                execution_id=str(uuid.uuid4()),
                command_id=str(uuid.uuid4()),
                quote_id=str(uuid.uuid4()),
                status="expired",
                resolved_by=resolved_by,  # type: ignore[arg-type]
            ),
            producer=PRODUCER,
            pair="BTC/EURe",
        )

    await producer.publish(expired("is_nonce_used"))  # proven on chain: nothing owed
    silent = expired("no_quote_status")
    placed = await producer.publish(silent)

    def covers(p: Any) -> bool:
        return p.results_through is not None and p.results_through.get(placed.partition, 0) > placed.offset

    snap = await latest(t, venues, covers, "a snapshot covering the silent expiry")
    assert asset(snap, EURE_ID).credited == 42 * E and snap.trigger in ("finality", "interval")
    assert not [e for e in t.events if e.causation_id == silent.event_id]  # no reading of its own
    assert svc.service.counts["silent_expiries"] == 1


async def test_a_burst_of_settlements_inside_the_gap_is_served_by_one_reading(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, 50 * E)
    t = await tail(SNAPSHOTS)
    # a gap far longer than the burst takes to arrive (one publish, one batched fetch)
    svc = start(inventory_min_gap_ms=3_000)
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    # and nothing else asked or in progress (the history's own reading may still be owed)
    await eventually(
        lambda: svc.service._trigger is None and svc.service.counts["readings"] == sum(svc.service.triggers.values()),
        what="idle",
    )
    readings = svc.service.counts["readings"]
    burst = [
        new_event(
            TradeResult(
                execution_id=str(uuid.uuid4()),
                command_id=str(uuid.uuid4()),
                quote_id=str(uuid.uuid4()),
                status="settled",
            ),
            producer=PRODUCER,
            pair="BTC/EURe",
        )
        for _ in range(5)
    ]
    await producer.publish_many(burst)  # type: ignore[arg-type]
    await eventually(lambda: svc.service.counts["trades_settled"] == 5, what="every settlement seen")
    # the first settlement's reading waits out the gap, and the other four join it
    [event] = await t.wait_for(mine(venues, lambda p: p.trigger == "trade_settled"), what="the one reading")
    assert svc.service.counts["readings"] == readings + 1
    assert event.causation_id in {e.event_id for e in burst}


async def test_pause_refuses_refresh_and_one_reading_serves_what_arrived_meanwhile(
    venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any, pool: asyncpg.Pool
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, E)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start()
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    operator = f"erin-{uuid.uuid4()}"
    status, body = await svc.control("POST", "/pause", {"operator": operator, "reason": "venue maintenance"})
    assert status == 200 and body["paused"] is True
    await eventually(lambda: svc.service.parked, what="pause in effect")
    readings = svc.service.counts["readings"]
    status, err = await svc.control("POST", "/refresh", {"operator": operator})
    assert status == 409 and "paused" in err["error"]
    trade = new_event(
        TradeResult(execution_id="x", command_id="c", quote_id="q", status="settled"),
        producer=PRODUCER,
        pair="BTC/EURe",
    )
    placed = await producer.publish(trade)
    await eventually(lambda: svc.service.counts["trades_settled"] == 1, what="trade seen while paused")
    assert svc.service.counts["readings"] == readings  # seen, but nothing asked of the venues
    status, state = await svc.control("GET", "/state")
    assert state["paused"] is True and state["pause_effective"] is True and state["next_reading_in_ms"] is None
    resumed_at = datetime.now(UTC)
    status, _ = await svc.control("POST", "/resume", {"operator": operator})

    def after_resume(p: Any) -> bool:
        return p.synced_at is not None and p.synced_at > resumed_at

    [event] = await t.wait_for(mine(venues, after_resume), what="the owed reading")
    # one reading serves every cause that arrived meanwhile; the first since the last reading
    # names it (a `history_caught_up` still owed when the pause came, else the trade)
    assert event.payload.trigger in ("trade_settled", "history_caught_up")
    assert event.causation_id == (trade.event_id if event.payload.trigger == "trade_settled" else None)

    def covers(p: Any) -> bool:
        return p.results_through is not None and p.results_through.get(placed.partition, 0) > placed.offset

    await latest(t, venues, covers, "a reading that holds the trade")
    status, answer = await svc.control("POST", "/refresh", {"operator": operator, "reason": "check"})
    assert status == 200 and answer["synced"] and answer["published"]

    async def audited() -> bool:
        return (
            await pool.fetchval(
                "SELECT count(*) FROM control_actions WHERE service = 'inventory-sync' AND operator = $1", operator
            )
            == 3
        )

    await eventually(audited, what="all three audited")  # the refused refresh changed nothing: not among them
    rows = await pool.fetch(
        "SELECT action, outcome FROM control_actions WHERE service = 'inventory-sync' AND operator = $1 ORDER BY id",
        operator,
    )
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("pause", "paused"),
        ("resume", "resumed"),
        ("refresh", "synced"),
    ]
    status, spec = await svc.control("GET", "/openapi.json")
    assert {"/refresh", "/pause", "/resume", "/state", "/healthz"} <= set(spec["paths"])


async def test_a_pause_asked_during_a_reading_takes_effect_when_the_reading_ends(
    venues: Venues, start: Callable[..., Running], tail: Any
) -> None:
    # the pause's wake-up arrives while the loop awaits the venue: it must not be lost (the loop
    # then waited for the next staleness deadline, 15 min here, before parking)
    venues.verifier.deposit(venues.account, EURE_ID, E)
    await venues.verifier.settled()  # what was credited before the start is final
    t = await tail(SNAPSHOTS)
    svc = start()
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    await eventually(
        lambda: (
            svc.service._trigger is None
            and svc.service.cover_pending is None
            and svc.service.counts["readings"] + svc.service.counts["reading_failures"]
            == sum(svc.service.triggers.values())
        ),
        what="no reading owed or under way",
    )
    venues.rpc.faults.set("timeout", count=1)  # the next reading waits until the client gives up (2 s)
    operator = f"erin-{uuid.uuid4()}"
    refresh = asyncio.create_task(svc.control("POST", "/refresh", {"operator": operator}))
    await eventually(lambda: not venues.rpc.faults.snapshot()["counted"], what="a reading held by the venue")
    status, body = await svc.control("POST", "/pause", {"operator": operator, "reason": "venue maintenance"})
    assert status == 200 and body["paused"] is True and not svc.service.parked
    status, err = await refresh
    assert status == 502 and "verifier reading failed" in err["error"]
    await eventually(lambda: svc.service.parked, what="pause in effect after the reading")
    status, state = await svc.control("GET", "/state")
    assert state["pause_effective"] is True


async def test_a_restart_rebuilds_pending_from_the_liquidity_history(
    stack: Stack, venues: Venues, start: Callable[..., Running], producer: EventProducer, tail: Any, pool: asyncpg.Pool
) -> None:
    venues.verifier.deposit(venues.account, EURE_ID, E)
    group = f"inventory-test-{uuid.uuid4()}"
    await venues.verifier.settled()
    t = await tail(SNAPSHOTS)
    first = start(inventory_group=group)
    await latest(t, venues, lambda p: p.pending_complete, "history read")
    action = str(uuid.uuid4())
    await publish_action(
        producer,
        liquidity_action_id=action,
        kind="funding",
        status="notified",
        asset_id=EURE_ID,
        chain=CHAIN,
        amount=3 * E,
        tx_hash="0x77",
    )
    junk = f"not an event {uuid.uuid4()}".encode()
    await producer.publish_raw("ops.liquidity_action", junk)
    await latest(t, venues, lambda p: asset(p, EURE_ID).pending_in == 3 * E, "pending seen")
    row = await eventually(
        lambda: pool.fetchrow("SELECT * FROM dead_letters WHERE value = $1", junk), what="the junk dead-lettered"
    )
    assert row["service"] == "inventory-sync" and row["topic"] == "ops.liquidity_action"
    await first.stop()
    t = await tail(SNAPSHOTS)  # only what the second process publishes
    # same group: its committed offsets are past the action, yet the history is read again
    second = start(inventory_group=group)
    snap = await latest(t, venues, lambda p: p.pending_complete, "rebuilt after restart")
    assert asset(snap, EURE_ID).pending_in == 3 * E
    assert [m.liquidity_action_id for m in snap.pending] == [action]
    await publish_action(producer, liquidity_action_id=action, kind="funding", status="failed", reason="bridge said so")
    snap = await latest(t, venues, lambda p: p.trigger == "liquidity_action" and not p.pending, "failed: not pending")
    assert asset(snap, EURE_ID).pending_in == 0
    assert second.service.counts["liquidity_events"] >= 2


async def test_without_a_signer_account_it_stays_up_and_says_why(
    stack: Stack, control_dir: Path, venues: Venues, since: datetime
) -> None:
    svc = Running(InventorySync(_settings(stack, control_dir, venues, since, signer_account_id=None)))
    try:
        status, health = await svc.control("GET", "/healthz")
        assert status == 503 and health["reasons"] == ["blocked: QL_SIGNER_ACCOUNT_ID is not set"]
        status, err = await svc.control("POST", "/refresh")
        assert status == 409
    finally:
        await svc.stop()
