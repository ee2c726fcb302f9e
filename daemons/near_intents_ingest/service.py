"""near-intents-ingest: connect to the solver relay, classify every quote request, publish the raw
frame (`raw.near_intents.quote`) and, for the active pair, the normalised demand
(`norm.swap_demand`). See docs/design.md §1.

Repeated quote ids are marked, never dropped (the strategy decides). Frames the relay client
could not use are dead letters with their raw text. A connection gap is logged and shown in
`/state`; a pair that is silent while the connection is healthy is its own state
(`pair_silent_for_ms`), not an unhealthy connection. The pair filter can be overridden at
runtime (`PUT /pair-filter`), validated against the asset registry, audited, and re-subscribed
without a gap.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field

from daemons.core.assets import REGISTRY, ActivePair
from daemons.core.bus import EventProducer
from daemons.core.control import Caller, ControlError, OperatorAction, Route
from daemons.core.events import Envelope, RawQuote, ms_since, new_event, now_utc
from daemons.core.health import Link
from daemons.core.metrics import MetricSet
from daemons.core.repeats import RepeatTracker
from daemons.core.runtime import Service
from daemons.core.secrets import SecretFileError, read_secret_file
from daemons.core.state_models import NearIntentsIngestFields, conform
from daemons.near_intents_ingest.classify import classify, swap_demand
from daemons.near_intents_ingest.metrics import daemon_metrics
from daemons.near_intents_ingest.settings import IngestSettings
from daemons.venues.backoff import Backoff
from daemons.venues.near_intents.relay_ws import (
    Connected,
    Disconnected,
    QuoteFilter,
    QuoteRequest,
    Reject,
    RelayWsClient,
    RelayWsConfig,
)


class PairFilterBody(OperatorAction):
    model_config = ConfigDict(extra="forbid")
    tokens_in: list[str] = Field(min_length=1, max_length=20)
    tokens_out: list[str] = Field(min_length=1, max_length=20)


class _FilterView(BaseModel):
    tokens_in: list[str]
    tokens_out: list[str]
    source: str


class NearIntentsIngest(Service):
    kafka_link: Link  # publishes: always has one
    name = "near-intents-ingest"

    def __init__(self, settings: IngestSettings) -> None:
        super().__init__(settings)
        self.cfg = settings
        self.pair = ActivePair(settings.btc_asset_id)
        self.default_filter = QuoteFilter(tokens_in=self.pair.token_ids, tokens_out=self.pair.token_ids)
        self.filter = self.default_filter
        self.producer = EventProducer(settings, client_id=self.name)
        self.repeats = RepeatTracker(settings.ingest_repeat_memory)
        self.counts: Counter[str] = Counter(
            {
                k: 0
                for k in (
                    "frames",
                    "active_pair",
                    "other_pair",
                    "repeats",
                    "invalid_json",
                    "rejects",
                    "skipped_while_paused",
                    "publish_failures",
                )
            }
        )
        self.client: RelayWsClient | None = None
        self.blocked: str | None = None
        self.kafka_link = Link(
            self.log, down="kafka_publish_failed", up="kafka_publish_recovered", topic="norm.swap_demand"
        )
        self.connected_since: datetime | None = None
        self.disconnected_since: datetime | None = None
        self.last_gap: dict[str, Any] | None = None
        self.gaps = 0
        self.last_frame_at: datetime | None = None
        self.last_active_at: datetime | None = None

    # --- loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            jwt = read_secret_file(self.cfg.relay_jwt_file, "QL_RELAY_JWT_FILE")
        except SecretFileError as exc:
            self.blocked = str(exc)
            self.log.error("relay_jwt_unavailable", venue="near_intents", error=self.blocked)
            await self.drain_requested.wait()  # stay observable; nothing to do without the JWT
            return
        if not await self.start_bus(self.producer):
            return
        self.client = RelayWsClient(
            RelayWsConfig(
                url=self.cfg.relay_ws_url,
                jwt=jwt,
                quote_filter=self.filter,
                client_side_filter=False,  # every frame is recorded and classified here
                max_frame_bytes=self.cfg.relay_max_frame_bytes,
            ),
            backoff=Backoff(
                initial_s=self.cfg.relay_backoff_initial_s,
                max_s=self.cfg.relay_backoff_max_s,
                budget=self.cfg.relay_reconnect_budget,
                window_s=self.cfg.relay_reconnect_window_s,
            ),
        )
        await self.client.start()
        self.disconnected_since = now_utc()
        stopper = asyncio.create_task(self._stop_on_drain(self.client))
        try:
            async for item in self.client.events():
                await self._handle(item)
        finally:
            stopper.cancel()
            await self.client.stop()
            await self.producer.stop()

    async def _stop_on_drain(self, client: RelayWsClient) -> None:
        await self.drain_requested.wait()
        await client.stop()  # ends events(); a quote already in hand is finished first

    async def _handle(self, item: Any) -> None:
        if isinstance(item, QuoteRequest):
            await self._on_quote(item)
        elif isinstance(item, Reject):
            self._on_reject(item)
        elif isinstance(item, Connected):
            self._on_connected(item)
        elif isinstance(item, Disconnected):
            self._on_disconnected(item)
        # quote_status and late answers belong to the executor's own connection

    async def _on_quote(self, quote: QuoteRequest) -> None:
        self.counts["frames"] += 1
        self.last_frame_at = quote.received_at
        if self.paused:
            self.counts["skipped_while_paused"] += 1
            return
        classification = classify(self.pair, quote)
        repeat = self.repeats.seen_before(quote.quote_id)
        self.counts[classification] += 1
        if repeat:
            self.counts["repeats"] += 1
        raw = new_event(
            RawQuote(
                raw_frame=quote.raw,
                subscription=quote.subscription,
                received_at=quote.received_at,
                classification=classification,
                quote_id=quote.quote_id,
                repeat=repeat,
            ),
            producer=self.producer_id,
            pair=self.cfg.pair,
            occurred_at=quote.received_at,
            correlation_id=quote.quote_id,
        )
        events: list[Envelope[Any]] = [raw]
        if classification == "active_pair":
            self.last_active_at = quote.received_at
            events.append(
                new_event(
                    swap_demand(self.pair, quote, repeat=repeat),
                    producer=self.producer_id,
                    pair=self.cfg.pair,
                    occurred_at=quote.received_at,
                    correlation_id=quote.quote_id,
                    causation_id=raw.event_id,
                )
            )
        try:
            # not awaiting the broker here: the next frame is read while this one is acknowledged
            for event in events:
                (await self.producer.send(event)).add_done_callback(self._acknowledged)
        except (KafkaError, OSError) as exc:
            self._publish_failed(exc)
            return
        self.mark_success()

    def _acknowledged(self, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled():
            return
        exc = ack.exception()
        if exc is not None:
            self._publish_failed(exc)
        else:
            self.kafka_link.ok()

    def _publish_failed(self, exc: BaseException) -> None:
        # a quote request is worthless seconds later: count and say so, never queue it
        self.counts["publish_failures"] += 1
        self.kafka_link.fail(exc)

    def _on_reject(self, reject: Reject) -> None:
        self.counts["rejects"] += 1
        if reject.code == "invalid_json":
            self.counts["invalid_json"] += 1
        if reject.code == "unmatched_reply":
            return  # a late reply to our own request: counted by the client, nothing to keep
        self.dead_letters.record("relay", f"{reject.code}: {reject.reason}", topic=None, value=reject.raw.encode())

    def _on_connected(self, item: Connected) -> None:
        now = item.at
        if self.last_gap is not None and self.last_gap["ended_at"] is None:
            self.last_gap["ended_at"] = now
            self.last_gap["gap_ms"] = ms_since(self.last_gap["started_at"], now)
        self.connected_since = now
        self.disconnected_since = None
        self.log.info("relay_connected", venue="near_intents", epoch=item.epoch, subscriptions=item.subscriptions)
        self.notify_status()

    def _on_disconnected(self, item: Disconnected) -> None:
        self.gaps += 1
        self.connected_since = None
        self.disconnected_since = item.at
        self.last_gap = {"started_at": item.at, "reason": item.reason, "ended_at": None, "gap_ms": None}
        self.log.warning("relay_disconnected", venue="near_intents", epoch=item.epoch, reason=item.reason)
        self.notify_status()

    # --- pair filter ----------------------------------------------------------------------

    def _filter_view(self) -> dict[str, Any]:
        return _FilterView(
            tokens_in=list(self.filter.tokens_in),
            tokens_out=list(self.filter.tokens_out),
            source="default" if self.filter == self.default_filter else "override",
        ).model_dump()

    async def _set_filter(self, new: QuoteFilter, caller: Caller, action: str) -> dict[str, Any]:
        old = self._filter_view()
        self.filter = new
        if self.client is not None:
            await self.client.set_quote_filter(new)
        view = self._filter_view()
        self.audit.record(action, caller, "resubscribed", {"from": old, "to": view})
        self.log.info("pair_filter_changed", old=old, new=view, operator=caller.operator)
        return view

    def routes(self) -> list[Route]:
        async def get_filter(_r: Any, _b: Any, _c: Caller) -> Any:
            return self._filter_view()

        async def put_filter(_r: Any, body: PairFilterBody, caller: Caller) -> Any:
            unknown = [t for t in (*body.tokens_in, *body.tokens_out) if t not in REGISTRY]
            if unknown:
                raise ControlError(422, f"not in the asset registry: {', '.join(sorted(set(unknown)))}")
            return await self._set_filter(
                QuoteFilter(
                    tokens_in=tuple(dict.fromkeys(body.tokens_in)), tokens_out=tuple(dict.fromkeys(body.tokens_out))
                ),
                caller,
                "pair_filter_set",
            )

        async def reset_filter(_r: Any, _b: Any, caller: Caller) -> Any:
            return await self._set_filter(self.default_filter, caller, "pair_filter_reset")

        return [
            Route("GET", "/pair-filter", get_filter, "The quote subscription filter and whether it is the default"),
            Route(
                "PUT",
                "/pair-filter",
                put_filter,
                "Override the filter (registry assets only); re-subscribes",
                PairFilterBody,
                body_optional=False,
            ),
            Route("POST", "/pair-filter/reset", reset_filter, "Back to the configured default filter", OperatorAction),
        ]

    # --- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    def pair_silent_for_ms(self) -> int | None:
        """Silence on the active pair while connected; None when not connected."""
        if not self.connected or self.connected_since is None:
            return None
        since = max(filter(None, (self.last_active_at, self.connected_since)))
        return ms_since(since, now_utc())

    def metrics(self, m: MetricSet) -> None:
        daemon_metrics(self, m)

    def health_reasons(self) -> list[str]:
        reasons = []
        if self.blocked:
            reasons.append(f"blocked: {self.blocked}")
        elif not self.connected:
            reasons.append("relay_disconnected")
        reasons += self.kafka_link.reason("kafka_unavailable")
        return reasons

    def state(self) -> dict[str, Any]:
        silent = self.pair_silent_for_ms()
        client = self.client.state() if self.client is not None else {}
        return conform(
            NearIntentsIngestFields,
            {
                "connected": {"relay": self.connected, "kafka": self.kafka_link.healthy},
                "authoritative": self.connected and self.kafka_link.healthy,
                "blocked_reason": self.blocked,
                "connected_since": self.connected_since,
                "disconnected_since": self.disconnected_since,
                "gaps": self.gaps,
                "last_gap": self.last_gap,
                "subscriptions": client.get("subscriptions"),
                "last_frame_at": self.last_frame_at,
                "last_active_pair_request_at": self.last_active_at,
                "pair_silent_for_ms": silent,
                "pair_silent": silent is not None and silent >= self.cfg.ingest_pair_silent_after_ms,
                "counts": dict(self.counts),
                "reconnects_in_window": client.get("reconnects_in_window"),
                "reconnect_budget": self.cfg.relay_reconnect_budget,
                "relay": client,
                "pair_filter": self._filter_view(),
                "active_pair": {"btc": self.pair.btc.asset_id, "eure": self.pair.eure.asset_id},
            },
        )
