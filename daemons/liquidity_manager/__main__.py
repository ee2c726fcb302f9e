"""Wiring for `python -m daemons.liquidity_manager`."""

from daemons.core.runtime import main
from daemons.liquidity_manager.service import LiquidityManager
from daemons.liquidity_manager.settings import LiquiditySettings

if __name__ == "__main__":
    main(LiquidityManager, LiquiditySettings)
