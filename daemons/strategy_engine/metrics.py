"""strategy-engine's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): arming, the ages of the price and inventory it decides on, decisions
by reason, reservations. Read from the engine's attributes at scrape time, never through
`/state` (daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.core.metrics import MetricSet, kafka_producer_metrics, reserved_credited
from daemons.strategy_engine.gates import inventory_view, price_view

if TYPE_CHECKING:
    from daemons.strategy_engine.service import StrategyEngine


def daemon_metrics(ex: StrategyEngine, m: MetricSet) -> None:
    now = now_utc()
    m.gauge("armed", "1 while armed (trading allowed by the operator)", ex.arm.armed)
    m.gauge("audit_impaired", "1 while strict audit mode finds the history impaired", ex.audit_impaired is not None)
    pv = price_view(ex.price, now) if ex.price is not None else None
    iv = inventory_view(ex.inventory) if ex.inventory is not None else None
    m.gauge(
        "price_input_age_seconds",
        "Age of the latest market price the daemon holds",
        None if pv is None else pv.age_ms / 1000,
    )
    m.gauge("price_input_decisionable", "1 when the price held may be acted on", pv is not None and pv.decisionable)
    m.gauge(
        "inventory_age_seconds",
        "Age of the latest inventory snapshot held",
        None if iv is None else iv.age_ms_at(now) / 1000,
    )
    m.gauge(
        "inventory_stale",
        "1 when the inventory held is stale or missing",
        iv is None or iv.stale or iv.age_ms_at(now) > ex.limits.inventory_max_age_ms,
    )
    m.counters("strategy_decisions", "Quote requests decided, by reason (EXECUTE or the refusal)", ex.counters)
    m.gauge("reservations_live", "Live reservations (commands not yet settled or released)", len(ex.reservations.live))
    m.gauge("inventory_snapshots_behind", "Snapshots ignored for a block behind the one held", ex.inventory_behind)
    reserved_credited(m, ex.pair.token_ids, ex.reservations.reserved(), iv.spendable if iv is not None else None)
    kafka_producer_metrics(m, ex.producer)
