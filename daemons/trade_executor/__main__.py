"""Wiring for `python -m daemons.trade_executor`."""

from daemons.core.runtime import main
from daemons.trade_executor.service import TradeExecutor
from daemons.trade_executor.settings import ExecutorSettings

if __name__ == "__main__":
    main(TradeExecutor, ExecutorSettings)
