"""trade-executor settings (`QL_EXECUTOR_*`) on top of the shared ones.

The signer (`QL_SIGNER_ACCOUNT_ID`, `QL_SIGNER_KEY_FILE`), the relay (`QL_RELAY_WS_URL`,
`QL_RELAY_RPC_URL`, `QL_RELAY_JWT_FILE`) and the verifier (`QL_NEAR_RPC_URL`,
`QL_VERIFIER_CONTRACT`) are shared settings. Nothing here can start the executor armed.
"""

from __future__ import annotations

from pydantic import Field

from daemons.core.settings import CoreSettings


class ExecutorSettings(CoreSettings):
    # Kafka consumer group for cmd.execute_trade
    executor_group: str = "trade-executor"
    # deadline = now + min_deadline_ms + this margin (covers the way to the relay)
    executor_answer_margin_ms: int = Field(default=5_000, ge=0, le=60_000)
    # how long to wait for the relay's answer to a quote_response before it is `uncertain`
    executor_relay_answer_timeout_s: float = Field(default=2.0, gt=0, le=30)
    # the verifier's current_salt is trusted this long at most (issue 7: 5 minutes)
    executor_salt_max_age_s: float = Field(default=300.0, gt=0, le=300.0)
    # guaranteed quote_status delivery (§1.6): a fixed id per instance; unset = plain delivery
    executor_relay_instance_id: str | None = Field(default=None, min_length=1, max_length=128)
    # an inventory snapshot older than this (its age_ms + time since publish) is stale
    executor_inventory_max_age_ms: int = Field(default=30_000, ge=1)
    # refuse requests asking a live answer to last longer than this
    executor_max_min_deadline_ms: int = Field(default=120_000, ge=1)
    # after a deadline, wait this long for finality before asking is_nonce_used
    executor_settle_grace_ms: int = Field(default=5_000, ge=0)
    # how often deadlines, the result backlog, the salt and PostgreSQL are looked after
    executor_resolve_interval_s: float = Field(default=1.0, gt=0)
    # NEAR RPC views and the relay's publish_intents (cancel-live)
    executor_rpc_timeout_s: float = Field(default=5.0, gt=0)
    executor_poll_ms: int = Field(default=50, ge=1)
    # drain: how long to wait for commands in hand to get their relay answer
    executor_drain_timeout_s: float = Field(default=30.0, gt=0)
    # drain: how long closing each client (Kafka consumer, producer, NEAR RPC) may take
    executor_close_timeout_s: float = Field(default=3.0, gt=0)
