"""The outbox publisher: `ops.liquidity_action` events go to Kafka from `liquidity_outbox`, in
commit order, after the state change they describe is durable.

While Kafka is away the events wait in PostgreSQL and the publisher retries; a row published but
not yet marked (a crash in between) is published again with the same `event_id`, which
history-writer stores once. Published rows are pruned after `liquidity_outbox_keep_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError

from daemons.core.bus import EventProducer
from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc
from daemons.core.health import Link
from daemons.liquidity_manager.settings import LiquiditySettings
from daemons.liquidity_manager.store import OutboxRow, Store


class OutboxPublisher:
    def __init__(
        self,
        store: Store,
        settings: LiquiditySettings,
        client_id: str,
        log: Any,
        *,
        on_db_error: Callable[[BaseException], None],
        on_db_ok: Callable[[], None],
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.cfg = settings
        self.client_id = client_id
        self.log = log
        self._on_db_error = on_db_error
        self._on_db_ok = on_db_ok
        self._on_change = on_change
        self._producer: EventProducer | None = None
        self.failures = 0  # publications of the outbox that failed (each is tried again)
        self._wake = asyncio.Event()
        self._stopping = False
        self._pruned_at = datetime.min.replace(tzinfo=UTC)
        self.kafka_link = Link(
            log, down="kafka_publish_failed", up="kafka_publish_recovered", topic="ops.liquidity_action"
        )
        self.backlog = 0
        self.last_published_at: datetime | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None and self.kafka_link.healthy

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Let `run` finish the batch in hand and return: cancelled between a send and its mark,
        it would leave rows that `flush` then publishes a second time."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the batch: a row queued while it publishes wakes the next
            if await self.publish_batch():
                continue  # a full batch: there may be more
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.liquidity_outbox_retry_s)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (bounded), then release the producer."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while await self.publish_batch():
                    pass
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_batch(self) -> bool:
        """One batch; True when it was full."""
        batch = self.cfg.liquidity_outbox_batch
        try:
            rows = await self.store.unpublished(batch)
            self.backlog = await self.store.outbox_backlog()
        except DB_ERRORS as exc:
            self._on_db_error(exc)
            return False
        if not await self._send(rows):
            return False
        try:
            if rows:
                await self.store.mark_published([r.seq for r in rows])
                self.last_published_at = now_utc()
                self.backlog = max(0, self.backlog - len(rows))
            if self.backlog == 0 and now_utc() - self._pruned_at > timedelta(hours=1):
                await self.store.prune_outbox(timedelta(seconds=self.cfg.liquidity_outbox_keep_s))
                self._pruned_at = now_utc()
        except DB_ERRORS as exc:
            self._on_db_error(exc)
            return False
        self._on_db_ok()
        return len(rows) == batch

    async def _send(self, rows: list[OutboxRow]) -> bool:
        """Publish `rows` (none: just make sure Kafka is reachable); False when Kafka failed."""
        try:
            if self._producer is None:
                producer = EventProducer(self.cfg, client_id=self.client_id)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            for row in rows:
                await self._producer.publish_raw(row.topic, row.event, row.key.encode())
        except (KafkaError, OSError) as exc:
            self.failures += 1
            self.kafka_link.fail(exc, backlog=len(rows))
            self._on_change()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None
            return False
        if self.kafka_link.ok():
            self._on_change()
        return True
