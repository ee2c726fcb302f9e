"""The fault matrix's invariants, judged from the other side: the venue's own record (the relay
simulator's `/_sim/book`: every request it sent, every answer it received with the verifier's
balances at that instant and when the answer's nonce was consumed), Kafka and PostgreSQL —
never a daemon's `/state` or logs.

Each check returns a `Judged`: how many samples it saw (too few is itself a failure: a run with
nothing answered proves nothing), every violation in words (so one fault's row in the summary
names every invariant it broke), and its worst margin for the summary table.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from daemons.core.assets import REGISTRY
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
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000, **kafka_options()
    )
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


async def events_lost(
    pool: asyncpg.Pool, bootstrap: str, start: dict[TopicPartition, int], min_samples: int = 1, timeout: float = 90.0
) -> Judged:
    """Every event produced since `start` is in its PostgreSQL table, exactly once."""
    produced = await produced_since(bootstrap, start)
    total = sum(len(ids) for ids in produced.values())
    deadline = time.monotonic() + timeout
    while True:
        problems: list[str] = []
        for topic, event_ids in produced.items():
            if not event_ids:
                continue
            table = TOPICS[topic].table
            rows = await pool.fetch(
                f"SELECT event_id::text AS id, count(*) AS n FROM {table} "
                "WHERE event_id = ANY($1::uuid[]) GROUP BY event_id",
                list(event_ids),
            )
            stored = {r["id"]: r["n"] for r in rows}
            missing = event_ids - stored.keys()
            twice = [i for i, n in stored.items() if n != 1]
            if missing:
                problems.append(
                    f"{topic}: {len(missing)} of {len(event_ids)} produced events not in {table} "
                    f"(e.g. {sorted(missing)[:3]})"
                )
            if twice:
                problems.append(f"{topic}: {len(twice)} events stored more than once")
        if not problems or time.monotonic() > deadline:
            return Judged("events stored", total, problems, min_samples=min_samples)
        await asyncio.sleep(1.0)


@dataclass
class Judged:
    """One invariant over one row: how many samples it judged, what broke, its worst margin."""

    name: str
    samples: int
    problems: list[str]
    margin: str = ""
    min_samples: int = 1

    def all_problems(self) -> list[str]:
        if self.samples < self.min_samples:
            return [f"{self.name}: only {self.samples} samples (at least {self.min_samples} needed)", *self.problems]
        return [f"{self.name}: {p}" for p in self.problems]

    def figure(self) -> str:
        return f"{self.name} {self.samples}" + (f" ({self.margin})" if self.margin else "")


def in_units(token: str, base_units: int) -> str:
    """`BTC 0.00166648`: the asset's symbol and amount for the summary table (the raw token id
    and base units when the registry does not know it)."""
    asset = REGISTRY.get(token)
    return f"{asset.symbol} {format(asset.to_units(base_units), 'f')}" if asset else f"{token} {base_units}"


def in_window(answers: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [a for a in answers if start <= a["at"] < end]


def over_commitment(answers: list[dict[str, Any]], start: float, end: float, min_samples: int = 1) -> Judged:
    """At every answer the venue accepted in [start, end): the gives of the signer's answers
    still able to execute then (accepted, deadline not passed, nonce not yet consumed) sum, per
    token, to no more than the balance the verifier credited the signer with at that instant.
    Computed over the whole record (answers from before `start` still count while live)."""
    live: list[dict[str, Any]] = []
    problems: list[str] = []
    samples = 0
    worst: dict[str, int] = {}
    for a in sorted((x for x in answers if x["accepted"]), key=lambda x: x["at"]):
        t = a["at"]
        if t >= end:
            break
        live = [x for x in live if x["deadline"] > t and (x["spent_at"] is None or x["spent_at"] > t)]
        live.append(a)
        if t < start:
            continue
        samples += 1
        mine = [x for x in live if x["signer_id"] == a["signer_id"]]
        for token in {tok for x in mine for tok in x["gives"]}:
            committed = sum(int(x["gives"].get(token, 0)) for x in mine)
            margin = int(a["credited"].get(token, "0")) - committed
            worst[token] = min(worst.get(token, margin), margin)
            if margin < 0:
                problems.append(
                    f"at {t:.3f} ({a['quote_id']}): {committed} of {token} committed in "
                    f"{len(mine)} live answers, {a['credited'].get(token, '0')} credited"
                )
    shown = ", ".join(in_units(token, m) for token, m in sorted(worst.items()))
    return Judged(
        "over-commitment",
        samples,
        problems[:3] + ([f"... {len(problems)} in all"] if len(problems) > 3 else []),
        f"worst margin {shown}" if shown else "",
        min_samples,
    )


def answered_twice(answers: list[dict[str, Any]], start: float, end: float, min_samples: int = 1) -> Judged:
    """No quote answered more than once, over every frame the relay ever received."""
    counts = Counter(a["quote_id"] for a in answers if a["at"] < end)
    judged = {a["quote_id"] for a in in_window(answers, start, end)}
    twice = {q: counts[q] for q in judged if counts[q] > 1}
    problems = [f"{len(twice)} quotes answered more than once: {dict(list(twice.items())[:3])}"] if twice else []
    return Judged("one answer per quote", len(judged), problems, min_samples=min_samples)


def answered_between(answers: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """Frames the relay received in [start, end) by its own clock (a window where none may come)."""
    return in_window(answers, start, end)


async def stale_inputs(
    pool: asyncpg.Pool,
    answers: list[dict[str, Any]],
    start: float,
    end: float,
    price_max_age_ms: int,
    inventory_max_age_ms: int,
    min_samples: int = 1,
) -> Judged:
    """Every answer the venue accepted comes from an `execute` decision whose price and inventory
    were within the limits in force when it was decided, by the events' own timestamps
    (the price: the freshness it was published with plus decided_at − its envelope's observed_at,
    as a Kraken price ages from our receive time; the inventory: decided_at − the snapshot's
    synced_at)."""
    quote_ids = sorted({a["quote_id"] for a in in_window(answers, start, end) if a["accepted"]})
    if not quote_ids:
        return Judged("fresh inputs", 0, [], min_samples=min_samples)
    sql = (
        "SELECT d.quote_id, (d.event->'payload'->>'decided_at')::timestamptz AS decided_at,"
        " (p.event->'payload'->>'freshness_ms')::bigint AS freshness_ms, p.observed_at AS price_observed_at,"
        " (i.event->'payload'->>'synced_at')::timestamptz AS synced_at"
        " FROM trade_decisions d"
        " LEFT JOIN market_price_events p ON p.event_id = d.price_event_id"
        " LEFT JOIN intent_inventory_snapshots i ON i.inventory_id = d.inventory_snapshot_id"
        " WHERE d.quote_id = ANY($1) AND d.decision = 'execute'"
    )
    deadline = time.monotonic() + 60  # the venue can see an answer before history-writer stores its chain
    while True:
        rows = await pool.fetch(sql, quote_ids)
        found = {r["quote_id"] for r in rows}
        if found >= set(quote_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    problems: list[str] = []
    missing = set(quote_ids) - found
    if missing:
        problems.append(f"{len(missing)} answered quotes have no execute decision (e.g. {sorted(missing)[:3]})")
    worst_price = worst_inv = 0
    bad: list[str] = []
    for r in rows:
        if r["freshness_ms"] is None or r["synced_at"] is None:
            bad.append(f"{r['quote_id']}: price or inventory event not found")
            continue
        since_ms = int((r["decided_at"] - r["price_observed_at"]).total_seconds() * 1000)
        price_ms = r["freshness_ms"] + max(0, since_ms)
        inv_ms = int((r["decided_at"] - r["synced_at"]).total_seconds() * 1000)
        worst_price, worst_inv = max(worst_price, price_ms), max(worst_inv, inv_ms)
        if price_ms > price_max_age_ms or inv_ms > inventory_max_age_ms:
            bad.append(f"{r['quote_id']}: price {price_ms} ms, inventory {inv_ms} ms old")
    if bad:
        problems.append(f"{len(bad)} answers on stale or unknown inputs (e.g. {bad[:3]})")
    return Judged(
        "fresh inputs",
        len(quote_ids),
        problems,
        f"oldest price {worst_price}/{price_max_age_ms} ms, inventory {worst_inv}/{inventory_max_age_ms} ms",
        min_samples,
    )


TERMINAL = ("refused", "rejected", "settled", "expired")


async def one_result_per_command(pool: asyncpg.Pool, since: Any, min_samples: int = 1, timeout: float = 90.0) -> Judged:
    """Every command since `since` has a result in PostgreSQL, and no two final results that
    disagree (an `expired` later corrected to `settled` by the chain is counted, not failed)."""
    sql = (
        "SELECT c.command_id, array_remove(array_agg(DISTINCT r.status), NULL) AS statuses"
        " FROM execute_trade_commands c LEFT JOIN trade_execution_results r ON r.command_id = c.command_id"
        " WHERE c.observed_at >= $1 GROUP BY c.command_id"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(sql, since)
        without = [r["command_id"] for r in rows if not r["statuses"]]
        if not without or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    problems: list[str] = []
    if without:
        problems.append(f"{len(without)} commands without a result (e.g. {without[:3]})")
    corrected = 0
    conflicting: list[str] = []
    for r in rows:
        final = {s for s in r["statuses"] if s in TERMINAL}
        if final == {"expired", "settled"}:
            corrected += 1
        elif len(final) > 1:
            conflicting.append(f"{r['command_id']}: {sorted(final)}")
    if conflicting:
        problems.append(f"{len(conflicting)} commands with conflicting final results (e.g. {conflicting[:3]})")
    return Judged(
        "one result per command", len(rows), problems, f"{corrected} expired→settled" if corrected else "", min_samples
    )


async def settlements_match(
    pool: asyncpg.Pool,
    answers: list[dict[str, Any]],
    start: float,
    end: float,
    min_samples: int = 1,
    timeout: float = 90.0,
    relay_broke_guarantee: bool = False,
) -> Judged:
    """The executor's `settled` results are exactly the answers the venue executed: each answer
    the taker settled has a `settled` result, and no answer the venue did not execute has one.

    `relay_broke_guarantee` (the relay lost fills' statuses outright): a fill the venue settled
    may instead stand as `expired` by relay silence (`no_quote_status`) while the chain audit has
    not reached it (the NEAR RPC budget cannot read every unpicked answer's nonce); such fills are
    counted in the margin, not failed. Any other result for them still fails."""
    window = [a for a in in_window(answers, start, end) if a["accepted"]]
    venue = {a["quote_id"] for a in window if a.get("settled_tx")}
    answered = {a["quote_id"] for a in window}
    deadline = time.monotonic() + timeout
    silent: set[str] = set()
    while True:
        rows = await pool.fetch(
            "SELECT DISTINCT quote_id FROM trade_execution_results WHERE status = 'settled' AND quote_id = ANY($1)",
            sorted(answered),
        )
        ours = {r["quote_id"] for r in rows}
        if relay_broke_guarantee:
            rows = await pool.fetch(
                "SELECT DISTINCT quote_id FROM trade_execution_results WHERE status = 'expired' "
                "AND event->'payload'->>'resolved_by' = 'no_quote_status' AND quote_id = ANY($1)",
                sorted(venue - ours),
            )
            silent = {r["quote_id"] for r in rows}
        if venue <= ours | silent or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    problems: list[str] = []
    missing = venue - ours - silent
    if missing:
        problems.append(f"{len(missing)} answers the venue settled have no settled result (e.g. {sorted(missing)[:3]})")
    if ours - venue:
        problems.append(
            f"{len(ours - venue)} settled results for answers the venue never executed "
            f"(e.g. {sorted(ours - venue)[:3]})"
        )
    margin = f"{len(silent)} fills recorded expired by relay silence, audit pending" if relay_broke_guarantee else ""
    return Judged("settlements match the venue", len(venue), problems, margin, min_samples=min_samples)


async def requests_stored(
    pool: asyncpg.Pool,
    requests: list[dict[str, Any]],
    start: float,
    end: float,
    excused: list[tuple[float, float]],
    min_samples: int = 1,
    timeout: float = 90.0,
) -> Judged:
    """Every quote request the relay sent in [start, end) has its raw row in PostgreSQL (none
    lost before Kafka), except those sent inside a window a fault excuses."""
    sent = {
        r["quote_id"] for r in requests if start <= r["at"] < end and not any(a <= r["at"] <= b for a, b in excused)
    }
    excused_n = sum(1 for r in requests if start <= r["at"] < end and any(a <= r["at"] <= b for a, b in excused))
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT DISTINCT quote_id FROM raw_near_intents_quotes WHERE quote_id = ANY($1)", sorted(sent)
        )
        missing = sent - {r["quote_id"] for r in rows}
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    problems = (
        [f"{len(missing)} of {len(sent)} requests the relay sent have no raw row (e.g. {sorted(missing)[:3]})"]
        if missing
        else []
    )
    return Judged("requests stored", len(sent), problems, f"{excused_n} excused" if excused_n else "", min_samples)


async def executes_after(pool: asyncpg.Pool, since_epoch: float, until_epoch: float) -> int:
    """`execute` decisions decided inside a window (a window in which none may fire)."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM trade_decisions WHERE decision = 'execute'"
        " AND (event->'payload'->>'decided_at')::timestamptz BETWEEN to_timestamp($1) AND to_timestamp($2)",
        since_epoch,
        until_epoch,
    )
    return n


async def history_caught_up(pool: asyncpg.Pool, after_epoch: float, timeout: float = 60.0) -> None:
    """Wait until PostgreSQL holds a decision taken after `after_epoch`, so a count over an
    earlier window is complete (history-writer stores decisions in order per partition)."""
    deadline = time.monotonic() + timeout
    while not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM trade_decisions WHERE occurred_at > to_timestamp($1))", after_epoch
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"history-writer stored no decision after the window in {timeout}s")
        await asyncio.sleep(0.5)
