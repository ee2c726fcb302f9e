"""market-reference-ingest: the Kraken BTC/EUR stream (primary) and CoinGecko polls (fallback and
cross-check) in, `ref.market_price` out. See docs/design.md §3
and docs/reference-prices.md.

The shell only moves data: Kraken ticks (validated: `ask <= bid` is discarded and counted) and
CoinGecko polls become the two source views; the pure policy (`policy.evaluate`) turns them into
the event and the transitions to log. A price is published whenever it changes materially and at
least every `market_emit_interval_s`, so consumers can judge freshness from the stream itself;
sources are re-judged every `market_evaluate_interval_s` even when nothing arrives, because
staleness is the absence of news.

Pause stops publishing and scheduled CoinGecko polls; the Kraken stream, the evaluation and
`/state` go on, so the daemon stays observable. `POST /refresh` polls CoinGecko now, unless a
429 cool-off is running (then it answers 429 and sends nothing).

CoinGecko's client and polls are in `coingecko_poll.py`, the control socket and `/state` in
`controls.py`, `GET /metrics` in `metrics.py`. This module holds the state they share, the
Kraken intake, the evaluation and publishing loop, the health and the wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError

from daemons.core.bus import EventProducer
from daemons.core.control import Route
from daemons.core.events import MarketPrice, new_event, now_utc
from daemons.core.health import Link
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.market_reference_ingest.coingecko_poll import CoinGeckoPolls
from daemons.market_reference_ingest.controls import Controls
from daemons.market_reference_ingest.fair import tick_rejection
from daemons.market_reference_ingest.metrics import daemon_metrics
from daemons.market_reference_ingest.policy import (
    CoinGeckoView,
    KrakenView,
    PolicyState,
    Transition,
    evaluate,
    material_change,
)
from daemons.market_reference_ingest.settings import MarketReferenceSettings
from daemons.venues.backoff import Backoff
from daemons.venues.kraken import KrakenClient, KrakenTick


class MarketReferenceIngest(Service):
    kafka_link: Link  # publishes: always has one
    name = "market-reference-ingest"

    def __init__(self, settings: MarketReferenceSettings, *, clock: Callable[[], datetime] = now_utc) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.clock = clock
        self.policy_cfg = settings.policy_config()
        self.producer = EventProducer(settings, client_id=self.name)
        self.kraken = KrakenClient(
            settings.kraken_ws_url,
            settings.market_kraken_symbol,
            silence_timeout_s=settings.market_kraken_silence_timeout_s,
            data_timeout_s=settings.market_kraken_data_timeout_s,
            backoff=Backoff(
                initial_s=settings.market_kraken_backoff_initial_s,
                max_s=settings.market_kraken_backoff_max_s,
                budget=settings.market_kraken_reconnect_budget,
                window_s=settings.market_kraken_reconnect_window_s,
            ),
            clock=clock,
        )
        self.kraken_tick: KrakenTick | None = None
        self.cg = CoinGeckoView()
        self.policy_state = PolicyState()
        self.current: MarketPrice | None = None
        self.evaluated_at: datetime | None = None
        self.last_published: MarketPrice | None = None
        self.last_published_at: datetime | None = None
        self.last_event_id: str | None = None
        self.kafka_link = Link(
            self.log, down="kafka_publish_failed", up="kafka_publish_recovered", topic="ref.market_price"
        )
        self.discarded: Counter[str] = Counter({"crossed": 0, "locked": 0, "non_positive": 0})
        self.counts: Counter[str] = Counter(
            {
                k: 0
                for k in (
                    "ticks",
                    "published",
                    "publish_failures",
                    "suppressed_while_paused",
                    "polls_scheduled",
                    "polls_refresh",
                    "poll_failures",
                )
            }
        )
        self._wake = asyncio.Event()
        self._first_tick = asyncio.Event()
        self.coingecko = CoinGeckoPolls(self)
        self.controls = Controls(self)

    def wake(self) -> None:
        """Evaluate now instead of at the next interval: a source has news."""
        self._wake.set()

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.coingecko.open()  # before the bus: a missing API key is shown while Kafka is awaited too
        if not await self.start_bus(self.producer):
            await self.coingecko.close()
            return
        self.kraken.start()
        evaluator = asyncio.create_task(self._evaluate_loop(), name="evaluate")
        helpers = [asyncio.create_task(self._tick_loop(), name="kraken_ticks")]
        if self.coingecko.client is not None:
            helpers.append(asyncio.create_task(self.coingecko.loop(), name="coingecko_poll"))
        draining = asyncio.create_task(self.drain_requested.wait(), name="drain")
        try:
            done, _ = await asyncio.wait([draining, evaluator, *helpers], return_when=asyncio.FIRST_COMPLETED)
            if not self.drain_requested.is_set():
                # a loop died without a drain: crash-only, the restart is the recovery path
                failed = next(iter(done))
                raise RuntimeError(f"{failed.get_name()} loop stopped") from failed.exception()
            self._wake.set()
            await evaluator  # a price being published is finished, then nothing new starts
        finally:
            draining.cancel()
            evaluator.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(draining, evaluator, *helpers, return_exceptions=True)
            await self.kraken.close()
            await self.coingecko.close()
            await self.producer.stop()

    async def _tick_loop(self) -> None:
        async for tick in self.kraken.ticks():
            self.on_tick(tick)

    def on_tick(self, tick: KrakenTick) -> None:
        self.counts["ticks"] += 1
        rejection = tick_rejection(tick.bid, tick.ask)
        if rejection is not None:
            self.discarded[rejection] += 1
            return
        self.kraken_tick = tick
        self._first_tick.set()
        self.wake()

    async def _evaluate_loop(self) -> None:
        await self._startup_grace()
        while not self.drain_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.cfg.market_evaluate_interval_s)
            self._wake.clear()
            await self.evaluate_and_publish()

    async def _startup_grace(self) -> None:
        """Give Kraken its first snapshot before judging it: otherwise every start would briefly
        publish a CoinGecko fallback price and log a fallback it never needed."""
        waiters = [asyncio.ensure_future(self._first_tick.wait()), asyncio.ensure_future(self.drain_requested.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.cfg.market_startup_grace_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- evaluation and publishing ----------------------------------------------------------

    def kraken_view(self, now: datetime) -> KrakenView:
        degraded = self.kraken.degraded(now)
        reason = degraded[0] if degraded else None
        if reason == "data_stale":
            # the client's data clock is its re-subscribe trigger; the age that makes a price
            # stale is the policy's own (market_kraken_stale_after_s), judged on valid ticks only
            reason = None
        tick = self.kraken_tick
        return KrakenView(
            bid=tick.bid if tick else None,
            ask=tick.ask if tick else None,
            received_at=tick.received_at if tick else None,
            source_time=tick.source_time if tick else None,
            connected=reason != "disconnected",
            degraded=reason,
        )

    async def evaluate_and_publish(self) -> None:
        now = self.clock()
        result = evaluate(self.policy_state, self.kraken_view(now), self.cg, now, self.policy_cfg)
        self.policy_state = result.state
        self.current = result.price
        self.evaluated_at = now
        for note in result.transitions:
            self._log_transition(note)
        if result.transitions:
            self.notify_status()
        self.parked = self.paused  # the pause is in effect once an evaluation has seen it
        due = material_change(self.last_published, result.price) or (
            self.last_published_at is None
            or now - self.last_published_at >= timedelta(seconds=self.cfg.market_emit_interval_s)
        )
        if not due:
            return
        if self.paused:
            self.counts["suppressed_while_paused"] += 1
            return
        await self._publish(result.price, now)

    def _log_transition(self, note: Transition) -> None:
        fields = dict(note.fields)
        venue = fields.pop("venue", None)
        log = self.log.warning if note.level == "warning" else self.log.info
        log(note.event, venue=venue, topic="ref.market_price", **fields)

    async def _publish(self, price: MarketPrice, now: datetime) -> None:
        event = new_event(price, producer=self.producer_id, pair=self.cfg.pair, occurred_at=price.source_time or now)
        try:
            await self.producer.publish(event)
        except (KafkaError, OSError) as exc:
            # the next evaluation retries: the price stays due until it is published
            self.counts["publish_failures"] += 1
            if self.kafka_link.healthy:  # the outage keeps its first error: repeats are not recorded
                self.kafka_link.fail(exc)
                self.notify_status()
            return
        if self.kafka_link.ok():
            self.notify_status()
        self.counts["published"] += 1
        self.last_published = price
        self.last_published_at = now
        self.last_event_id = str(event.event_id)
        self.mark_success()

    # --- control and state -----------------------------------------------------------------

    def routes(self) -> list[Route]:
        return self.controls.routes()

    def state(self) -> dict[str, Any]:
        return self.controls.state()

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.current is None:
            reasons.append("starting: no price evaluated yet")
        elif not self.current.decisionable:
            reasons.append(f"not_decisionable: {self.current.status_reason}")
        reasons += self.kafka_link.reason("kafka_unavailable")
        if self.coingecko.blocked:
            reasons.append(f"coingecko_unavailable: {self.coingecko.blocked}")
        return reasons

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)
