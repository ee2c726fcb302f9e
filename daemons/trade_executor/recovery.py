"""The start path: every unresolved ledger row resolved from the venue, the settled and withheld
holds the book must keep across a restart, and the results not yet on Kafka republished. The
same runs when PostgreSQL comes back after an outage.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from daemons.core.bus import topic_end_offsets
from daemons.core.events import RefusalCode, now_utc
from daemons.trade_executor.gates import (
    Refusal,
)
from daemons.trade_executor.ledger import (
    LedgerState,
)
from daemons.trade_executor.settlement import (
    LiveAnswer,
    RecoveryStep,
    recovery_step,
)

if TYPE_CHECKING:
    from daemons.trade_executor.service import TradeExecutor

S = LedgerState


class Recovery:
    def __init__(self, ex: TradeExecutor) -> None:
        self.ex = ex

    async def publish_backlog(self) -> None:
        store = self.ex.ledger()
        for stale in await store.unpublished():
            cid = stale.command_id
            if cid in self.ex.busy or cid in self.ex.publisher.marks:
                continue
            with self.ex.busy.working(cid):
                # read again under the marker: the list may be older than another path's publication
                row = await store.get(cid)
                if row is None or not row.needs_publishing:
                    continue
                if not await self.ex.publisher.publish(row):
                    return  # Kafka is away: try again next sweep

    async def recover(self) -> None:
        store = self.ex.ledger()
        rows = await store.unresolved()
        steps: Counter[str] = Counter()
        for row in rows:
            if row.command_id in self.ex.busy:
                continue
            step = recovery_step(row.state)
            steps[row.state.value] += 1
            now = now_utc()
            if step is RecoveryStep.REFUSE:
                await self.ex.answering.refuse(
                    row,
                    Refusal(
                        RefusalCode.EXECUTOR_RESTARTED,
                        "the executor stopped (or lost its ledger) before signing: nothing was signed or sent",
                    ),
                    now,
                )
            elif step is RecoveryStep.RESOLVE_NOW:
                answer = LiveAnswer.from_row(row)
                self.ex.book.hold(answer)
                await self.ex.resolution.resolve_unsent(
                    answer, reason="not sent: the executor stopped while signing, before the signed answer was stored"
                )
            elif step is RecoveryStep.MARK_UNCERTAIN:
                with self.ex.busy.working(row.command_id):
                    await self.ex.publisher.step(
                        row.command_id,
                        S.UNCERTAIN,
                        now,
                        reason_code="restarted_after_submit",
                        reason="the executor stopped after storing the signed answer: whether the relay received it "
                        "is unknown; resolved by quote_status or is_nonce_used, never by resubmitting",
                    )
            elif step is RecoveryStep.WATCH:
                self.ex.book.hold(LiveAnswer.from_row(row))
        # settled answers (and expiries by relay silence) the inventory snapshot may not hold yet
        # keep holding their amount, until a snapshot covers every result published before this
        # start (placed by the sweep)
        since = now_utc() - timedelta(milliseconds=self.ex.cfg.executor_inventory_max_age_ms)
        for row in await store.settled_since(since):
            if row.command_id not in self.ex.book.answers:
                self.ex.book.apply(row)
                self.ex.recovered_unplaced.add(row.command_id)
        # signed answers withheld before the stop hold until their deadlines, as they did
        for row in await store.withheld_until(now_utc()):
            if row.command_id not in self.ex.book.answers:
                self.ex.book.note_withheld(row.command_id, row.deadline, row.asset_out, row.amount_out)
        await self.publish_backlog()
        await self.place_recovered()
        self.ex.recovered_at = now_utc()
        if rows:
            self.ex.log.info("ledger_recovered", unresolved=dict(steps), live=len(self.ex.book.answers))

    async def place_recovered(self) -> None:
        """Settled holds recovered from the ledger were published before this start (or are
        republished since, which places them): a snapshot covering the topic's end offsets as
        they are now holds them. Retried by the sweep while Kafka does not answer."""
        if not self.ex.recovered_unplaced:
            return
        try:
            ends = await topic_end_offsets(self.ex.cfg, "exec.trade_result", f"{self.ex.name}-recovery")
        except (KafkaError, OSError) as exc:
            self.ex.log.warning("recovered_holds_unplaced", count=len(self.ex.recovered_unplaced), error=str(exc))
            return
        for cid in self.ex.recovered_unplaced:
            held = self.ex.book.settled.get(cid)
            if held is not None and held[0] is None:
                self.ex.book.place_settled(cid, ends)
        self.ex.recovered_unplaced.clear()
