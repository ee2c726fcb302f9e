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
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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
