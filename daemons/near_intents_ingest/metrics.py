"""near-intents-ingest's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): the relay connection, silence on the active pair, frames by outcome.
Read from the service's attributes at scrape time, never through `/state`
(daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemons.core.metrics import MetricSet, kafka_producer_metrics

if TYPE_CHECKING:
    from daemons.near_intents_ingest.service import NearIntentsIngest


def daemon_metrics(ex: NearIntentsIngest, m: MetricSet) -> None:
    m.connected("relay", ex.connected)
    m.gauge("blocked", "1 while the daemon cannot work at all (blocked reason set)", ex.blocked is not None)
    silent = ex.pair_silent_for_ms()
    m.gauge(
        "relay_pair_silent_seconds",
        "Seconds without a request on the active pair while connected",
        None if silent is None else silent / 1000,
    )
    m.counter("relay_gaps", "Relay disconnections (gaps in the quote stream)", ex.gaps)
    m.counters("ingest_frames", "Relay frames by outcome", ex.counts, label="reason")
    m.counter("kafka_publish_failures", "Events that could not be published to Kafka", ex.counts["publish_failures"])
    kafka_producer_metrics(m, ex.producer)
