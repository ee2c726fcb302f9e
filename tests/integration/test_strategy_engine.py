"""strategy-engine through the real Kafka (and PostgreSQL for the audit): demand, prices and
inventory in; the right decisions and commands out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest

from daemons.core.acls import ALLOW, GRANTS, GROUP, LITERAL, READ, TOPIC, WRITE
from daemons.core.assets import EURE_ID, NBTC_ID
from daemons.core.bus import EventConsumer, EventProducer, Placed
from daemons.core.ceilings import CeilingsError
from daemons.core.control import socket_path
from daemons.core.events import (
    AssetInventory,
    Envelope,
    IntentInventory,
    MarketPrice,
    Producer,
    SwapDemand,
    TradeResult,
    new_event,
    now_utc,
)
from daemons.core.runtime import serve
from daemons.core.settings import CoreSettings
from daemons.strategy_engine.service import StrategyEngine, StrategySettings
from tests.conftest import TEST_STACK_DIR, Stack, eventually, kafka_options

SRC = Producer(service="test", instance="t")
PAIR = "BTC/EURe"


def market_price(
    *, freshness_ms: int = 100, decisionable: bool = True, bid: str = "59990", ask: str = "60010"
) -> MarketPrice:
    now = now_utc()
    return MarketPrice(
        source="kraken",
        fallback_used=False,
        fair_rate_buy_btc=Decimal(bid),
        fair_rate_sell_btc=Decimal(ask),
        source_time=now,
        freshness_ms=freshness_ms,
        eure_eur_rate=Decimal(1),
        eure_basis="assumed_1_to_1",
        bid=Decimal(bid),
        ask=Decimal(ask),
        mid=(Decimal(bid) + Decimal(ask)) / 2,
        decisionable=decisionable,
        status_reason=None if decisionable else "SOURCE_CONFLICT",
    )


def inventory(
    btc: int, eure: int, *, stale: bool = False, block_height: int | None = None, account_id: str = "solver.near"
) -> IntentInventory:
    return IntentInventory(
        inventory_id=str(uuid.uuid4()),
        account_id=account_id,
        assets=[
            AssetInventory(asset_id=NBTC_ID, decimals=8, spendable=btc),
            AssetInventory(asset_id=EURE_ID, decimals=18, spendable=eure),
        ],
        synced_at=now_utc(),
        age_ms=10,
        stale=stale,
        block_height=block_height,
    )


def demand(direction: str = "SELL_BTC", eure_in: int = 3 * 10**18) -> SwapDemand:
    asset_in, asset_out = (EURE_ID, NBTC_ID) if direction == "SELL_BTC" else (NBTC_ID, EURE_ID)
    fixed = eure_in if direction == "SELL_BTC" else 5000  # about 3 EURe either way
    return SwapDemand(
        quote_id=str(uuid.uuid4()),
        direction=direction,
        asset_in=asset_in,  # type: ignore[arg-type]
        asset_out=asset_out,
        asset_in_decimals=18 if asset_in == EURE_ID else 8,
        asset_out_decimals=8 if asset_out == NBTC_ID else 18,
        fixed_side="exact_amount_in",
        fixed_amount=fixed,
        min_deadline_ms=60_000,
        received_at=now_utc(),
    )


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="strategy-test")
    await p.start()
    yield p
    await p.stop()


async def start_engine(
    stack: Stack, control_dir: Path, group: str | None = None, **options: Any
) -> tuple[StrategyEngine, asyncio.Task[int]]:
    """`group`: the consumer groups' name (`group` and `group.results`), a fresh one by default;
    `options`: further settings (a login, say)."""
    settings = StrategySettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        control_dir=control_dir,
        instance=f"t-{uuid.uuid4().hex[:6]}",
        **options,
    )
    service = StrategyEngine(settings)
    # a fresh consumer group per test unless given, so each test starts from the topics' end
    group = group or f"strategy-test-{uuid.uuid4()}"
    service.consumer = EventConsumer(settings, group, service.consumer.topics, on_assigned=service._assigned)
    service.results_consumer = EventConsumer(
        settings, f"{group}.results", service.results_consumer.topics, on_assigned=service._assigned, batched=True
    )
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(
        lambda: all(c.assignment() and c.positioned.is_set() for c in (service.consumer, service.results_consumer)),
        what="strategy's two groups assigned and positioned",
    )
    # reservations rebuilt from earlier tests' commands on the shared bus would leak into this
    # test; the rebuild has its own test below
    service.reservations.clear()
    return service, task


@pytest.fixture
async def engine(stack: Stack, control_dir: Path) -> AsyncIterator[StrategyEngine]:
    service, task = await start_engine(stack, control_dir)
    yield service
    service.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


async def control(service: StrategyEngine, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    sock = socket_path(service.settings.control_dir, service.name)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        async with session.request(method, f"http://x{path}", json=body) as resp:
            return resp.status, await resp.json()


async def feed(producer: EventProducer, engine: StrategyEngine, *payloads: Any) -> None:
    """Publish inputs and wait until the engine holds them."""
    for p in payloads:
        event = new_event(p, producer=SRC, pair=PAIR)
        await producer.publish(event)
        if isinstance(p, MarketPrice):
            await eventually(lambda e=event: engine.price is not None and engine.price.event_id == e.event_id)
        elif isinstance(p, IntentInventory):
            await eventually(lambda e=event: engine.inventory is not None and engine.inventory.event_id == e.event_id)


async def ask(producer: EventProducer, tail: Any, d: SwapDemand) -> tuple[Any, list[Any]]:
    t = await tail("decision.trade_decision", "cmd.execute_trade")
    await producer.publish(new_event(d, producer=SRC, pair=PAIR, correlation_id=d.quote_id))
    [decision] = await t.wait_for(
        lambda e: e.event_type == "decision.trade_decision" and e.payload.quote_id == d.quote_id
    )
    commands = [e for e in t.events if e.event_type == "cmd.execute_trade" and e.payload.quote_id == d.quote_id]
    if decision.payload.decision == "execute" and not commands:
        commands = await t.wait_for(lambda e: e.event_type == "cmd.execute_trade" and e.payload.quote_id == d.quote_id)
    return decision, commands


async def arm(engine: StrategyEngine) -> None:
    status, body = await control(engine, "POST", "/arm", {"operator": "ops", "reason": "integration test"})
    assert status == 200 and body["armed"] is True


async def test_starts_disarmed_and_records_the_decision_without_a_command(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    assert engine.arm.armed is False
    await feed(producer, engine, market_price(), inventory(10**6, 10**20))
    decision, commands = await ask(producer, tail, demand())
    p = decision.payload
    assert (p.decision, p.decision_reason, p.armed, commands) == ("reject", "DISARMED", False, [])
    assert p.gross_edge_pct >= Decimal("2.0") and p.implied_rate > p.reference_rate
    assert p.price_event_id == engine.price.event_id and p.inventory_snapshot_id  # type: ignore[union-attr]
    assert p.inventory_snapshot["credited"] == str(10**6) and p.request_received_at and p.decided_at


async def test_armed_all_gates_pass_emits_decision_and_command(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    await feed(producer, engine, market_price(), inventory(10**6, 10**20))
    await arm(engine)
    d = demand("BUY_BTC")
    decision, [command] = await ask(producer, tail, d)
    assert decision.payload.decision_reason == "EXECUTE"
    c = command.payload
    assert (c.quote_id, c.decision_id, c.direction, c.asset_out) == (
        d.quote_id,
        decision.payload.decision_id,
        "BUY_BTC",
        EURE_ID,
    )
    assert c.amount_in == 5000 and c.amount_out == decision.payload.amount_out
    assert c.answer_by == d.received_at + timedelta(milliseconds=2000)
    assert command.correlation_id == d.quote_id and command.causation_id == decision.event_id
    _, state = await control(engine, "GET", "/state")
    assert state["reserved"][EURE_ID] == str(c.amount_out) and state["reason_counters"]["EXECUTE"] == 1


async def test_reservations_stop_over_commitment_until_a_result_releases_them(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    await feed(producer, engine, market_price(), inventory(10**6, 10**20))
    await arm(engine)
    first, [cmd] = await ask(producer, tail, demand())
    need = cmd.payload.amount_out
    await feed(producer, engine, inventory(need, 0))  # exactly enough for one answer
    second, _ = await ask(producer, tail, demand())
    assert second.payload.decision_reason == "INSUFFICIENT_INVENTORY"
    assert second.payload.inventory_snapshot["reserved"] == str(need)
    rejected = TradeResult(
        execution_id=str(uuid.uuid4()),
        command_id=cmd.payload.command_id,
        quote_id=cmd.payload.quote_id,
        status="rejected",
        reason="invalid signature",
    )
    await producer.publish(new_event(rejected, producer=SRC, pair=PAIR))
    await eventually(lambda: not engine.reservations.live, what="reservation released")
    third, [_] = await ask(producer, tail, demand())
    assert third.payload.decision_reason == "EXECUTE"


async def test_a_snapshot_read_at_an_older_block_never_replaces_the_one_held(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    """A restarted inventory-sync on a lagging node publishes a snapshot from a block behind the
    one held: it may predate fills whose reservations were released, so decisions keep using the
    held one (here the older one would show nothing to give)."""
    # an account of this run's own: a snapshot an earlier run left at a later block must not
    # count as held (the engine starts from the topic's last snapshot)
    account = f"solver-{uuid.uuid4().hex[:8]}.near"
    held = inventory(10**6, 10**20, block_height=1_000, account_id=account)
    await feed(producer, engine, market_price(), held)
    await arm(engine)
    await producer.publish(new_event(inventory(0, 0, block_height=997, account_id=account), producer=SRC, pair=PAIR))
    await eventually(lambda: engine.inventory_behind == 1, what="the older snapshot read and set aside")
    decision, [_] = await ask(producer, tail, demand())
    assert decision.payload.decision_reason == "EXECUTE"
    assert decision.payload.inventory_snapshot_id == held.inventory_id
    newer = inventory(0, 0, block_height=1_001, account_id=account)
    await feed(producer, engine, newer)  # a later block is taken, whatever it shows
    decision, _ = await ask(producer, tail, demand())
    assert decision.payload.decision_reason == "INSUFFICIENT_INVENTORY"


async def test_a_failure_reading_results_stops_the_daemon(
    stack: Stack, control_dir: Path, producer: EventProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results are read by a loop of their own: an error there must fail the daemon (exit 1, and
    systemd restarts it), never leave it deciding on reservations it can no longer release."""
    service, task = await start_engine(stack, control_dir)

    def broken(event: Any) -> None:
        raise RuntimeError("results loop broken by the test")

    monkeypatch.setattr(service.reserving, "on_result", broken)
    result = TradeResult(
        execution_id=str(uuid.uuid4()),
        command_id=str(uuid.uuid4()),
        quote_id=str(uuid.uuid4()),
        status="rejected",
        reason="test",
    )
    await producer.publish(new_event(result, producer=SRC, pair=PAIR))
    assert await asyncio.wait_for(task, timeout=30) == 1


async def test_stale_price_pending_deposit_and_one_side_affordable(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    await arm(engine)
    await feed(producer, engine, market_price(freshness_ms=60_000), inventory(10**6, 10**20))
    decision, commands = await ask(producer, tail, demand())
    assert decision.payload.decision_reason == "PRICE_STALE" and commands == []
    await feed(producer, engine, market_price(decisionable=False))
    decision, _ = await ask(producer, tail, demand())
    assert decision.payload.decision_reason == "PRICE_NOT_DECISIONABLE"
    await feed(producer, engine, market_price(), inventory(10**6, 0))
    sell, sell_cmds = await ask(producer, tail, demand("SELL_BTC"))
    buy, buy_cmds = await ask(producer, tail, demand("BUY_BTC"))
    assert (sell.payload.decision_reason, len(sell_cmds)) == ("EXECUTE", 1)
    assert (buy.payload.decision_reason, buy_cmds) == ("INSUFFICIENT_INVENTORY", [])


async def test_threshold_and_limits_validated_and_audited(engine: StrategyEngine) -> None:
    for body in (
        {"threshold_pct": "-1"},
        {"threshold_pct": "500"},
        {"threshold_pct": 2.5},
        {"threshold_pct": "abc"},
        {"threshold_pct": "3", "target_edge_pct": "2"},
    ):
        status, _ = await control(engine, "PUT", "/threshold", body)
        assert 400 <= status < 500, body
    for body in (
        {"min_notional_eure": "10", "max_notional_eure": "5"},
        {"answer_window_ms": 5000},
        {},
        {"max_notional_eure": "0"},
    ):
        status, _ = await control(engine, "PUT", "/limits", body)
        assert 400 <= status < 500, body
    _, view = await control(engine, "GET", "/limits")
    assert (view["threshold_pct"], view["max_notional_eure"]) == ("2.0", "5")  # nothing changed
    status, view = await control(engine, "PUT", "/threshold", {"threshold_pct": "3", "operator": "ops"})
    assert status == 200 and view["threshold_pct"] == "3" and view["target_edge_pct"] == "3"
    status, view = await control(engine, "PUT", "/limits", {"max_notional_eure": "2", "answer_window_ms": 1500})
    assert status == 200 and view["max_notional_eure"] == "2" and view["answer_window_ms"] == 1500


async def test_no_control_api_goes_beyond_the_root_owned_ceilings(engine: StrategyEngine) -> None:
    """config/ceilings.local.toml: edge floor 1.0 %, 500 EURe per answer, prices 10 s, inventory 30 s."""
    for path, body, ceiling in (
        ("/threshold", {"threshold_pct": "0.9", "target_edge_pct": "1.5"}, "min_edge_pct 1.0"),
        ("/limits", {"max_notional_eure": "501"}, "max_notional_eure_per_answer 500"),
        ("/limits", {"price_max_age_ms": 10_001}, "max_price_age_ms 10000"),
        ("/limits", {"inventory_max_age_ms": 30_001}, "max_inventory_age_ms 30000"),
    ):
        status, body_out = await control(engine, "PUT", path, {**body, "operator": "ops"})
        assert status == 403 and ceiling in body_out["error"], (path, body, body_out)
    _, view = await control(engine, "GET", "/limits")
    assert (view["threshold_pct"], view["max_notional_eure"]) == ("2.0", "5")  # nothing changed
    status, view = await control(engine, "PUT", "/limits", {"max_notional_eure": "500", "price_max_age_ms": 10_000})
    assert status == 200 and view["max_notional_eure"] == "500"  # up to a ceiling, and lowering, are allowed
    status, view = await control(engine, "PUT", "/threshold", {"threshold_pct": "1.0"})
    assert status == 200 and view["threshold_pct"] == "1.0"


def test_settings_beyond_the_ceilings_refuse_the_start(control_dir: Path) -> None:
    settings = StrategySettings(
        control_dir=control_dir, strategy_threshold_pct=Decimal("0.5"), strategy_target_edge_pct=Decimal("0.5")
    )
    with pytest.raises(CeilingsError, match="threshold_pct 0.5 is below the ceiling min_edge_pct 1.0"):
        StrategyEngine(settings)


async def test_a_restart_comes_up_disarmed(stack: Stack, control_dir: Path) -> None:
    settings = StrategySettings(
        kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url, control_dir=control_dir
    )
    assert StrategyEngine(settings).arm.armed is False


async def test_a_restart_rebuilds_reservations_of_answers_still_live(
    stack: Stack, control_dir: Path, engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    await feed(producer, engine, market_price(), inventory(10**6, 10**20))
    await arm(engine)
    _, [live] = await ask(producer, tail, demand())
    _, [done] = await ask(producer, tail, demand())
    settled = TradeResult(
        execution_id=str(uuid.uuid4()),
        command_id=done.payload.command_id,
        quote_id=done.payload.quote_id,
        status="expired",
    )
    await producer.publish(new_event(settled, producer=SRC, pair=PAIR))
    await eventually(lambda: done.payload.command_id not in engine.reservations.live, what="expired released")

    again = StrategyEngine(
        StrategySettings(
            kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url, control_dir=control_dir / "again"
        )
    )
    await again.reserving.rebuild()
    await again.producer.stop()
    assert live.payload.command_id in again.reservations.live
    assert done.payload.command_id not in again.reservations.live
    assert again.arm.armed is False


async def test_every_gate_reachable_through_kafka_names_its_reason(
    engine: StrategyEngine, producer: EventProducer, tail: Any
) -> None:
    """Each gate the bus can reach, one request each (EDGE_BELOW_THRESHOLD cannot be configured:
    the target edge is never below the threshold; NO_PRICE/NO_INVENTORY need empty topics: both
    are covered by the unit tests of the pipeline)."""
    await feed(producer, engine, market_price(), inventory(10**6, 10**20))
    await arm(engine)

    async def reason(d: SwapDemand) -> str:
        decision, commands = await ask(producer, tail, d)
        assert (decision.payload.decision == "execute") == bool(commands)
        return decision.payload.decision_reason

    old = demand().model_copy(update={"received_at": now_utc() - timedelta(seconds=10)})
    assert await reason(old) == "REQUEST_TOO_OLD"
    assert await reason(demand().model_copy(update={"min_deadline_ms": 10**6})) == "DEADLINE_TOO_LONG"
    assert await reason(demand(eure_in=10**17)) == "NOTIONAL_BELOW_MIN"
    assert await reason(demand(eure_in=50 * 10**18)) == "NOTIONAL_ABOVE_CAP"
    repeated = demand()
    assert await reason(repeated) == "EXECUTE"
    assert await reason(repeated.model_copy(update={"received_at": now_utc()})) == "REPEATED_QUOTE_ID"

    await feed(producer, engine, inventory(10**6, 10**20, stale=True))
    assert await reason(demand()) == "INVENTORY_STALE"
    pending = inventory(10, 0).model_copy(
        update={
            "assets": [
                AssetInventory(asset_id=NBTC_ID, decimals=8, spendable=10, pending_in=10**6),
                AssetInventory(asset_id=EURE_ID, decimals=18, spendable=0),
            ]
        }
    )
    await feed(producer, engine, pending)
    assert await reason(demand()) == "PENDING_DEPOSIT_NOT_CREDITED"

    await feed(producer, engine, inventory(10**6, 10**20))
    status, _ = await control(engine, "POST", "/pause", {"operator": "ops"})
    assert status == 200
    assert await reason(demand()) == "PAUSED"
    await control(engine, "POST", "/resume", {"operator": "ops"})
    engine.audit_watch.impaired = "history-writer not reachable"  # what the strict-mode watcher sets
    assert await reason(demand()) == "AUDIT_IMPAIRED"
    engine.audit_watch.impaired = None
    # a fresh price: on a loaded machine the first one may have aged past its bound by now
    await feed(producer, engine, market_price())
    assert await reason(demand()) == "EXECUTE"


async def test_strict_mode_watches_history_writer_and_reports_audit_impaired(stack: Stack, control_dir: Path) -> None:
    settings = StrategySettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=stack.database_url,
        control_dir=control_dir,
        strict_audit=True,
    )
    service = StrategyEngine(settings)
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        # no history-writer socket in this control dir: audit history cannot be vouched for
        await eventually(lambda: service.audit_impaired, what="audit impaired detected")
        assert "history-writer not reachable" in service.audit_impaired  # type: ignore[operator]
        status, health = await control(service, "GET", "/healthz")
        assert status == 503 and any(r.startswith("audit_impaired") for r in health["reasons"])
    finally:
        service.request_drain()
        await asyncio.wait_for(task, timeout=30)


# --- the broker refusing the strategy's publishes ---------------------------------------------------

PRINCIPAL = "User:strategy-engine"
OUTPUTS = GRANTS["strategy-engine"].writes  # decision.trade_decision, cmd.execute_trade


async def acl_call(stack: Stack, request: Any) -> Any:
    """One ACL request to the broker as the harness's admin (aiokafka's admin client has none:
    see daemons/core/acls.py)."""
    client = AIOKafkaClient(bootstrap_servers=stack.kafka_bootstrap, client_id="strategy-test-acls", **kafka_options())
    await client.bootstrap()
    try:
        return await client.send(client.get_random_node(), request)
    finally:
        await client.close()


class StrategyAcls:
    """The strategy-engine principal's ACLs at the test broker, changed by a test."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def held(self, rtype: int, name: str, operation: int) -> bool:
        """Whether the broker's authorizer holds the ALLOW (DescribeAcls is answered from it)."""
        response = await acl_call(
            self.stack, DescribeAclsRequest(rtype, name, LITERAL, PRINCIPAL, "*", operation, ALLOW)
        )
        assert response.error_code == 0, response
        return bool(response.resources)

    async def set(self, rtype: int, name: str, operation: int, allowed: bool) -> None:
        request = CreateAclsRequest if allowed else DeleteAclsRequest
        response = await acl_call(self.stack, request(rtype, name, LITERAL, PRINCIPAL, "*", operation, ALLOW))
        answers = response.creation_responses if allowed else response.filter_responses
        assert [a[0] for a in answers] == [0], answers

        async def applied() -> bool:  # the authorizer has it once the broker replayed the record
            return await self.held(rtype, name, operation) is allowed

        await eventually(applied, what=f"{PRINCIPAL} {'granted' if allowed else 'refused'} {operation} on {name}")

    async def refuse_writes(self) -> None:
        for topic in OUTPUTS:
            await self.set(TOPIC, topic, WRITE, False)

    async def accept_writes(self) -> None:
        for topic in OUTPUTS:
            await self.set(TOPIC, topic, WRITE, True)


@pytest.fixture
async def as_strategy_engine(stack: Stack) -> AsyncIterator[tuple[dict[str, Any], StrategyAcls]]:
    """`start_engine` options that run it as its own principal on a fresh pair of groups (granted
    here, as daemons/core/acls.py grants its real ones), and the principal's ACLs. Whatever a test
    took away is given back at the end."""
    group = f"strategy-test-{uuid.uuid4()}"
    acls = StrategyAcls(stack)
    groups = (group, f"{group}.results")
    for g in groups:
        await acls.set(GROUP, g, READ, True)
    # each commit reaches the broker at once: the group's committed offset is what the engine decided
    options = {
        "group": group,
        "kafka_username": "strategy-engine",
        "kafka_password_file": TEST_STACK_DIR / "kafka-credentials" / "strategy-engine",
        "kafka_commit_interval_ms": 0,
    }
    try:
        yield options, acls
    finally:
        await acls.accept_writes()
        for g in groups:
            await acls.set(GROUP, g, READ, False)


def record_sends(engine: StrategyEngine, monkeypatch: pytest.MonkeyPatch) -> list[Envelope[Any]]:
    """Every event the engine hands its producer, first sends and resends alike (each then sent
    as ever)."""
    sends: list[Envelope[Any]] = []
    send = engine.producer.send

    async def recorded(event: Envelope[Any], key: str | None = None) -> asyncio.Future[Any]:
        sends.append(event)
        return await send(event, key=key)

    monkeypatch.setattr(engine.producer, "send", recorded)
    return sends


Committed = Callable[[str, TopicPartition], Awaitable[int]]


@pytest.fixture
async def committed(stack: Stack) -> AsyncIterator[Committed]:
    """Asks the broker for a group's committed offset on a partition (-1: none), as the admin."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=stack.kafka_bootstrap, client_id="strategy-test-offsets", **kafka_options()
    )
    await admin.start()

    async def offset(group: str, tp: TopicPartition) -> int:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
        return offsets[tp].offset if tp in offsets else -1

    yield offset
    await admin.close()


async def request(producer: EventProducer, d: SwapDemand) -> tuple[Placed, TopicPartition]:
    placed = await producer.publish(new_event(d, producer=SRC, pair=PAIR, correlation_id=d.quote_id))
    return placed, TopicPartition("norm.swap_demand", placed.partition)


def sent_for(sends: list[Envelope[Any]], topic: str, quote_id: str) -> list[Envelope[Any]]:
    return [e for e in sends if e.event_type == topic and e.payload.quote_id == quote_id]


async def test_a_refused_publish_is_sent_again_and_its_request_committed_only_once_acknowledged(
    stack: Stack,
    control_dir: Path,
    producer: EventProducer,
    tail: Any,
    committed: Committed,
    as_strategy_engine: tuple[dict[str, Any], StrategyAcls],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refuses the strategy's writes (its WRITE ACLs taken away mid-run): the request's
    offset stays uncommitted while the same decision is sent again; once the broker takes them,
    the same decision and command land, and only then is the request committed."""
    options, acls = as_strategy_engine
    group = options["group"]
    engine, task = await start_engine(stack, control_dir, **options)
    try:
        sends = record_sends(engine, monkeypatch)
        await feed(producer, engine, market_price(), inventory(10**6, 10**20))
        await arm(engine)
        _, [_] = await ask(producer, tail, demand())  # accepted: the producer has sent to both topics

        await acls.refuse_writes()
        t = await tail(*OUTPUTS)
        d = demand()
        placed, tp = await request(producer, d)

        async def resent_uncommitted() -> bool:
            # (a) at every look while refused: the request is not committed
            assert await committed(group, tp) <= placed.offset, "committed while its decision is refused"
            return len(sent_for(sends, "decision.trade_decision", d.quote_id)) >= 3

        await eventually(resent_uncommitted, what="the refused decision sent again, twice")
        assert task.done() is False  # refused, not failed
        _, health = await control(engine, "GET", "/healthz")
        assert any(r.startswith("kafka_unavailable: TopicAuthorizationFailedError") for r in health["reasons"])

        await acls.accept_writes()
        # (b) accepted again: the decision and the command decided once land, as they were decided
        decision = (
            await t.wait_for(
                lambda e: e.event_type == "decision.trade_decision" and e.payload.quote_id == d.quote_id,
                what="the decision, resent",
            )
        )[0]
        command = (
            await t.wait_for(
                lambda e: e.event_type == "cmd.execute_trade" and e.payload.quote_id == d.quote_id,
                what="the command, resent",
            )
        )[0]
        decided = sent_for(sends, "decision.trade_decision", d.quote_id)
        commanded = sent_for(sends, "cmd.execute_trade", d.quote_id)
        assert {e.event_id for e in decided} == {decided[0].event_id} == {decision.event_id}
        assert {e.event_id for e in commanded} == {commanded[0].event_id} == {command.event_id}
        assert (decision.payload.decision_reason, command.causation_id) == ("EXECUTE", decision.event_id)

        async def request_committed() -> bool:
            return await committed(group, tp) > placed.offset

        await eventually(request_committed, what="the request committed once both are acknowledged")
        _, health = await control(engine, "GET", "/healthz")  # healthy again without waiting for a request
        assert not [r for r in health["reasons"] if r.startswith("kafka_unavailable")], health
        # at least once, and never a second decision or command for the quote
        landed = {(e.event_type, e.event_id) for e in t.events if e.payload.quote_id == d.quote_id}
        assert landed == {("decision.trade_decision", decision.event_id), ("cmd.execute_trade", command.event_id)}
    finally:
        engine.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0


async def test_a_drain_while_refused_leaves_the_request_uncommitted_for_the_next_start(
    stack: Stack,
    control_dir: Path,
    producer: EventProducer,
    tail: Any,
    committed: Committed,
    as_strategy_engine: tuple[dict[str, Any], StrategyAcls],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(c) A drain while the broker refuses the decision: the engine exits without committing the
    request, and the next start on the same group reads it again and records a decision for it."""
    options, acls = as_strategy_engine
    group = options["group"]
    engine, task = await start_engine(stack, control_dir, **options)
    try:
        sends = record_sends(engine, monkeypatch)
        await feed(producer, engine, market_price(), inventory(10**6, 10**20))
        first, tp = await request(producer, demand())  # accepted and committed: the group's position

        async def first_committed() -> bool:
            return await committed(group, tp) > first.offset

        await eventually(first_committed, what="the first request committed")

        await acls.refuse_writes()
        d = demand()
        placed, _ = await request(producer, d)

        async def resent_uncommitted() -> bool:
            assert await committed(group, tp) <= placed.offset, "committed while its decision is refused"
            return len(sent_for(sends, "decision.trade_decision", d.quote_id)) >= 2

        await eventually(resent_uncommitted, what="the refused decision sent again")
    finally:
        engine.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0
    # (c) drained with the decision unacknowledged: the request stays uncommitted
    assert first.offset < await committed(group, tp) <= placed.offset
    refused = {e.event_id for e in sent_for(sends, "decision.trade_decision", d.quote_id)}

    await acls.accept_writes()
    t = await tail("decision.trade_decision")
    (control_dir / "again").mkdir()
    again, again_task = await start_engine(stack, control_dir / "again", **options)
    try:
        [decision] = await t.wait_for(
            lambda e: e.payload.quote_id == d.quote_id, what="the request read again and decided"
        )
        assert decision.event_id not in refused  # the drained engine's decision never landed

        async def request_committed() -> bool:
            return await committed(group, tp) > placed.offset

        await eventually(request_committed, what="the request committed by the next start")
    finally:
        again.request_drain()
        assert await asyncio.wait_for(again_task, timeout=30) == 0
