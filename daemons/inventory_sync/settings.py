"""inventory-sync settings (env prefix `QL_`), on top of the shared `CoreSettings`.

The signer account, the NEAR RPC endpoints and the POA bridge URL are the shared ones
(`QL_SIGNER_ACCOUNT_ID`, `QL_NEAR_RPC_URL`, `QL_POA_BRIDGE_URL`); everything here is this
daemon's own.
"""

from __future__ import annotations

from pydantic import AwareDatetime, Field, model_validator

from daemons.core.settings import CoreSettings


class InventorySyncSettings(CoreSettings):
    # NEAR RPC budget (requests/min): a covering reading is two calls (head, balances) about
    # every three seconds under load, an idle one a call per interval (see ExecutorSettings)
    near_rpc_budget_per_min: int = Field(default=36, ge=1)
    inventory_group: str = "inventory-sync"
    # a reading at least this often
    inventory_interval_s: float = Field(default=5.0, gt=0)
    # stale when no reading succeeded within this bound
    inventory_fresh_ms: int = Field(default=15_000, ge=1)
    inventory_rpc_timeout_s: float = Field(default=5.0, gt=0)
    inventory_bridge_timeout_s: float = Field(default=5.0, gt=0)
    # deposits asked of the bridge per chain (its maximum is 100)
    inventory_deposits_limit: int = Field(default=100, ge=1, le=100)
    inventory_poll_ms: int = Field(default=200, ge=1)
    # Readings asked for by events start at least this far apart: a burst of settlements (one
    # per answer at 200 answers/s) becomes one reading and one snapshot, not one each; with the
    # finality wait a covering reading costs two RPC calls, at most every 3.5 s (34/min).
    inventory_min_gap_ms: int = Field(default=3_500, ge=0, le=10_000)
    # after reading the chain head, wait this long before reading `final` balances: a `final`
    # read trails the head by ~3 blocks of ~0.6 s (docs/near-rpc.md, "Finality")
    inventory_finality_wait_ms: int = Field(default=2_000, ge=0, le=30_000)
    # the protocol fee changes rarely: read at start and this often
    inventory_fee_interval_s: float = Field(default=300.0, gt=0)
    inventory_kafka_retry_max_s: float = Field(default=5.0, gt=0)
    # liquidity actions first recorded before this instant are ignored (a treasury cut-over)
    inventory_liquidity_since: AwareDatetime | None = None
    inventory_reconciliation_keep: int = Field(default=20, ge=1)
    inventory_reconciliation_baselines: int = Field(default=8, ge=1)
    inventory_reconciliation_max_waits: int = Field(default=5, ge=0)
    # how long POST /refresh waits for its reading before answering 504
    inventory_refresh_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _bound_outlasts_interval(self) -> InventorySyncSettings:
        if self.inventory_fresh_ms <= self.inventory_interval_s * 1000:
            raise ValueError(
                "inventory_fresh_ms must be longer than inventory_interval_s, or inventory would "
                "go stale between two healthy readings"
            )
        return self
