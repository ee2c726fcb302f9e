"""One reading, start to end, and the verifier's health.

A reading takes the chain head first when a covering reading is owed (`finality`), reads the
pair's balances at `final` (`mt_batch_balance_of`; the block height and hash come with it) and
the protocol fee when it is due, refuses a node behind the last published block, then hands the
balances to the pending pipeline (the bridge, the reconciliation, the holdings), keeps the result
as `synced`, publishes its snapshot and answers the `POST /refresh` calls waiting for it.

A failed reading keeps the last one (balances are never invented) and counts towards
`consecutive_failures`; the verifier's health link logs the first failure and the recovery.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from daemons.core.events import now_utc
from daemons.core.health import Link, describe
from daemons.inventory_sync.finality import Coverage, owed_retry_s, short_retry_s
from daemons.inventory_sync.inputs import TRADE_TOPIC
from daemons.inventory_sync.snapshot import Synced
from daemons.inventory_sync.triggers import Trigger
from daemons.venues.near_intents.near_rpc import NearRpcError, NearRpcRateLimited

if TYPE_CHECKING:
    from daemons.inventory_sync.service import InventorySync


class BehindError(Exception):
    """The node answered from a block older than one already published."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Readings:
    def __init__(self, ex: InventorySync) -> None:
        self.ex = ex
        self.verifier = Link(
            ex.log, down="verifier_unavailable", up="verifier_recovered", level="warning", venue="near_rpc"
        )
        self.consecutive_failures = 0
        self.last_attempt_at: datetime | None = None
        self.fee_pips: int | None = None
        self.fee_read_at: datetime | None = None
        self.seq = 0  # successful readings, numbered for the reconciliation

    @property
    def connected(self) -> bool:
        """A reading was tried and the last one reached the verifier."""
        return self.last_attempt_at is not None and self.verifier.healthy

    async def read(self, trigger: Trigger) -> None:
        ex = self.ex
        assert ex.account_id is not None
        waiters = ex.controls.take_waiters()
        ex.triggers[trigger.reason] += 1
        started = now_utc()
        self.last_attempt_at = started
        cover = ex.finality.pending
        owed_in: float | None = None  # a covering reading owed after a failure: due this soon
        try:
            if cover is None and ex.finality.owed:
                cover = await self._take_head()
            balances = await ex.rpc.mt_batch_balance_of(ex.account_id, ex.pair.token_ids)
            height, block_hash = ex.rpc.last_block_height, ex.rpc.last_block_hash
            published = ex.publishing.published_height
            if height is not None and published is not None and height < published:
                raise BehindError(f"the node's final block {height} is behind the last published {published}")
            await self._read_fee_if_due()
        except (NearRpcError, BehindError, KafkaError) as exc:
            message = exc.message if isinstance(exc, (NearRpcError, BehindError)) else str(exc)
            retry_after_s = exc.retry_after_s if isinstance(exc, NearRpcRateLimited) else None
            if ex.finality.failed(cover):  # owed: try again soon
                owed_in = owed_retry_s(retry_after_s)
            self._failed(f"{exc.__class__.__name__}: {message}")
            ex.controls.finish_waiters(
                {"synced": False, "error": self.verifier.error, "retry_after_s": retry_after_s}, waiters
            )
            return
        except Exception as exc:  # a bug or an unforeseen client failure: visible, never fatal
            ex.log.exception("verifier_read_failed_unexpectedly")
            self._failed(describe(exc))
            ex.controls.finish_waiters({"synced": False, "error": self.verifier.error}, waiters)
            return
        finally:
            ex.next_due = now_utc() + timedelta(seconds=ex.cfg.inventory_interval_s if owed_in is None else owed_in)
        finished = now_utc()
        self._ok()
        settled = ex.finality.settle(cover, height)
        if settled.short_by is not None:
            # final has not reached that head yet: read again with the same head, once the
            # blocks between them should be final
            ex.counts["finality_short"] += 1
            ex.next_due = now_utc() + timedelta(seconds=short_retry_s(settled.short_by))
        if ex.finality.pending is None and ex.finality.owed:
            ex.request(Trigger("finality"))  # causes that came after this reading's head
        # the bridge is read after the balances: what it still shows as uncredited was not in them
        reads = await ex.pipeline.read_bridge()
        self.seq += 1
        observed = ex.pipeline.observe(
            seq=self.seq,
            started=started,
            finished=finished,
            balances=dict(zip(ex.pair.token_ids, balances, strict=True)),
            reads=reads,
            covers_until=settled.covers_until,
        )
        ex.synced = Synced(
            sync_id=str(uuid.uuid4()),
            seq=self.seq,
            synced_at=finished,
            duration_ms=(finished - started) // timedelta(milliseconds=1),
            block_height=height,
            block_hash=block_hash,
            results_through=ex.finality.results_through,
            trigger=trigger.reason,
            assets=observed.held.assets,
            pending=observed.held.pending,
            pending_complete=observed.complete,
            reconciliation=observed.outcome.entries,
            fee_pips=self.fee_pips,
        )
        ex.counts["readings"] += 1
        ex.publishing.set_fresh(finished)
        for r in observed.outcome.resolved:
            ex.publishing.log_reconciliation(r)
        inventory_id = await ex.publishing.publish(trigger, finished)
        ex.mark_success()
        ex.controls.finish_waiters(ex.controls.refresh_answer(inventory_id), waiters)
        if observed.outcome.wants_reading:  # placed only by a reading whose head comes after the credit was seen
            ex.finality.want()
            ex.request(Trigger("credit_observed"))

    async def _take_head(self) -> Coverage:
        """What a reading can prove it covers: `exec.trade_result`'s end offsets and the
        liquidity events folded so far, taken before the chain head is read; then the wait for
        `final` to reach that head."""
        ex = self.ex
        wanted, taken_at = ex.finality.wanted, now_utc()
        ends = await ex.end_offsets.of(TRADE_TOPIC)
        liquidity_seq = ex.ledger.events_applied
        head = await ex.rpc.block(finality="optimistic")
        wait = ex.cfg.inventory_finality_wait_ms / 1000
        if wait > 0:
            try:
                await asyncio.wait_for(ex.drain_requested.wait(), timeout=wait)
            except TimeoutError:
                pass
        return Coverage(
            results_through=ends, liquidity_seq=liquidity_seq, head_height=head.height, wanted=wanted, taken_at=taken_at
        )

    async def _read_fee_if_due(self) -> None:
        """The protocol fee rides on every snapshot, so every decision records the one in force;
        it is read at start and every `inventory_fee_interval_s` (the last known one is kept)."""
        now = now_utc()
        if (
            self.fee_read_at is not None
            and (now - self.fee_read_at).total_seconds() < self.ex.cfg.inventory_fee_interval_s
        ):
            return
        try:
            self.fee_pips = await self.ex.rpc.fee()
            self.fee_read_at = now
        except NearRpcError as exc:
            self.ex.log.warning("verifier_fee_unavailable", error=exc.message)

    def _failed(self, error: str) -> None:
        self.ex.counts["reading_failures"] += 1
        self.consecutive_failures += 1
        self.verifier.fail(error, account_id=self.ex.account_id)
        self.ex.notify_status()

    def _ok(self) -> None:
        self.verifier.ok()
        self.consecutive_failures = 0
