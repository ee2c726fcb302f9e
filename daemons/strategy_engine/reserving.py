"""The engine's reservations kept up to date: a command's amount reserved when it is decided,
results applied as they arrive on `exec.trade_result`, and, at start, the reservations of
answers that may still be live rebuilt from the bus (the rules are `reservations.py`'s).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from daemons.core.bus import read_since
from daemons.core.events import Envelope, ExecuteTrade, TradeResult, now_utc
from daemons.strategy_engine.reservations import answer_expiry

if TYPE_CHECKING:
    from daemons.strategy_engine.service import StrategyEngine

# what a restart rebuilds from: every command, and the results that may release them
REBUILD_TOPICS = ("cmd.execute_trade", "exec.trade_result")
REBUILD_SLACK_MS = 60_000  # beyond the longest an answer can live


class Reserving:
    def __init__(self, ex: StrategyEngine) -> None:
        self.ex = ex

    def reserve(self, cmd: ExecuteTrade) -> None:
        """Hold what `cmd` gives until its result says it is over, or its answer can no longer settle."""
        cfg = self.ex.cfg
        expires = answer_expiry(cmd, cfg.strategy_answer_margin_ms, cfg.strategy_answer_window_ms)
        self.ex.reservations.reserve(cmd.command_id, cmd.quote_id, cmd.asset_out, cmd.amount_out, expires)

    def on_result(self, event: Envelope[TradeResult], placed: tuple[int, int]) -> None:
        """A result; `placed` is where it stands on exec.trade_result, `(partition, offset)`."""
        r = event.payload
        self.ex.reservations.on_result(r.command_id, r.status, placed, r.deadline, r.resolved_by)

    async def rebuild(self) -> None:
        """Commands and results of the last answer lifetime: the answers that may still be live."""
        cfg = self.ex.cfg
        horizon = cfg.strategy_max_deadline_ms + cfg.strategy_answer_margin_ms + REBUILD_SLACK_MS
        since_ms = int((now_utc() - timedelta(milliseconds=horizon)).timestamp() * 1000)
        # a malformed old event cannot be a live answer: skipped
        tail = await read_since(cfg, REBUILD_TOPICS, since_ms, f"{self.ex.name}-reservations")
        for e, placed in tail.events:
            if isinstance(e.payload, ExecuteTrade):
                self.reserve(e.payload)
            elif isinstance(e.payload, TradeResult):
                self.on_result(e, placed)
        self.ex.reservations.expire(now_utc())
        self.ex.log.info("reservations_rebuilt", live=len(self.ex.reservations.live))
