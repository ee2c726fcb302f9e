"""Any consumer: a malformed message is counted, logged and stored with its raw bytes; the good
ones around it are processed. And side records survive a PostgreSQL outage."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from daemons.core.bus import EventConsumer, EventProducer
from daemons.core.control import Caller
from daemons.core.events import Producer, new_event
from daemons.core.settings import CoreSettings
from daemons.core.side_records import AuditLog, DeadLetters, QueuedWriter
from tests.conftest import Stack, eventually, start_group_at_end
from tests.samples import sample_payloads


async def test_screen_dead_letters_bad_messages_and_passes_good_ones(stack: Stack, pool: asyncpg.Pool) -> None:
    settings = CoreSettings(kafka_bootstrap=stack.kafka_bootstrap, database_url=stack.database_url)
    group = f"dl-{uuid.uuid4()}"
    await start_group_at_end(stack, group)
    writer = QueuedWriter("test.side_records")
    dead = DeadLetters(f"test-{group}", writer)
    flusher = asyncio.create_task(writer.run(stack.database_url))
    producer = EventProducer(settings, client_id="dl-test")
    # a new group starting at the end: earlier tests (fuzzers) put junk on this topic too
    consumer = EventConsumer(settings, group, ["norm.swap_demand"], new_group_starts_at="latest")
    await producer.start()
    await consumer.start()
    try:
        # the consumer starts at the end of the topic (the group has no committed offset yet):
        # joined, and its position resolved, before anything is published
        async def assigned() -> bool:
            await consumer.poll(timeout_ms=100)
            return bool(consumer.assignment())

        await eventually(assigned, what="partition assigned")
        await consumer.positions()
        junk = f"garbage {uuid.uuid4()}".encode()
        good = new_event(
            sample_payloads()["norm.swap_demand"], producer=Producer(service="t", instance="t"), pair="BTC/EURe"
        )
        await producer.publish_raw("norm.swap_demand", junk, key=b"BTC/EURe")
        await producer.publish(good)
        seen: list = []

        async def drained() -> bool:
            seen.extend(dead.screen(await consumer.poll(timeout_ms=100)))
            return any(d.event.event_id == good.event_id for d in seen)

        await eventually(drained, what="good event delivered")
        assert dead.count == 1 and dead.by_topic == {"norm.swap_demand": 1}
        await asyncio.wait_for(writer.flushed.wait(), timeout=10)
        row = await pool.fetchrow("SELECT * FROM dead_letters WHERE service = $1", dead.service)
        assert bytes(row["value"]) == junk and row["topic"] == "norm.swap_demand"
        assert "invalid JSON" in row["reason"] and row["source"] == "kafka"
    finally:
        await consumer.stop()
        await producer.stop()
        flusher.cancel()
        await writer.close()


async def test_audit_rows_wait_for_postgres_and_are_not_lost(stack: Stack) -> None:
    writer = QueuedWriter("test.side_records")
    service = f"test-audit-{uuid.uuid4()}"
    audit = AuditLog(service, writer)
    flusher = asyncio.create_task(writer.run(stack.database_url))
    try:
        await asyncio.to_thread(stack.stop_postgres)
        try:
            audit.record("pause", Caller("dave", "db outage drill"), "paused")  # returns at once
            assert len(writer.pending) == 1
        finally:
            await asyncio.to_thread(stack.start_postgres)
        await asyncio.wait_for(writer.flushed.wait(), timeout=30)
        conn = await asyncpg.connect(stack.database_url)
        try:
            row = await conn.fetchrow(
                "SELECT operator, reason, outcome FROM control_actions WHERE service = $1", service
            )
        finally:
            await conn.close()
        assert tuple(row) == ("dave", "db outage drill", "paused")
    finally:
        flusher.cancel()
        await writer.close()
