"""strategy-engine settings (`QL_STRATEGY_*`) on top of the shared ones.

They are the limits it starts with (`gates.Limits`), checked against the root-owned ceilings at
start; the operator may change most of them at run time (`controls.py`), never beyond the
ceilings. Nothing here can start the engine armed.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from daemons.core.settings import CoreSettings

MAX_THRESHOLD = Decimal(50)  # percent: the largest threshold or target edge a setting or operator may give


class StrategySettings(CoreSettings):
    strategy_threshold_pct: Decimal = Field(default=Decimal("2.0"), gt=0, le=MAX_THRESHOLD)
    strategy_target_edge_pct: Decimal = Field(default=Decimal("2.5"), gt=0, le=MAX_THRESHOLD)
    strategy_answer_window_ms: int = Field(default=2000, ge=100, le=3000)
    strategy_max_deadline_ms: int = Field(default=120_000, ge=1000)
    strategy_min_notional_eure: Decimal = Field(default=Decimal("1"), ge=0)
    # the seed: keep the first live cap tiny, a few EURe
    strategy_max_notional_eure: Decimal = Field(default=Decimal("5"), gt=0)
    strategy_price_max_age_ms: int = Field(default=5000, ge=1)
    strategy_inventory_max_age_ms: int = Field(default=30_000, ge=1)
    strategy_buffer_btc: int = Field(default=0, ge=0)  # base units never offered
    strategy_buffer_eure: int = Field(default=0, ge=0)
    # how long past min_deadline_ms an answer may live (the executor's margin): reservations last
    strategy_answer_margin_ms: int = Field(default=10_000, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> StrategySettings:
        if self.strategy_target_edge_pct < self.strategy_threshold_pct:
            raise ValueError("strategy_target_edge_pct must be >= strategy_threshold_pct")
        if self.strategy_min_notional_eure > self.strategy_max_notional_eure:
            raise ValueError("strategy_min_notional_eure must be <= strategy_max_notional_eure")
        return self
