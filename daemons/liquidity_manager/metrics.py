"""liquidity-manager's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): venue connections, funding and withdrawals in flight, the freeze, the
outbox. Read from the manager's attributes at scrape time, never through `/state`
(daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.core.metrics import MetricSet, asset_label, near_rpc_metrics, oldest_age_s
from daemons.liquidity_manager import withdrawals
from daemons.liquidity_manager.funding import pending_by_asset

if TYPE_CHECKING:
    from daemons.liquidity_manager.service import LiquidityManager


def daemon_metrics(ex: LiquidityManager, m: MetricSet) -> None:
    now = now_utc()
    m.gauge("blocked", "1 while the daemon cannot work at all (blocked reason set)", ex.blocked is not None)
    m.connected("postgres", ex.ready.is_set() and ex.db_link.healthy)
    m.connected("poa_bridge", ex.last_poll_at is not None and ex.venues.up("poa_bridge"))
    if ex.relay is not None:
        m.connected("relay_rpc", ex.venues.up("relay_rpc"))
    m.connected("near_rpc", ex.venues.up("near_rpc"))
    m.age(
        "liquidity_last_poll_age_seconds",
        "Seconds since the last successful bridge poll",
        now,
        ex.last_poll_ok_at,
    )
    attempts = list(ex.funding.values())
    m.gauge("funding_pending", "Funding attempts not yet credited or failed", sum(a.pending for a in attempts))
    m.gauge(
        "funding_delayed",
        "Funding attempts past the credit bound, still not credited",
        sum(a.status == "delayed" for a in attempts),
    )
    for asset_id, amount in sorted(pending_by_asset(attempts).items()):
        m.gauge("funding_pending_base_units", "Funding on its way in, base units", amount, asset=asset_label(asset_id))
    outs = list(ex.withdrawals.values())
    m.gauge("withdrawals_open", "Withdrawals not final yet", sum(w.open for w in outs))
    for asset_id, amount in sorted(withdrawals.pending_by_asset(outs).items()):
        m.gauge(
            "withdrawals_pending_base_units",
            "Withdrawals on their way out, base units",
            amount,
            asset=asset_label(asset_id),
        )
    m.gauge(
        "withdrawals_undecided",
        "Withdrawals past the deadline the node could not decide (unknown)",
        len(ex.undecided),
    )
    m.gauge(
        "withdrawals_undecided_oldest_seconds",
        "How long the oldest unknown withdrawal has been past its deadline (0: none)",
        oldest_age_s((w.deadline for a in ex.undecided if (w := ex.withdrawals.get(a)) is not None), now),
    )
    m.gauge("withdrawals_frozen", "1 while withdrawals are frozen", ex.freeze.frozen)
    m.gauge(
        "outbox_backlog",
        "Liquidity events written but not yet on Kafka",
        ex.outbox.backlog if ex.outbox else None,
    )
    m.counter(
        "kafka_send_failures",
        "Kafka sends that failed (not handed over, or not acknowledged by the broker)",
        ex.outbox.failures if ex.outbox else 0,
    )
    m.counters("liquidity_events", "Funding, withdrawal and poll outcomes", ex.counts, label="reason")
    near_rpc_metrics(m, ex.near.usage())
