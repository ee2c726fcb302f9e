"""The order the seven daemons start in when a harness starts them one process at a time:
history-writer first (nothing produced is ever missed), the answerers last (strategy-engine and
trade-executor, once prices and inventory flow). Stopping goes the other way.

qlctl's `SERVICES` (`qlctl/client.py`) is the operator's display order, not this one.
"""

from __future__ import annotations

START_ORDER: tuple[str, ...] = (
    "history-writer",
    "market-reference-ingest",
    "inventory-sync",
    "liquidity-manager",
    "near-intents-ingest",
    "strategy-engine",
    "trade-executor",
)
