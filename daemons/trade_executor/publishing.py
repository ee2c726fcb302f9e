"""Every result-bearing ledger write end to end, and the road of results to Kafka.

`Publisher.step` applies one ledger transition; `written` follows any durable write of a row (a
transition, or a command's first row written straight in its state): the live book derived from
the row (`LiveBook.apply`), the caller's counts and log line, then the row's result published. A
result is on Kafka before its ledger note (`published_state`) is written: the notes of many rows
go in one write at the next sweep, and until then the backlog sweep leaves the row alone (a crash
before the note republishes it once more; history-writer keeps one row per event id).

`InHand` marks the commands some coroutine is working on, so the sweeps leave them alone and no
result goes out twice from two paths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from daemons.core.bus import Placed
from daemons.core.events import TradeResult, held_until_covered, new_event, now_utc
from daemons.trade_executor.ledger import RESULT_STATUS, LedgerRow, LedgerState, result_from_row

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor


class InHand:
    """Command ids some coroutine is working on, refcounted (a command and its resolution may
    overlap)."""

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def __contains__(self, cid: object) -> bool:
        return cid in self._count

    def __len__(self) -> int:
        return len(self._count)

    def ids(self) -> set[str]:
        return set(self._count)

    def take(self, cid: str) -> None:
        self._count[cid] += 1

    def release(self, cid: str) -> None:
        self._count[cid] -= 1
        if self._count[cid] <= 0:
            del self._count[cid]

    @contextmanager
    def working(self, cid: str) -> Iterator[None]:
        """In hand for a transition and its publication."""
        self.take(cid)
        try:
            yield
        finally:
            self.release(cid)


class Publisher:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex
        # results on Kafka whose ledger note (`published_state`) is not written yet
        self.marks: dict[str, LedgerState] = {}

    async def step(
        self,
        cid: str,
        target: LedgerState,
        at: datetime,
        *,
        settled_hold: bool = True,
        noted: Callable[[LedgerRow], None] | None = None,
        **fields: Any,
    ) -> LedgerRow | None:
        """One ledger transition end to end: the durable write, then `written`. None: the row was
        not in a state this transition leaves from — another path moved it first, and its own
        result stands."""
        moved = await self.ex.ledger().transition(cid, target, at, **fields)
        if moved is None:
            return None
        await self.written(moved, settled_hold=settled_hold, noted=noted)
        return moved

    async def written(
        self, row: LedgerRow, *, settled_hold: bool = True, noted: Callable[[LedgerRow], None] | None = None
    ) -> None:
        """What follows a durable ledger write: the live book derived from the row, `noted` (the
        caller's counts and log line, in place before anyone can read the result), the result
        published (a failed publish is retried by the sweep)."""
        self.ex.book.apply(row, settled_hold=settled_hold)
        if noted is not None:
            noted(row)
        if RESULT_STATUS[row.state] is not None:
            await self.publish(row)

    async def publish(self, row: LedgerRow, *, republish: bool = False) -> bool:
        """Publish the row's result and mark it for its ledger note; False: Kafka refused it."""
        result = result_from_row(row)
        at = getattr(row, f"{row.state.value}_at") or now_utc()
        placed = await self.send_result(result, at, causation=row.command_event_id, key=row.command_id)
        if placed is None:
            return False
        if held_until_covered(result.status, result.resolved_by):
            self.ex.book.place_settled(row.command_id, {placed.partition: placed.offset + 1})
            self.ex.recovered_unplaced.discard(row.command_id)
        if not republish:
            self.ex.results[result.status] += 1
        self.marks[row.command_id] = row.state
        return True

    async def note_published(self) -> None:
        """Write the ledger notes of the results published since the last call, in one write."""
        marks, self.marks = self.marks, {}
        try:
            await self.ex.ledger().mark_published_many(marks)
        except BaseException:
            for cid, state in marks.items():  # a newer publication of the row wins
                self.marks.setdefault(cid, state)
            raise

    async def send_result(
        self, result: TradeResult, at: datetime, *, causation: Any = None, key: str | None = None
    ) -> Placed | None:
        """Publish a result; where it landed, or None when Kafka refused it (the sweep retries)."""
        ex = self.ex
        event = new_event(
            result,
            producer=ex.producer_id,
            pair=ex.cfg.pair,
            occurred_at=at,
            correlation_id=result.quote_id,
            causation_id=causation,
        )
        try:
            placed = await ex.producer.publish(event, key=key or result.command_id)
        except (KafkaError, OSError) as exc:
            ex.kafka_failed(exc)
            return None
        ex.kafka_link.ok()
        ex.mark_success()
        return placed
