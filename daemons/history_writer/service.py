"""history-writer: every topic into append-only PostgreSQL rows, exactly once (docs/design.md §5).

The loop: poll a batch, write it and its offsets in one transaction, then commit the offsets to
Kafka. PostgreSQL is the authority on what is stored: whenever partitions are assigned the
consumer seeks to the offsets PostgreSQL holds (or to the beginning), so a crash between the
transaction and the Kafka commit replays rows that `ON CONFLICT` skips. While PostgreSQL is down
the service is unhealthy ("audit history impaired"), retries with backoff and commits nothing.

The next batch is fetched and decoded while the previous one is written. Decoding goes in slices
with a turn for the write in between: decoded in one go, a batch held the event loop for tens of
milliseconds, so the write in flight could not take its round trips and the two ran one after
the other. When a poll brings only a few records (a quiet stream), the writer lingers briefly
for more, so that a trickle of events does not cost one transaction per poll.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.bus import EventConsumer, decode_records
from daemons.core.db import DB_ERRORS, connect_pool
from daemons.core.events import TOPICS, now_utc
from daemons.core.health import Link
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.state_models import HistoryWriterFields, conform
from daemons.history_writer.fastdecode import decode_for_history
from daemons.history_writer.metrics import daemon_metrics
from daemons.history_writer.settings import HistoryWriterSettings
from daemons.history_writer.store import Batch, stored_offsets, write_batch

# records decoded between two turns of the batch being written: a PostgreSQL round trip of the
# write in flight waits at most one slice (about a millisecond) instead of the whole batch
_DECODE_SLICE = 100


class HistoryWriter(Service):
    name = "history-writer"

    def __init__(self, settings: HistoryWriterSettings) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.pool: asyncpg.Pool | None = None
        # batched: the recorder is off the hot path, and one fetch answer per event cost the
        # broker more than the rows cost PostgreSQL
        self.consumer = EventConsumer(
            settings, settings.history_group, list(TOPICS), on_assigned=self._assigned, batched=True
        )
        # connected and writing: False until the first connection, and while PostgreSQL fails
        self.db_available = False
        self.db_link = Link(self.log, down="database_lost", up="database_recovered")
        self.last_write_at: datetime | None = None
        self.rows_written = 0
        self.duplicates_skipped = 0
        self.dead_lettered = 0  # stored in the batch's own transaction, not via side records
        self.batches = 0
        self.committed: dict[str, int] = {}
        self.lag: dict[str, int] = {}
        self._unsynced: set[TopicPartition] = set()
        self._lag_at = 0.0
        self._writing: asyncio.Task[None] | None = None
        self.lingering = False  # waiting for more records before writing a small batch

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        await self._connect()
        if not await self.start_bus(self.consumer):
            if self.pool is not None:
                await self.pool.close()
            return
        try:
            while not self.drain_requested.is_set():
                await self._step()
            await self._settle()
        finally:
            if self._writing is not None and not self._writing.done():
                self._writing.cancel()
            await self.consumer.stop()
            if self.pool is not None:
                await self.pool.close()

    async def _step(self) -> None:
        """One poll. The previous batch's transaction runs while this one is fetched and
        decoded; batches still reach PostgreSQL strictly one after another, in order."""
        if self.paused:
            await self._settle()
            await self.wait_runnable()
            return
        batch, offsets = await self._poll_batch()
        await self._settle()
        if self._unsynced:
            # fetched before we knew where PostgreSQL stands: re-read from the stored position
            await self._sync_positions()
            return
        await self._refresh_lag()
        if batch.deliveries:
            self._writing = asyncio.create_task(self._store_and_commit(batch, offsets))
            # let it send its first statement before the next poll takes the loop: PostgreSQL
            # works on this batch while the next one is fetched and decoded
            await asyncio.sleep(0)

    async def _poll_batch(self) -> tuple[Batch, dict[TopicPartition, int]]:
        """One batch: a poll, a short linger if it brought only a few records, then decoding
        into rows. Also the offsets to commit after it, per partition (from the records, not
        per event)."""
        limit = self.cfg.history_batch_max
        parts = await self.consumer.poll_records(self.cfg.history_poll_ms, limit)
        count = sum(len(records) for _, records in parts)
        if 0 < count < min(self.cfg.history_linger_records, limit) and self.cfg.history_linger_ms > 0:
            loop = asyncio.get_running_loop()
            until = loop.time() + self.cfg.history_linger_ms / 1000
            self.lingering = True
            try:
                while count < self.cfg.history_linger_records and count < limit and self._may_linger():
                    left_ms = int((until - loop.time()) * 1000)
                    if left_ms <= 0:
                        break
                    # in steps of at most one poll interval, so a drain or pause is seen promptly
                    more = await self.consumer.poll_records(min(left_ms, self.cfg.history_poll_ms), limit - count)
                    parts += more
                    count += sum(len(records) for _, records in more)
            finally:
                self.lingering = False
        batch = Batch()
        offsets: dict[TopicPartition, int] = {}
        for tp, records in parts:
            offsets[tp] = max(offsets.get(tp, 0), records[-1].offset + 1)  # records come in offset order
            for start in range(0, len(records), _DECODE_SLICE):
                batch.add(decode_records(tp, records[start : start + _DECODE_SLICE], decode_for_history))
                if self._writing is not None and not self._writing.done():
                    await asyncio.sleep(0)  # the write in flight takes its next step
        return batch, offsets

    def _may_linger(self) -> bool:
        return not (self.drain_requested.is_set() or self.paused or self._unsynced)

    async def _settle(self) -> None:
        """Wait for the batch in flight, if any, to be stored and committed."""
        if self._writing is not None:
            task, self._writing = self._writing, None
            await task

    async def _store_and_commit(self, batch: Batch, offsets: dict[TopicPartition, int]) -> None:
        if await self._store(batch, offsets):
            await self._commit(offsets)
        # else: draining while PostgreSQL is down: nothing committed, nothing lost

    async def _store(self, batch: Batch, offsets: dict[TopicPartition, int]) -> bool:
        delay = 0.1
        while True:
            try:
                if self.pool is None:
                    await self._connect_once()
                assert self.pool is not None
                outcome = await write_batch(
                    self.pool,
                    self.name,
                    self.cfg.history_group,
                    batch,
                    offsets={(tp.topic, tp.partition): off for tp, off in offsets.items()},
                )
            except DB_ERRORS as exc:
                self._db_lost(exc)
                if self.drain_requested.is_set():
                    self.log.warning("drain_with_database_down", uncommitted=len(batch.deliveries))
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.history_retry_max_s)
                continue
            self._db_back()
            self.rows_written += outcome.written
            self.duplicates_skipped += outcome.duplicates
            self.dead_lettered += outcome.dead_letters
            for reason in outcome.dead_reasons:
                self.log.warning("dead_letter", reason=reason)
            self.batches += 1
            self.last_write_at = now_utc()
            self.mark_success()
            return True

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # PostgreSQL already holds these offsets; a lost Kafka commit only means a replay
            # that ON CONFLICT absorbs.
            self.log.warning("kafka_commit_failed", error=str(exc))
            return
        for tp, off in offsets.items():
            self.committed[f"{tp.topic}:{tp.partition}"] = off

    # --- positions ------------------------------------------------------------------------

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        self._unsynced |= assigned

    async def _sync_positions(self) -> None:
        delay = 0.1
        while not self.drain_requested.is_set():
            try:
                if self.pool is None:
                    await self._connect_once()
                assert self.pool is not None
                stored = await stored_offsets(self.pool, self.cfg.history_group)
                break
            except DB_ERRORS as exc:
                self._db_lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.history_retry_max_s)
        else:
            return
        self._db_back()
        current = self.consumer.assignment()
        for tp in self._unsynced & current:
            self.consumer.seek(tp, stored.get((tp.topic, tp.partition), 0))
        self.log.info("positions_synced", partitions=len(self._unsynced & current))
        self._unsynced.clear()

    async def _refresh_lag(self) -> None:
        """At most once a second: lag costs a round trip to the broker."""
        now = asyncio.get_running_loop().time()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        try:
            self.lag = await self.consumer.lag()
        except KafkaError:
            pass

    # --- database health ------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await self._connect_once()
        except DB_ERRORS as exc:
            self._db_lost(exc)  # the loop keeps retrying; the service stays observable

    async def _connect_once(self) -> None:
        self.pool = await connect_pool(self.cfg.database_url, min_size=1, max_size=2)
        self._db_back()

    @property
    def db_error(self) -> str | None:
        return self.db_link.error

    def _db_lost(self, exc: BaseException) -> None:
        if self.db_link.fail(exc):
            self.notify_status()
        self.db_available = False

    def _db_back(self) -> None:
        if not self.db_available:
            self.db_link.ok(down_since=self.db_link.since)  # logged only after a failure, not at the first connection
            self.db_available = True
            self.notify_status()

    # --- control surface ------------------------------------------------------------------

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        return [] if self.db_available else ["postgres_unavailable: audit history impaired"]

    def state(self) -> dict[str, Any]:
        return conform(
            HistoryWriterFields,
            {
                "connected": {"postgres": self.db_available},
                "authoritative": self.db_available,
                "audit_history_impaired": not self.db_available,
                "database_error": self.db_link.error,
                "database_down_since": self.db_link.since,
                "last_write_at": self.last_write_at,
                "rows_written": self.rows_written,
                "duplicates_skipped": self.duplicates_skipped,
                "dead_letters": self.dead_lettered,
                "batches": self.batches,
                "last_committed_offsets": self.committed,
                "lag": self.lag,
                "blocked_reason": None if self.db_available else "waiting for PostgreSQL",
            },
        )
