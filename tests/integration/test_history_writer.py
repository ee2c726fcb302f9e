"""history-writer against the real Kafka and PostgreSQL: exactly once, whatever happens."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from daemons.core.bus import Delivery, EventProducer
from daemons.core.control import socket_path
from daemons.core.events import TOPICS, Envelope, Producer, encode, new_event
from daemons.core.runtime import serve
from daemons.core.settings import CoreSettings
from daemons.history_writer.service import HistoryWriter, HistoryWriterSettings
from daemons.history_writer.store import write_batch
from tests.conftest import Stack, TcpForwarder, closed_port, eventually, kafka_options, start_group_at_end
from tests.samples import sample_payloads

PRODUCER = Producer(service="test", instance="t")


def _events(n: int, topic: str = "exec.trade_result") -> list[Envelope[Any]]:
    out = []
    for _ in range(n):
        payload = sample_payloads()[topic]
        out.append(new_event(payload, producer=PRODUCER, pair="BTC/EURe"))
    return out


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(CoreSettings(kafka_bootstrap=stack.kafka_bootstrap), client_id="test-producer")
    await p.start()
    yield p
    await p.stop()


def _settings(stack: Stack, control_dir: Path, group: str, **extra: Any) -> HistoryWriterSettings:
    return HistoryWriterSettings(
        database_url=stack.database_url,
        kafka_bootstrap=stack.kafka_bootstrap,
        control_dir=control_dir,
        history_group=group,
        history_retry_max_s=0.5,
        **extra,
    )


@pytest.fixture
async def writer(stack: Stack, control_dir: Path) -> AsyncIterator[HistoryWriter]:
    group = f"hw-test-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    service = HistoryWriter(_settings(stack, control_dir, group))
    task = asyncio.create_task(serve(service, handle_signals=False))
    yield service
    service.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


async def _stored(pool: asyncpg.Pool, table: str, ids: list[uuid.UUID]) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE event_id = ANY($1::uuid[])", ids))


async def test_every_topic_lands_in_its_table_with_links(
    writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    events = [
        new_event(p, producer=PRODUCER, pair="BTC/EURe", correlation_id="q-links") for p in sample_payloads().values()
    ]
    await producer.publish_many(events)
    for event in events:
        table = TOPICS[event.event_type].table
        await eventually(lambda t=table, e=event: _stored(pool, t, [e.event_id]), what=f"row in {table}")
    decision = next(e for e in events if e.event_type == "decision.trade_decision")
    row = await pool.fetchrow("SELECT * FROM trade_decisions WHERE event_id = $1", decision.event_id)
    assert row["decision_id"] == decision.payload.decision_id
    assert row["price_event_id"] == decision.payload.price_event_id
    assert row["decision_reason"] == "edge_below_threshold"
    assert row["correlation_id"] == "q-links"
    assert row["event"]["payload"]["gross_edge_pct"] == "0.83"  # money stays a string
    skipped = await pool.fetchrow("SELECT * FROM skipped_quotes WHERE decision_id = $1", decision.payload.decision_id)
    assert skipped["decision_reason"] == "edge_below_threshold"
    assert writer.last_write_at is not None


async def test_a_duplicate_delivery_is_stored_once(
    writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    [event] = _events(1)
    await producer.publish(event)
    await producer.publish(event)  # the same event_id delivered twice
    [marker] = _events(1)
    await producer.publish(marker)  # written after both copies
    await eventually(lambda: _stored(pool, "trade_execution_results", [marker.event_id]), what="marker stored")
    assert await _stored(pool, "trade_execution_results", [event.event_id]) == 1
    assert writer.duplicates_skipped >= 1


async def test_malformed_messages_are_dead_lettered_and_consumption_continues(
    writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    junk = f"not json {uuid.uuid4()}".encode()
    wrong_schema = encode(_events(1)[0]).replace(b'"schema_version":1', b'"schema_version":99')
    await producer.publish_raw("exec.trade_result", junk, key=b"BTC/EURe")
    await producer.publish_raw("exec.trade_result", wrong_schema, key=b"BTC/EURe")
    [after] = _events(1)
    await producer.publish(after)
    await eventually(lambda: _stored(pool, "trade_execution_results", [after.event_id]), what="later event stored")
    rows = await pool.fetch(
        "SELECT value, reason, topic FROM dead_letters WHERE value = ANY($1::bytea[])", [junk, wrong_schema]
    )
    reasons = {bytes(r["value"]): r["reason"] for r in rows}
    assert "invalid JSON" in reasons[junk]
    assert "unsupported schema_version 99" in reasons[wrong_schema]
    assert {r["topic"] for r in rows} == {"exec.trade_result"}
    assert writer.dead_lettered >= 2


async def test_pause_holds_writes_and_resume_catches_up(
    writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    [first] = _events(1)
    await producer.publish(first)
    await eventually(lambda: _stored(pool, "trade_execution_results", [first.event_id]), what="first stored")
    writer.pause()
    await eventually(lambda: writer.parked, what="pause in effect")
    batches = writer.batches
    [held] = _events(1)
    await producer.publish(held)
    # the writer is parked: it cannot have taken another batch
    assert writer.batches == batches
    assert await _stored(pool, "trade_execution_results", [held.event_id]) == 0
    writer.resume()
    await eventually(lambda: _stored(pool, "trade_execution_results", [held.event_id]), what="held stored")


async def test_postgres_stopped_and_started_under_load_loses_nothing(
    stack: Stack, writer: HistoryWriter, producer: EventProducer
) -> None:
    sent: list[uuid.UUID] = []

    async def load() -> None:
        for _ in range(40):
            batch = _events(50)
            await producer.publish_many(batch)
            sent.extend(e.event_id for e in batch)
            await asyncio.sleep(0.05)

    await eventually(lambda: writer.db_available, what="writer connected")
    loader = asyncio.create_task(load())
    await eventually(lambda: len(sent) >= 200, what="load running")
    await asyncio.to_thread(stack.stop_postgres)
    try:
        await eventually(lambda: not writer.db_available, what="writer noticed the database is gone")
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(socket_path(writer.settings.control_dir, writer.name)))
        ) as session:
            async with session.get("http://x/healthz") as resp:
                assert resp.status == 503
                assert "audit history impaired" in (await resp.json())["reasons"][0]
            async with session.get("http://x/state") as resp:
                state = await resp.json()
                assert state["audit_history_impaired"] is True and state["authoritative"] is False
    finally:
        await asyncio.to_thread(stack.start_postgres)
    await loader
    pool = await asyncpg.connect(stack.database_url)
    try:
        await eventually(lambda: _count_eq(pool, sent), timeout=60, what="every event sent during the outage stored")
        assert await pool.fetchval(
            "SELECT count(*) FROM trade_execution_results WHERE event_id = ANY($1::uuid[])", sent
        ) == len(sent)
    finally:
        await pool.close()
    assert writer.db_available


async def _count_eq(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> bool:
    n = await conn.fetchval("SELECT count(*) FROM trade_execution_results WHERE event_id = ANY($1::uuid[])", ids)
    return bool(n == len(ids))


# --- crash: a real process, killed with SIGKILL mid-stream ------------------------------------


@pytest.fixture
def spawn(stack: Stack, control_dir: Path, daemon_procs: Any) -> Any:
    def start(group: str, log: Path) -> subprocess.Popen[bytes]:
        env = {**stack.settings_env(control_dir), "QL_HISTORY_GROUP": group, "QL_HISTORY_BATCH_MAX": "500"}
        return daemon_procs("daemons.history_writer", env, log)  # type: ignore[no-any-return]

    return start


async def test_kill_9_mid_batch_then_restart_stores_every_event_exactly_once(
    stack: Stack, spawn: Any, producer: EventProducer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    group = f"hw-crash-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    events = _events(20000)
    ids = [e.event_id for e in events]
    await producer.publish_many(events)

    proc = spawn(group, tmp_path / "writer.log")
    # kill it while it is still writing: some of our rows stored, not all
    await eventually(
        lambda: _stored(pool, "trade_execution_results", ids), timeout=60, interval=0.01, what="first rows stored"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = await _stored(pool, "trade_execution_results", ids)
    assert 0 < partial

    proc = spawn(group, tmp_path / "writer.log")
    await eventually(lambda: _stored_all(pool, ids), timeout=120, what="all rows after restart")
    rows = await pool.fetchval("SELECT count(*) FROM trade_execution_results WHERE event_id = ANY($1::uuid[])", ids)
    assert rows == len(ids)
    # PostgreSQL's offsets cover everything that was stored
    stored_to = await pool.fetchval(
        "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = 'exec.trade_result'", group
    )
    highest = await pool.fetchval(
        "SELECT max(kafka_offset) FROM trade_execution_results WHERE event_id = ANY($1::uuid[])", ids
    )
    await eventually(lambda: _offset_at_least(pool, group, highest + 1), what="offsets persisted")
    assert stored_to is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = (tmp_path / "writer.log").read_text()
    assert '"event":"service_stopped"' in log and '"exit_code":0' in log


async def _stored_all(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> bool:
    return await _stored(pool, "trade_execution_results", ids) == len(ids)


async def _offset_at_least(pool: asyncpg.Pool, group: str, offset: int) -> bool:
    value = await pool.fetchval(
        "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = 'exec.trade_result'", group
    )
    return value is not None and value >= offset


async def test_start_seeks_to_the_offsets_postgres_holds(
    stack: Stack, control_dir: Path, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    """PostgreSQL, not Kafka, says where to resume: a position ahead of Kafka's commit is honoured."""
    group = f"hw-seek-{uuid.uuid4()}"
    skipped, kept = _events(1), _events(1)
    await producer.publish_many(skipped)
    end = await _end_offset(stack, "exec.trade_result")
    await pool.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, $3)",
        group,
        "exec.trade_result",
        end,
    )
    await producer.publish_many(kept)
    service = HistoryWriter(_settings(stack, control_dir, group))
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        await eventually(lambda: _stored(pool, "trade_execution_results", [kept[0].event_id]), what="kept stored")
        assert await _stored(pool, "trade_execution_results", [skipped[0].event_id]) == 0
    finally:
        service.request_drain()
        await task


async def _end_offset(stack: Stack, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, **kafka_options())
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_views_answer_the_seed_questions(
    writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    """Fair price and inventory behind a decision, pending funding, the command and the venue's answer."""
    samples = sample_payloads()
    price = new_event(samples["ref.market_price"], producer=PRODUCER, pair="BTC/EURe")
    inventory = new_event(samples["state.intent_inventory"], producer=PRODUCER, pair="BTC/EURe")
    quote_id = f"q-{uuid.uuid4()}"
    decision_payload = samples["decision.trade_decision"].model_copy(
        update={
            "quote_id": quote_id,
            "decision": "execute",
            "decision_reason": "all_gates_passed",
            "price_event_id": price.event_id,
            "inventory_snapshot_id": inventory.payload.inventory_id,
        }
    )
    decision = new_event(decision_payload, producer=PRODUCER, pair="BTC/EURe", correlation_id=quote_id)
    command = new_event(
        samples["cmd.execute_trade"].model_copy(
            update={"quote_id": quote_id, "decision_id": decision_payload.decision_id}
        ),
        producer=PRODUCER,
        pair="BTC/EURe",
    )
    result = new_event(
        samples["exec.trade_result"].model_copy(
            update={"quote_id": quote_id, "command_id": command.payload.command_id}
        ),
        producer=PRODUCER,
        pair="BTC/EURe",
    )
    funding = samples["ops.liquidity_action"]
    notified = new_event(funding, producer=PRODUCER, pair="BTC/EURe")
    done_id = f"la-{uuid.uuid4()}"
    credited = [
        new_event(
            funding.model_copy(update={"liquidity_action_id": done_id, "status": s}), producer=PRODUCER, pair="BTC/EURe"
        )
        for s in ("notified", "credited")
    ]
    await producer.publish_many([price, inventory, decision, command, result, notified, *credited])
    await eventually(lambda: _stored(pool, "trade_execution_results", [result.event_id]), what="chain stored")
    await eventually(lambda: _stored(pool, "liquidity_actions", [credited[-1].event_id]), what="funding stored")

    ctx = await pool.fetchrow("SELECT * FROM decision_context WHERE decision_id = $1", decision_payload.decision_id)
    assert ctx["price_event_id"] == price.event_id
    assert ctx["fair_rate_sell_btc"] == "91240.1" and ctx["eure_basis"] == "assumed_1_to_1"
    assert ctx["inventory_assets"][0]["spendable"] == "5000000"
    cmd = await pool.fetchrow("SELECT * FROM quote_commands WHERE quote_id = $1", quote_id)
    assert cmd["command_id"] == command.payload.command_id
    answer = await pool.fetchrow("SELECT * FROM venue_answers WHERE quote_id = $1", quote_id)
    assert answer["status"] == "rejected" and answer["reason"] == "invalid signature"
    assert answer["venue_response"]["error"]["message"] == "invalid signature"
    pending = {r["liquidity_action_id"] for r in await pool.fetch("SELECT liquidity_action_id FROM pending_funding")}
    assert funding.liquidity_action_id in pending and done_id not in pending
    assert await pool.fetchval("SELECT count(*) FROM skipped_quotes WHERE quote_id = $1", quote_id) == 0


async def test_state_shows_offsets_and_lag(writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool) -> None:
    [event] = _events(1)
    await producer.publish(event)
    await eventually(lambda: _stored(pool, "trade_execution_results", [event.event_id]), what="stored")
    state = await eventually(
        lambda: writer.lag and writer.committed.get("exec.trade_result:0") and writer.state(),
        what="offsets and lag known",
    )
    assert state["last_committed_offsets"]["exec.trade_result:0"] > 0
    assert set(state["lag"]) >= {"exec.trade_result:0"}
    assert state["rows_written"] >= 1 and state["last_write_at"] is not None


async def test_rows_are_append_only(pool: asyncpg.Pool) -> None:
    event_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO market_price_events (event_id, event_type, schema_version, occurred_at, observed_at, producer,"
        " pair, source, kafka_topic, kafka_partition, kafka_offset, event)"
        " VALUES ($1, 'ref.market_price', 1, now(), now(), 'test/t', 'BTC/EURe', 'kraken', 'ref.market_price', 0,"
        " -1, '{}'::jsonb)",
        event_id,
    )
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE market_price_events SET source = 'coingecko' WHERE event_id = $1", event_id)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM market_price_events WHERE event_id = $1", event_id)
    assert await pool.fetchval("SELECT source FROM market_price_events WHERE event_id = $1", event_id) == "kraken"


# --- batching: a redelivery among new rows, and the linger --------------------------------------


async def test_a_batch_mixing_stored_and_new_rows_writes_each_once(pool: asyncpg.Pool) -> None:
    """The batch's COPY meets a stored row: the whole batch is written again skipping exactly it."""
    group = f"hw-mixed-{uuid.uuid4()}"
    [old] = _events(1)
    [new_result] = _events(1)
    [new_price] = _events(1, "ref.market_price")

    def delivery(e: Envelope[Any], offset: int) -> Delivery:
        return Delivery(e.event_type, 0, offset, None, encode(e), e, None)

    first = await write_batch(pool, "test", group, [delivery(old, 0)])
    assert (first.written, first.duplicates) == (1, 0)
    again = await write_batch(pool, "test", group, [delivery(old, 0), delivery(new_result, 1), delivery(new_price, 0)])
    assert (again.written, again.duplicates, again.dead_letters) == (2, 1, 0)
    assert await _stored(pool, "trade_execution_results", [old.event_id, new_result.event_id]) == 2
    assert await _stored(pool, "market_price_events", [new_price.event_id]) == 1
    offsets = dict(await pool.fetch("SELECT topic, next_offset FROM consumer_offsets WHERE consumer_group = $1", group))
    assert offsets == {"exec.trade_result": 2, "ref.market_price": 1}


@pytest.fixture
async def lingering_writer(stack: Stack, control_dir: Path) -> AsyncIterator[HistoryWriter]:
    """A writer that holds a small batch for up to 5 s, until it has 5 records."""
    group = f"hw-linger-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    service = HistoryWriter(_settings(stack, control_dir, group, history_linger_ms=5000, history_linger_records=5))
    task = asyncio.create_task(serve(service, handle_signals=False))
    await eventually(lambda: service.consumer.assignment() and not service._unsynced, what="writer assigned")
    yield service
    service.request_drain()
    assert await asyncio.wait_for(task, timeout=30) == 0


async def test_a_trickle_of_events_is_written_as_one_batch(
    lingering_writer: HistoryWriter, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    batches = lingering_writer.batches
    events = _events(5)
    for event in events:  # one at a time, each acknowledged before the next is sent
        await producer.publish(event)
    ids = [e.event_id for e in events]
    await eventually(lambda: _stored_all(pool, ids), what="the five events stored")
    assert lingering_writer.batches == batches + 1


async def test_drain_while_lingering_stores_what_was_held(
    stack: Stack, control_dir: Path, producer: EventProducer, pool: asyncpg.Pool
) -> None:
    group = f"hw-linger-drain-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    service = HistoryWriter(_settings(stack, control_dir, group, history_linger_ms=5000, history_linger_records=100))
    task = asyncio.create_task(serve(service, handle_signals=False))
    try:
        await eventually(lambda: service.consumer.assignment() and not service._unsynced, what="writer assigned")
        [event] = _events(1)
        await producer.publish(event)
        await eventually(lambda: service.lingering, interval=0.005, what="the writer holds the event")
    finally:
        service.request_drain()
        assert await asyncio.wait_for(task, timeout=30) == 0
    assert await _stored(pool, "trade_execution_results", [event.event_id]) == 1


async def test_started_while_kafka_is_away_it_waits_unhealthy_then_goes_on(
    stack: Stack, control_dir: Path, daemon_procs: Any, tmp_path: Path
) -> None:
    """As a real process: no exit (systemd would count it against the start limit), /healthz
    503 with the reason while the broker is unreachable, healthy once it is, drain exits 0."""
    port = closed_port()
    env = {
        **stack.settings_env(control_dir),
        "QL_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "QL_HISTORY_GROUP": f"hw-late-kafka-{uuid.uuid4()}",
    }
    log = tmp_path / "writer.log"
    proc = daemon_procs("daemons.history_writer", env, log)
    forwarder = TcpForwarder(port, stack.kafka_bootstrap)

    async def health() -> tuple[int, list[str]] | None:
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(socket_path(control_dir, "history-writer")))
                ) as session,
                session.get("http://x/healthz") as resp,
            ):
                return resp.status, (await resp.json())["reasons"]
        except aiohttp.ClientError:
            return None  # not listening yet

    try:
        waiting = await eventually(
            lambda: _reported(health(), lambda h: h[0] == 503 and h[1][0].startswith("kafka_unreachable: ")),
            what="503 kafka_unreachable",
        )
        assert proc.poll() is None, "the daemon exited instead of waiting"
        assert "kafka_unreachable" in waiting[1][0]
        await forwarder.open()
        await eventually(lambda: _reported(health(), lambda h: h == (200, [])), timeout=60, what="healthy")
    finally:
        await forwarder.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    text = log.read_text()
    assert '"event":"kafka_unreachable"' in text and '"event":"kafka_reachable"' in text


async def _reported(probe: Any, ok: Any) -> Any:
    result = await probe
    return result if result is not None and ok(result) else None
