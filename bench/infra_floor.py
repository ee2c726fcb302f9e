"""The infrastructure's own floor on the request → answer path, measured on the running stack.

Every answer crosses two Kafka hops (`norm.swap_demand` to strategy-engine, `cmd.execute_trade`
to trade-executor) and waits for two durable ledger commits before it leaves (the `received` row
before signing, the `submitted` row before sending: docs/design.md §8, "Write before you act"). What
those cost on this host, with nothing of ours around them:

- `kafka_hop_ms`: one message from a producer configured as `EventProducer` (idempotent,
  `acks=all`, no linger) to a consumer fetching as the hot-path consumers do (`fetch_min_bytes=1`,
  `kafka_fetch_max_wait_ms`), both in this process, on a topic of its own; from the send call to
  the record in hand;
- `durable_commit_ms`: one single-row UPDATE in its own transaction with `synchronous_commit=on`
  (the ledger's setting), round trip over the same connection string the daemons use.

Used by `bench/latency.py`, which prints them beside the in-process floor: the sum is what the
design costs before any of its Python runs.

`cpu_floor` is the same question for CPU: what producing an event, reading it in one more consumer
group and one durable statement cost (every process involved: clients, broker, PostgreSQL), so
that the events a request makes (counted per topic during a step) and its unbatched ledger writes
give the CPU per request the design cannot go below with these components.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from procstat import CLK_TCK, proc_sample

from daemons.core.bus import EventProducer, kafka_auth
from daemons.core.settings import CoreSettings

HOP_TOPIC = "bench.kafka_hop"


async def kafka_hop_ms(settings: CoreSettings, count: int = 300, rate: float = 50.0) -> list[float]:
    """`count` messages at `rate` per second; the send → in-hand time of each, in ms."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(HOP_TOPIC, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        HOP_TOPIC,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-hop-{uuid.uuid4()}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_min_bytes=1,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        **kafka_auth(settings),
    )
    producer = EventProducer(settings, client_id="bench-hop")
    await consumer.start()
    await producer.start()
    sent: dict[bytes, int] = {}
    hops: list[float] = []
    try:
        # joined and placed at the end before the first message, or it would be skipped
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)

        async def receive() -> None:
            while len(hops) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    now = time.perf_counter_ns()
                    for rec in records:
                        if rec.value in sent:
                            hops.append((now - sent[rec.value]) / 1e6)

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            value = str(i).encode()
            sent[value] = time.perf_counter_ns()
            await producer.publish_raw(HOP_TOPIC, value)  # the receiver runs while the ack is awaited
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    return hops


async def durable_commit_ms(database_url: str, count: int = 500) -> list[float]:
    """`count` single-row UPDATEs, each its own durable commit; the round trip of each, in ms."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET synchronous_commit = on")
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_durable_commit (id int PRIMARY KEY, n bigint NOT NULL)")
        await conn.execute("INSERT INTO bench_durable_commit VALUES (1, 0) ON CONFLICT DO NOTHING")
        out = []
        for _ in range(count):
            t = time.perf_counter_ns()
            await conn.execute("UPDATE bench_durable_commit SET n = n + 1 WHERE id = 1")
            out.append((time.perf_counter_ns() - t) / 1e6)
        await conn.execute("DROP TABLE bench_durable_commit")
        return out
    finally:
        await conn.close()


# Consumer groups that read every event of a topic while the stack runs (daemons/core/acls.py
# GRANTS, less the reads made only at start: strategy-engine's of cmd.execute_trade and
# trade-executor's of exec.trade_result), so each event costs one production and this many reads.
READERS_PER_EVENT: dict[str, int] = {
    "raw.near_intents.quote": 1,  # history-writer
    "norm.swap_demand": 2,  # strategy-engine, history-writer
    "ref.market_price": 3,  # strategy-engine, trade-executor, history-writer
    "state.intent_inventory": 3,  # strategy-engine, trade-executor, history-writer
    "ops.liquidity_action": 2,  # inventory-sync, history-writer
    "decision.trade_decision": 1,  # history-writer
    "cmd.execute_trade": 2,  # trade-executor, history-writer
    "exec.trade_result": 3,  # strategy-engine, inventory-sync, history-writer
}


@dataclass(frozen=True)
class CpuFloor:
    """CPU (ms, every process involved) of the infrastructure's own steps, nothing of ours around
    them: one event produced (producer client + broker), one more consumer group reading it
    (consumer client + broker), one durable single-row statement (client + PostgreSQL)."""

    produce_ms: float
    consume_ms: float
    statement_ms: float

    def per_request_ms(self, events_per_request: dict[str, float], statements_per_request: float) -> float:
        kafka = sum(
            n * (self.produce_ms + READERS_PER_EVENT.get(t, 1) * self.consume_ms) for t, n in events_per_request.items()
        )
        return kafka + statements_per_request * self.statement_ms


def _cpu_ms(pids: list[int]) -> float:
    """CPU of this process and of `pids` (a negative pid: a postmaster and its backends), in ms."""
    ticks = sum(s[1] for s in (proc_sample(p) for p in pids) if s is not None)
    return time.process_time() * 1000 + ticks / CLK_TCK * 1000


async def kafka_cpu_ms(
    settings: CoreSettings, broker_pid: int, groups: int, count: int = 1000, rate: float = 200.0
) -> float:
    """CPU per message of one producer (as `EventProducer`) and `groups` consumer groups reading
    every message (fetching as the hot-path consumers do), all in this process, plus the broker's."""
    topic = f"bench.kafka_cpu.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings))
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"bench-cpu-{uuid.uuid4()}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_min_bytes=1,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            **kafka_auth(settings),
        )
        for _ in range(groups)
    ]
    producer = EventProducer(settings, client_id="bench-cpu")
    for c in consumers:
        await c.start()
    await producer.start()
    value = b"x" * 600  # about an event's size on the wire
    try:
        while not all(c.assignment() for c in consumers):
            await asyncio.sleep(0.05)  # joining; no event to await from here
        got = [0] * groups

        async def receive(i: int) -> None:
            while got[i] < count:
                for records in (await consumers[i].getmany(timeout_ms=500)).values():
                    got[i] += len(records)

        receivers = [asyncio.create_task(receive(i)) for i in range(groups)]
        before = _cpu_ms([broker_pid])
        start = time.perf_counter()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            await producer.publish_raw(topic, value)
        await asyncio.wait_for(asyncio.gather(*receivers), timeout=30)
        return (_cpu_ms([broker_pid]) - before) / count
    finally:
        await producer.stop()
        for c in consumers:
            await c.stop()
        await admin.delete_topics([topic])
        await admin.close()


async def statement_cpu_ms(database_url: str, pg_pid: int, count: int = 1000) -> float:
    """CPU per durable single-row UPDATE (its own commit): this process and PostgreSQL's."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET synchronous_commit = on")
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_statement_cpu (id int PRIMARY KEY, n bigint NOT NULL)")
        await conn.execute("INSERT INTO bench_statement_cpu VALUES (1, 0) ON CONFLICT DO NOTHING")
        before = _cpu_ms([pg_pid])
        for _ in range(count):
            await conn.execute("UPDATE bench_statement_cpu SET n = n + 1 WHERE id = 1")
        spent = (_cpu_ms([pg_pid]) - before) / count
        await conn.execute("DROP TABLE bench_statement_cpu")
        return spent
    finally:
        await conn.close()


async def cpu_floor(settings: CoreSettings, database_url: str, broker_pid: int, pg_pid: int) -> CpuFloor:
    one = await kafka_cpu_ms(settings, broker_pid, groups=1)
    three = await kafka_cpu_ms(settings, broker_pid, groups=3)
    consume = max(0.0, (three - one) / 2)
    return CpuFloor(
        produce_ms=max(0.0, one - consume),
        consume_ms=consume,
        statement_ms=await statement_cpu_ms(database_url, pg_pid),
    )
