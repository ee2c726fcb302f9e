"""market-reference-ingest settings (`QL_MARKET_*`), on top of the shared `CoreSettings`.

Every threshold of the source policy is here; `policy_config()` hands them to the pure policy.
The venue URLs and the CoinGecko key file are the shared `QL_KRAKEN_WS_URL`, `QL_COINGECKO_URL`
and `QL_COINGECKO_API_KEY_FILE`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from daemons.core.settings import CoreSettings
from daemons.market_reference_ingest.policy import PolicyConfig
from daemons.venues.coingecko import EURE_ID


class MarketReferenceSettings(CoreSettings):
    # --- Kraken (primary) ---
    market_kraken_symbol: str = "BTC/EUR"
    # the latest valid tick older than this is stale for pricing; keep it above the data timeout
    # below, so a quiet (but healthy) ticker is refreshed by a re-subscribe snapshot first
    market_kraken_stale_after_s: float = Field(default=15.0, gt=0)
    # the client's per-symbol data clock: quiet this long -> re-subscribe, then reconnect (docs/kraken.md §12)
    market_kraken_data_timeout_s: float = Field(default=10.0, gt=0)
    # the client's connection clock: no frame of any kind this long -> reconnect (docs/kraken.md §10)
    market_kraken_silence_timeout_s: float = Field(default=5.0, gt=0)
    market_kraken_backoff_initial_s: float = Field(default=1.0, gt=0)
    market_kraken_backoff_max_s: float = Field(default=60.0, gt=0)
    market_kraken_reconnect_budget: int = Field(default=120, ge=1)
    market_kraken_reconnect_window_s: float = Field(default=600.0, gt=0)

    # --- CoinGecko (fallback and cross-check) ---
    # at or above the plan's cache interval (60 s Demo/public, 20 s Pro): faster only burns quota
    market_coingecko_poll_interval_s: float = Field(default=60.0, gt=0)
    market_coingecko_timeout_s: float = Field(default=10.0, gt=0)
    # a 429 without a usable retry-after / x-ratelimit-reset header waits this long (docs/coingecko.md §4)
    market_coingecko_rate_limit_backoff_s: float = Field(default=60.0, gt=0)
    # judged by CoinGecko's own last_updated_at; 2-3x the cache interval (docs/reference-prices.md §4)
    market_coingecko_stale_after_s: float = Field(default=180.0, gt=0)
    market_coingecko_eure_id: str = EURE_ID

    # --- EURe/EUR basis ---
    market_eure_stale_after_s: float = Field(default=3600.0, gt=0)  # EURe trades thinly (docs/reference-prices.md §6)
    market_eure_tolerance_pct: Decimal = Field(default=Decimal("1.0"), ge=0)
    # a fresh EURe/EUR quote beyond tolerance makes the price not decisionable (else: recorded only)
    market_eure_out_of_tolerance_blocks: bool = True
    # a checked (fresh, within tolerance) EURe/EUR quote is applied; false keeps exactly 1
    market_eure_apply_checked_rate: bool = True

    # --- policy ---
    market_allow_fallback: bool = True
    # CoinGecko has no book: its price is widened this much each way for BUY_BTC / SELL_BTC
    market_fallback_half_spread_pct: Decimal = Field(default=Decimal("0.1"), ge=0, lt=100)
    market_conflict_tolerance_pct: Decimal = Field(default=Decimal("1.0"), gt=0)
    # a latched conflict clears only once the sources are this close again (<= tolerance)
    market_conflict_clear_pct: Decimal = Field(default=Decimal("0.75"), ge=0)
    market_fair_rate_places: int = Field(default=8, ge=0, le=18)

    # --- publishing ---
    # a price is published on every change and at least this often without one
    market_emit_interval_s: float = Field(default=1.0, gt=0)
    # how often sources are re-judged when nothing arrives (staleness, Kraken status, conflict)
    market_evaluate_interval_s: float = Field(default=0.25, gt=0)
    # at start, nothing is judged or published until Kraken's first tick or this long
    market_startup_grace_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _clear_within_tolerance(self) -> Self:
        if self.market_conflict_clear_pct > self.market_conflict_tolerance_pct:
            raise ValueError("market_conflict_clear_pct must not exceed market_conflict_tolerance_pct")
        return self

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(
            kraken_stale_after_s=self.market_kraken_stale_after_s,
            coingecko_stale_after_s=self.market_coingecko_stale_after_s,
            eure_stale_after_s=self.market_eure_stale_after_s,
            eure_tolerance_pct=self.market_eure_tolerance_pct,
            eure_out_of_tolerance_blocks=self.market_eure_out_of_tolerance_blocks,
            eure_apply_checked_rate=self.market_eure_apply_checked_rate,
            allow_fallback=self.market_allow_fallback,
            fallback_half_spread_pct=self.market_fallback_half_spread_pct,
            conflict_tolerance_pct=self.market_conflict_tolerance_pct,
            conflict_clear_pct=self.market_conflict_clear_pct,
            fair_rate_places=self.market_fair_rate_places,
        )
