"""history-writer's own metrics for `GET /metrics`, beside what every daemon has
(`Service.core_metrics`): PostgreSQL, the lag behind Kafka, rows and batches written. Read from
the writer's attributes at scrape time, never through `/state` (daemons/core/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemons.core.events import now_utc
from daemons.core.metrics import MetricSet

if TYPE_CHECKING:
    from daemons.history_writer.service import HistoryWriter


def daemon_metrics(ex: HistoryWriter, m: MetricSet) -> None:
    now = now_utc()
    m.connected("postgres", ex.db_available)
    m.gauge("history_impaired", "1 while the audit history cannot be written (PostgreSQL down)", not ex.db_available)
    m.age("postgres_down_seconds", "Seconds PostgreSQL has been unavailable (absent when up)", now, ex.db_link.since)
    m.age("history_last_write_age_seconds", "Seconds since the last batch was written", now, ex.last_write_at)
    m.gauge("history_lag_messages", "Events on Kafka not yet in the history (all topics)", sum(ex.lag.values()))
    m.counter("history_rows_written", "Rows written to the history", ex.rows_written)
    m.counter("history_duplicates_skipped", "Events already in the history, skipped", ex.duplicates_skipped)
    m.counter("history_dead_lettered", "Events stored as dead letters", ex.dead_lettered)
    m.counter("history_batches", "Batches written", ex.batches)
