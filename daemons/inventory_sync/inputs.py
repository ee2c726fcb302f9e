"""inventory-sync's Kafka input: the liquidity history and our own trade results.

- `ops.liquidity_action` is read from the beginning on every assignment and folded into the
  liquidity ledger (which ignores what it has already seen), so pending funding survives a
  restart. Once the consumer stands at the topic's end on every partition the history is read:
  pending figures can be complete from then on, and each new transition asks for a reading.
- `exec.trade_result`: a settlement of ours published after this process started asks for a
  covering reading (its time is kept for the reconciliation's windows); one published before
  is covered by the first reading. An answer expired by the relay's silence makes the next
  reading a covering one, with no reading of its own.

Consume failures are retried with a doubling delay up to `inventory_kafka_retry_max_s`; the
consumer's health link shows in `/state` and `/healthz`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from daemons.core.bus import next_offsets
from daemons.core.events import Envelope, LiquidityAction, TradeResult, held_until_covered
from daemons.core.health import Link
from daemons.inventory_sync.triggers import Trigger

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync

LIQUIDITY_TOPIC = "ops.liquidity_action"
TRADE_TOPIC = "exec.trade_result"


class Inputs:
    def __init__(self, ex: InventorySync) -> None:
        self.ex = ex
        self.link = Link(ex.log, down="kafka_consume_failed", up="kafka_consume_recovered")
        self.history_caught_up = False
        # settlement times since the oldest reading the reconciliation keeps
        self.trades_settled: deque[datetime] = deque(maxlen=10_000)
        self.last_trade_settled_at: datetime | None = None

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        # the pending pipeline is rebuilt from the whole liquidity history on every assignment;
        # the fold ignores what it has already seen
        for tp in assigned:
            if tp.topic == LIQUIDITY_TOPIC:
                self.ex.consumer.seek(tp, 0)

    async def consume_loop(self) -> None:
        ex = self.ex
        delay = 0.1
        while not ex.drain_requested.is_set():
            try:
                deliveries = await ex.consumer.poll(ex.cfg.inventory_poll_ms)
                for d in ex.dead_letters.screen(deliveries):
                    assert d.event is not None
                    self.on_event(d.event)
                if deliveries:
                    await ex.consumer.commit(next_offsets(deliveries))
                if not self.history_caught_up:
                    await self._check_caught_up()
            except KafkaError as exc:
                self.link.fail(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, ex.cfg.inventory_kafka_retry_max_s)
                continue
            self.link.ok()
            delay = 0.1

    def on_event(self, event: Envelope[Any]) -> None:
        ex = self.ex
        payload = event.payload
        if isinstance(payload, LiquidityAction):
            view = ex.ledger.apply(event.event_id, payload, event.occurred_at)
            if view is None:
                return
            ex.counts["liquidity_events"] += 1
            if view.burned and view.pending:
                ex.finality.want()
            if self.history_caught_up:
                ex.request(Trigger("liquidity_action", event.event_id, payload.liquidity_action_id))
        elif isinstance(payload, TradeResult) and payload.status == "settled":
            if event.occurred_at < ex.started_at:
                # published before this process started: the first reading covers it (it takes
                # the topic's end offsets before its head block)
                ex.counts["trades_settled_before_start"] += 1
                return
            ex.counts["trades_settled"] += 1
            ex.finality.want()
            self.trades_settled.append(event.occurred_at)
            self.last_trade_settled_at = event.occurred_at
            ex.request(Trigger("trade_settled", event.event_id, payload.quote_id))
        elif isinstance(payload, TradeResult) and held_until_covered(payload.status, payload.resolved_by):
            # expired by the relay's silence: its hold waits for a covering reading, and the next
            # reading (at the latest the interval's) becomes one; no reading of its own (one per
            # unpicked answer would spend the NEAR RPC budget), nothing moved that we know of
            if event.occurred_at >= ex.started_at:
                ex.counts["silent_expiries"] += 1
                ex.finality.want()

    async def _check_caught_up(self) -> None:
        """The liquidity history is read once the consumer stands at its end on every partition."""
        ex = self.ex
        mine = {tp for tp in ex.consumer.assignment() if tp.topic == LIQUIDITY_TOPIC}
        if not mine:
            return
        lag = await ex.consumer.lag()
        if all(lag.get(f"{tp.topic}:{tp.partition}") == 0 for tp in mine):
            self.history_caught_up = True
            ex.log.info("liquidity_history_read", actions=len(ex.ledger), ignored=ex.ledger.ignored)
            ex.request(Trigger("history_caught_up"))

    def prune_trades(self, oldest: datetime | None) -> None:
        """Forget settlements older than the oldest reading the reconciliation keeps."""
        while self.trades_settled and oldest is not None and self.trades_settled[0] < oldest:
            self.trades_settled.popleft()
