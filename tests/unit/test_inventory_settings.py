"""inventory-sync settings: the freshness bound and the reading interval must fit together."""

from __future__ import annotations

import pytest

from daemons.inventory_sync.service import InventorySyncSettings


def test_the_freshness_bound_must_outlast_the_interval() -> None:
    with pytest.raises(ValueError, match="inventory_fresh_ms"):
        InventorySyncSettings(inventory_interval_s=5, inventory_fresh_ms=5000)
    ok = InventorySyncSettings(inventory_interval_s=5, inventory_fresh_ms=5001)
    assert (ok.inventory_fresh_ms, ok.inventory_group) == (5001, "inventory-sync")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QL_INVENTORY_INTERVAL_S", "2.5")
    monkeypatch.setenv("QL_INVENTORY_FRESH_MS", "10000")
    monkeypatch.setenv("QL_INVENTORY_LIQUIDITY_SINCE", "2026-05-01T00:00:00Z")
    monkeypatch.setenv("QL_SIGNER_ACCOUNT_ID", "solver.near")
    s = InventorySyncSettings()
    assert (s.inventory_interval_s, s.inventory_fresh_ms, s.signer_account_id) == (2.5, 10000, "solver.near")
    assert s.inventory_liquidity_since is not None and s.inventory_liquidity_since.tzinfo is not None
    monkeypatch.setenv("QL_INVENTORY_LIQUIDITY_SINCE", "2026-05-01T00:00:00")  # no zone: refused
    with pytest.raises(ValueError):
        InventorySyncSettings()
