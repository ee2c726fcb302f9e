"""near-intents-ingest's settings (`QL_INGEST_*`) beside the shared ones."""

from __future__ import annotations

from pydantic import Field

from daemons.core.settings import CoreSettings


class IngestSettings(CoreSettings):
    # a pair silent this long on a healthy connection is reported as silent (not unhealthy)
    ingest_pair_silent_after_ms: int = Field(default=60_000, ge=1)
    ingest_repeat_memory: int = Field(default=100_000, ge=1)
