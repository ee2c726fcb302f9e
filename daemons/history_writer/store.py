"""How a batch of deliveries becomes rows: one transaction holding the events, the dead letters
and the consumer offsets they cover (docs/design.md §5).

Rows go in with `ON CONFLICT (event_id) DO NOTHING`, so a redelivered event is counted as a
duplicate and written once. The event column receives the message bytes exactly as Kafka held
them. The normal path is a COPY of the batch per table, all in the one transaction (no
savepoints: they cost two round trips per table and batch); only when a COPY meets a row already
stored (a redelivery after a crash or a rebalance) is the whole batch written again, in a new
transaction, as `INSERT ... ON CONFLICT DO NOTHING`, which skips exactly the duplicates. If
PostgreSQL refuses one row's content (not the connection), the batch is retried row by row under
savepoints and the refused rows become dead letters, so one bad row never stalls the stream.
A `Batch` turns deliveries into rows as they are decoded, before the write begins: the rows of
a batch built at the start of its write held the event loop for ~15 ms per 5,000 events, during
which PostgreSQL, with nothing to copy yet, sat idle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import attrgetter

import asyncpg

from daemons.core.bus import Delivery
from daemons.core.db import DB_ERRORS, DEAD_LETTER_SQL, DatabaseUnavailable, RawJson
from daemons.core.events import TOPICS

_ENVELOPE_COLUMNS = (
    ("event_id", "uuid"),
    ("event_type", "text"),
    ("schema_version", "int"),
    ("occurred_at", "timestamptz"),
    ("observed_at", "timestamptz"),
    ("producer", "text"),
    ("pair", "text"),
    ("correlation_id", "text"),
    ("causation_id", "uuid"),
)
_LINK_TYPES = {"price_event_id": "uuid"}
_TAIL_COLUMNS = (("kafka_topic", "text"), ("kafka_partition", "int"), ("kafka_offset", "bigint"))


def _columns(topic: str) -> list[tuple[str, str]]:
    link = ((f, _LINK_TYPES.get(f, "text")) for f in TOPICS[topic].link_fields)
    return [*_ENVELOPE_COLUMNS, *link, *_TAIL_COLUMNS, ("event", "jsonb")]


def _insert_sql(topic: str) -> str:
    columns = _columns(topic)
    names = ", ".join(name for name, _ in columns)
    params = ", ".join(f"${i}::{typ}[]" for i, (_, typ) in enumerate(columns, start=1))
    return (
        f"INSERT INTO {TOPICS[topic].table} ({names}) SELECT {names} FROM unnest({params}) AS t({names}) "
        "ON CONFLICT (event_id) DO NOTHING"
    )


INSERT_SQL = {topic: _insert_sql(topic) for topic in TOPICS}
COPY_COLUMNS = {topic: [name for name, _ in _columns(topic)] for topic in TOPICS}

OFFSETS_SQL = (
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
    "SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, o) "
    "ON CONFLICT (consumer_group, topic, partition) "
    "DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
)


def _links_getter(fields: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    get = attrgetter(*fields)
    if len(fields) == 1:
        return lambda payload: (get(payload),)  # attrgetter of one name returns the bare value
    return get


# what `events.link_values` gives, with one C call per row instead of a generator
_LINKS = {topic: _links_getter(spec.link_fields) for topic, spec in TOPICS.items()}


def _row(d: Delivery) -> tuple[object, ...]:
    e = d.event
    assert e is not None
    return (
        e.event_id,
        e.event_type,
        e.schema_version,
        e.occurred_at,
        e.observed_at,
        f"{e.producer.service}/{e.producer.instance}",
        e.pair,
        e.correlation_id,
        e.causation_id,
        *_LINKS[e.event_type](e.payload),
        d.topic,
        d.partition,
        d.offset,
        RawJson(d.value or b""),
    )


@dataclass
class Batch:
    """Deliveries and the rows they become, grouped by table; built slice by slice."""

    deliveries: list[Delivery] = field(default_factory=list)
    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=lambda: defaultdict(list))
    bad: list[Delivery] = field(default_factory=list)  # undecodable: dead letters

    @classmethod
    def of(cls, deliveries: list[Delivery]) -> Batch:
        batch = cls()
        batch.add(deliveries)
        return batch

    def add(self, deliveries: list[Delivery]) -> None:
        self.deliveries += deliveries
        rows, bad = self.rows, self.bad
        for d in deliveries:
            if d.event is None:
                bad.append(d)
            else:
                rows[d.topic].append(_row(d))

    @property
    def row_count(self) -> int:
        return sum(len(v) for v in self.rows.values())


@dataclass
class BatchOutcome:
    written: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    dead_reasons: list[str] = field(default_factory=list)


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "INSERT 0 42"
    return int(status.rsplit(" ", 1)[-1])


async def _insert_topic(conn: asyncpg.Connection, topic: str, rows: list[tuple[object, ...]]) -> int:
    columns = list(zip(*rows, strict=True))
    return _count(await conn.execute(INSERT_SQL[topic], *columns))


async def _copy_topic(conn: asyncpg.Connection, topic: str, rows: list[tuple[object, ...]]) -> int:
    await conn.copy_records_to_table(TOPICS[topic].table, records=rows, columns=COPY_COLUMNS[topic])
    return len(rows)


async def _dead_letter(conn: asyncpg.Connection, service: str, d: Delivery, reason: str) -> None:
    await conn.execute(DEAD_LETTER_SQL, service, "kafka", d.topic, d.partition, d.offset, d.key, d.value, reason)


async def _save_offsets(conn: asyncpg.Connection, group: str, offsets: dict[tuple[str, int], int]) -> None:
    if offsets:
        topics, parts, offs = zip(*((t, p, o) for (t, p), o in offsets.items()), strict=True)
        await conn.execute(OFFSETS_SQL, group, list(topics), list(parts), list(offs))


def _offsets(deliveries: list[Delivery]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for d in deliveries:
        key = (d.topic, d.partition)
        out[key] = max(out.get(key, 0), d.offset + 1)
    return out


async def write_batch(
    pool: asyncpg.Pool,
    service: str,
    group: str,
    deliveries: list[Delivery] | Batch,
    *,
    offsets: dict[tuple[str, int], int] | None = None,
) -> BatchOutcome:
    """Store the batch and its offsets atomically. Raises only the errors in `DB_ERRORS`.

    `deliveries`: a list, or a `Batch` whose rows are built already.
    `offsets`: the next offset per (topic, partition) when the caller knows them already (one
    per partition instead of a pass over every delivery); by default taken from the deliveries.
    """
    batch = deliveries if isinstance(deliveries, Batch) else Batch.of(deliveries)
    if offsets is None:
        offsets = _offsets(batch.deliveries)
    rows, bad = batch.rows, batch.bad
    async with pool.acquire() as conn:
        try:
            try:
                outcome = await _write_all(conn, service, group, offsets, rows, bad, _copy_topic)
            except asyncpg.UniqueViolationError:
                # some rows are stored already (a redelivery): again, skipping exactly those
                outcome = await _write_all(conn, service, group, offsets, rows, bad, _insert_topic)
        except DB_ERRORS:
            raise
        except asyncpg.PostgresError:
            if conn.is_closed():
                raise DatabaseUnavailable("connection lost during the batch") from None
            return await _write_isolated(conn, service, group, batch.deliveries, offsets)
        except Exception as exc:
            # asyncpg reports a connection that died mid-COPY as a client state error
            if conn.is_closed():
                raise DatabaseUnavailable(f"connection lost during the batch: {exc}") from exc
            raise
    outcome.duplicates = batch.row_count - outcome.written
    return outcome


async def _write_all(
    conn: asyncpg.Connection,
    service: str,
    group: str,
    offsets: dict[tuple[str, int], int],
    rows: dict[str, list[tuple[object, ...]]],
    bad: list[Delivery],
    write: Callable[[asyncpg.Connection, str, list[tuple[object, ...]]], Awaitable[int]],
) -> BatchOutcome:
    """The batch's rows, dead letters and offsets in one transaction."""
    outcome = BatchOutcome()
    async with conn.transaction():
        for topic, topic_rows in rows.items():
            outcome.written += await write(conn, topic, topic_rows)
        for d in bad:
            await _dead_letter(conn, service, d, d.error or "undecodable")
            outcome.dead_letters += 1
            outcome.dead_reasons.append(d.error or "undecodable")
        await _save_offsets(conn, group, offsets)
    return outcome


async def _write_isolated(
    conn: asyncpg.Connection,
    service: str,
    group: str,
    deliveries: list[Delivery],
    offsets: dict[tuple[str, int], int],
) -> BatchOutcome:
    """Row by row under savepoints: a row PostgreSQL refuses becomes a dead letter."""
    outcome = BatchOutcome()
    async with conn.transaction():
        for d in deliveries:
            if d.event is None:
                reason = d.error or "undecodable"
            else:
                try:
                    async with conn.transaction():
                        n = await _insert_topic(conn, d.topic, [_row(d)])
                    outcome.written += n
                    outcome.duplicates += 1 - n
                    continue
                except DB_ERRORS:
                    raise
                except asyncpg.PostgresError as exc:
                    reason = f"refused by PostgreSQL: {exc.__class__.__name__}: {exc}"
            await _dead_letter(conn, service, d, reason)
            outcome.dead_letters += 1
            outcome.dead_reasons.append(reason)
        await _save_offsets(conn, group, offsets)
    return outcome


async def stored_offsets(pool: asyncpg.Pool, group: str) -> dict[tuple[str, int], int]:
    rows = await pool.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1", group
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
