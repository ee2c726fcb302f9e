"""liquidity-manager settings: the QL_ names operators set, and the one cross-field rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daemons.liquidity_manager.settings import LiquiditySettings


def test_env_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QL_TREASURY_FILE", "/etc/quoteloop/treasury.toml")
    monkeypatch.setenv("QL_LIQUIDITY_CREDIT_DELAY_S", "7200")
    monkeypatch.setenv("QL_POA_BRIDGE_URL", "http://127.0.0.1:1/rpc")
    s = LiquiditySettings()
    assert s.treasury_file == Path("/etc/quoteloop/treasury.toml")
    assert s.liquidity_credit_delay_s == 7200 and s.poa_bridge_url == "http://127.0.0.1:1/rpc"
    assert s.liquidity_stale_after_s > s.liquidity_poll_interval_s
    assert s.liquidity_withdraw_min_gas == 17_050_000_000_000


def test_a_stale_bound_shorter_than_a_poll_is_refused() -> None:
    with pytest.raises(ValidationError, match="liquidity_stale_after_s must be longer"):
        LiquiditySettings(liquidity_poll_interval_s=60, liquidity_stale_after_s=30)
    with pytest.raises(ValidationError):
        LiquiditySettings(liquidity_credit_delay_s=0)
