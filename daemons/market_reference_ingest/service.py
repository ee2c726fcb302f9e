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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from aiokafka.errors import KafkaError

from daemons.core.bus import EventProducer
from daemons.core.control import Caller, ControlError, OperatorAction, Route, json_response
from daemons.core.events import MarketPrice, ms_since, new_event, now_utc
from daemons.core.metrics import MetricSet
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.core.state_models import MarketReferenceFields, conform
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
from daemons.venues.coingecko import (
    CoinGeckoAuthError,
    CoinGeckoClient,
    CoinGeckoConnectionError,
    CoinGeckoError,
    CoinGeckoHTTPError,
    CoinGeckoRateLimited,
    CoinGeckoResponseError,
    CoinGeckoTimeout,
    CoinGeckoUnknownId,
)
from daemons.venues.kraken import KrakenClient, KrakenTick


def _error_kind(exc: CoinGeckoError) -> str:
    # most specific first: CoinGeckoAuthError is a CoinGeckoHTTPError
    for cls, kind in (
        (CoinGeckoRateLimited, "rate_limited"),
        (CoinGeckoTimeout, "timeout"),
        (CoinGeckoConnectionError, "connection"),
        (CoinGeckoAuthError, "auth"),
        (CoinGeckoHTTPError, "http"),
        (CoinGeckoUnknownId, "unknown_id"),
        (CoinGeckoResponseError, "bad_response"),
    ):
        if isinstance(exc, cls):
            return kind
    return "error"


@dataclass(frozen=True)
class PollOutcome:
    result: Literal["ok", "rate_limited", "failed"]
    sent: bool = True  # False: refused unsent because a 429 cool-off was still running
    error: str | None = None
    retry_not_before: datetime | None = None


class MarketReferenceIngest(Service):
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
        self.coingecko: CoinGeckoClient | None = None
        self.coingecko_blocked: str | None = None
        self.kraken_tick: KrakenTick | None = None
        self.cg = CoinGeckoView()
        self.eure_error: str | None = None
        self.policy_state = PolicyState()
        self.current: MarketPrice | None = None
        self.evaluated_at: datetime | None = None
        self.last_published: MarketPrice | None = None
        self.last_published_at: datetime | None = None
        self.last_event_id: str | None = None
        self.kafka_error: str | None = None
        self.last_poll_at: datetime | None = None
        self.last_poll_trigger: str | None = None
        self.last_poll_success_at: datetime | None = None
        self.next_poll_at: datetime | None = None
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
        self._poll_lock = asyncio.Lock()

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        self._open_coingecko()  # before the bus: a missing API key is shown while Kafka is awaited too
        if not await self.start_bus(self.producer):
            if self.coingecko is not None:
                await self.coingecko.close()
            return
        self.kraken.start()
        evaluator = asyncio.create_task(self._evaluate_loop(), name="evaluate")
        helpers = [asyncio.create_task(self._tick_loop(), name="kraken_ticks")]
        if self.coingecko is not None:
            helpers.append(asyncio.create_task(self._poll_loop(), name="coingecko_poll"))
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
            if self.coingecko is not None:
                await self.coingecko.close()
            await self.producer.stop()

    def _open_coingecko(self) -> None:
        api_key = None
        if self.cfg.coingecko_api_key_file is not None:
            try:
                api_key = read_secret_file(self.cfg.coingecko_api_key_file, "QL_COINGECKO_API_KEY_FILE")
            except SecretFileError as exc:
                # Kraken alone still prices; the missing fallback and cross-check are shown as unhealthy
                self.coingecko_blocked = str(exc)
                self.log.error("coingecko_key_unavailable", venue="coingecko", error=self.coingecko_blocked)
                return
        self.coingecko = CoinGeckoClient(
            self.cfg.coingecko_url,
            api_key=api_key,
            timeout_s=self.cfg.market_coingecko_timeout_s,
            default_backoff_s=self.cfg.market_coingecko_rate_limit_backoff_s,
            stale_after_s=self.cfg.market_coingecko_stale_after_s,
            eure_stale_after_s=self.cfg.market_eure_stale_after_s,
            eure_id=self.cfg.market_coingecko_eure_id,
            clock=self.clock,
        )

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
        self._wake.set()

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

    async def _poll_loop(self) -> None:
        while True:
            if not await self.wait_runnable():
                return
            await self.poll_coingecko("scheduled")
            now = self.clock()
            delay = self.cfg.market_coingecko_poll_interval_s
            retry = self.coingecko.retry_not_before if self.coingecko is not None else None
            if retry is not None and retry > now:
                delay = max(delay, (retry - now).total_seconds())
            self.next_poll_at = now + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain_requested.wait(), timeout=delay)

    # --- CoinGecko --------------------------------------------------------------------------

    async def poll_coingecko(self, trigger: Literal["scheduled", "refresh"]) -> PollOutcome:
        assert self.coingecko is not None
        async with self._poll_lock:  # a refresh and a scheduled poll never overlap
            self.counts[f"polls_{trigger}"] += 1
            self.last_poll_at = self.clock()
            self.last_poll_trigger = trigger
            try:
                quote = await self.coingecko.fetch_quote()
            except CoinGeckoError as exc:
                kind = _error_kind(exc)
                self.counts["poll_failures"] += 1
                self.cg = dataclasses.replace(self.cg, reachable=False, poll_error=kind)
                self._wake.set()
                if isinstance(exc, CoinGeckoRateLimited):
                    return PollOutcome(
                        "rate_limited", exc.source != "cooling_off", f"{kind}: {exc}", exc.retry_not_before
                    )
                return PollOutcome("failed", True, f"{kind}: {exc}")
            eure = quote.eure_eur
            self.eure_error = quote.eure_error
            self.cg = CoinGeckoView(
                btc_eur=quote.btc_eur.price,
                btc_updated_at=quote.btc_eur.last_updated_at,
                # a missing EURe quote keeps the last one, which then ages into `stale`
                eure_eur=eure.price if eure is not None else self.cg.eure_eur,
                eure_updated_at=eure.last_updated_at if eure is not None else self.cg.eure_updated_at,
                reachable=True,
                poll_error=None,
            )
            self.last_poll_success_at = self.clock()
            self._wake.set()
            return PollOutcome("ok")

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
            if self.kafka_error is None:
                self.log.error("kafka_publish_failed", topic="ref.market_price", error=str(exc))
                self.kafka_error = f"{exc.__class__.__name__}: {exc}"
                self.notify_status()
            return
        if self.kafka_error is not None:
            self.log.info("kafka_publish_recovered", topic="ref.market_price")
            self.kafka_error = None
            self.notify_status()
        self.counts["published"] += 1
        self.last_published = price
        self.last_published_at = now
        self.last_event_id = str(event.event_id)
        self.mark_success()

    # --- control --------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def refresh(_r: Any, _b: OperatorAction, caller: Caller) -> Any:
            if self.drain_requested.is_set():
                raise ControlError(409, "service is draining")
            if self.coingecko is None:
                raise ControlError(409, f"CoinGecko is unavailable: {self.coingecko_blocked}")
            outcome = await self.poll_coingecko("refresh")
            self.audit.record("refresh", caller, outcome.result, {"error": outcome.error})
            body = {
                "polled": outcome.sent,
                "result": outcome.result,
                "error": outcome.error,
                "retry_not_before": outcome.retry_not_before,
                "coingecko": self._coingecko_latest(self.clock()),
            }
            if outcome.result == "rate_limited":
                return json_response(body, status=429)
            if outcome.result == "failed":
                return json_response(body, status=502)
            return body

        return [
            Route(
                "POST",
                "/refresh",
                refresh,
                "Poll CoinGecko now (refused with 429 during a rate-limit cool-off)",
                OperatorAction,
            ),
        ]

    # --- state ----------------------------------------------------------------------------

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.current is None:
            reasons.append("starting: no price evaluated yet")
        elif not self.current.decisionable:
            reasons.append(f"not_decisionable: {self.current.status_reason}")
        if self.kafka_error:
            reasons.append(f"kafka_unavailable: {self.kafka_error}")
        if self.coingecko_blocked:
            reasons.append(f"coingecko_unavailable: {self.coingecko_blocked}")
        return reasons

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def _age_ms(self, now: datetime, then: datetime | None) -> int | None:
        return None if then is None else ms_since(then, now)

    def _coingecko_latest(self, now: datetime) -> dict[str, Any]:
        return {
            "btc_eur": self.cg.btc_eur,
            "last_updated_at": self.cg.btc_updated_at,
            "age_ms": self._age_ms(now, self.cg.btc_updated_at),
            "eure_eur": self.cg.eure_eur,
            "eure_last_updated_at": self.cg.eure_updated_at,
            "eure_age_ms": self._age_ms(now, self.cg.eure_updated_at),
        }

    def state(self) -> dict[str, Any]:
        now = self.clock()
        price = self.current
        tick = self.kraken_tick
        kraken_client = self.kraken.state()
        cg_client = self.coingecko.state() if self.coingecko is not None else None
        decisionable = price is not None and price.decisionable
        return conform(
            MarketReferenceFields,
            {
                "connected": {
                    "kraken": kraken_client["connected"],
                    "coingecko": self.cg.reachable,
                    "kafka": self.kafka_error is None,
                },
                # a consumer may act on the published price only when this is true
                "authoritative": decisionable and self.kafka_error is None and not self.paused,
                "decisionable": decisionable,
                "blocked_reason": (price.status_reason if price is not None and not price.decisionable else None),
                "fallback_in_use": price is not None and price.fallback_used,
                "source": price.source if price is not None else None,
                "evaluated_at": self.evaluated_at,
                "price": price.model_dump(mode="json") if price is not None else None,
                "conflict": {
                    "active": self.policy_state.conflict,
                    "since": self.policy_state.conflict_since,
                    "divergence_pct": price.cross_check_divergence_pct if price is not None else None,
                    "tolerance_pct": self.policy_cfg.conflict_tolerance_pct,
                    "clear_pct": self.policy_cfg.conflict_clear_pct,
                },
                "kraken": {
                    "state": price.kraken_state if price is not None else None,
                    "fresh": price is not None and price.kraken_fresh,
                    "latest": None
                    if tick is None
                    else {
                        "bid": tick.bid,
                        "ask": tick.ask,
                        "mid": price.mid if price is not None else None,
                        "received_at": tick.received_at,
                        "source_time": tick.source_time,
                        "age_ms": self._age_ms(now, tick.received_at),
                    },
                    "ticks": self.counts["ticks"],
                    "discarded_ticks": dict(self.discarded),
                    "client": kraken_client,
                },
                "coingecko": {
                    "state": price.coingecko_state if price is not None else None,
                    "fresh": price is not None and price.coingecko_fresh,
                    "blocked_reason": self.coingecko_blocked,
                    "latest": self._coingecko_latest(now),
                    "poll_error": self.cg.poll_error,
                    "last_poll_at": self.last_poll_at,
                    "last_poll_trigger": self.last_poll_trigger,
                    "last_success_at": self.last_poll_success_at,
                    "next_poll_at": self.next_poll_at,
                    "retry_not_before": cg_client["retry_not_before"] if cg_client else None,
                    "rate_limited": bool(cg_client and cg_client["rate_limited"]),
                    "eure_error": self.eure_error,
                    "client": cg_client,
                },
                "eure": {
                    "basis": price.eure_basis if price is not None else None,
                    "rate": price.eure_eur_rate if price is not None else None,
                    "state": price.eure_state if price is not None else None,
                    "observed": self.cg.eure_eur,
                    "tolerance_pct": self.policy_cfg.eure_tolerance_pct,
                },
                "publishing": {
                    "last_published_at": self.last_published_at,
                    "last_event_id": self.last_event_id,
                    "emit_interval_s": self.cfg.market_emit_interval_s,
                },
                "counts": dict(self.counts),
                "policy": dataclasses.asdict(self.policy_cfg),
            },
        )
