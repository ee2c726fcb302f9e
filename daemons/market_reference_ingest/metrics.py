"""market-reference-ingest's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): each source's connection, price age and freshness, whether the
published price may be acted on. Read from the service's attributes (and its clock) at scrape
time, never through `/state` (daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemons.core.metrics import MetricSet, kafka_producer_metrics

if TYPE_CHECKING:
    from daemons.market_reference_ingest.service import MarketReferenceIngest


def daemon_metrics(ex: MarketReferenceIngest, m: MetricSet) -> None:
    now = ex.clock()
    price = ex.current
    m.connected("kraken", ex.kraken.connected)
    m.connected("coingecko", ex.cg.reachable)
    tick = ex.kraken_tick
    m.age(
        "price_age_seconds",
        "Seconds since the source's last price",
        now,
        tick.received_at if tick else None,
        venue="kraken",
    )
    m.age("price_age_seconds", "Seconds since the source's last price", now, ex.cg.btc_updated_at, venue="coingecko")
    m.gauge(
        "price_fresh",
        "1 while the source's price is fresh",
        None if price is None else price.kraken_fresh,
        venue="kraken",
    )
    m.gauge(
        "price_fresh",
        "1 while the source's price is fresh",
        None if price is None else price.coingecko_fresh,
        venue="coingecko",
    )
    m.gauge(
        "price_decisionable",
        "1 while the published fair price may be acted on",
        price is not None and price.decisionable,
    )
    m.gauge("price_conflict", "1 while Kraken and CoinGecko disagree beyond tolerance", ex.policy_state.conflict)
    m.age(
        "price_published_age_seconds",
        "Seconds since the last market.price event was published",
        now,
        ex.last_published_at,
    )
    m.counters("market_events", "Ticks, publications, polls and failures", ex.counts, label="reason")
    m.counters("market_discarded_ticks", "Kraken ticks discarded, by reason", ex.discarded)
    m.counter("kafka_publish_failures", "Events that could not be published to Kafka", ex.counts["publish_failures"])
    kafka_producer_metrics(m, ex.producer)
