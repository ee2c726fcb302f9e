"""Wiring for `python -m daemons.strategy_engine`."""

from daemons.core.runtime import main
from daemons.strategy_engine.service import StrategyEngine, StrategySettings

if __name__ == "__main__":
    main(StrategyEngine, StrategySettings)
