"""The fault matrix's invariants, checked against Kafka, PostgreSQL and the relay simulator.

Each check returns a list of human-readable violations (empty: the invariant holds), so one
fault's row in the summary table can name every invariant it broke, not only the first.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from daemons.core.events import TOPICS
from tests.conftest import kafka_options


@dataclass
class Offsets:
    """Where every topic partition ended when the run began."""

    start: dict[TopicPartition, int]


async def topic_ends(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options())
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or {0})]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def produced_since(bootstrap: str, start: dict[TopicPartition, int]) -> dict[str, set[str]]:
    """Every event_id produced on each topic since `start`, read from Kafka itself."""
    import json

    ends = await topic_ends(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000,
                                **kafka_options())
    await consumer.start()
    ids: dict[str, set[str]] = {t: set() for t in TOPICS}
    try:
        tps = [tp for tp, end in ends.items() if end > start.get(tp, 0)]
        if not tps:
            return ids
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp, 0))
        remaining = set(tps)
        while remaining:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    try:
                        ids[tp.topic].add(str(json.loads(r.value)["event_id"]))
                    except (ValueError, KeyError, TypeError):
                        pass  # undecodable bytes are the dead-letter table's business, not an event
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return ids


async def events_lost(pool: asyncpg.Pool, bootstrap: str, start: dict[TopicPartition, int],
                      timeout: float = 90.0) -> list[str]:
    """Every event produced since `start` is in its PostgreSQL table, exactly once."""
    produced = await produced_since(bootstrap, start)
    deadline = time.monotonic() + timeout
    while True:
        problems: list[str] = []
        for topic, event_ids in produced.items():
            if not event_ids:
                continue
            table = TOPICS[topic].table
            rows = await pool.fetch(f"SELECT event_id::text AS id, count(*) AS n FROM {table} "
                                    "WHERE event_id = ANY($1::uuid[]) GROUP BY event_id", list(event_ids))
            stored = {r["id"]: r["n"] for r in rows}
            missing = event_ids - stored.keys()
            twice = [i for i, n in stored.items() if n != 1]
            if missing:
                problems.append(f"{topic}: {len(missing)} of {len(event_ids)} produced events not in {table} "
                                f"(e.g. {sorted(missing)[:3]})")
            if twice:
                problems.append(f"{topic}: {len(twice)} events stored more than once")
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(1.0)


def answered_twice(answers: list[tuple[float, str]]) -> list[str]:
    counts = Counter(q for _, q in answers)
    twice = {q: n for q, n in counts.items() if n > 1}
    return [f"{len(twice)} quotes answered more than once: {dict(list(twice.items())[:3])}"] if twice else []


async def answers_without_armed_fresh_decision(pool: asyncpg.Pool, answers: list[tuple[float, str]]) -> list[str]:
    """Every answer the relay received comes from an `execute` decision taken armed, on a
    decisionable price and a non-stale inventory snapshot, with a command behind it."""
    quote_ids = sorted({q for _, q in answers})
    if not quote_ids:
        return []
    # the relay can see an answer a moment before history-writer stores its chain
    deadline = time.monotonic() + 60
    while True:
        rows = await pool.fetch(
            "SELECT d.quote_id, d.decision, (d.event->'payload'->>'armed')::boolean AS armed,"
            " i.event->'payload'->>'stale' AS inv_stale,"
            " p.event->'payload'->>'decisionable' AS price_ok,"
            " EXISTS (SELECT 1 FROM execute_trade_commands c WHERE c.decision_id = d.decision_id) AS commanded"
            " FROM trade_decisions d"
            " LEFT JOIN intent_inventory_snapshots i ON i.inventory_id = d.inventory_snapshot_id"
            " LEFT JOIN market_price_events p ON p.event_id = d.price_event_id"
            " WHERE d.quote_id = ANY($1) AND d.decision = 'execute'", quote_ids)
        found = {r["quote_id"] for r in rows}
        if found >= set(quote_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    problems: list[str] = []
    missing = set(quote_ids) - found
    if missing:
        problems.append(f"{len(missing)} answered quotes have no execute decision in PostgreSQL "
                        f"(e.g. {sorted(missing)[:3]})")
    bad = [r["quote_id"] for r in rows
           if not r["armed"] or r["inv_stale"] != "false" or r["price_ok"] != "true" or not r["commanded"]]
    if bad:
        problems.append(f"{len(bad)} answers from a decision that was disarmed, stale or uncommanded "
                        f"(e.g. {bad[:3]})")
    return problems


async def executes_after(pool: asyncpg.Pool, since_epoch: float, until_epoch: float) -> int:
    """`execute` decisions decided inside a window (a window in which none may fire)."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM trade_decisions WHERE decision = 'execute'"
        " AND (event->'payload'->>'decided_at')::timestamptz BETWEEN to_timestamp($1) AND to_timestamp($2)",
        since_epoch, until_epoch)
    return n


async def commands_without_result(pool: asyncpg.Pool, since: Any, timeout: float = 90.0) -> list[str]:
    """Every command since `since` has at least one `exec.trade_result` in PostgreSQL."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT c.command_id FROM execute_trade_commands c WHERE c.observed_at >= $1"
            " AND NOT EXISTS (SELECT 1 FROM trade_execution_results r WHERE r.command_id = c.command_id)", since)
        if not rows or time.monotonic() > deadline:
            return [f"{len(rows)} commands without a result (e.g. {[r['command_id'] for r in rows[:3]]})"] if rows else []
        await asyncio.sleep(1.0)


async def history_caught_up(pool: asyncpg.Pool, after_epoch: float, timeout: float = 60.0) -> None:
    """Wait until PostgreSQL holds a decision taken after `after_epoch`, so a count over an
    earlier window is complete (history-writer stores decisions in order per partition)."""
    deadline = time.monotonic() + timeout
    while not await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM trade_decisions WHERE occurred_at > to_timestamp($1))", after_epoch):
        if time.monotonic() > deadline:
            raise AssertionError(f"history-writer stored no decision after the window in {timeout}s")
        await asyncio.sleep(0.5)
