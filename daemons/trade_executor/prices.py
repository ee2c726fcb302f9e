"""The latest `ref.market_price`, as the executor's own price check needs it (followed without a
consumer group: `daemons/core/latest.py`). Only the newest price is kept; one published before
the price held (another partition) is ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daemons.core.events import Envelope, MarketPrice
from daemons.core.latest import LatestFollower
from daemons.core.settings import CoreSettings
from daemons.trade_executor.gates import PriceView

TOPIC = "ref.market_price"


def view_of(event_id: str, payload: MarketPrice, observed_at: datetime) -> PriceView:
    return PriceView(
        event_id=event_id,
        fair_rate_buy_btc=payload.fair_rate_buy_btc,
        fair_rate_sell_btc=payload.fair_rate_sell_btc,
        decisionable=payload.decisionable,
        status_reason=payload.status_reason,
        freshness_ms=payload.freshness_ms,
        observed_at=observed_at,
    )


class PriceFeed(LatestFollower):
    def __init__(self, settings: CoreSettings) -> None:
        super().__init__(settings, TOPIC, "trade-executor-price")
        self.latest: PriceView | None = None
        self.prices = 0

    def take_event(self, event: Envelope[Any]) -> None:
        if not isinstance(event.payload, MarketPrice):
            return
        if self.latest is not None and event.observed_at < self.latest.observed_at:
            return
        self.latest = view_of(str(event.event_id), event.payload, event.observed_at)
        self.prices += 1

    def state(self, now: datetime) -> dict[str, Any]:
        v = self.latest
        return {
            "connected": self.error is None,
            "error": self.error,
            "prices_seen": self.prices,
            "undecodable": self.undecodable,
            "latest": None
            if v is None
            else {
                "event_id": v.event_id,
                "decisionable": v.decisionable,
                "status_reason": v.status_reason,
                "age_ms": v.age_ms_at(now),
                "fair_rate_buy_btc": str(v.fair_rate_buy_btc),
                "fair_rate_sell_btc": str(v.fair_rate_sell_btc),
            },
        }
