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
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ConfigDict, Field, model_validator

from daemons.core.arming import ArmSwitch
from daemons.core.assets import ActivePair
from daemons.core.bus import Delivery, EventConsumer, EventProducer, kafka_auth, next_offsets
from daemons.core.ceilings import CeilingsError, load_ceilings
from daemons.core.control import AuditWatch, Caller, ControlError, OperatorAction, Route
from daemons.core.events import (
    Dec,
    Envelope,
    EventDecodeError,
    ExecuteTrade,
    IntentInventory,
    MarketPrice,
    SwapDemand,
    TradeDecision,
    TradeResult,
    decode,
    new_event,
    now_utc,
    read_behind,
)
from daemons.core.metrics import MetricSet
from daemons.core.repeats import RepeatTracker
from daemons.core.runtime import Service
from daemons.core.settings import CoreSettings
from daemons.core.state_models import StrategyEngineFields, conform
from daemons.strategy_engine.gates import (
    Context,
    Limits,
    Reason,
    Verdict,
    ceiling_breach,
    decide,
    inventory_view,
    price_view,
)
from daemons.strategy_engine.metrics import daemon_metrics
from daemons.strategy_engine.reservations import Reservations

# Read as they arrive: a request is decided at once, on the newest price and inventory.
INPUT_TOPICS = ("norm.swap_demand", "ref.market_price", "state.intent_inventory")
# Read batched, by a consumer group of its own: results only release reservations, and a release
# read up to `kafka_batch_wait_ms` later only holds an amount a little longer (the safe side).
# One group for everything cost the broker and us a fetch answer per result, two per request.
RESULT_TOPICS = ("exec.trade_result",)
LATEST_TOPICS = ("ref.market_price", "state.intent_inventory")
MAX_THRESHOLD = Decimal(50)


class StrategySettings(CoreSettings):
    strategy_threshold_pct: Decimal = Field(default=Decimal("2.0"), gt=0, le=MAX_THRESHOLD)
    strategy_target_edge_pct: Decimal = Field(default=Decimal("2.5"), gt=0, le=MAX_THRESHOLD)
    strategy_answer_window_ms: int = Field(default=2000, ge=100, le=3000)
    strategy_max_deadline_ms: int = Field(default=120_000, ge=1000)
    strategy_min_notional_eure: Decimal = Field(default=Decimal("1"), ge=0)
    # the seed: keep the first live cap tiny, a few EURe
    strategy_max_notional_eure: Decimal = Field(default=Decimal("5"), gt=0)
    strategy_price_max_age_ms: int = Field(default=5000, ge=1)
    strategy_inventory_max_age_ms: int = Field(default=30_000, ge=1)
    strategy_buffer_btc: int = Field(default=0, ge=0)  # base units never offered
    strategy_buffer_eure: int = Field(default=0, ge=0)
    # how long past min_deadline_ms an answer may live (the executor's margin): reservations last
    strategy_answer_margin_ms: int = Field(default=10_000, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> StrategySettings:
        if self.strategy_target_edge_pct < self.strategy_threshold_pct:
            raise ValueError("strategy_target_edge_pct must be >= strategy_threshold_pct")
        if self.strategy_min_notional_eure > self.strategy_max_notional_eure:
            raise ValueError("strategy_min_notional_eure must be <= strategy_max_notional_eure")
        return self


class ThresholdBody(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    threshold_pct: Dec
    target_edge_pct: Dec | None = None


class LimitsBody(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    min_notional_eure: Dec | None = None
    max_notional_eure: Dec | None = None
    answer_window_ms: int | None = Field(default=None, ge=100, le=3000)
    max_deadline_ms: int | None = Field(default=None, ge=1000)
    price_max_age_ms: int | None = Field(default=None, ge=1)
    inventory_max_age_ms: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Sent:
    """An event handed to the producer, and the broker's acknowledgement to wait for."""

    ack: asyncio.Future[Any]
    event: Envelope[Any]
    key: str | None


class StrategyEngine(Service):
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
        self.kafka_error: str | None = None
        self._positioned: set[TopicPartition] = set()

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if not await self.start_bus(self.producer):
            return
        await self._rebuild_reservations()
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
                        self._commit_when_acked(consumer, next_offsets(deliveries), acks, committed)
                    )
                if committed is not None and committed.done():
                    committed.result()  # a failed publish fails the daemon here
            if committed is not None:
                await committed
        finally:
            if committed is not None and not committed.done():
                committed.cancel()

    async def _commit_when_acked(
        self,
        consumer: EventConsumer,
        offsets: dict[TopicPartition, int],
        sent: list[Sent],
        before: asyncio.Task[None] | None,
    ) -> None:
        if before is not None:
            await before
        for item in sent:
            if not await self._acked(item):
                return  # draining with it unacknowledged: uncommitted, read again at the next start
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            self.log.warning("kafka_commit_failed", error=str(exc))

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

    async def _rebuild_reservations(self) -> None:
        """Commands and results of the last answer lifetime: the answers that may still be live."""
        horizon = self.cfg.strategy_max_deadline_ms + self.cfg.strategy_answer_margin_ms + 60_000
        since_ms = int((now_utc() - timedelta(milliseconds=horizon)).timestamp() * 1000)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.cfg.kafka_bootstrap, enable_auto_commit=False, **kafka_auth(self.cfg)
        )
        await reader.start()
        try:
            # the partition count is ours (topics are created from the settings)
            tps = [
                TopicPartition(t, p)
                for t in ("cmd.execute_trade", "exec.trade_result")
                for p in range(self.cfg.topic_partitions)
            ]
            reader.assign(tps)
            starts = await reader.offsets_for_times({tp: since_ms for tp in tps})
            ends = await reader.end_offsets(tps)
            for tp in tps:
                start = starts.get(tp)
                reader.seek(tp, start.offset if start is not None else ends[tp])
            events: list[tuple[Envelope[Any], tuple[int, int]]] = []
            remaining = [tp for tp in tps if await reader.position(tp) < ends[tp]]
            while remaining:
                for tp, records in (await reader.getmany(*remaining, timeout_ms=200)).items():
                    for rec in records:
                        if rec.offset < ends[tp]:
                            try:
                                events.append((decode(tp.topic, rec.value), (rec.partition, rec.offset)))
                            except EventDecodeError:
                                continue  # a malformed old event cannot be a live answer
                remaining = [tp for tp in remaining if await reader.position(tp) < ends[tp]]
            for e, placed in sorted(events, key=lambda item: item[0].observed_at):
                if isinstance(e.payload, ExecuteTrade):
                    self._reserve(e.payload)
                elif isinstance(e.payload, TradeResult):
                    self._on_result(e, placed)
            self.reservations.expire(now_utc())
            self.log.info("reservations_rebuilt", live=len(self.reservations.live))
        finally:
            await reader.stop()

    async def _acked(self, item: Sent) -> bool:
        """Wait for the broker's acknowledgement of `item`, sending it again until there is one
        (the same event: history-writer keeps one row per event id; a late command is refused by
        the executor as past its answer_by, with a result). False: a drain came first."""
        ack, delay = item.ack, 0.5
        while True:
            try:
                await ack
                if ack is not item.ack and self.kafka_error is not None:
                    # the broker takes our publishes again: healthy now, not at the next decision
                    self.log.info("kafka_publish_recovered", event_id=str(item.event.event_id))
                    self.kafka_error = None
                return True
            except (KafkaError, OSError) as exc:
                self.kafka_error = f"{exc.__class__.__name__}: {exc}"
                self.log.warning(
                    "publish_unacknowledged_resending",
                    event_id=str(item.event.event_id),
                    event_type=item.event.event_type,
                    error=str(exc),
                )
            while True:
                if self.drain_requested.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    ack = await self.producer.send(item.event, key=item.key)
                    break
                except (KafkaError, OSError) as exc:
                    self.kafka_error = f"{exc.__class__.__name__}: {exc}"

    async def _on_event(self, d: Delivery) -> list[Sent]:
        """Take one event; what it published, as the broker's acknowledgements to wait for."""
        event = d.event
        assert event is not None
        payload = event.payload
        if isinstance(payload, SwapDemand):
            return await self._decide(event)
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
            self._on_result(event, (d.partition, d.offset))
        return []

    def _on_result(self, event: Envelope[TradeResult], placed: tuple[int, int]) -> None:
        r = event.payload
        self.reservations.on_result(r.command_id, r.status, placed, r.deadline, r.resolved_by)

    def _reserve(self, cmd: ExecuteTrade) -> None:
        received = cmd.request_received_at or cmd.answer_by
        expires = received + timedelta(
            milliseconds=cmd.min_deadline_ms + self.cfg.strategy_answer_margin_ms + self.cfg.strategy_answer_window_ms
        )
        self.reservations.reserve(cmd.command_id, cmd.quote_id, cmd.asset_out, cmd.amount_out, expires)

    # --- deciding -------------------------------------------------------------------------

    async def _decide(self, event: Envelope[SwapDemand]) -> list[Sent]:
        demand = event.payload
        now = now_utc()
        self.reservations.expire(now)
        repeat = self.repeats.seen_before(demand.quote_id) or demand.repeat
        verdict = decide(
            Context(
                demand=demand,
                now=now,
                pair=self.pair,
                limits=self.limits,
                paused=self.paused,
                armed=self.arm.armed,
                repeat=repeat,
                price=price_view(self.price, now) if self.price is not None else None,
                inventory=inventory_view(self.inventory, now) if self.inventory is not None else None,
                reserved=self.reservations.reserved(),
                audit_impaired=self.audit_impaired is not None,
            )
        )
        decision = self._decision(demand, verdict, now)
        decision_event = new_event(
            decision,
            producer=self.producer_id,
            pair=self.cfg.pair,
            correlation_id=demand.quote_id,
            causation_id=event.event_id,
        )
        events: list[Envelope[Any]] = [decision_event]
        command: ExecuteTrade | None = None
        if verdict.execute:
            assert verdict.candidate is not None
            command = ExecuteTrade(
                command_id=str(uuid.uuid4()),
                decision_id=decision.decision_id,
                quote_id=demand.quote_id,
                direction=demand.direction,
                asset_in=demand.asset_in,
                asset_out=demand.asset_out,
                amount_in=verdict.candidate.amount_in,
                amount_out=verdict.candidate.amount_out,
                fixed_side=demand.fixed_side,
                min_deadline_ms=demand.min_deadline_ms,
                request_received_at=demand.received_at,
                answer_by=demand.received_at + timedelta(milliseconds=self.limits.answer_window_ms),
            )
            # reserve before sending: a second request must already see this one's amount
            self._reserve(command)
            events.append(
                new_event(
                    command,
                    producer=self.producer_id,
                    pair=self.cfg.pair,
                    correlation_id=demand.quote_id,
                    causation_id=decision_event.event_id,
                )
            )
        sent: list[Sent] = []
        # not awaiting the broker: the next request is decided while these are acknowledged (the
        # offset is committed only after them: `_commit_when_acked`, which also sends again)
        to_send: list[tuple[Envelope[Any], str | None]] = [(decision_event, None)]
        if command is not None:  # keyed by command id: per-command ordering for the executor
            to_send.append((events[1], command.command_id))
        for item_event, key in to_send:
            try:
                ack = await self.producer.send(item_event, key=key)
            except (KafkaError, OSError) as exc:
                self._publish_failed(exc, command if item_event is not decision_event else None)
                ack = asyncio.get_running_loop().create_future()
                ack.set_exception(exc)
            else:
                if item_event is decision_event:
                    ack.add_done_callback(self._acknowledged)
                else:
                    assert command is not None  # the second event is the command's
                    ack.add_done_callback(functools.partial(self._command_acknowledged, command=command))
            sent.append(Sent(ack, item_event, key))
        self._count(verdict, decision)
        return sent

    def _acknowledged(self, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled():
            return
        exc = ack.exception()
        if exc is not None:
            self._publish_failed(exc, None)
        elif self.kafka_error is not None:
            self.log.info("kafka_publish_recovered")
            self.kafka_error = None

    def _command_acknowledged(self, ack: asyncio.Future[Any], command: ExecuteTrade) -> None:
        if ack.cancelled():
            return
        exc = ack.exception()
        if exc is not None:
            self._publish_failed(exc, command)

    def _publish_failed(self, exc: BaseException, command: ExecuteTrade | None) -> None:
        if command is not None:
            # not sent, or not known to be sent: the reservation stays until it expires
            self.log.error(
                "command_publish_failed", quote_id=command.quote_id, command_id=command.command_id, error=str(exc)
            )
        self.kafka_error = f"{exc.__class__.__name__}: {exc}"

    def _decision(self, demand: SwapDemand, v: Verdict, now: datetime) -> TradeDecision:
        c = v.candidate
        pv = price_view(self.price, now) if self.price is not None else None
        inv = self.inventory.payload if self.inventory is not None else None
        figures = None
        if v.give_asset is not None:
            figures = {
                "asset_id": v.give_asset,
                "credited": str(v.credited),
                "reserved": str(v.reserved),
                "buffer": str(v.buffer),
                "pending_in": str(v.pending_in),
                "spendable": str(v.spendable),
            }
        return TradeDecision(
            decision_id=str(uuid.uuid4()),
            quote_id=demand.quote_id,
            pair=self.cfg.pair,
            direction=demand.direction,
            decision="execute" if v.execute else "reject",
            decision_reason=v.reason.value,
            decision_detail=v.detail,
            implied_rate=c.implied_rate if c else None,
            reference_rate=c.reference_rate if c else None,
            gross_edge_pct=c.gross_edge_pct if c else None,
            threshold_pct=self.limits.threshold_pct,
            target_edge_pct=self.limits.target_edge_pct,
            price_freshness_ms=pv.age_ms if pv else None,
            price_event_id=self.price.event_id if self.price is not None else None,
            price_source=pv.source if pv else None,
            fallback_used=pv.fallback_used if pv else None,
            eure_eur_rate=pv.eure_eur_rate if pv else None,
            eure_basis=pv.eure_basis if pv else None,
            inventory_snapshot_id=inv.inventory_id if inv else None,
            inventory_snapshot=figures,
            fixed_side=demand.fixed_side,
            amount_in=c.amount_in if c else None,
            amount_out=c.amount_out if c else None,
            notional_eure=c.notional_eure if c else v.notional_eure,
            protocol_fee_pips=inv.fee_pips if inv else None,
            armed=self.arm.armed,
            request_received_at=demand.received_at,
            decided_at=now,
        )

    def _count(self, v: Verdict, decision: TradeDecision) -> None:
        self.counters[v.reason.value] += 1
        summary = {
            "quote_id": decision.quote_id,
            "decision_id": decision.decision_id,
            "reason": v.reason.value,
            "detail": v.detail,
            "direction": decision.direction,
            "gross_edge_pct": decision.gross_edge_pct,
            "at": decision.decided_at,
        }
        self.latest_decision = summary
        if v.execute:
            self.mark_success()
            self.log.info(
                "command_emitted",
                quote_id=decision.quote_id,
                decision_id=decision.decision_id,
                gross_edge_pct=str(decision.gross_edge_pct),
            )
        else:
            self.latest_rejection = summary
            if v.reason not in (Reason.REQUEST_TOO_OLD, Reason.REPEATED_QUOTE_ID, Reason.DISARMED):
                self.log.info(
                    "decision_rejected",
                    quote_id=decision.quote_id,
                    reason=v.reason.value,
                    detail=v.detail,
                    price_freshness_ms=decision.price_freshness_ms,
                )

    # --- control --------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def threshold(_r: Any, body: ThresholdBody, caller: Caller) -> Any:
            target = (
                body.target_edge_pct
                if body.target_edge_pct is not None
                else max(body.threshold_pct, self.limits.target_edge_pct)
            )
            if not (0 < body.threshold_pct <= MAX_THRESHOLD) or not (0 < target <= MAX_THRESHOLD):
                raise ControlError(422, f"threshold and target edge must be in (0, {MAX_THRESHOLD}] percent")
            if target < body.threshold_pct:
                raise ControlError(422, "target_edge_pct must be >= threshold_pct")
            new = replace(self.limits, threshold_pct=body.threshold_pct, target_edge_pct=target)
            self._within_ceilings(new)
            old = self._limits_view()
            self.limits = new
            self.audit.record("threshold", caller, "set", {"from": old, "to": self._limits_view()})
            return self._limits_view()

        async def limits(_r: Any, body: LimitsBody, caller: Caller) -> Any:
            changes = body.model_dump(exclude_none=True, exclude={"operator", "reason"})
            if not changes:
                raise ControlError(400, "nothing to change: give at least one limit")
            new = replace(self.limits, **changes)
            if new.min_notional_eure < 0 or new.max_notional_eure <= 0:
                raise ControlError(422, "notional limits must be positive")
            if new.min_notional_eure > new.max_notional_eure:
                raise ControlError(422, "min_notional_eure must be <= max_notional_eure")
            self._within_ceilings(new)
            old = self._limits_view()
            self.limits = new
            self.audit.record("limits", caller, "set", {"from": old, "to": self._limits_view()})
            return self._limits_view()

        async def show(_r: Any, _b: Any, _c: Caller) -> Any:
            return self._limits_view()

        return [
            *self.arm.routes(),
            Route("GET", "/threshold", show, "Threshold, target edge and limits"),
            Route(
                "PUT",
                "/threshold",
                threshold,
                "Set the gross-edge threshold (and target edge)",
                ThresholdBody,
                body_optional=False,
            ),
            Route("GET", "/limits", show, "Threshold, target edge and limits"),
            Route(
                "PUT",
                "/limits",
                limits,
                "Set notional caps, answer window and freshness bounds",
                LimitsBody,
                body_optional=False,
            ),
        ]

    def _within_ceilings(self, limits: Limits) -> None:
        breach = ceiling_breach(limits, self.ceilings)
        if breach is not None:
            raise ControlError(
                403,
                f"refused: {breach} (root-owned {self.cfg.ceilings_file}; no control API raises "
                "a ceiling, lowering a limit is always allowed)",
            )

    def _limits_view(self) -> dict[str, Any]:
        lim = self.limits
        return {
            "threshold_pct": str(lim.threshold_pct),
            "target_edge_pct": str(lim.target_edge_pct),
            "min_notional_eure": str(lim.min_notional_eure),
            "max_notional_eure": str(lim.max_notional_eure),
            "answer_window_ms": lim.answer_window_ms,
            "max_deadline_ms": lim.max_deadline_ms,
            "price_max_age_ms": lim.price_max_age_ms,
            "inventory_max_age_ms": lim.inventory_max_age_ms,
            "buffer": {k: str(v) for k, v in lim.buffer.items()},
        }

    # --- state ----------------------------------------------------------------------------

    def _inputs(self) -> dict[str, Any]:
        now = now_utc()
        pv = price_view(self.price, now) if self.price is not None else None
        iv = inventory_view(self.inventory, now) if self.inventory is not None else None
        return {
            "price": None
            if pv is None
            else {
                "event_id": pv.event_id,
                "age_ms": pv.age_ms,
                "decisionable": pv.decisionable,
                "source": pv.source,
                "reason": pv.not_decisionable_reason,
                "stale": pv.age_ms > self.limits.price_max_age_ms,
            },
            "inventory": None
            if iv is None
            else {
                "inventory_id": iv.inventory_id,
                "age_ms": iv.age_ms,
                "stale": iv.stale or iv.age_ms > self.limits.inventory_max_age_ms,
            },
        }

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        inputs = self._inputs()
        if inputs["price"] is None:
            reasons.append("no_price")
        elif inputs["price"]["stale"] or not inputs["price"]["decisionable"]:
            reasons.append("price_not_decisionable")
        if inputs["inventory"] is None:
            reasons.append("no_inventory")
        elif inputs["inventory"]["stale"]:
            reasons.append("inventory_stale")
        if self.audit_impaired:
            reasons.append(f"audit_impaired: {self.audit_impaired}")
        if self.kafka_error:
            reasons.append(f"kafka_unavailable: {self.kafka_error}")
        return reasons

    @property
    def audit_impaired(self) -> str | None:
        return self.audit_watch.impaired

    def gate_status(self) -> str:
        return f"{'armed' if self.arm.armed else 'disarmed'}; " + super().gate_status()

    def state(self) -> dict[str, Any]:
        reasons = self.reasons()
        return conform(
            StrategyEngineFields,
            {
                **self.arm.state(),
                "limits": self._limits_view(),
                "ceilings": self.ceilings.model_dump(mode="json") | {"file": str(self.cfg.ceilings_file)},
                "inputs": self._inputs(),
                "connected": {"kafka": self.kafka_error is None},
                "authoritative": not reasons,
                "blocked_reason": "disarmed" if not self.arm.armed else ("; ".join(reasons) or None),
                "latest_decision": self.latest_decision,
                "latest_rejection": self.latest_rejection,
                "reason_counters": dict(self.counters),
                "reserved": {k: str(v) for k, v in self.reservations.reserved().items()},
                "reservations": self.reservations.view(),
                "inventory_snapshots_behind": self.inventory_behind,
            },
        )
