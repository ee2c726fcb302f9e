"""Deciding on a request: the gates (`gates.decide`, pure) on the latest price, inventory and
reservations, the decision record every request gets and the command a request that passes
every gate gets (`records.py`, pure), the command's amount reserved before anything is sent (a
second request must already see it), both handed to `Publishing`, and the counters and latest
decisions `/state` shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from daemons.core.events import Envelope, ExecuteTrade, SwapDemand, TradeDecision, new_event, now_utc
from daemons.strategy_engine.gates import Context, Reason, Verdict, decide, inventory_view, price_view
from daemons.strategy_engine.publishing import Sent
from daemons.strategy_engine.records import decision_summary, execute_command, trade_decision

if TYPE_CHECKING:
    from daemons.strategy_engine.service import StrategyEngine

# refusals too common or too expected for a log line each (counted and shown in /state all the same)
QUIET = (Reason.REQUEST_TOO_OLD, Reason.REPEATED_QUOTE_ID, Reason.DISARMED)


class Deciding:
    def __init__(self, ex: StrategyEngine) -> None:
        self.ex = ex

    async def decide(self, event: Envelope[SwapDemand]) -> list[Sent]:
        """Decide one request and publish what it gets; the acknowledgements to wait for."""
        ex = self.ex
        demand = event.payload
        now = now_utc()
        ex.reservations.expire(now)
        repeat = ex.repeats.seen_before(demand.quote_id) or demand.repeat
        verdict = decide(
            Context(
                demand=demand,
                now=now,
                pair=ex.pair,
                limits=ex.limits,
                paused=ex.paused,
                armed=ex.arm.armed,
                repeat=repeat,
                price=price_view(ex.price, now) if ex.price is not None else None,
                inventory=inventory_view(ex.inventory) if ex.inventory is not None else None,
                reserved=ex.reservations.reserved(),
                audit_impaired=ex.audit_impaired is not None,
            )
        )
        decision = self.decision(demand, verdict, now)
        decision_event = new_event(
            decision,
            producer=ex.producer_id,
            pair=ex.cfg.pair,
            correlation_id=demand.quote_id,
            causation_id=event.event_id,
        )
        command: Envelope[ExecuteTrade] | None = None
        if verdict.execute:
            assert verdict.candidate is not None
            cmd = execute_command(demand, decision.decision_id, verdict.candidate, ex.limits.answer_window_ms)
            # reserve before sending: a second request must already see this one's amount
            ex.reserving.reserve(cmd)
            command = new_event(
                cmd,
                producer=ex.producer_id,
                pair=ex.cfg.pair,
                correlation_id=demand.quote_id,
                causation_id=decision_event.event_id,
            )
        # not awaiting the broker: the next request is decided while these are acknowledged (the
        # offset is committed only after them: `Publishing.commit_when_acked`, which also sends again)
        sent = [await ex.publishing.send(decision_event)]
        if command is not None:  # keyed by command id: per-command ordering for the executor
            cmd = command.payload
            sent.append(await ex.publishing.send(command, key=cmd.command_id, command=cmd))
        self.count(verdict, decision)
        return sent

    def decision(self, demand: SwapDemand, v: Verdict, now: datetime) -> TradeDecision:
        """The decision record for `v`, on the inputs the engine holds now."""
        ex = self.ex
        return trade_decision(
            demand,
            v,
            now,
            price=ex.price,
            inventory=ex.inventory,
            limits=ex.limits,
            armed=ex.arm.armed,
            pair=ex.cfg.pair,
        )

    def count(self, v: Verdict, decision: TradeDecision) -> None:
        ex = self.ex
        ex.counters[v.reason.value] += 1
        summary = decision_summary(v, decision)
        ex.latest_decision = summary
        if v.execute:
            ex.mark_success()
            ex.log.info(
                "command_emitted",
                quote_id=decision.quote_id,
                decision_id=decision.decision_id,
                gross_edge_pct=str(decision.gross_edge_pct),
            )
        else:
            ex.latest_rejection = summary
            if v.reason not in QUIET:
                ex.log.info(
                    "decision_rejected",
                    quote_id=decision.quote_id,
                    reason=v.reason.value,
                    detail=v.detail,
                    price_freshness_ms=decision.price_freshness_ms,
                )
