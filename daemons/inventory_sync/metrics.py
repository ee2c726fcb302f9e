"""inventory-sync's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): the verifier and bridge connections, freshness, balances and pending
movements per asset, reconciliation by status. Read from the service and the parts it wires at
scrape time, never through `/state` (daemons/core/metrics.py).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.core.metrics import MetricSet, asset_label, kafka_producer_metrics, near_rpc_metrics
from daemons.inventory_sync.snapshot import freshness

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync


def daemon_metrics(ex: InventorySync, m: MetricSet) -> None:
    now = now_utc()
    s = ex.synced
    m.gauge("blocked", "1 while the daemon cannot work at all (blocked reason set)", ex.blocked is not None)
    m.connected("verifier", ex.readings.connected)
    for chain in ex.chains:
        m.connected(f"poa_bridge_{chain}", ex.pipeline.connected(chain))
    m.age("inventory_age_seconds", "Age of the latest successful verifier reading", now, s.synced_at if s else None)
    m.gauge(
        "inventory_stale",
        "1 when the inventory is stale (or never read)",
        freshness(s.synced_at if s else None, now, ex.bound_ms).stale,
    )
    m.gauge("inventory_freshness_bound_seconds", "Age past which the inventory is stale", ex.bound_ms / 1000)
    m.gauge("inventory_sync_failures", "Consecutive failed readings", ex.readings.consecutive_failures)
    m.gauge("inventory_pending_complete", "1 when pending movements are fully known", bool(s and s.pending_complete))
    for a in s.assets if s else []:
        label = asset_label(a.asset_id)
        m.gauge(
            "credited_base_units",
            "Credited (spendable) in the latest inventory, base units",
            a.spendable,
            asset=label,
        )
        m.gauge("pending_in_base_units", "Funding on its way in, not spendable, base units", a.pending_in, asset=label)
        m.gauge("pending_out_base_units", "Withdrawals on their way out, base units", a.pending_out, asset=label)
    statuses = Counter(r.status for r in (s.reconciliation if s else []))
    m.gauge("reconciliation", "Funding credits checked against the balance, by status", None, reason="")
    for status in ("awaiting_credit", "ok", "credited_lower_than_expected", "inconclusive"):
        m.gauge(
            "reconciliation",
            "Funding credits checked against the balance, by status",
            statuses[status],
            reason=status,
        )
    m.gauge("reconciliation_mismatch", "Funding credits lower than expected", statuses["credited_lower_than_expected"])
    m.gauge("liquidity_history_caught_up", "1 once the liquidity history has been read", ex.inputs.history_caught_up)
    m.counters("inventory_events", "Readings, publications and failures", ex.counts, label="reason")
    near_rpc_metrics(m, ex.rpc.usage())
    kafka_producer_metrics(m, ex.producer)
