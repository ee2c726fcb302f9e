"""history-writer's settings (`QL_HISTORY_*`, `QL_GC_YOUNG_THRESHOLD`) beside the shared ones."""

from __future__ import annotations

from pydantic import Field

from daemons.core.settings import CoreSettings


class HistoryWriterSettings(CoreSettings):
    history_group: str = "history-writer"
    history_batch_max: int = Field(default=5000, ge=1)
    history_poll_ms: int = Field(default=100, ge=1)
    history_retry_max_s: float = Field(default=5.0, gt=0)
    # a poll bringing fewer records than `history_linger_records` waits up to this long for more
    # before writing: at a few hundred events/s one transaction per poll cost PostgreSQL and the
    # writer more CPU per event than the events themselves. 0 writes every poll at once.
    history_linger_ms: int = Field(default=50, ge=0, le=5_000)
    history_linger_records: int = Field(default=500, ge=1)
    # ~16 tracked objects per event held until its batch is written, two batches in flight: at
    # the shared 50,000 every batch was walked by the collector, a fifth of the writer's CPU
    gc_young_threshold: int = Field(default=400_000, ge=700)
