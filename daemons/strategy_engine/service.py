"""strategy-engine: join each request with the latest price and inventory, run the gates,
publish a decision for every request and a command only when armed and every gate passes
(docs/design.md §1, §3, §7).

Inputs are the latest `ref.market_price` and `state.intent_inventory` (read from the last event
on start, so a restart decides at once) and `exec.trade_result` (to release reservations; read
batched by a second consumer group, `strategy-engine.results`, so a result never wakes the loop
that decides).
Requests are read from where the group left off, or from the end for a new group: an old
request can only be too old. Reservations for answers still live across a restart are rebuilt
from the recent commands and results on the bus. Starts disarmed, always.

Where each part lives: `deciding.py` (a request decided, its decision and command built by
`records.py` and reserved), `publishing.py` (sending them, resending until acknowledged, and
committing a batch's requests only then), `reserving.py` (reservations kept from commands and
results, and rebuilt at start), `controls.py` (the control socket, `/state`, the health reasons);
the pure rules beside them in `gates.py`, `pricing.py`, `records.py`, `reservations.py`;
`settings.py`, and `metrics.py` for what `/metrics` reads. This module holds the state they
share, the two consume loops and the wiring.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import TopicPartition

from daemons.core.arming import ArmSwitch
from daemons.core.assets import ActivePair
from daemons.core.bus import Delivery, EventConsumer, EventProducer, next_offsets
from daemons.core.ceilings import CeilingsError, load_ceilings
from daemons.core.control import AuditWatch, Route
from daemons.core.events import Envelope, IntentInventory, MarketPrice, SwapDemand, TradeResult, read_behind
from daemons.core.health import Link
from daemons.core.metrics import MetricSet
from daemons.core.repeats import RepeatTracker
from daemons.core.runtime import Service
from daemons.strategy_engine.controls import Controls
from daemons.strategy_engine.deciding import Deciding
from daemons.strategy_engine.gates import Limits, Reason, ceiling_breach
from daemons.strategy_engine.metrics import daemon_metrics
from daemons.strategy_engine.publishing import Publishing, Sent
from daemons.strategy_engine.reservations import Reservations
from daemons.strategy_engine.reserving import Reserving
from daemons.strategy_engine.settings import StrategySettings

__all__ = ["StrategyEngine", "StrategySettings"]

# Read as they arrive: a request is decided at once, on the newest price and inventory.
INPUT_TOPICS = ("norm.swap_demand", "ref.market_price", "state.intent_inventory")
# Read batched, by a consumer group of its own: results only release reservations, and a release
# read up to `kafka_batch_wait_ms` later only holds an amount a little longer (the safe side).
# One group for everything cost the broker and us a fetch answer per result, two per request.
RESULT_TOPICS = ("exec.trade_result",)
LATEST_TOPICS = ("ref.market_price", "state.intent_inventory")


class StrategyEngine(Service):
    kafka_link: Link  # publishes: always has one
    name = "strategy-engine"

    def __init__(self, settings: StrategySettings) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.pair = ActivePair(settings.btc_asset_id)
        self.limits = Limits(
            threshold_pct=settings.strategy_threshold_pct,
            target_edge_pct=settings.strategy_target_edge_pct,
            answer_window_ms=settings.strategy_answer_window_ms,
            max_deadline_ms=settings.strategy_max_deadline_ms,
            min_notional_eure=settings.strategy_min_notional_eure,
            max_notional_eure=settings.strategy_max_notional_eure,
            price_max_age_ms=settings.strategy_price_max_age_ms,
            inventory_max_age_ms=settings.strategy_inventory_max_age_ms,
            buffer={
                self.pair.btc.asset_id: settings.strategy_buffer_btc,
                self.pair.eure.asset_id: settings.strategy_buffer_eure,
            },
        )
        self.ceilings = load_ceilings(settings.ceilings_file, self.pair)
        breach = ceiling_breach(self.limits, self.ceilings)
        if breach is not None:
            raise CeilingsError(f"strategy settings beyond the ceilings in {settings.ceilings_file}: {breach}")
        self.arm = ArmSwitch(self.audit, self.log)  # disarmed on every start: no setting arms it
        self.producer = EventProducer(settings, client_id=self.name)
        self.consumer = EventConsumer(settings, self.name, INPUT_TOPICS, on_assigned=self._assigned)
        self.results_consumer = EventConsumer(
            settings, f"{self.name}.results", RESULT_TOPICS, on_assigned=self._assigned, batched=True
        )
        self.reservations = Reservations()
        self.repeats = RepeatTracker()
        self.price: Envelope[MarketPrice] | None = None
        self.inventory: Envelope[IntentInventory] | None = None
        self.inventory_behind = 0  # snapshots ignored for a block behind the one held
        self.counters: Counter[str] = Counter({r.value: 0 for r in Reason})
        self.latest_decision: dict[str, Any] | None = None
        self.latest_rejection: dict[str, Any] | None = None
        self.audit_watch = AuditWatch(settings.control_dir, self.log)
        # publishing decisions and commands (publishing.py says when it fails and recovers)
        self.kafka_link = Link(self.log, down="kafka_publish_failed", up="kafka_publish_recovered")
        # the engine's concerns, each over the state above
        self.deciding = Deciding(self)
        self.publishing = Publishing(self)
        self.reserving = Reserving(self)
        self.controls = Controls(self)

    @property
    def audit_impaired(self) -> str | None:
        return self.audit_watch.impaired

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if not await self.start_bus(self.producer):
            return
        await self.reserving.rebuild()
        if not await self.start_bus(self.consumer, self.results_consumer):
            await self.producer.stop()
            return
        watcher = asyncio.create_task(self.audit_watch.run()) if self.cfg.strict_audit else None
        loops = [
            asyncio.create_task(self._consume(c), name=f"consume-{c.topics[0]}")
            for c in (self.consumer, self.results_consumer)
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop that failed fails the daemon, as one loop did
        finally:
            if watcher is not None:
                watcher.cancel()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.results_consumer.stop()
            await self.consumer.stop()
            await self.producer.stop()

    async def _consume(self, consumer: EventConsumer) -> None:
        """Decide each batch, then commit its offsets once every decision and command it produced
        is acknowledged by the broker (a committer in order, so the next batch is decided
        meanwhile). A publish the broker did not acknowledge is sent again, the same event, until
        it is; a drain meanwhile leaves the batch uncommitted, so the next start reads those
        requests again (too old by then: each gets a recorded decision, no command). Never a
        silent gap in the audit chain."""
        committed: asyncio.Task[None] | None = None
        try:
            while not self.drain_requested.is_set():
                deliveries = self.dead_letters.screen(await consumer.poll(timeout_ms=50, max_records=500))
                acks: list[Sent] = []
                for d in deliveries:
                    acks.extend(await self._on_event(d))
                if deliveries:
                    committed = asyncio.create_task(
                        self.publishing.commit_when_acked(consumer, next_offsets(deliveries), acks, committed)
                    )
                if committed is not None and committed.done():
                    committed.result()  # a failed publish fails the daemon here
            if committed is not None:
                await committed
        finally:
            if committed is not None and not committed.done():
                committed.cancel()

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        """A new group starts requests at the end and reads the latest price and inventory."""
        for tp in assigned:
            consumer = self.results_consumer if tp.topic in RESULT_TOPICS else self.consumer
            if await consumer.committed(tp) is not None:
                continue
            end = await consumer.end_offset(tp)
            if tp.topic == "norm.swap_demand":
                consumer.seek(tp, end)
            elif tp.topic in LATEST_TOPICS:
                consumer.seek(tp, max(0, end - 1))
            else:
                consumer.seek(tp, end)  # results older than this start were replayed already

    async def _on_event(self, d: Delivery) -> list[Sent]:
        """Take one event; what it published, as the broker's acknowledgements to wait for."""
        event = d.event
        assert event is not None
        payload = event.payload
        if isinstance(payload, SwapDemand):
            return await self.deciding.decide(event)
        if isinstance(payload, MarketPrice):
            self.price = event
        elif isinstance(payload, IntentInventory):
            held = self.inventory.payload if self.inventory is not None else None
            if held is not None and read_behind(
                payload.account_id, payload.block_height, held.account_id, held.block_height
            ):
                self.inventory_behind += 1
                self.log.warning(
                    "inventory_snapshot_behind",
                    inventory_id=payload.inventory_id,
                    block_height=payload.block_height,
                    held_block_height=held.block_height,
                )
                return []
            self.inventory = event
            self.reservations.on_inventory(payload.results_through)
        elif isinstance(payload, TradeResult):
            self.reserving.on_result(event, (d.partition, d.offset))
        return []

    # --- control and state (controls.py) ---------------------------------------------------

    def routes(self) -> list[Route]:
        return self.controls.routes()

    def health_reasons(self) -> list[str]:
        return self.controls.health_reasons()

    def state(self) -> dict[str, Any]:
        return self.controls.state()

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def gate_status(self) -> str:
        return f"{'armed' if self.arm.armed else 'disarmed'}; " + super().gate_status()
