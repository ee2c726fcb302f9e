"""Records a daemon keeps beside its work: the audit of control changes and the dead letters.

Both go to PostgreSQL through one `QueuedWriter`, which never blocks the daemon: rows wait in a
bounded in-memory queue while PostgreSQL is away and are flushed, in order, as soon as it
accepts them (docs/design.md §8: alerts and notifications never block trading). Every row is also
logged the moment it is queued, so nothing is invisible even if the process dies first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import asyncpg

from daemons.core.bus import Delivery
from daemons.core.control import Caller
from daemons.core.db import DB_ERRORS, DEAD_LETTER_SQL, connect_pool
from daemons.core.logs import get_logger

CONTROL_ACTION_SQL = (
    "INSERT INTO control_actions (service, action, operator, reason, params, outcome, identity)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


class QueuedWriter:
    """Statements to run in the background, in order; retried while PostgreSQL is down."""

    def __init__(self, name: str, maxlen: int = 10_000) -> None:
        self.pending: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=maxlen)
        self.flushed = asyncio.Event()
        self.flushed.set()
        self._wake = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.log = get_logger(name)

    def put(self, sql: str, *args: Any) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.log.error("side_record_queue_full", dropped_oldest=self.pending[0][0][:40])
        self.pending.append((sql, args))
        self.flushed.clear()
        self._wake.set()

    async def run(self, database_url: str) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            try:
                if self.pool is None:
                    self.pool = await connect_pool(database_url, min_size=1, max_size=1)
                while self.pending:
                    sql, args = self.pending[0]
                    try:
                        await self.pool.execute(sql, *args)
                    except asyncpg.PostgresError as exc:
                        if isinstance(exc, DB_ERRORS):
                            raise
                        # a row PostgreSQL will never take; its content is in the log already
                        self.log.error("side_record_refused", error=str(exc))
                    self.pending.popleft()
                self._wake.clear()
                self.flushed.set()
                delay = 0.5
            except DB_ERRORS as exc:
                self.log.warning("side_record_write_failed", error=str(exc), queued=len(self.pending))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class AuditLog:
    """Every change made through a control socket, to `control_actions`: who, what, outcome."""

    def __init__(self, service: str, writer: QueuedWriter) -> None:
        self.service = service
        self.writer = writer
        self.log = get_logger("audit")

    def record(self, action: str, caller: Caller, outcome: str, params: dict[str, Any] | None = None) -> None:
        self.log.info(
            "control_action",
            action=action,
            operator=caller.operator,
            identity=caller.identity,
            reason=caller.reason,
            params=params or {},
            outcome=outcome,
        )
        self.writer.put(
            CONTROL_ACTION_SQL,
            self.service,
            action,
            caller.operator,
            caller.reason,
            params or {},
            outcome,
            caller.identity,
        )


class DeadLetters:
    """Messages a consumer could not understand: counted, logged and stored with raw bytes."""

    def __init__(self, service: str, writer: QueuedWriter) -> None:
        self.service = service
        self.writer = writer
        self.count = 0
        self.by_topic: dict[str, int] = {}
        self.log = get_logger("dead_letters")

    def record(
        self,
        source: str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        self.count += 1
        if topic is not None:
            self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
        self.log.warning("dead_letter", source=source, topic=topic, partition=partition, offset=offset, reason=reason)
        self.writer.put(DEAD_LETTER_SQL, self.service, source, topic, partition, offset, key, value, reason)

    def screen(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries that hold an event; the others become dead letters here."""
        good = []
        for d in deliveries:
            if d.event is None:
                self.record(
                    "kafka",
                    d.error or "undecodable",
                    topic=d.topic,
                    partition=d.partition,
                    offset=d.offset,
                    key=d.key,
                    value=d.value,
                )
            else:
                good.append(d)
        return good
