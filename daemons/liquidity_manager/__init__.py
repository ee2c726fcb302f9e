"""liquidity-manager: treasury deposit addresses, funding actions and withdrawals
(docs/design.md §1, docs/poa-bridge.md)."""
