"""trade-executor's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): arming, the relay, ledger and signer, the ages of the price and
inventory it checks against, results and refusals, live answers and what they hold. Read from the
executor's attributes at scrape time, never through `/state` (daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from daemons.core.events import TradeResult, now_utc
from daemons.core.metrics import MetricSet, kafka_producer_metrics, near_rpc_metrics, oldest_age_s, reserved_credited

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor


def daemon_metrics(ex: TradeExecutor, m: MetricSet) -> None:
    now = now_utc()
    m.gauge("armed", "1 while armed (trading allowed by the operator)", ex.arm.armed)
    m.gauge(
        "audit_impaired",
        "1 while strict audit mode finds the history impaired",
        ex.audit_watch.impaired is not None,
    )
    m.connected("relay", ex.relay is not None and ex.relay.connected and ex.relay_error is None)
    m.connected("postgres", ex.db.healthy)
    m.connected("near_rpc", ex.near_rpc.healthy)
    m.gauge("signer_ready", "1 when the signer key is loaded and verified", ex.signer.ready)
    price = ex.prices.latest
    age = price.age_ms_at(now) if price is not None else None
    m.gauge(
        "price_input_age_seconds",
        "Age of the latest market price the daemon holds",
        None if age is None else age / 1000,
    )
    inv = ex.inventory.latest
    m.gauge(
        "inventory_age_seconds",
        "Age of the latest inventory snapshot held",
        None if inv is None else inv.age_ms_at(now) / 1000,
    )
    m.gauge(
        "inventory_stale",
        "1 when the inventory held is stale or missing",
        inv is None or inv.stale or inv.age_ms_at(now) > ex.cfg.executor_inventory_max_age_ms,
    )
    # every status from the start (0 until seen), so "nothing answered for N minutes" has a series
    results = {s: ex.results.get(s, 0) for s in get_args(TradeResult.model_fields["status"].annotation)}
    m.counters(
        "executor_results",
        "Trade results published, by status (acknowledged: answered)",
        results | dict(ex.results),
    )
    m.counters("executor_refusals", "Commands refused before answering, by reason", ex.refusals)
    m.counters("executor_errors", "Errors, by kind", ex.errors)
    m.counter("executor_completed", "Commands brought to a final state", ex.completed)
    m.gauge("executor_in_flight", "Commands some coroutine is working on", len(ex.tasks))
    m.gauge("executor_live_answers", "Answers given whose outcome is not final yet", len(ex.book.answers))
    m.gauge("executor_undecided", "Live answers whose outcome the node could not decide (unknown)", len(ex.undecided))
    m.gauge(
        "executor_undecided_oldest_seconds",
        "How long the oldest unknown outcome has been past its answer's deadline (0: none)",
        oldest_age_s((a.deadline for cid in ex.undecided if (a := ex.book.answers.get(cid)) is not None), now),
    )
    m.gauge(
        "executor_silence_audits_queued",
        "Answers expired by relay silence waiting for a chain check",
        len(ex.audits),
    )
    m.gauge("executor_pending_statuses", "Relay quote statuses not yet applied", len(ex.pending_statuses))
    reserved_credited(m, ex.pair.token_ids, ex.book.reserved_by_asset(), inv.spendable if inv is not None else None)
    near_rpc_metrics(m, ex.rpc.usage())
    kafka_producer_metrics(m, ex.producer)
