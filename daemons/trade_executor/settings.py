"""trade-executor settings (`QL_EXECUTOR_*`) on top of the shared ones.

The signer (`QL_SIGNER_ACCOUNT_ID`, `QL_SIGNER_KEY_FILE`), the relay (`QL_RELAY_WS_URL`,
`QL_RELAY_RPC_URL`, `QL_RELAY_JWT_FILE`) and the verifier (`QL_NEAR_RPC_URL`,
`QL_VERIFIER_CONTRACT`) are shared settings. Nothing here can start the executor armed.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from daemons.core.settings import CoreSettings


class ExecutorSettings(CoreSettings):
    # NEAR RPC budget (requests/min): the salt every few minutes, and answers past their deadline
    # without a quote_status. The host's daemons together stay within 60/min: inventory-sync 36,
    # trade-executor 12, liquidity-manager 6 (docs/near-rpc.md, "Budget").
    near_rpc_budget_per_min: int = Field(default=12, ge=1)
    # Kafka consumer group for cmd.execute_trade
    executor_group: str = "trade-executor"
    # a new group (no committed offset) starts this far back: a command sent while the executor
    # was joining gets its result (refused as late if it is), nothing older is replayed
    executor_new_group_lookback_ms: int = Field(default=60_000, ge=0)
    # deadline = now + min_deadline_ms + this margin (covers the way to the relay)
    executor_answer_margin_ms: int = Field(default=5_000, ge=0, le=60_000)
    # how long to wait for the relay's answer to a quote_response before it is `uncertain`
    executor_relay_answer_timeout_s: float = Field(default=2.0, gt=0, le=30)
    # the verifier's current_salt is trusted this long at most (5 minutes, the SDK's salt cache: docs/verifier.md §3)
    executor_salt_max_age_s: float = Field(default=300.0, gt=0, le=300.0)
    # guaranteed quote_status delivery (docs/near-intents-relay.md §6): a fixed id per instance; unset = plain delivery
    # (on by default: fills seen while disconnected or restarting are replayed, not guessed; an
    # empty value turns it off)
    executor_relay_instance_id: str | None = Field(default="quoteloop-1", max_length=128)

    @field_validator("executor_relay_instance_id")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None

    # an inventory snapshot older than this (its age_ms + time since publish) is stale
    executor_inventory_max_age_ms: int = Field(default=30_000, ge=1)
    # refuse requests asking a live answer to last longer than this
    executor_max_min_deadline_ms: int = Field(default=120_000, ge=1)
    # after a deadline, wait this long for finality before asking is_nonce_used
    executor_settle_grace_ms: int = Field(default=5_000, ge=0)
    # with guaranteed delivery, an acknowledged answer with no quote_status this long after its
    # deadline (the stream connected at least as long) was not used: expired without an RPC call
    executor_status_wait_ms: int = Field(default=15_000, ge=0)
    # answers expired by that silence wait here for an on-chain check as the budget allows
    executor_audit_queue: int = Field(default=1_000, ge=1)
    # how often deadlines, the result backlog, the salt and PostgreSQL are looked after
    executor_resolve_interval_s: float = Field(default=1.0, gt=0)
    # answers past their deadline are decided against the latest final block, read at most this
    # often (NEAR RPC is metered; blocks come every ~0.6 s)
    executor_final_block_interval_s: float = Field(default=1.0, gt=0)
    # NEAR RPC requests deciding expired answers leave for the salt and the signer
    executor_rpc_reserve: int = Field(default=2, ge=0)
    # NEAR RPC views and the relay's publish_intents (cancel-live)
    executor_rpc_timeout_s: float = Field(default=5.0, gt=0)
    executor_poll_ms: int = Field(default=50, ge=1)
    # drain: how long to wait for commands in hand to get their relay answer
    executor_drain_timeout_s: float = Field(default=30.0, gt=0)
    # drain: how long closing each client (Kafka consumer, producer, NEAR RPC) may take
    executor_close_timeout_s: float = Field(default=3.0, gt=0)
