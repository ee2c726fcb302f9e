"""liquidity-manager: treasury deposit addresses, funding actions and withdrawals (seed section 4)."""
