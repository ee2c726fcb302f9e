"""Reading `cmd.execute_trade`: polls a drain can interrupt, each poll's commands taken together,
offsets committed only past what is durably in the ledger.

A command whose ledger write failed (PostgreSQL away) is read again once the ledger is back: the
consumer is rewound to it, and what lies past it is then a duplicate, which republishes its stored
result and never answers twice. While the ledger is away nothing is polled: commands wait in Kafka.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.bus import Delivery, next_offsets
from daemons.core.db import DB_ERRORS
from daemons.core.events import now_utc

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor


class Intake:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions this group never committed on start `executor_new_group_lookback_ms` back: a
        command sent while the executor was joining gets its result; an older one is long past its
        answer_by."""
        consumer = self.ex.consumer
        since_ms = int(now_utc().timestamp() * 1000) - self.ex.cfg.executor_new_group_lookback_ms
        for tp in assigned:
            if await consumer.committed(tp) is None:
                consumer.seek(tp, await consumer.offset_at(tp, since_ms))

    async def run(self) -> None:
        ex = self.ex
        while not ex.drain_requested.is_set():
            if not ex.db.healthy:
                # without the ledger nothing is answered: commands wait in Kafka
                await ex.nap(ex.cfg.executor_poll_ms / 1000)
                continue
            try:
                deliveries = await self._poll()
            except KafkaError as exc:
                ex.kafka_failed(exc)
                await ex.nap(0.5)
                continue
            if deliveries:
                await self.take(deliveries)

    async def _poll(self) -> list[Delivery]:
        """One poll that a drain can interrupt: during a group rebalance aiokafka waits for the
        new assignment whatever the poll timeout says (a killed predecessor holds the group until
        its session times out), and a drain must not wait for that."""
        poll = asyncio.ensure_future(self.ex.consumer.poll(timeout_ms=self.ex.cfg.executor_poll_ms))
        drain = asyncio.ensure_future(self.ex.drain_requested.wait())
        try:
            await asyncio.wait({poll, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
        if poll.done():
            return poll.result()
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        return []

    async def take(self, deliveries: list[Delivery]) -> None:
        ex = self.ex
        good = ex.dead_letters.screen(deliveries)
        # Taken concurrently: a command's inventory check and its hold run with no await between
        # them (`Answering.take`), so interleaving at the ledger writes cannot over-commit.
        outcomes = await asyncio.gather(
            *(ex.answering.take(d.event) for d in good),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        failed: list[Delivery] = []
        for d, outcome in zip(good, outcomes, strict=True):
            if isinstance(outcome, DB_ERRORS):
                failed.append(d)
                ex.db_lost(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        done = deliveries
        if failed:
            first = self._rewind(failed)
            # what lies at or past a rewound position is read again; a command already stored is
            # then a duplicate, which republishes its result and never answers twice
            done = [d for d in deliveries if d.tp not in first or d.offset < first[d.tp]]
        try:
            await ex.consumer.commit(next_offsets(done))
        except KafkaError as exc:
            ex.kafka_failed(exc)

    def _rewind(self, rest: list[Delivery]) -> dict[TopicPartition, int]:
        """Read these again once PostgreSQL is back (a ledger row is the only proof of receipt);
        the position each partition was rewound to."""
        first: dict[TopicPartition, int] = {}
        for d in rest:
            first[d.tp] = min(first.get(d.tp, d.offset), d.offset)
        for tp, offset in first.items():
            self.ex.consumer.seek(tp, offset)
        return first
