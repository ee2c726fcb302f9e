"""liquidity-manager settings (env prefix `QL_`), on top of the shared `CoreSettings`.

The venue URLs, the signer account and key, and the relay JWT are the shared ones
(`QL_POA_BRIDGE_URL`, `QL_RELAY_RPC_URL`, `QL_RELAY_JWT_FILE`, `QL_NEAR_RPC_URL`,
`QL_SIGNER_ACCOUNT_ID`, `QL_SIGNER_KEY_FILE`); everything here is this daemon's own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from daemons.core.settings import CoreSettings


class LiquiditySettings(CoreSettings):
    # NEAR RPC budget (requests/min): salt and withdrawal outcomes only (see ExecutorSettings)
    near_rpc_budget_per_min: int = Field(default=6, ge=1)
    # The treasury file: assets, chains and labelled external wallets (TOML, or JSON by suffix).
    treasury_file: Path | None = None

    # How often the bridge and the relay are asked about open funding and withdrawals;
    # `POST /refresh` asks at once.
    liquidity_poll_interval_s: float = Field(default=30.0, gt=0)
    # while a published withdrawal's intent is not settled yet (TX_BROADCASTED: its block is
    # not produced), the relay is asked this often
    liquidity_in_flight_poll_s: float = Field(default=2.0, gt=0)
    # A funding attempt not credited this long after it was recorded is `delayed` (BTC needs
    # confirmations; an hour covers the usual case and still flags a stuck one the same day).
    liquidity_credit_delay_s: float = Field(default=3600.0, gt=0)
    # A withdrawal not completed this long after it was requested is `delayed`.
    liquidity_withdrawal_delay_s: float = Field(default=3600.0, gt=0)
    # /state is authoritative only while the last successful bridge poll is younger than this.
    liquidity_stale_after_s: float = Field(default=120.0, gt=0)

    # Intent (and nonce) lifetime of a signed ft_withdraw, and the margin after it before an
    # unsettled one is resolved through `is_nonce_used`.
    liquidity_withdraw_deadline_s: float = Field(default=300.0, ge=10)
    liquidity_withdraw_expiry_grace_s: float = Field(default=30.0, ge=0)
    # `min_gas` on the ft_withdraw intent: the SDK's empirical 17.05 TGas (docs/poa-bridge.md §8);
    # 0 leaves it out.
    liquidity_withdraw_min_gas: int = Field(default=17_050_000_000_000, ge=0)

    # Pages of 100 `recent_deposits` read per chain and poll, looking for recorded transfers.
    liquidity_deposit_pages: int = Field(default=3, ge=1, le=50)
    # Finished attempts and withdrawals kept in /state (all of them stay in PostgreSQL).
    liquidity_recent: int = Field(default=50, ge=1, le=1000)
    # Per-call timeout for the POA bridge, relay RPC and NEAR RPC.
    liquidity_venue_timeout_s: float = Field(default=10.0, gt=0)
    # Outbox publishing: batch size, and the pause before retrying when Kafka refuses.
    liquidity_outbox_batch: int = Field(default=200, ge=1)
    liquidity_outbox_retry_s: float = Field(default=1.0, gt=0)
    # How long published outbox rows are kept (the events themselves live on in the history).
    liquidity_outbox_keep_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Pause before retrying when PostgreSQL is away at start.
    liquidity_db_retry_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _stale_after_covers_a_poll(self) -> LiquiditySettings:
        if self.liquidity_stale_after_s <= self.liquidity_poll_interval_s:
            raise ValueError(
                "liquidity_stale_after_s must be longer than liquidity_poll_interval_s, or every "
                "pause between two polls would read as stale"
            )
        return self
